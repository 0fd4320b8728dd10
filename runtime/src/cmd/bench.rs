//! `gpucap-runtime bench`: a closed-loop load generator for any Open Inference Protocol v2 endpoint.
//! Each of `concurrency` clients sends a request, waits for the answer, and sends the next, until
//! the duration or request count is reached. Inputs are random, shaped from the model's metadata.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::Mutex;

use gpucap_runtime::protocol::{DataType, TensorData, TensorSpec};

/// What to send and for how long.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Server base URL, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    /// Model name.
    pub model: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Stop after this long (when `requests` is not set).
    pub duration: Duration,
    /// Stop after this many requests in total.
    pub requests: Option<u64>,
    /// Rows per request.
    pub rows: usize,
    /// Per-request client timeout.
    pub timeout: Duration,
    /// Seed for the random inputs.
    pub seed: u64,
    /// An API key sent as `Authorization: Bearer …` (for endpoints behind a gateway).
    pub api_key: Option<String>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Rows per request.
    pub rows_per_request: usize,
    /// Wall time of the run in seconds.
    pub elapsed_s: f64,
    /// Requests answered with 200.
    pub ok: u64,
    /// Successful requests per second.
    pub throughput_rps: f64,
    /// Successful rows per second.
    pub throughput_rows_per_s: f64,
    /// Latency of successful requests; absent when none succeeded.
    pub latency: Option<Percentiles>,
    /// Latency of refusals (429/503), i.e. how fast excess load is shed; absent when none was refused.
    pub refused_latency: Option<Percentiles>,
    /// Non-200 answers by status code.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Requests that could not connect (e.g. the server has exited). Nothing was sent, so nothing
    /// the server accepted was lost.
    pub connect_errors: u64,
    /// Requests sent that got no HTTP answer (connection reset mid-request, client timeout): work
    /// the server may have accepted and dropped.
    pub transport_errors: u64,
}

#[derive(Default)]
struct Tally {
    ok_us: Vec<u64>,
    refused_us: Vec<u64>,
    by_status: BTreeMap<u16, u64>,
    connect: u64,
    transport: u64,
}

