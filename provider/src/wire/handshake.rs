//! go-plugin's handshake: the checks on the environment Terraform sets, and the one line on stdout
//! that tells Terraform where and how to connect.

/// The magic cookie Terraform sets so that a provider run by hand can tell it was not started by
/// Terraform.
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
/// The value Terraform sets it to.
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// go-plugin's own protocol version.
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// The Terraform plugin protocol this provider speaks.
pub const APP_PROTOCOL_VERSION: u32 = 5;

/// Why the provider cannot start as a plugin.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HandshakeError {
    /// Run by hand, not by Terraform.
    #[error(
        "this is a Terraform provider, not a program to run directly.\n\
         Terraform starts it when a configuration uses the gpucap/gpucap provider; to develop\n\
         against a local build, point dev_overrides in a CLI config file (TF_CLI_CONFIG_FILE) at\n\
         this binary's directory. To debug, run it with --debug and export the\n\
         TF_REATTACH_PROVIDERS value it prints."
    )]
    NotStartedByTerraform,
    /// Terraform offered no protocol version this provider speaks.
    #[error(
        "Terraform offered plugin protocol versions {offered:?}, but this provider speaks only version 5; \
         use Terraform 0.12 or newer"
    )]
    NoCommonVersion {
        /// What `PLUGIN_PROTOCOL_VERSIONS` said.
        offered: String,
    },
}

/// Checks the magic cookie and negotiates the protocol version from `PLUGIN_PROTOCOL_VERSIONS`
/// (a comma-separated list; absent means Terraform accepts whatever version the plugin speaks).
pub fn check_environment(
    cookie: Option<&str>,
    offered_versions: Option<&str>,
) -> Result<u32, HandshakeError> {
    if cookie != Some(MAGIC_COOKIE_VALUE) {
        return Err(HandshakeError::NotStartedByTerraform);
    }
    match offered_versions {
        None | Some("") => Ok(APP_PROTOCOL_VERSION),
        Some(list) => {
            let speaks = list
                .split(',')
                .any(|v| v.trim().parse::<u32>() == Ok(APP_PROTOCOL_VERSION));
            if speaks {
                Ok(APP_PROTOCOL_VERSION)
            } else {
                Err(HandshakeError::NoCommonVersion {
                    offered: list.to_string(),
                })
            }
        }
    }
}

/// The handshake line: `CORE|APP|unix|SOCKET|grpc|CERT` (CERT empty without TLS).
pub fn handshake_line(socket: &std::path::Path, cert_base64: Option<&str>) -> String {
    format!(
        "{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|unix|{}|grpc|{}",
        socket.display(),
        cert_base64.unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_version_5_only() {
        assert_eq!(
            check_environment(Some(MAGIC_COOKIE_VALUE), Some("5,6")),
            Ok(5)
        );
        assert_eq!(check_environment(Some(MAGIC_COOKIE_VALUE), None), Ok(5));
        assert_eq!(
            check_environment(Some(MAGIC_COOKIE_VALUE), Some("6")),
            Err(HandshakeError::NoCommonVersion {
                offered: "6".into()
            })
        );
        assert_eq!(
            check_environment(None, Some("5")),
            Err(HandshakeError::NotStartedByTerraform)
        );
        assert_eq!(
            check_environment(Some("wrong"), Some("5")),
            Err(HandshakeError::NotStartedByTerraform)
        );
    }

    #[test]
    fn line_has_six_fields() {
        let line = handshake_line(std::path::Path::new("/tmp/p/s.sock"), Some("QUJD"));
        assert_eq!(line, "1|5|unix|/tmp/p/s.sock|grpc|QUJD");
    }
}
