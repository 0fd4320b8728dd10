//! The `gpucap-runtime` command line: `serve`, `bench`, `forward-bench` and `inspect`.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gpucap_runtime::config::{LogFormat, RuntimeConfig};
use gpucap_runtime::model::ModelFile;

/// gpucap's inference runtime: serves a model over the Open Inference Protocol v2 with dynamic batching.
#[derive(Parser)]
#[command(name = "gpucap-runtime", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a model.
    Serve(Box<ServeArgs>),
    /// Load-test an Open Inference Protocol v2 endpoint and report throughput and latency.
    Bench(BenchArgs),
    /// Time the raw forward pass per device and batch size (and cuBLAS alone on a GPU), and
    /// measure what FP16/BF16 weights cost in accuracy.
    ForwardBench(ForwardBenchArgs),
    /// Validate a model file and print its layers.
    Inspect {
        /// The `.safetensors` model file.
        model: PathBuf,
    },
}

#[derive(Args)]
struct ForwardBenchArgs {
    /// The model file: `.safetensors` in gpucap's format, or `.onnx`.
    #[arg(long)]
    model: PathBuf,
    /// ONNX Runtime's library for .onnx models [default: ORT_DYLIB_PATH, beside the binary, or
    /// the project's .venv].
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
    /// Devices to compare, in order: cpu and/or cuda:N.
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    devices: Vec<String>,
    /// Weight precisions to time on CUDA devices: fp32, fp16, bf16.
    #[arg(long, value_delimiter = ',', default_value = "fp32")]
    precisions: Vec<String>,
    /// Batch sizes in rows.
    #[arg(long, value_delimiter = ',', default_value = "1,64,1024")]
    batches: Vec<usize>,
    /// Timed passes per point (after one warm-up pass); the median is reported.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// CPU threads; 0 = every core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the first device's rows per second by batch size here, as the service model
    /// `gpucap-fabric simulate --service-model` reads.
    #[arg(long)]
    service_model: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Model name.
    #[arg(long)]
    model: String,
    /// Concurrent clients.
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: usize,
    /// How long to run, e.g. 10s or 1m (ignored with --requests).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Stop after this many requests in total.
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Rows per request.
    #[arg(long, default_value_t = 1)]
    rows: usize,
    /// Client timeout per request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Seed for the random inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// API key sent as `Authorization: Bearer KEY`; set it in the environment, not on the
    /// command line, where other users' `ps` can read it.
    #[arg(long, env = "GPUCAP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Flags override the config file, which overrides the defaults.
#[derive(Args)]
struct ServeArgs {
    /// A TOML config file (see docs/guides/runtime-serve.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The model file: `.safetensors` in gpucap's format, or `.onnx`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The model's name in URLs [default: the file name without extension].
    #[arg(long)]
    name: Option<String>,
    /// The model version reported [default: 1].
    #[arg(long)]
    model_version: Option<String>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8000].
    #[arg(long)]
    listen: Option<String>,
    /// Write the bound address here once listening.
    #[arg(long)]
    address_file: Option<PathBuf>,
    /// auto, cpu, cuda:N or cuda:0,cuda:1 [default: auto].
    #[arg(long)]
    device: Option<String>,
    /// CPU threads; 0 = every core [default: 0].
    #[arg(long)]
    threads: Option<usize>,
    /// CUDA weight precision: fp32, fp16 or bf16; products accumulate in FP32 [default: fp32].
    #[arg(long)]
    precision: Option<String>,
    /// ONNX Runtime's library for .onnx models [default: ORT_DYLIB_PATH, beside the binary, or
    /// the project's .venv].
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
    /// Rows per batch at most [default: 64].
    #[arg(long)]
    max_batch_size: Option<usize>,
    /// The longest, in microseconds, a request is held for a batch to fill; an idle backend
    /// starts at once when more requests are unlikely to come soon enough [default: 2000].
    #[arg(long)]
    max_queue_delay_us: Option<u64>,
    /// Requests that may wait; more get 429 [default: 256].
    #[arg(long)]
    queue_capacity: Option<usize>,
    /// Milliseconds before a request gets 504 [default: 10000].
    #[arg(long)]
    request_timeout_ms: Option<u64>,
    /// Largest request body in bytes [default: 67108864].
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Log format [default: human].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. info or debug [default: info].
    #[arg(long)]
    log_level: Option<String>,
    /// Join a router instead of listening: dial this join URL (the fabric daemon's
    /// `https://HOST:PORT/v1/join/ENDPOINT`), take the model and batching from the router and
    /// answer its requests over the connection this replica opened (no inbound port).
    #[arg(long, env = "GPUCAP_JOIN_URL", requires_all = ["token_file", "pool", "machine"], conflicts_with_all = ["model", "listen"])]
    join: Option<String>,
    /// With --join: a file holding the pool's join token.
    #[arg(long, env = "GPUCAP_JOIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// With --join: the pool this machine belongs to.
    #[arg(long, env = "GPUCAP_JOIN_POOL")]
    pool: Option<String>,
    /// With --join: this machine's id in its pool (an EC2 instance id, a cluster node).
    #[arg(long, env = "GPUCAP_JOIN_MACHINE")]
    machine: Option<String>,
    /// With --join: PEM certificate(s) of the router's listener or of the CA that signed it.
    #[arg(long, env = "GPUCAP_JOIN_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// With --join: a PEM client certificate (chain) to present, for a daemon that requires
    /// client certificates (its `client_ca_file`).
    #[arg(long, env = "GPUCAP_JOIN_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// With --join: the PEM private key of --client-cert.
    #[arg(long, env = "GPUCAP_JOIN_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// With --join: where fetched models are kept, by SHA-256.
    #[arg(
        long,
        env = "GPUCAP_JOIN_CACHE_DIR",
        default_value = "/var/cache/gpucap/models"
    )]
    cache_dir: PathBuf,
    /// With --join: the model on a filesystem the cluster shares; used instead of fetching it
    /// over the connection when its SHA-256 is the one the router announces.
    #[arg(long, env = "GPUCAP_JOIN_SHARED_MODEL")]
    shared_model: Option<PathBuf>,
    /// With --join: watch this instance metadata service (IMDSv2) for a spot interruption
    /// notice, e.g. http://169.254.169.254; on one the replica drains and leaves.
    #[arg(long, env = "GPUCAP_IMDS_URL")]
    imds_url: Option<String>,
}