/// Runs the benchmark.
pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    if opts.concurrency == 0 || opts.rows == 0 {
        bail!("--concurrency and --rows must be at least 1");
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &opts.api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(opts.timeout)
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let base = opts.url.trim_end_matches('/');
    let meta: serde_json::Value = client
        .get(format!("{base}/v2/models/{}", opts.model))
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?
        .error_for_status()
        .with_context(|| format!("model '{}' metadata", opts.model))?
        .json()
        .await?;
    let inputs = inputs_of(&meta).context("model metadata")?;

    // A few distinct bodies, built up front so the client spends its CPU on sending, not on JSON.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..16u64)
            .map(|i| random_body(&inputs, opts.rows, opts.seed.wrapping_add(i)))
            .collect(),
    );
    let url = format!("{base}/v2/models/{}/infer", opts.model);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop_at = started + opts.duration;
    let tasks: Vec<_> = (0..opts.concurrency)
        .map(|i| {
            let (client, url, bodies, tally, issued) = (
                client.clone(),
                url.clone(),
                bodies.clone(),
                tally.clone(),
                issued.clone(),
            );
            let limit = opts.requests;
            tokio::spawn(async move {
                let mut local = Tally::default();
                let mut n = i;
                loop {
                    match limit {
                        Some(max) if issued.fetch_add(1, Ordering::Relaxed) >= max => break,
                        None if Instant::now() >= stop_at => break,
                        _ => {}
                    }
                    let body = bodies[n % bodies.len()].clone();
                    n += 1;
                    let t = Instant::now();
                    let result = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    let us = t.elapsed().as_micros() as u64;
                    match result {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            // Read the body so the connection is reused.
                            let _ = resp.bytes().await;
                            match status {
                                200 => local.ok_us.push(us),
                                429 | 503 => {
                                    local.refused_us.push(us);
                                    *local.by_status.entry(status).or_default() += 1;
                                }
                                _ => *local.by_status.entry(status).or_default() += 1,
                            }
                        }
                        Err(e) if e.is_connect() => {
                            local.connect += 1;
                            // Back off like a real client would, instead of spinning on a closed port.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err(_) => local.transport += 1,
                    }
                }
                let mut t = tally.lock().await;
                t.ok_us.extend(local.ok_us);
                t.refused_us.extend(local.refused_us);
                for (k, v) in local.by_status {
                    *t.by_status.entry(k).or_default() += v;
                }
                t.connect += local.connect;
                t.transport += local.transport;
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut t = std::mem::take(&mut *tally.lock().await);
    let ok = t.ok_us.len() as u64;
    Ok(BenchReport {
        concurrency: opts.concurrency,
        rows_per_request: opts.rows,
        elapsed_s: elapsed,
        ok,
        throughput_rps: ok as f64 / elapsed,
        throughput_rows_per_s: (ok * opts.rows as u64) as f64 / elapsed,
        latency: percentiles(&mut t.ok_us),
        refused_latency: percentiles(&mut t.refused_us),
        errors_by_status: t.by_status,
        connect_errors: t.connect,
        transport_errors: t.transport,
    })
}

fn percentiles(us: &mut [u64]) -> Option<Percentiles> {
    if us.is_empty() {
        return None;
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Some(Percentiles {
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    })
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} clients, {} rows/request, {:.1} s",
            self.concurrency, self.rows_per_request, self.elapsed_s
        )?;
        writeln!(
            f,
            "  ok {}  throughput {:.1} req/s ({:.1} rows/s)",
            self.ok, self.throughput_rps, self.throughput_rows_per_s
        )?;
        if let Some(l) = &self.latency {
            writeln!(
                f,
                "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            )?;
        }
        if !self.errors_by_status.is_empty() || self.connect_errors + self.transport_errors > 0 {
            let errs: Vec<String> = self
                .errors_by_status
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            writeln!(
                f,
                "  errors by status: [{}]  connect: {}  transport: {}",
                errs.join(", "),
                self.connect_errors,
                self.transport_errors
            )?;
        }
        if let Some(r) = &self.refused_latency {
            writeln!(
                f,
                "  refusal latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
                r.p50_ms, r.p99_ms, r.max_ms
            )?;
        }
        Ok(())
    }
}

/// The inputs the model's metadata lists.
fn inputs_of(meta: &serde_json::Value) -> anyhow::Result<Vec<TensorSpec>> {
    let inputs = meta["inputs"].as_array().context("no inputs")?;
    inputs
        .iter()
        .map(|input| {
            let name = input["name"].as_str().context("an input has no name")?;
            let datatype = input["datatype"]
                .as_str()
                .context("an input has no datatype")?
                .parse::<DataType>()
                .map_err(anyhow::Error::msg)?;
            let shape = input["shape"]
                .as_array()
                .context("an input has no shape")?
                .iter()
                .map(|d| d.as_i64().context("a dimension is not an integer"))
                .collect::<anyhow::Result<Vec<i64>>>()?;
            Ok(TensorSpec {
                name: name.to_string(),
                datatype,
                shape: Some(shape),
            })
        })
        .collect()
}

/// A request with random values for every input, shaped for `rows` rows.
fn random_body(inputs: &[TensorSpec], rows: usize, seed: u64) -> Vec<u8> {
    let tensors: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let shape = input.shape_for(rows);
            let count = shape.iter().product();
            let data = TensorData::random(input.datatype, count, seed.wrapping_mul(31) + i as u64);
            serde_json::json!({
                "name": input.name,
                "shape": shape,
                "datatype": input.datatype.name(),
                "data": data,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "inputs": tensors })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_series() {
        let mut us: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let p = percentiles(&mut us).unwrap();
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (51.0, 99.0, 100.0));
        assert!(percentiles(&mut []).is_none());
    }
}
