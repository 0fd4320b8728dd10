//! `gpucap-fabric status`: a router's status, or a daemon's endpoints.

use std::fmt::Write as _;
use std::path::Path;

use gpucap_fabric::client::Client;

/// A router's status at `url`, as tables or JSON; over TLS, trusting `ca_cert` when given.
pub async fn router(url: &str, ca_cert: Option<&Path>, json: bool) -> Result<String, String> {
    let http = gpucap_fabric::client::http_client(ca_cert).map_err(|e| e.to_string())?;
    let status = gpucap_fabric::deploy::fetch_status_with(&http, url)
        .await
        .map_err(|e| gpucap_fabric::errors::chain(&e))?;
    Ok(if json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        )
    } else {
        status.render()
    })
}

/// The daemon's endpoints (or the one named): a line each, or one endpoint's full status.
pub async fn daemon(
    address: &str,
    token: &str,
    ca_cert: Option<&Path>,
    name: Option<&str>,
    json: bool,
) -> Result<String, String> {
    let client = Client::new(address, token, ca_cert).map_err(|e| e.to_string())?;
    if let Some(name) = name {
        let view = client
            .get(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the daemon at {address} hosts no endpoint named {name:?}"))?;
        if json {
            return Ok(format!(
                "{}\n",
                serde_json::to_string_pretty(&view).unwrap_or_default()
            ));
        }
        let mut out = format!(
            "endpoint {} ({}), {}\n",
            view.name,
            view.state,
            view.url.as_deref().unwrap_or("no URL yet")
        );
        if let Some(e) = &view.last_error {
            let _ = writeln!(out, "last error: {e}");
        }
        match &view.status {
            Some(s) => out.push_str(&s.render()),
            None => {
                let _ = writeln!(out, "{}", view.replicas_status);
            }
        }
        return Ok(out);
    }
    let list = client.list().await.map_err(|e| e.to_string())?;
    if json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        ));
    }
    let mut out = format!(
        "{:<24} {:<11} {:>8} {:<44} REPLICAS\n",
        "ENDPOINT", "STATE", "RESTARTS", "URL"
    );
    for e in &list.endpoints {
        let _ = writeln!(
            out,
            "{:<24} {:<11} {:>8} {:<44} {}",
            e.name,
            e.state,
            e.restarts,
            e.url.as_deref().unwrap_or("-"),
            e.replicas_status
        );
    }
    Ok(out)
}
