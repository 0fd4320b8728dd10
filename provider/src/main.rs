//! `terraform-provider-gpucap`: started by Terraform (go-plugin handshake over a unix socket with
//! AutoMTLS), or by a developer with `--debug`.

use std::process::ExitCode;
use std::sync::Arc;

use gpucap_provider::provider::Provider;
use gpucap_provider::wire::handshake;
use gpucap_provider::wire::serve::{self, Mode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let debug = match args.as_slice() {
        [] => false,
        [flag] if flag == "--debug" => true,
        [flag] if flag == "--version" || flag == "-v" => {
            println!("terraform-provider-gpucap {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!(
                "usage: terraform-provider-gpucap [--debug | --version]\n\n{}",
                handshake::HandshakeError::NotStartedByTerraform
            );
            return ExitCode::from(2);
        }
    };
    let mode = if debug {
        Mode::Debug
    } else {
        let cookie = std::env::var(handshake::MAGIC_COOKIE_KEY).ok();
        let versions = std::env::var("PLUGIN_PROTOCOL_VERSIONS").ok();
        if let Err(e) = handshake::check_environment(cookie.as_deref(), versions.as_deref()) {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
        match std::env::var("PLUGIN_CLIENT_CERT") {
            Ok(pem) if !pem.trim().is_empty() => Mode::Plugin {
                client_cert_pem: pem,
            },
            _ => {
                eprintln!(
                    "PLUGIN_CLIENT_CERT is not set: this provider only serves over mutual TLS with the client \
                     certificate Terraform provides (Terraform 0.12 and newer always does)"
                );
                return ExitCode::from(1);
            }
        }
    };
    gpucap_provider::logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve::run(Arc::new(Provider::new()), mode));
    // Background tasks (signal watchers, pending stdio streams) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terraform-provider-gpucap: {e:#}");
            ExitCode::FAILURE
        }
    }
}
