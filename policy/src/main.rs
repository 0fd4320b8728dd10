//! `gpucap-policy`: the policy engine for reviews. `check` evaluates the rules over
//! `terraform show -json` output and gives the findings `terraform plan` gives; `test` runs rule
//! tests; `eval` evaluates one expression; `validate` checks rule files; `fmt` formats them.
//! Exit codes: 0 pass (advisories allowed), 1 violations or failed tests, 2 usage or rule errors.

use std::io::{BufWriter, IsTerminal, Write};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value as Json;

use gpucap_policy::engine::{Evaluator, Options, Placement, Subject};
use gpucap_policy::expr;
use gpucap_policy::gpucap::scope_for;
use gpucap_policy::report::Review;
use gpucap_policy::rules::{self, PolicySet};
use gpucap_policy::schema::Schemas;
use gpucap_policy::source::{Problem, SourceFile};
use gpucap_policy::{fmt, plan_json, testing};

// Reading a plan and evaluating rules allocate many small objects, on several threads at once;
// mimalloc's thread-local free lists make that markedly cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gpucap-policy",
    version,
    about = "Compliance and cost rules for gpucap: review Terraform plans, test and write rules",
    after_help = "Exit status: 0 pass (advisories allowed), 1 violations or failed tests, 2 usage or rule errors."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate the rules over a plan (`terraform show -json PLANFILE > plan.json`).
    Check(CheckArgs),
    /// Run the rule tests in DIR/tests/*.hcl against the rules in DIR.
    Test {
        /// Policy directories.
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
    /// Evaluate one CEL expression and print its value as JSON.
    Eval {
        /// The expression.
        expression: String,
        /// The resource (JSON file).
        #[arg(long, value_name = "FILE")]
        resource: PathBuf,
        /// Its type.
        #[arg(long = "type", default_value = "gpucap_inference_endpoint")]
        type_name: String,
        /// Its pools (JSON list).
        #[arg(long, value_name = "FILE")]
        pools: Option<PathBuf>,
        /// Its burst policy (JSON object).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Its prior state (JSON object).
        #[arg(long, value_name = "FILE")]
        prior: Option<PathBuf>,
        /// The action.
        #[arg(long, default_value = "create")]
        action: String,
        /// `now` (RFC 3339).
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
    },
    /// Check rule files without evaluating them.
    Validate {
        /// Policy directories or files.
        #[arg(required = true, value_name = "DIR")]
        paths: Vec<PathBuf>,
    },
    /// Format rule files in the canonical style.
    Fmt {
        /// Policy directories or files.
        #[arg(required = true, value_name = "DIR")]
        paths: Vec<PathBuf>,
        /// Write nothing; exit 1 and list the files that are not formatted.
        #[arg(long)]
        check: bool,
    },
}

/// `check`'s arguments.
#[derive(clap::Args)]
struct CheckArgs {
    /// The plan as JSON.
    #[arg(long, value_name = "FILE")]
    plan: PathBuf,
    /// Directories of rule files (`*.hcl`); repeat or list several.
    #[arg(long = "policies", value_name = "DIR", num_args = 1.., required = true)]
    policies: Vec<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the report here instead of standard output.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Soft rules to override for this run (also GPUCAP_POLICY_OVERRIDE, comma-separated).
    #[arg(long = "override", value_name = "RULE")]
    overrides: Vec<String>,
    /// More resource schemas (`terraform providers schema -json`), for rules on other providers' resources.
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Evaluate as of this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
    /// Threads for reading the plan, evaluating and writing the report (default: every core).
    /// The report is the same whatever the number.
    #[arg(long, value_name = "N")]
    jobs: Option<std::num::NonZeroUsize>,
    /// Print how long each phase took on standard error (read the plan file, index its
    /// changes, read and evaluate each resource, write the report), with the memory in use
    /// after it where the system tells it.
    #[arg(long)]
    timings: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Sarif,
    Junit,
}

/// A command's failure: the exit code and what to print.
struct Failure(u8, String);

impl From<Vec<Problem>> for Failure {
    fn from(problems: Vec<Problem>) -> Failure {
        Failure(2, render(&problems))
    }
}

fn render(problems: &[Problem]) -> String {
    problems.iter().map(|p| p.to_string() + "\n").collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check(&args),
        Command::Test { dirs } => test(&dirs),
        Command::Eval {
            expression,
            resource,
            type_name,
            pools,
            policy,
            prior,
            action,
            now,
        } => eval(
            &expression,
            &resource,
            &type_name,
            pools.as_deref(),
            policy.as_deref(),
            prior.as_deref(),
            &action,
            now.as_deref(),
        ),
        Command::Validate { paths } => validate(&paths),
        Command::Fmt { paths, check } => format_files(&paths, check),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, message)) => {
            eprint!("{message}");
            if !message.ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(code)
        }
    }
}