impl ServeArgs {
    /// With `--join`: where and as whom to join.
    fn join_options(&self) -> Result<Option<cmd::join::JoinOptions>, String> {
        let Some(url) = &self.join else {
            return Ok(None);
        };
        let parse = |flag: &str, u: &str| {
            reqwest::Url::parse(u).map_err(|e| format!("{flag} {u}: not a URL: {e}"))
        };
        let token_file = self
            .token_file
            .as_deref()
            .ok_or("--join needs --token-file")?;
        Ok(Some(cmd::join::JoinOptions {
            url: parse("--join", url)?,
            token: cmd::join::read_token(token_file).map_err(|e| format!("{e:#}"))?,
            pool: self.pool.clone().ok_or("--join needs --pool")?,
            machine: self.machine.clone().ok_or("--join needs --machine")?,
            ca_cert: self.ca_cert.clone(),
            client_cert: self.client_cert.clone().zip(self.client_key.clone()),
            cache_dir: self.cache_dir.clone(),
            shared_model: self.shared_model.clone(),
            imds_url: self
                .imds_url
                .as_deref()
                .map(|u| parse("--imds-url", u))
                .transpose()?,
        }))
    }

    fn into_config(self) -> Result<RuntimeConfig, String> {
        let mut c = match &self.config {
            Some(path) => RuntimeConfig::from_file(path).map_err(|e| e.to_string())?,
            None => RuntimeConfig::default(),
        };
        fn set<T>(slot: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        set(&mut c.model.path, self.model.map(Some));
        set(&mut c.model.name, self.name.map(Some));
        set(&mut c.model.version, self.model_version);
        set(&mut c.server.listen, self.listen);
        set(&mut c.server.address_file, self.address_file.map(Some));
        set(&mut c.server.max_body_bytes, self.max_body_bytes);
        set(&mut c.compute.device, self.device);
        set(&mut c.compute.threads, self.threads);
        set(&mut c.compute.precision, self.precision);
        set(&mut c.compute.onnxruntime, self.onnxruntime.map(Some));
        set(&mut c.batching.max_batch_size, self.max_batch_size);
        set(&mut c.batching.max_queue_delay_us, self.max_queue_delay_us);
        set(&mut c.batching.queue_capacity, self.queue_capacity);
        set(&mut c.batching.request_timeout_ms, self.request_timeout_ms);
        set(&mut c.log.format, self.log_format);
        set(&mut c.log.level, self.log_level);
        Ok(c)
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Bench(args) => bench(args),
        Command::ForwardBench(args) => forward_bench(args),
        Command::Inspect { model } => inspect(&model),
    }
}

fn forward_bench(args: ForwardBenchArgs) -> ExitCode {
    let run = || -> Result<gpucap_runtime::forward_bench::ForwardReport, String> {
        let precisions = args
            .precisions
            .iter()
            .map(|p| p.parse())
            .collect::<Result<Vec<_>, _>>()?;
        if args.batches.contains(&0) || args.iterations == 0 {
            return Err("--batches and --iterations must be at least 1".into());
        }
        let options = gpucap_runtime::forward_bench::ForwardOptions {
            devices: args.devices.clone(),
            precisions,
            batches: args.batches.clone(),
            iterations: args.iterations,
            threads: args.threads,
        };
        let in_file = |e: String| format!("model {}: {e}", args.model.display());
        let report = if gpucap_runtime::model::is_onnx(&args.model) {
            let bytes = std::fs::read(&args.model).map_err(|e| in_file(e.to_string()))?;
            let graph =
                gpucap_runtime::onnx::read_graph(&bytes).map_err(|e| in_file(e.to_string()))?;
            let runtime = gpucap_runtime::onnx::load(args.onnxruntime.as_deref())
                .map_err(|e| e.to_string())?;
            gpucap_runtime::forward_bench::run_onnx(
                runtime,
                &bytes,
                std::sync::Arc::new(graph),
                &options,
            )
        } else {
            let model = gpucap_runtime::model::load_model(&args.model)
                .map_err(|e| in_file(e.to_string()))?;
            gpucap_runtime::forward_bench::run(std::sync::Arc::new(model), &options)
        }
        .map_err(|e| e.to_string())?;
        if let Some(path) = &args.service_model {
            let source = format!("forward-bench of {}", args.model.display());
            let file = report
                .service_model(source)
                .ok_or("no point was measured, so there is no service model to write")?;
            let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
            std::fs::write(path, text)
                .map_err(|e| format!("--service-model {}: {e}", path.display()))?;
        }
        Ok(report)
    };
    print_report(run().map_err(anyhow::Error::msg), args.json)
}

fn bench(args: BenchArgs) -> ExitCode {
    let opts = cmd::bench::BenchOptions {
        url: args.url,
        model: args.model,
        concurrency: args.concurrency,
        duration: args.duration,
        requests: args.requests,
        rows: args.rows,
        timeout: args.timeout,
        seed: args.seed,
        api_key: args.api_key,
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(cmd::bench::run(opts)));
    print_report(result, args.json)
}

/// Prints a benchmark report as text or JSON, or the error that stopped it.
fn print_report<R: serde::Serialize + std::fmt::Display>(
    result: anyhow::Result<R>,
    json: bool,
) -> ExitCode {
    match result {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let join = match args.join_options() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log.format, &config.log.level);
    if let Some(join) = join {
        return run_async(cmd::join::join(join, config));
    }
    let valid = match config.validate() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: invalid setting {e}");
            return ExitCode::from(2);
        }
    };
    run_async(cmd::serve::serve(
        valid,
        gpucap_runtime::shutdown::termination_signal(),
    ))
}

