//! A client of a daemon's admin API, for the provider and `gpucap-fabric status --daemon`. A
//! daemon that cannot be reached is its own error, so that callers never take it for an
//! endpoint that is gone.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;

use crate::config::FabricConfig;
use crate::daemon::wire::{EndpointList, EndpointView, Health, KeyList, Problem};
use crate::errors::chain;
use crate::gateway::keys::KeySpec;

/// How long a `PUT` or `DELETE` may take: the daemon waits for the router to converge or drain.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a call to a daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client cannot be set up (a CA file that is not PEM, …).
    #[error("{0}")]
    Setup(String),
    /// Nothing answered at the address, or TLS failed.
    #[error("cannot reach the gpucap-fabric daemon at {address}: {detail}")]
    Unreachable {
        /// The daemon's address.
        address: String,
        /// Why, with every cause.
        detail: String,
    },
    /// The daemon answered with a problem.
    #[error("the daemon at {address} answered {}: {problem}{}", problem.status, problem.field.as_ref().map(|f| format!(" ({f})")).unwrap_or_default())]
    Problem {
        /// The daemon's address.
        address: String,
        /// What it said.
        problem: Box<Problem>,
    },
    /// What answered is not a gpucap-fabric daemon.
    #[error("{address} answered {status}, which is not a gpucap-fabric daemon's answer: {detail}")]
    NotADaemon {
        /// The address.
        address: String,
        /// The HTTP status.
        status: u16,
        /// What could not be read.
        detail: String,
    },
}

impl ClientError {
    /// Whether the daemon said it hosts no such endpoint (and not that the path is wrong: a
    /// proxy's or another server's 404 is not an endpoint that is gone).
    /// Whether the daemon answered that it hosts no such endpoint.
    pub fn is_unknown_endpoint(&self) -> bool {
        matches!(self, ClientError::Problem { problem, .. } if problem.kind == "urn:gpucap:problem:unknown-endpoint")
    }
}

/// An HTTP client for the fabric's own listeners (a daemon's admin API, a router over TLS)
/// trusting the CA in `ca_cert_file`, else the system's roots.
pub fn http_client(ca_cert_file: Option<&Path>) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    if let Some(path) = ca_cert_file {
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::Setup(format!("ca_cert_file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ClientError::Setup(format!("ca_cert_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ClientError::Setup(format!(
                "ca_cert_file {}: no PEM certificate in it",
                path.display()
            )));
        }
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|e| ClientError::Setup(chain(&e)))
}

/// A daemon's admin API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the daemon at `address` (`https://host:port`), presenting `token`, trusting
    /// the CA in `ca_cert_file` (else the system's roots).
    pub fn new(
        address: &str,
        token: &str,
        ca_cert_file: Option<&Path>,
    ) -> Result<Client, ClientError> {
        let http = http_client(ca_cert_file)?;
        Ok(Client {
            base: address.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    /// The daemon's address.
    pub fn address(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            address: self.base.clone(),
            detail: chain(e),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<Problem>(&text) {
            Ok(problem) => Err(ClientError::Problem {
                address: self.base.clone(),
                problem: Box::new(problem),
            }),
            Err(_) => Err(ClientError::NotADaemon {
                address: self.base.clone(),
                status,
                detail: text.chars().take(200).collect(),
            }),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
        let status = resp.status().as_u16();
        resp.json().await.map_err(|e| ClientError::NotADaemon {
            address: self.base.clone(),
            status,
            detail: chain(&e),
        })
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let resp = self
            .send(
                self.http
                    .get(format!("{}/v1/health", self.base))
                    .timeout(Duration::from_secs(10)),
            )
            .await?;
        self.json(resp).await
    }

    /// `GET /v1/endpoints`.
    pub async fn list(&self) -> Result<EndpointList, ClientError> {
        let resp = self
            .send(
                self.http
                    .get(format!("{}/v1/endpoints", self.base))
                    .timeout(Duration::from_secs(30)),
            )
            .await?;
        self.json(resp).await
    }

    /// `GET /v1/endpoints/NAME`; `None` when the daemon hosts no such endpoint.
    pub async fn get(&self, name: &str) -> Result<Option<EndpointView>, ClientError> {
        let req = self
            .http
            .get(format!("{}/v1/endpoints/{name}", self.base))
            .timeout(Duration::from_secs(30));
        match self.send(req).await {
            Ok(resp) => self.json(resp).await.map(Some),
            Err(e) if e.is_unknown_endpoint() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /v1/endpoints/NAME`: creates or replaces the endpoint, conditional on `if_match`
    /// (its ETag when read) when given; returns once it serves.
    pub async fn put(
        &self,
        name: &str,
        config: &FabricConfig,
        if_match: Option<&str>,
    ) -> Result<EndpointView, ClientError> {
        let mut req = self
            .http
            .put(format!("{}/v1/endpoints/{name}", self.base))
            .timeout(CHANGE_TIMEOUT)
            .json(config);
        if let Some(tag) = if_match {
            req = req.header(reqwest::header::IF_MATCH, format!("\"{tag}\""));
        }
        let resp = self.send(req).await?;
        self.json(resp).await
    }

    /// `DELETE /v1/endpoints/NAME`: drains and stops it; `false` when there was no such endpoint.
    pub async fn delete(&self, name: &str) -> Result<bool, ClientError> {
        let req = self
            .http
            .delete(format!("{}/v1/endpoints/{name}", self.base))
            .timeout(CHANGE_TIMEOUT);
        match self.send(req).await {
            Ok(resp) => Ok(resp.status() == StatusCode::NO_CONTENT || resp.status().is_success()),
            Err(e) if e.is_unknown_endpoint() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `PUT /v1/endpoints/NAME/keys/KEY`: adds or replaces an API key (its hash, limits and
    /// expiry); returns once the router uses it.
    pub async fn put_key(&self, endpoint: &str, key: &KeySpec) -> Result<(), ClientError> {
        let req = self
            .http
            .put(format!(
                "{}/v1/endpoints/{endpoint}/keys/{}",
                self.base, key.name
            ))
            .timeout(Duration::from_secs(60))
            .json(key);
        self.send(req).await.map(|_| ())
    }

    /// `DELETE /v1/endpoints/NAME/keys/KEY`: the key is refused once this returns.
    pub async fn delete_key(&self, endpoint: &str, key: &str) -> Result<(), ClientError> {
        let req = self
            .http
            .delete(format!("{}/v1/endpoints/{endpoint}/keys/{key}", self.base))
            .timeout(Duration::from_secs(60));
        self.send(req).await.map(|_| ())
    }

    /// `GET /v1/endpoints/NAME/keys`: every key's usage.
    pub async fn key_usage(&self, endpoint: &str) -> Result<KeyList, ClientError> {
        let resp = self
            .send(
                self.http
                    .get(format!("{}/v1/endpoints/{endpoint}/keys", self.base))
                    .timeout(Duration::from_secs(30)),
            )
            .await?;
        self.json(resp).await
    }
}