fn usage(message: String) -> Failure {
    Failure(2, format!("error: {message}"))
}

fn parse_now(now: Option<&str>) -> Result<DateTime<Utc>, Failure> {
    match now {
        None => Ok(Utc::now()),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| {
                usage(format!(
                    "--now {t:?} is not an RFC 3339 time ({e}); e.g. 2026-11-23T12:00:00Z"
                ))
            }),
    }
}

fn load_policies(paths: &[PathBuf], schemas: &Schemas) -> Result<PolicySet, Failure> {
    let set = rules::load(paths, schemas)?;
    eprint!("{}", render(&set.warnings));
    Ok(set)
}

fn check(args: &CheckArgs) -> Result<u8, Failure> {
    let mut timings = Timings::new(args.timings);
    let threads = args
        .jobs
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, std::num::NonZeroUsize::get);
    let mut schemas = Schemas::gpucap().clone();
    if let Some(path) = &args.schema {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        schemas.extend(
            Schemas::from_providers_json(&text)
                .map_err(|e| usage(format!("{}: {e}", path.display())))?,
        );
    }
    let set = load_policies(&args.policies, &schemas)?;
    let mut options = Options::from_env(args.overrides.clone());
    options.now = parse_now(args.now.as_deref())?;
    eprint!("{}", render(&set.check_overrides(&options.overrides)));
    timings.phase("load rules");
    let plan = &args.plan;
    let text = gpucap_policy::parallel::read_file(plan, threads)
        .map_err(|e| usage(format!("cannot read plan {}: {e}", plan.display())))?;
    timings.phase("read plan");
    let evaluator = Evaluator::new(set);
    let file = plan.display().to_string();
    let wanted = |t: &str| t.starts_with("gpucap_") || evaluator.policies().applies_to(t);
    let plan = plan_json::read(&text, &file, &schemas, &wanted, threads)
        .map_err(|e| usage(e.to_string()))?;
    timings.phase("index plan");
    let (subjects, findings) = plan
        .review(&evaluator, &options, threads)
        .map_err(|e| usage(e.to_string()))?;
    timings.phase("evaluate");
    let review = Review {
        policies: evaluator.policies(),
        subjects: &subjects,
        findings: &findings,
        threads,
    };
    let format = args.format;
    let colour = args.output.is_none()
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    let write = |out: &mut dyn Write| match format {
        Format::Text => review.write_text(out, colour),
        Format::Json => review.write_json(out),
        Format::Sarif => review.write_sarif(out),
        Format::Junit => review.write_junit(out),
    };
    match &args.output {
        Some(path) => std::fs::File::create(path)
            .map(BufWriter::new)
            .and_then(|mut file| {
                write(&mut file)?;
                file.flush()
            })
            .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?,
        None => {
            // Buffered: standard output flushes every line, and a report can have millions.
            let mut stdout = BufWriter::new(std::io::stdout().lock());
            write(&mut stdout)
                .and_then(|()| stdout.flush())
                .map_err(|e| usage(format!("cannot write the report: {e}")))?
        }
    }
    timings.phase("write report");
    timings.report(subjects.len(), findings.iter().map(Vec::len).sum(), threads);
    Ok(if findings.iter().flatten().any(|f| f.fails()) {
        1
    } else {
        0
    })
}

/// How long each phase of `check` took, printed on standard error with `--timings`.
struct Timings {
    enabled: bool,
    started: Instant,
    last: Instant,
    phases: Vec<(&'static str, Duration, Option<u64>)>,
}

impl Timings {
    fn new(enabled: bool) -> Timings {
        let now = Instant::now();
        Timings {
            enabled,
            started: now,
            last: now,
            phases: Vec::new(),
        }
    }

    /// Ends the phase called `name`.
    fn phase(&mut self, name: &'static str) {
        let now = Instant::now();
        let rss = self.enabled.then(resident_kib).flatten();
        self.phases.push((name, now - self.last, rss));
        self.last = now;
    }

