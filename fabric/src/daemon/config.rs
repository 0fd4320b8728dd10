//! The daemon's own config file: where its admin API listens, the region and jurisdiction it
//! serves, its state directory, its token's hash and its TLS settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::tls::TlsSection;

/// `daemon.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// `host:port` of the admin API.
    pub listen: String,
    /// The region this daemon serves: only endpoints whose router region it is are hosted.
    /// Unset, it hosts every region's (the embedded mode on the host Terraform runs on, where
    /// regions are labels of local pools).
    #[serde(default)]
    pub region: Option<String>,
    /// The jurisdiction of this host; derived for known cloud regions.
    #[serde(default)]
    pub jurisdiction: Option<String>,
    /// Where endpoints, replicas, the pool ledger and what routers learn are kept.
    pub state_dir: PathBuf,
    /// A file holding the SHA-256 (hex) of the bearer token.
    pub token_sha256_file: PathBuf,
    /// The `gpucap-runtime` binary replicas run; by default the one beside this binary.
    #[serde(default)]
    pub runtime_path: Option<PathBuf>,
    /// HTTPS for the admin API; required unless it listens on loopback only.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Exit after this long hosting no endpoint and answering no call (e.g. "10s"); unset, it
    /// runs until stopped. The embedded mode sets it, so nothing outlives the last endpoint.
    #[serde(default)]
    pub exit_when_idle: Option<String>,
}

/// A daemon config, checked.
#[derive(Debug, Clone)]
pub struct Checked {
    /// What the file says.
    pub config: DaemonConfig,
    /// The listen address.
    pub listen: SocketAddr,
    /// The host's jurisdiction, stated or derived; unset when it serves every region.
    pub jurisdiction: Option<String>,
    /// How long it may be idle before it exits.
    pub exit_when_idle: Option<std::time::Duration>,
}

/// Reads and checks the daemon's config file; errors name the file and the setting.
pub fn load(path: &Path) -> Result<Checked, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the daemon config {}: {e}", path.display()))?;
    let config: DaemonConfig =
        toml::from_str(&text).map_err(|e| format!("daemon config {}: {e}", path.display()))?;
    check(config).map_err(|e| format!("daemon config {}: {e}", path.display()))
}

/// Checks a daemon config.
pub fn check(config: DaemonConfig) -> Result<Checked, String> {
    let listen: SocketAddr = config.listen.parse().map_err(|_| {
        format!(
            "listen: {:?} is not an IP address and port, e.g. \"0.0.0.0:7443\"",
            config.listen
        )
    })?;
    if config.tls.is_none() && !listen.ip().is_loopback() {
        return Err(format!(
            "listen: {listen} is reachable from other hosts, so the admin API needs [tls] (cert_file and key_file); plain HTTP is allowed on loopback only"
        ));
    }
    let jurisdiction = match &config.region {
        None if config.jurisdiction.is_some() => {
            return Err(
                "jurisdiction: set region too; a daemon that serves every region has no one jurisdiction"
                    .into(),
            );
        }
        None => None,
        Some(region) => Some(jurisdiction_of(region, config.jurisdiction.as_deref())?),
    };
    let exit_when_idle = config
        .exit_when_idle
        .as_deref()
        .map(|t| {
            humantime::parse_duration(t)
                .map_err(|e| format!("exit_when_idle: {t:?} is not a duration ({e}); e.g. \"10s\""))
        })
        .transpose()?;
    if config.state_dir.as_os_str().is_empty() {
        return Err("state_dir: empty; name a directory, e.g. \"/var/lib/gpucap-fabric\"".into());
    }
    Ok(Checked {
        config,
        listen,
        jurisdiction,
        exit_when_idle,
    })
}

/// The jurisdiction of the host serving `region`: derived from the region table, or as stated
/// for a region the table does not know.
fn jurisdiction_of(region: &str, stated: Option<&str>) -> Result<String, String> {
    if region.trim().is_empty() {
        return Err(
            "region: empty; name the region this daemon serves, e.g. \"eu-central-1\"".into(),
        );
    }
    match (crate::regions::lookup(region), stated) {
        (Some(r), None) => Ok(r.jurisdiction.to_string()),
        (Some(r), Some(j)) if j == r.jurisdiction => Ok(j.to_string()),
        (Some(r), Some(j)) => Err(format!(
            "jurisdiction: region {region:?} ({}, {}) is in jurisdiction {:?}, not {j:?}; remove jurisdiction to derive it",
            r.location, r.country, r.jurisdiction
        )),
        (None, Some(j)) if !j.trim().is_empty() => Ok(j.to_string()),
        (None, _) => Err(format!(
            "jurisdiction: region {region:?} is not in the built-in region table (an on-prem site?), so its jurisdiction cannot be derived; set jurisdiction, e.g. \"EU\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Checked, String> {
        let config: DaemonConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        check(config)
    }

    const LOOPBACK: &str = "listen = \"127.0.0.1:7443\"\nregion = \"eu-central-1\"\nstate_dir = \"/s\"\ntoken_sha256_file = \"/t\"\n";

    #[test]
    fn a_known_region_gives_the_jurisdiction() {
        assert_eq!(parse(LOOPBACK).unwrap().jurisdiction.as_deref(), Some("EU"));
        let onprem = LOOPBACK.replace("eu-central-1", "onprem-fra");
        assert!(
            parse(&onprem)
                .unwrap_err()
                .starts_with("jurisdiction: region \"onprem-fra\" is not in the built-in")
        );
        let stated = format!("{onprem}jurisdiction = \"EU\"\n");
        assert_eq!(parse(&stated).unwrap().jurisdiction.as_deref(), Some("EU"));
        let anywhere = LOOPBACK.replace("region = \"eu-central-1\"\n", "");
        assert_eq!(parse(&anywhere).unwrap().jurisdiction, None);
        let idle = format!("{anywhere}exit_when_idle = \"10s\"\n");
        assert_eq!(
            parse(&idle).unwrap().exit_when_idle,
            Some(std::time::Duration::from_secs(10))
        );
        let lonely = format!("{anywhere}jurisdiction = \"EU\"\n");
        assert!(
            parse(&lonely)
                .unwrap_err()
                .starts_with("jurisdiction: set region too")
        );
        let contradicted = format!("{LOOPBACK}jurisdiction = \"US\"\n");
        assert!(
            parse(&contradicted)
                .unwrap_err()
                .contains("is in jurisdiction \"EU\", not \"US\"")
        );
    }

    #[test]
    fn plain_http_only_on_loopback_and_unknown_settings_are_named() {
        let open = LOOPBACK.replace("127.0.0.1", "0.0.0.0");
        assert!(parse(&open).unwrap_err().contains("needs [tls]"));
        let tls = format!("{open}[tls]\ncert_file = \"c\"\nkey_file = \"k\"\n");
        assert!(parse(&tls).is_ok());
        let typo = format!("{LOOPBACK}tokn = 1\n");
        assert!(parse(&typo).unwrap_err().contains("unknown field `tokn`"));
        let bad = LOOPBACK.replace("127.0.0.1:7443", "localhost");
        assert!(
            parse(&bad)
                .unwrap_err()
                .starts_with("listen: \"localhost\" is not")
        );
    }
}
