//! The `simulate` and `trace` commands' arguments, turned into a scenario and carried out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use gpucap_fabric::config::CapacityType;
use gpucap_fabric::record::Recorder;
use gpucap_fabric::simulate::service::ServiceModel;
use gpucap_fabric::simulate::trace::{self, Shape, Trace};
use gpucap_fabric::simulate::{
    CompareOptions, DEFAULT_START_WALL, SPOT_RECLAIMS_PER_HOUR, Scenario, source,
};

/// `gpucap-fabric simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// `terraform show -json` of a plan or a state holding the endpoint.
    #[arg(long, requires = "endpoint", conflicts_with = "config")]
    pub plan: Option<PathBuf>,
    /// The endpoint's name in the plan.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The router's config file, instead of a plan.
    #[arg(long, required_unless_present = "plan")]
    pub config: Option<PathBuf>,
    /// The traffic: a CSV of arrival times (s), or `second,requests_per_second` rows.
    #[arg(long)]
    pub trace: PathBuf,
    /// A replica's speed by batch size, as `gpucap-runtime forward-bench --service-model` writes it.
    #[arg(
        long,
        conflicts_with = "replica_rps",
        required_unless_present = "replica_rps"
    )]
    pub service_model: Option<PathBuf>,
    /// A flat speed per replica instead, in requests per second.
    #[arg(long)]
    pub replica_rps: Option<f64>,
    /// The latency target in ms (default: the endpoint's request_timeout_ms).
    #[arg(long)]
    pub slo_ms: Option<u64>,
    /// The share of requests within the SLO the static fleet is sized to reach.
    #[arg(long, default_value_t = 0.99)]
    pub slo_target: f64,
    /// Cold start per capacity type, e.g. `on_demand=3m` (repeatable; defaults in
    /// docs/guides/fabric-simulate.md).
    #[arg(long = "cold-start", value_name = "TYPE=DURATION")]
    pub cold_start: Vec<String>,
    /// Spot reclaims per replica-hour.
    #[arg(long, default_value_t = SPOT_RECLAIMS_PER_HOUR)]
    pub spot_reclaims_per_hour: f64,
    /// USD per replica-hour on on-demand capacity, when the endpoint has no on-demand pool.
    #[arg(long)]
    pub on_demand_price: Option<f64>,
    /// Seed for arrivals and reclaims: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Wall-clock time of the trace's second 0 (RFC 3339), for predictive pre-warming.
    #[arg(long, default_value = "2024-01-01T00:00:00Z")]
    pub start: String,
    /// Predictive pre-warming on or off, whatever the policy says.
    #[arg(long, value_enum)]
    pub predictive: Option<OnOff>,
    /// Also run the fabric with predictive pre-warming the other way.
    #[arg(long)]
    pub compare_predictive: bool,
    /// Instead, sweep each signal's threshold, the panic threshold, for, idle_for and
    /// min_warm_replicas: print every setting's cost and SLO, the frontier, and the cheapest
    /// setting that meets --slo-target as the burst policy's HCL.
    #[arg(long)]
    pub sweep: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Draw load, replicas per pool and spend over time to this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the fabric's control rounds (observation and decision) to this file, JSON lines.
    #[arg(long)]
    pub record_decisions: Option<PathBuf>,
}

/// On or off.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables.
    Text,
    /// One JSON document.
    Json,
}

/// `gpucap-fabric trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The shape.
    #[arg(value_enum)]
    pub shape: Shape,
    /// The highest rate, requests per second.
    #[arg(long, default_value_t = 2000.0)]
    pub peak_rps: f64,
    /// Seconds per row.
    #[arg(long, default_value_t = 60.0)]
    pub step: f64,
    /// Seed: the same seed gives the same trace.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Generates a trace as CSV.
pub fn generate(args: &TraceArgs) -> Result<String, String> {
    if !(args.peak_rps.is_finite() && args.peak_rps > 0.0) {
        return Err(format!(
            "--peak-rps {} is not a rate above 0",
            args.peak_rps
        ));
    }
    if !(args.step.is_finite() && args.step >= 1.0) {
        return Err(format!("--step {} must be at least 1 second", args.step));
    }
    let t = trace::generate(args.shape, args.peak_rps, args.step, args.seed);
    Ok(format!(
        "# gpucap-fabric trace {} --peak-rps {} --step {} --seed {}\n{}",
        args.shape
            .to_possible_value()
            .map_or(String::new(), |v| v.get_name().to_string()),
        args.peak_rps,
        args.step,
        args.seed,
        t.to_csv()
    ))
}