    fn report(&self, subjects: usize, findings: usize, threads: usize) {
        if !self.enabled {
            return;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        eprintln!("timings ({subjects} resources, {findings} findings, {threads} threads):");
        for (name, took, rss) in &self.phases {
            match rss {
                Some(kib) => eprintln!(
                    "  {name:<13}{:>10.1} ms {:>8.1} MiB resident",
                    ms(*took),
                    *kib as f64 / 1024.0
                ),
                None => eprintln!("  {name:<13}{:>10.1} ms", ms(*took)),
            }
        }
        eprintln!("  {:<13}{:>10.1} ms", "total", ms(self.started.elapsed()));
    }
}

/// The process's resident memory in KiB, where the system tells it (Linux's `/proc`).
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn test(dirs: &[PathBuf]) -> Result<u8, Failure> {
    let schemas = Schemas::gpucap();
    let (mut passed, mut failed) = (0, 0);
    for dir in dirs {
        let set = load_policies(std::slice::from_ref(dir), schemas)?;
        let cases = testing::load_cases(dir, schemas)?;
        if cases.is_empty() {
            return Err(usage(format!(
                "no test cases in {}/tests/*.hcl",
                dir.display()
            )));
        }
        for outcome in testing::run(&Evaluator::new(set), cases) {
            match &outcome.failure {
                None => {
                    passed += 1;
                    println!("ok    {} ({})", outcome.case.name, outcome.case.rule);
                }
                Some(why) => {
                    failed += 1;
                    println!(
                        "FAIL  {} ({}) at {}: {why}",
                        outcome.case.name,
                        outcome.case.rule,
                        outcome.case.location.short()
                    );
                }
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    Ok(if failed > 0 { 1 } else { 0 })
}

fn read_json(path: Option<&Path>, default: Json) -> Result<Json, Failure> {
    let Some(path) = path else { return Ok(default) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        usage(format!(
            "{}:{}:{}: invalid JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

#[allow(clippy::too_many_arguments)]
fn eval(
    expression: &str,
    resource: &Path,
    type_name: &str,
    pools: Option<&Path>,
    policy: Option<&Path>,
    prior: Option<&Path>,
    action: &str,
    now: Option<&str>,
) -> Result<u8, Failure> {
    let schemas = Schemas::gpucap();
    let resource = read_json(Some(resource), Json::Null)?;
    let pools = match read_json(pools, Json::Array(Vec::new()))? {
        Json::Array(p) => p,
        _ => {
            return Err(usage(
                "--pools must hold a JSON list of pool objects".into(),
            ));
        }
    };
    let subject = Subject::new(
        schemas,
        type_name,
        action,
        &resource,
        &read_json(prior, Json::Null)?,
        Placement::new(schemas, pools, read_json(policy, Json::Null)?),
    );
    let now = parse_now(now)?;
    let scope = scope_for(schemas, type_name);
    // The expression is shown like a one-line policy file, so its problems render as rules' do.
    let source = Arc::new(SourceFile {
        name: "<expression>".into(),
        text: expression.to_string(),
    });
    let byte = |chars: usize| {
        expression
            .char_indices()
            .nth(chars)
            .map_or(expression.len(), |(i, _)| i)
    };
    let value = expr::on_large_stack(|| {
        // A check error (the rule could not load) is exit 2; an evaluation error is exit 1.
        let compiled =
            expr::compile(expression, &scope, &expr::Limits::default()).map_err(|problems| {
                let problems: Vec<Problem> = problems
                    .into_iter()
                    .map(|p| Problem {
                        hint: p.hint,
                        ..Problem::error(
                            Some(source.location(byte(p.start), byte(p.end))),
                            p.message,
                        )
                    })
                    .collect();
                Failure::from(problems)
            })?;
        compiled
            .eval(&subject.context(now), expr::Limits::default().max_steps)
            .map(|v| expr::to_json(&v))
            .map_err(|e| Failure(1, format!("error: evaluation failed: {e}\n")))
    })
    .map_err(|e| Failure(1, format!("error: {e}\n")))??;
    println!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
    Ok(0)
}

fn validate(paths: &[PathBuf]) -> Result<u8, Failure> {
    let set = load_policies(paths, Schemas::gpucap())?;
    println!(
        "{} rules and {} waivers are valid",
        set.rules.len(),
        set.waivers.len()
    );
    Ok(0)
}

fn format_files(paths: &[PathBuf], check: bool) -> Result<u8, Failure> {
    let files = rules::policy_files(paths).map_err(|p| Failure::from(vec![p]))?;
    let mut unformatted = 0;
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        let formatted =
            fmt::format(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?;
        if formatted == text {
            continue;
        }
        unformatted += 1;
        println!("{}", path.display());
        if !check {
            std::fs::write(&path, formatted)
                .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
        }
    }
    Ok(if check && unformatted > 0 { 1 } else { 0 })
}
