//! The `gpucap-runtime` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// gpucap's inference runtime.
#[derive(Parser)]
#[command(name = "gpucap-runtime", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a model file and print its layers.
    Inspect {
        /// The `.safetensors` model file.
        model: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect { model } => match gpucap_runtime::model::load_model(&model) {
            Ok(m) => {
                println!(
                    "{}: {} -> {} ({} parameters)",
                    model.display(),
                    m.input_name,
                    m.output_name,
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
            Err(e) => {
                eprintln!("error: {}: {e}", model.display());
                ExitCode::from(2)
            }
        },
    }
}