fn cold_starts(specs: &[String]) -> Result<BTreeMap<CapacityType, Duration>, String> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (kind, duration) = spec.split_once('=').ok_or_else(|| {
            format!("--cold-start {spec:?}: use TYPE=DURATION, e.g. on_demand=3m")
        })?;
        let t = CapacityType::parse(kind).ok_or_else(|| {
            format!("--cold-start {spec:?}: {kind:?} is not on_prem, reserved, on_demand or spot")
        })?;
        let d = humantime::parse_duration(duration).map_err(|_| {
            format!("--cold-start {spec:?}: {duration:?} is not a duration, e.g. 90s")
        })?;
        out.insert(t, d);
    }
    Ok(out)
}

/// Carries out `simulate`: the report's text (or JSON), after writing the chart when asked.
pub fn simulate(args: &SimulateArgs) -> Result<String, String> {
    let mut fabric = match (&args.plan, &args.config) {
        (Some(plan), _) => source::from_plan(plan, args.endpoint.as_deref().unwrap_or_default()),
        (None, Some(config)) => source::from_config(config),
        (None, None) => return Err("give --plan FILE --endpoint NAME, or --config FILE".into()),
    }
    .map_err(|e| e.to_string())?;
    if let Some(p) = args.predictive {
        fabric.scaling.predictive = matches!(p, OnOff::On);
    }
    let trace = Trace::read(&args.trace).map_err(|e| e.to_string())?;
    let service = match (&args.service_model, args.replica_rps) {
        (Some(path), _) => ServiceModel::read(path).map_err(|e| e.to_string())?,
        (None, Some(rps)) => ServiceModel::flat(rps).map_err(|e| e.to_string())?,
        (None, None) => return Err("give --service-model FILE or --replica-rps N".into()),
    };
    if !(0.0..=1.0).contains(&args.slo_target) {
        return Err(format!(
            "--slo-target {} is not a share from 0 to 1",
            args.slo_target
        ));
    }
    if !(args.spot_reclaims_per_hour.is_finite() && args.spot_reclaims_per_hour >= 0.0) {
        return Err(format!(
            "--spot-reclaims-per-hour {} is not a rate ≥ 0",
            args.spot_reclaims_per_hour
        ));
    }
    let start = humantime::parse_rfc3339(&args.start)
        .map_err(|_| {
            format!(
                "--start {:?} is not an RFC 3339 time, e.g. 2024-01-01T00:00:00Z",
                args.start
            )
        })?
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(DEFAULT_START_WALL);
    let slo = args
        .slo_ms
        .map_or(fabric.request_timeout, Duration::from_millis);
    let scenario = Scenario {
        fabric,
        service,
        cold_start: cold_starts(&args.cold_start)?,
        reclaims_per_hour: args.spot_reclaims_per_hour,
        seed: args.seed,
        slo,
        start_wall: start,
    };
    if args.sweep {
        let report = gpucap_fabric::simulate::sweep(&scenario, &trace, args.slo_target);
        return Ok(match args.format {
            Format::Json => serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?,
            Format::Text => report.to_string(),
        });
    }
    let mut recorder = args
        .record_decisions
        .as_deref()
        .map(Recorder::create)
        .transpose()
        .map_err(|e| e.to_string())?;
    let comparison = gpucap_fabric::simulate::compare(
        &scenario,
        &trace,
        CompareOptions {
            slo_target: args.slo_target,
            on_demand_price: args.on_demand_price,
            compare_predictive: args.compare_predictive,
        },
        recorder.as_mut(),
    );
    if let Some(path) = &args.plot {
        let title = format!(
            "{} — {} (policy {})",
            comparison.endpoint,
            args.trace.display(),
            comparison.policy.as_deref().unwrap_or("none")
        );
        // The first row is the fabric run the timeline comes from; its pools are in placement
        // order.
        let pools: Vec<String> = comparison
            .rows
            .first()
            .map(|r| r.pools.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default();
        gpucap_fabric::simulate::plot::draw(path, &title, &pools, &comparison.timeline)
            .map_err(|e| e.to_string())?;
    }
    match args.format {
        Format::Json => serde_json::to_string_pretty(&comparison).map_err(|e| e.to_string()),
        Format::Text => Ok(comparison.to_string()),
    }
}