/// Runs a server to completion on a multi-threaded async runtime.
fn run_async(server: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn inspect(model: &std::path::Path) -> ExitCode {
    let read = std::fs::read(model)
        .map_err(|e| e.to_string())
        .and_then(|bytes| gpucap_runtime::model::read_model_file(model, &bytes));
    match read {
        Ok(ModelFile::Native(m)) => {
            println!(
                "{}: {} [-1, {}] -> {} [-1, {}], {} parameters",
                model.display(),
                m.input_name,
                m.input_width(),
                m.output_name,
                m.output_width(),
                m.parameter_count()
            );
            for l in &m.layers {
                println!(
                    "  {} [{} x {}] {}",
                    l.name, l.in_features, l.out_features, l.activation
                );
            }
            ExitCode::SUCCESS
        }
        Ok(ModelFile::Onnx(graph)) => {
            print!("{}", describe_onnx(model, &graph));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", model.display());
            ExitCode::from(2)
        }
    }
}

fn describe_onnx(path: &std::path::Path, graph: &gpucap_runtime::onnx::OnnxGraph) -> String {
    let opsets: Vec<String> = graph
        .opsets
        .iter()
        .map(|(domain, version)| format!("{domain} {version}"))
        .collect();
    let mut out = format!(
        "{}: ONNX, IR version {}, opsets {}{}\n",
        path.display(),
        graph.ir_version,
        opsets.join(", "),
        graph
            .producer
            .as_ref()
            .map(|p| format!(", produced by {p}"))
            .unwrap_or_default()
    );
    if let Some(d) = &graph.description {
        out += &format!("  {d}\n");
    }
    for t in &graph.inputs {
        out += &format!("  input  {t}\n");
    }
    for t in &graph.outputs {
        out += &format!("  output {t}\n");
    }
    out += &format!("  {}\n", graph.batching_summary());
    out
}
