//! The fabric daemons the provider sends endpoints to: the provider block's `fabric` blocks (or
//! one daemon from the environment), each serving one region. An endpoint goes to the daemon of
//! its router's region, so an EU endpoint's router runs on the EU gateway; with none configured,
//! the provider runs a daemon on this host (the embedded mode, [`crate::embedded`]).

use std::path::PathBuf;

use gpucap_fabric::client::Client;
use serde::Deserialize;

use crate::diag::{Diagnostic, Diagnostics};
use crate::models::Attr;
use crate::schema::{Block, Mode};
use crate::value::Type;

/// One `fabric` block as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FabricBlock {
    region: Attr<String>,
    address: Attr<String>,
    token: Attr<String>,
    ca_cert_file: Attr<String>,
}

/// A daemon endpoints are sent to.
#[derive(Debug, Clone, PartialEq)]
pub struct FabricTarget {
    /// The region it serves; `None` serves every region no other daemon serves.
    pub region: Option<String>,
    /// Its admin API, e.g. `https://gw-eu.example.com:7443`.
    pub address: String,
    /// The bearer token.
    pub token: String,
    /// The CA of its certificate; the system's roots when unset.
    pub ca_cert_file: Option<PathBuf>,
}

impl FabricTarget {
    /// A client of this daemon.
    pub fn client(&self) -> Result<Client, Diagnostic> {
        Client::new(&self.address, &self.token, self.ca_cert_file.as_deref())
            .map_err(|e| Diagnostic::error("Cannot set up the fabric client", e.to_string()))
    }
}

/// The `fabric` block's schema.
pub fn block() -> Block {
    Block::new(
        "A `gpucap-fabric daemon` that hosts the routers of endpoints in its region (see the \
         fabric-daemon guide). Give one per region; an endpoint goes to the daemon of its \
         `router_region`. Without any (and without `GPUCAP_FABRIC_ADDRESS`), routers run on the \
         host Terraform runs on.",
    )
    .attr(
        "region",
        Type::String,
        Mode::Optional,
        "The region whose endpoints this daemon hosts; required when several `fabric` blocks \
         are given. Default: `GPUCAP_FABRIC_REGION`, else every region.",
    )
    .attr(
        "address",
        Type::String,
        Mode::Required,
        "The daemon's admin API, e.g. `https://gw-eu.example.com:7443` (`http://` only on \
         loopback).",
    )
    .attr(
        "token",
        Type::String,
        Mode::Optional,
        "The daemon's bearer token. Default: `GPUCAP_FABRIC_TOKEN`.",
    )
    .sensitive("token")
    .attr(
        "ca_cert_file",
        Type::String,
        Mode::Optional,
        "The CA that signed the daemon's certificate (PEM). Default: `GPUCAP_FABRIC_CA_CERT`, \
         else the system's roots.",
    )
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether `host` (a name, an IP address, or an IPv6 address in brackets) is this machine only:
/// `localhost` or a loopback address.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks an admin API address: HTTPS, or HTTP to this host only.
fn check_address(address: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(address).map_err(|e| {
        format!("{address:?} is not a URL ({e}); e.g. \"https://gw.example.com:7443\"")
    })?;
    let loopback = is_loopback(url.host_str().unwrap_or_default());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "{address:?} is plain HTTP to another host; the token would cross the network in the clear: use https://"
        )),
        other => Err(format!("{address:?}: scheme {other:?} is not https")),
    }
}

