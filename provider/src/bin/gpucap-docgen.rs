//! `gpucap-docgen`: writes the provider's Terraform Registry docs (`docs/index.md`,
//! `docs/resources/*.md`, `docs/data-sources/*.md`) from its schemas and the examples under
//! `examples/`, and the inputs and outputs tables of the modules' READMEs from their variables and
//! outputs, or with `--check` tells which of them are out of date without writing anything. The
//! rendering is [`gpucap_provider::docs`] and [`gpucap_provider::module_docs`].

use std::path::PathBuf;
use std::process::ExitCode;

use gpucap_provider::provider::Provider;
use gpucap_provider::{docs, module_docs};

const USAGE: &str = "\
usage: gpucap-docgen [--check] [--root DIR]

Renders the Terraform Registry docs of terraform-provider-gpucap from its schemas and the examples
under examples/ into docs/ of the repository at DIR (default: the current directory), and the
inputs and outputs tables of modules/*/README.md from each module's variables.tf and outputs.tf.

  --check     write nothing; exit 1 and list the pages that are out of date
  --root DIR  the repository root
";

struct Args {
    check: bool,
    root: PathBuf,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        check: false,
        root: PathBuf::from("."),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--check" => args.check = true,
            "--root" => {
                args.root = it
                    .next()
                    .map(PathBuf::from)
                    .ok_or("--root needs a directory")?;
            }
            "-h" | "--help" => return Ok(None),
            other => match other.strip_prefix("--root=") {
                Some(dir) => args.root = PathBuf::from(dir),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gpucap-docgen: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gpucap-docgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let root = &args.root;
    if !root.join("examples").is_dir() {
        return Err(format!(
            "{} has no examples/ directory; run from the repository root or pass --root DIR",
            root.display()
        ));
    }
    let provider = Provider::new();
    let examples = docs::read_examples(root, &provider).map_err(|e| e.to_string())?;
    let mut pages = docs::render(&provider, &examples).map_err(|e| e.to_string())?;
    pages.extend(module_docs::render(root).map_err(|e| e.to_string())?);
    let io =
        |e: std::io::Error| format!("cannot compare or write docs under {}: {e}", root.display());
    if args.check {
        let stale = docs::stale(root, &pages).map_err(io)?;
        if stale.is_empty() {
            println!("docs are up to date ({} pages)", pages.len());
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("docs are out of date:");
        for s in &stale {
            eprintln!("  {s}");
        }
        eprintln!("regenerate them with: {}", docs::REGENERATE);
        return Ok(ExitCode::FAILURE);
    }
    let changed = docs::write(root, &pages).map_err(io)?;
    for s in &changed {
        let verb = match s.why {
            docs::Staleness::Missing => "created",
            docs::Staleness::Differs { .. } => "updated",
            docs::Staleness::NotGenerated => "removed",
        };
        println!("{verb} {}", s.path.display());
    }
    println!(
        "{} pages, {} changed",
        pages.len(),
        changed
            .iter()
            .filter(|s| s.why != docs::Staleness::NotGenerated)
            .count()
    );
    Ok(ExitCode::SUCCESS)
}
