//! The `gpucap-fabric` command line: `serve` an endpoint's router, print a router's `status`,
//! `simulate` a burst policy on a trace, generate a `trace`.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The router allocates a little for every request it forwards (headers, bodies, futures);
/// mimalloc's per-thread free lists take a measurable share of the router's CPU off glibc's
/// malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use cmd::simulate::{self as cli, SimulateArgs, TraceArgs};

/// gpucap's fabric: one URL per endpoint that spills load from base to burst pools, scales to
/// zero and drains back, within budget and residency.
#[derive(Parser)]
#[command(name = "gpucap-fabric", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an endpoint's router and autoscaler from a config file (SIGHUP reloads it).
    Serve {
        /// The router's TOML config (see docs/guides/fabric-config.md).
        #[arg(long)]
        config: PathBuf,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
        /// Threads serving requests; 0 = one per core.
        #[arg(long, env = "GPUCAP_FABRIC_THREADS", default_value_t = 0)]
        threads: usize,
        /// Write every control round's observation and decision to this file (JSON lines).
        #[arg(long, env = "GPUCAP_FABRIC_RECORD_DECISIONS")]
        record_decisions: Option<PathBuf>,
    },
    /// What a burst policy would cost and how well it would serve on a traffic trace, beside a
    /// static fleet sized for the peak and on-demand prices (see docs/guides/fabric-simulate.md).
    Simulate(Box<SimulateArgs>),
    /// Generate a traffic trace (CSV on stdout) of a shape, from a seed.
    Trace(TraceArgs),
    /// Print a router's pools, replicas, signals, budget and recent decisions; with --daemon,
    /// a daemon's endpoints (or the one named).
    Status {
        /// The router's operator URL (its `operator_listen`), e.g. http://127.0.0.1:9100, or,
        /// for an endpoint without auth, its URL; with --daemon, an endpoint's name (all of
        /// them when left out).
        target: Option<String>,
        /// A daemon's admin API, e.g. https://gw.example.com:7443.
        #[arg(long)]
        daemon: Option<String>,
        /// The daemon's bearer token.
        #[arg(long, env = "GPUCAP_FABRIC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The CA that signed the daemon's (or, for a router over TLS, the router's)
        /// certificate (PEM); the system's roots when left out.
        #[arg(long, env = "GPUCAP_FABRIC_CA_CERT")]
        ca_cert: Option<PathBuf>,
        /// Print the JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Run the fabric of a site as a long-running service hosting any number of endpoints,
    /// driven through its admin API (see docs/guides/fabric-daemon.md).
    Daemon {
        /// The daemon's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Generate an admin API token: print it once, keep only its SHA-256 in --hash-file.
    Token {
        /// Where the daemon reads the hash (its token_sha256_file).
        #[arg(long)]
        hash_file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // `serve` answers requests on threads of its own (cmd::workers); its runtime runs the
    // control loop and the operator listener, for which one worker is plenty.
    let (runtime_threads, serving_threads) = match &cli.command {
        Command::Serve { threads, .. } => (1, if *threads > 0 { *threads } else { cores }),
        _ => (cores, 0),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve {
            config,
            log_format,
            record_decisions,
            ..
        } => {
            init_logging(log_format);
            let result = runtime.block_on(cmd::serve::serve(
                config,
                record_decisions,
                serving_threads,
                cmd::serve::termination_signal(),
            ));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "the router stopped");
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Simulate(args) => print_or_fail(cli::simulate(&args)),
        Command::Trace(args) => print_or_fail(cli::generate(&args)),
        Command::Status {
            target,
            daemon,
            token,
            ca_cert,
            json,
        } => {
            let printed = match daemon {
                Some(address) => runtime.block_on(cmd::status::daemon(
                    &address,
                    token.as_deref().unwrap_or_default(),
                    ca_cert.as_deref(),
                    target.as_deref(),
                    json,
                )),
                None => match target {
                    Some(url) => {
                        runtime.block_on(cmd::status::router(&url, ca_cert.as_deref(), json))
                    }
                    None => Err("name a router URL, or a daemon with --daemon".into()),
                },
            };
            match printed {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Daemon { config, log_format } => {
            init_logging(log_format);
            match runtime.block_on(gpucap_fabric::daemon::run(&config)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "the daemon stopped");
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Token { hash_file } => {
            let made = gpucap_fabric::daemon::auth::new_token().and_then(|t| {
                gpucap_fabric::daemon::auth::write_token_hash(&hash_file, &t).map(|()| t)
            });
            print_or_fail(made)
        }
    }
}

/// Prints a command's output, or its error (exit 2).
fn print_or_fail(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GPUCAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