/// The daemons of the provider block's `fabric` blocks, or of `GPUCAP_FABRIC_ADDRESS` when
/// there are none.
pub fn configure(blocks: Vec<FabricBlock>) -> Result<Vec<FabricTarget>, Diagnostics> {
    let mut d = Diagnostics::default();
    let mut out: Vec<FabricTarget> = Vec::new();
    let from_env = blocks.is_empty();
    let blocks = if from_env {
        match env("GPUCAP_FABRIC_ADDRESS") {
            Some(address) => vec![FabricBlock {
                address: Attr::Known(address),
                ..FabricBlock::default()
            }],
            None => return Ok(Vec::new()),
        }
    } else {
        blocks
    };
    let several = blocks.len() > 1;
    for (i, b) in blocks.into_iter().enumerate() {
        let key = |k: &str| {
            if from_env {
                format!("GPUCAP_FABRIC_{}", k.to_ascii_uppercase())
            } else {
                format!("fabric[{i}].{k}")
            }
        };
        let address = b.address.into_known().unwrap_or_default();
        if let Err(e) = check_address(&address) {
            d.push(Diagnostic::attr_error(
                &key("address"),
                "Invalid fabric address",
                e,
            ));
            continue;
        }
        let Some(token) = b.token.into_known().or_else(|| env("GPUCAP_FABRIC_TOKEN")) else {
            d.push(Diagnostic::attr_error(
                &key("token"),
                "No fabric token",
                format!("the daemon at {address} needs its bearer token: set token or GPUCAP_FABRIC_TOKEN"),
            ));
            continue;
        };
        let region = b
            .region
            .into_known()
            .or_else(|| env("GPUCAP_FABRIC_REGION"));
        if several && region.is_none() {
            d.push(Diagnostic::attr_error(
                &key("region"),
                "Fabric region required",
                "with several fabric blocks, each names the region whose endpoints it hosts",
            ));
            continue;
        }
        if let Some(r) = &region
            && out.iter().any(|t| t.region.as_ref() == Some(r))
        {
            d.push(Diagnostic::attr_error(
                &key("region"),
                "Two fabric daemons for one region",
                format!("region {r:?} is already served by an earlier fabric block"),
            ));
            continue;
        }
        let ca_cert_file = b
            .ca_cert_file
            .into_known()
            .or_else(|| env("GPUCAP_FABRIC_CA_CERT"))
            .map(PathBuf::from);
        out.push(FabricTarget {
            region,
            address,
            token,
            ca_cert_file,
        });
    }
    if d.has_errors() { Err(d) } else { Ok(out) }
}

/// The daemon that hosts routers of `region`: `Ok(None)` in the embedded mode (no daemons); an
/// error naming the region when daemons are configured but none serves it.
pub fn for_region<'a>(
    targets: &'a [FabricTarget],
    region: &str,
) -> Result<Option<&'a FabricTarget>, String> {
    if targets.is_empty() {
        return Ok(None);
    }
    targets
        .iter()
        .find(|t| t.region.as_deref() == Some(region))
        .or_else(|| targets.iter().find(|t| t.region.is_none()))
        .map(Some)
        .ok_or_else(|| {
            let served: Vec<&str> = targets.iter().filter_map(|t| t.region.as_deref()).collect();
            format!(
                "the endpoint's router runs in region {region:?}, and no fabric block serves it (they serve: {}); add a fabric block with region = {region:?}",
                served.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(region: Option<&str>, address: &str) -> FabricBlock {
        FabricBlock {
            region: region.map_or(Attr::Null, |r| Attr::Known(r.into())),
            address: Attr::Known(address.into()),
            token: Attr::Known("t".into()),
            ca_cert_file: Attr::Null,
        }
    }

    #[test]
    fn each_region_goes_to_its_daemon_and_a_missing_one_is_named() {
        let targets = configure(vec![
            block(Some("eu-central-1"), "https://eu.example:7443"),
            block(Some("us-east-1"), "https://us.example:7443"),
        ])
        .unwrap();
        let eu = for_region(&targets, "eu-central-1").unwrap().unwrap();
        assert_eq!(eu.address, "https://eu.example:7443");
        let err = for_region(&targets, "ap-south-1").unwrap_err();
        assert!(
            err.contains("no fabric block serves it (they serve: eu-central-1, us-east-1)"),
            "{err}"
        );
        assert_eq!(for_region(&[], "anywhere").unwrap(), None);
        let one = configure(vec![block(None, "https://gw.example")]).unwrap();
        assert!(for_region(&one, "anywhere").unwrap().is_some());
    }

    #[test]
    fn bad_fabric_blocks_are_named() {
        let detail = |blocks: Vec<FabricBlock>| format!("{:?}", configure(blocks).unwrap_err());
        assert!(
            detail(vec![block(None, "http://10.0.0.1:7443")])
                .contains("plain HTTP to another host")
        );
        assert!(detail(vec![block(None, "gw:7443")]).contains("is not https"));
        assert!(
            detail(vec![
                block(Some("a"), "https://x"),
                block(None, "https://y")
            ])
            .contains("each names the region")
        );
        assert!(
            detail(vec![
                block(Some("a"), "https://x"),
                block(Some("a"), "https://y")
            ])
            .contains("already served")
        );
        assert!(configure(vec![block(None, "http://127.0.0.1:7443")]).is_ok());
    }
}
