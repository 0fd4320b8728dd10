//! `gpucap-runtime serve --join URL`: a replica on another machine dials the router, proves with
//! a pool-scoped token which pool and machine it is, fetches the model by digest (kept on disk
//! under that digest), and then answers the router's requests over the connection it opened
//! (the protocol is described in [`gpucap_runtime::join`]). It needs no inbound port, so it works
//! behind NAT or a site firewall. A lost connection is dialled again; SIGTERM drains what the
//! router sent and exits; a spot interruption notice does the same, so the router starts a
//! replacement at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::Url;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use gpucap_runtime::config::RuntimeConfig;
use gpucap_runtime::join::{JoinSpec, MACHINE_HEADER, POOL_HEADER, UPGRADE_PROTOCOL};
use gpucap_runtime::server::router;

use super::serve::{Prepared, prepare};

/// How often the router is told the connection is alive, and how long an unanswered ping may
/// wait before the connection counts as dead (a dead router is dialled again).
const KEEPALIVE: Duration = Duration::from_secs(3);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(6);
/// The longest pause between two dials.
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Where and as whom to join.
pub struct JoinOptions {
    /// The join URL (`https://daemon:7443/v1/join/ENDPOINT`; `http://` only on loopback).
    pub url: Url,
    /// The pool-scoped token.
    pub token: String,
    /// The pool claimed.
    pub pool: String,
    /// This machine's id in that pool (an instance id, a node name).
    pub machine: String,
    /// PEM certificates that may sign (or be) the router's certificate.
    pub ca_cert: Option<PathBuf>,
    /// A client certificate (chain) and its key, for a daemon that requires one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Where models are kept, by digest.
    pub cache_dir: PathBuf,
    /// The model on a filesystem the cluster shares, used instead of fetching it when it is
    /// the one the router announces.
    pub shared_model: Option<PathBuf>,
    /// The instance metadata service to watch for a spot interruption notice, if any.
    pub imds_url: Option<Url>,
}

/// Reads the token file (trimmed); it must hold something.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("--token-file {}", path.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        bail!("--token-file {} is empty", path.display());
    }
    Ok(token)
}

/// Checks the URL: `https`, or `http` to a loopback address only (a token must not cross a
/// network in clear).
pub fn check_url(url: &Url) -> anyhow::Result<()> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => bail!(
            "--join {url}: plain http is allowed only to a loopback address; use https (with --ca-cert)"
        ),
        other => bail!("--join {url}: scheme {other} is not http or https"),
    }
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Joins, serves, and joins again whenever the connection is lost, until SIGTERM or SIGINT or
/// an interruption notice; then drains and returns.
pub async fn join(options: JoinOptions, compute: RuntimeConfig) -> anyhow::Result<()> {
    check_url(&options.url)?;
    let tls = tls_connector(options.ca_cert.as_deref(), options.client_cert.as_ref())?;
    let (stop, mut shutdown) = watch::channel(false);
    let stop = Arc::new(stop);
    let signalled = stop.clone();
    tokio::spawn(async move {
        gpucap_runtime::shutdown::termination_signal().await;
        tracing::info!("shutdown requested: answering what the router sent, then exiting");
        signalled.send_replace(true);
    });
    if let Some(imds) = options.imds_url.clone() {
        tokio::spawn(watch_interruption(imds, stop.clone()));
    }
    let mut prepared: Option<(JoinSpec, Prepared)> = None;
    let mut backoff = Duration::from_secs(1);
    while !*shutdown.borrow() {
        match session(&options, &tls, &compute, &mut prepared, &mut shutdown).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "join failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    if let Some((_, p)) = prepared {
        p.finish().await?;
    }
    tracing::info!("drained; exiting");
    Ok(())
}

/// One connection: claim, fetch what is needed, turn the connection around and serve on it
/// until it closes or shutdown fires.
async fn session(
    options: &JoinOptions,
    tls: &Option<tokio_rustls::TlsConnector>,
    compute: &RuntimeConfig,
    prepared: &mut Option<(JoinSpec, Prepared)>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let io = dial(&options.url, tls).await?;
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .context("HTTP handshake with the router")?;
    let mut conn = tokio::spawn(conn.with_upgrades());

    let spec: JoinSpec = {
        let resp = match sender
            .send_request(claim(options, hyper::Method::GET, "spec")?)
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                return Err(connection_error(e, &mut conn).await).context("asking for the spec");
            }
        };
        let body = read_ok(resp, "spec").await?;
        serde_json::from_slice(&body).context("the router's spec")?
    };
    let current = prepared.as_ref().is_some_and(|(s, _)| s == &spec);
    if !current {
        let model = cached_model(options, &spec, &mut sender).await?;
        let mut config = compute.clone();
        config.model.path = Some(model);
        config.model.name = Some(spec.model_name.clone());
        config.model.version = spec.model_version.clone();
        config.batching = spec.batching;
        config.server.max_body_bytes = spec.max_body_bytes;
        let valid = config
            .validate()
            .map_err(|e| anyhow!("the router's spec: {e}"))?;
        let fresh = prepare(&valid).await?;
        tracing::info!(model = %spec.model_name, backend = %fresh.backend, "model ready");
        if let Some((_, old)) = prepared.replace((spec, fresh)) {
            old.finish().await?;
        }
    }
    let Some((_, ready)) = prepared.as_ref() else {
        bail!("no model is loaded");
    };

    let mut connect = claim(options, hyper::Method::POST, "connect")?;
    connect.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    connect.headers_mut().insert(
        header::UPGRADE,
        header::HeaderValue::from_static(UPGRADE_PROTOCOL),
    );
    let resp = sender
        .send_request(connect)
        .await
        .context("turning the connection around")?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        bail!(
            "the router answered {status} to connect: {}",
            String::from_utf8_lossy(&body.unwrap_or_default())
        );
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .context("turning the connection around")?;
    drop(sender);
    drop(conn);
    tracing::info!(pool = %options.pool, machine = %options.machine, "joined; serving the router's requests");

    let service = hyper_util::service::TowerToHyperService::new(router(ready.state.clone()));
    let serving = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .serve_connection(upgraded, service);
    tokio::pin!(serving);
    tokio::select! {
        r = serving.as_mut() => {
            r.map_err(|e| anyhow!("the connection to the router was lost: {e}"))?;
            bail!("the router closed the connection")
        }
        _ = shutdown.wait_for(|s| *s) => {
            ready.state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
            serving.as_mut().graceful_shutdown();
            if let Err(e) = serving.await {
                tracing::warn!(error = %e, "the connection broke while draining");
            }
            Ok(())
        }
    }
}

/// Why a request failed. When the connection itself broke, its own error says why: a TLS alert
/// from the daemon (`CertificateRequired` for a missing client certificate) ends the connection
/// and reaches the request only as "connection was not ready".
async fn connection_error(
    request: hyper::Error,
    conn: &mut tokio::task::JoinHandle<hyper::Result<()>>,
) -> anyhow::Error {
    match tokio::time::timeout(Duration::from_secs(1), conn).await {
        Ok(Ok(Err(broken))) => anyhow::Error::new(broken).context(request.to_string()),
        _ => anyhow::Error::new(request),
    }
}

/// A request under the join URL carrying the claim.
fn claim(
    options: &JoinOptions,
    method: hyper::Method,
    leaf: &str,
) -> anyhow::Result<Request<Empty<Bytes>>> {
    let base = options.url.path().trim_end_matches('/');
    let authority = match options.url.port() {
        Some(p) => format!("{}:{p}", options.url.host_str().unwrap_or_default()),
        None => options.url.host_str().unwrap_or_default().to_string(),
    };
    Request::builder()
        .method(method)
        .uri(format!("{base}/{leaf}"))
        .header(header::HOST, authority)
        .header(header::AUTHORIZATION, format!("Bearer {}", options.token))
        .header(POOL_HEADER, &options.pool)
        .header(MACHINE_HEADER, &options.machine)
        .body(Empty::new())
        .context("building a join request")
}

/// The response when it is a success; otherwise an error with what the router said.
async fn check_ok(
    resp: hyper::Response<hyper::body::Incoming>,
    what: &str,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    if status == StatusCode::FORBIDDEN {
        bail!(
            "the router refused the join (check the token, --pool and --machine; the router's log says why)"
        );
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    bail!(
        "the router answered {status} for the {what}: {}",
        String::from_utf8_lossy(&body)
    )
}

/// The whole body of a successful response.
async fn read_ok(
    resp: hyper::Response<hyper::body::Incoming>,
    what: &str,
) -> anyhow::Result<Bytes> {
    Ok(check_ok(resp, what)
        .await?
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading the {what}"))?
        .to_bytes())
}

/// The model file for `spec`: from the cache when a file with its digest is there, else fetched
/// over the join connection, checked against the digest and stored under it. The bytes go to
/// disk as they arrive: a model may be many gigabytes.
async fn cached_model(
    options: &JoinOptions,
    spec: &JoinSpec,
    sender: &mut http1::SendRequest<Empty<Bytes>>,
) -> anyhow::Result<PathBuf> {
    let digest = spec.model_sha256.to_ascii_lowercase();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("the router's spec names no SHA-256 digest ({digest:?})");
    }
    if let Some(shared) = &options.shared_model {
        match file_sha256(shared).await {
            Ok(got) if got == digest => {
                tracing::info!(path = %shared.display(), "model read from the shared path");
                return Ok(shared.clone());
            }
            Ok(got) => tracing::warn!(
                path = %shared.display(),
                sha256 = %got,
                announced = %digest,
                "the shared model is not the one the router serves; fetching it"
            ),
            Err(e) => tracing::warn!(
                path = %shared.display(),
                error = %format!("{e:#}"),
                "cannot read the shared model; fetching it"
            ),
        }
    }
    let path = options.cache_dir.join(format!("{digest}.safetensors"));
    if path.exists() {
        tracing::info!(path = %path.display(), "model found in the cache");
        return Ok(path);
    }
    let resp = sender
        .send_request(claim(options, hyper::Method::GET, "model")?)
        .await
        .context("fetching the model")?;
    let resp = check_ok(resp, "model").await?;
    std::fs::create_dir_all(&options.cache_dir)
        .with_context(|| format!("cannot create the cache {}", options.cache_dir.display()))?;
    let tmp = path.with_extension("part");
    let received = receive_model(resp.into_body(), &tmp, spec.model_bytes).await;
    let (got, bytes) = match received {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if got != digest {
        let _ = std::fs::remove_file(&tmp);
        bail!("the model received has SHA-256 {got}, not {digest} as announced; it is not used");
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), bytes, "model fetched and verified");
    Ok(path)
}

/// The SHA-256 (hex) of the file at `path`, read in chunks (a model may be many gigabytes).
async fn file_sha256(path: &Path) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Writes a model's bytes to `tmp` as they arrive, refusing more than the `announced` length;
/// their SHA-256 (hex) and length.
async fn receive_model(
    mut body: hyper::body::Incoming,
    tmp: &Path,
    announced: u64,
) -> anyhow::Result<(String, u64)> {
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::File::create(tmp)
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.context("receiving the model")?.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > announced {
            bail!("the router sent more than the {announced} bytes its spec announced");
        }
        hasher.update(&data);
        file.write_all(&data)
            .await
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    file.flush()
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    Ok((hex::encode(hasher.finalize()), received))
}

/// A byte stream to the router, TLS when the URL is `https`.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn dial(
    url: &Url,
    tls: &Option<tokio_rustls::TlsConnector>,
) -> anyhow::Result<TokioIo<Box<dyn Stream>>> {
    let host = url.host_str().context("the join URL names no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect((host.trim_matches(['[', ']']), port)),
    )
    .await
    .map_err(|_| anyhow!("connecting to {host}:{port} timed out"))?
    .with_context(|| format!("cannot connect to {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn Stream> = match (url.scheme(), tls) {
        ("https", Some(tls)) => {
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .with_context(|| format!("{host} is not a valid server name"))?;
            Box::new(
                tls.connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS with {host}:{port}"))?,
            )
        }
        ("https", None) => {
            bail!("--join {url} is https: give the router's certificate or CA with --ca-cert")
        }
        _ => Box::new(tcp),
    };
    Ok(TokioIo::new(stream))
}

/// A TLS client trusting the certificates in `ca_cert` (the router's own, pinned, or its CA),
/// presenting `client` (certificate chain, key) when given.
fn tls_connector(
    ca_cert: Option<&Path>,
    client: Option<&(PathBuf, PathBuf)>,
) -> anyhow::Result<Option<tokio_rustls::TlsConnector>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(path) = ca_cert else {
        if client.is_some() {
            bail!("--client-cert needs --ca-cert: a client certificate is for an https join URL");
        }
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--ca-cert {}", path.display()))?
    {
        let cert = cert.with_context(|| format!("--ca-cert {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--ca-cert {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("--ca-cert {} holds no certificate", path.display());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots);
    let config = match client {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("--client-cert {}", cert.display()))?;
            if chain.is_empty() {
                bail!("--client-cert {} holds no certificate", cert.display());
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("--client-key {}", key.display()))?;
            config
                .with_client_auth_cert(chain, key)
                .context("--client-cert and --client-key do not go together")?
        }
    };
    Ok(Some(tokio_rustls::TlsConnector::from(Arc::new(config))))
}

/// Polls the instance metadata service (IMDSv2: a session token, then the spot
/// `instance-action`) every two seconds; on a notice, shuts the replica down so its requests are
/// answered and the router replaces it while the two minutes run.
async fn watch_interruption(imds: Url, stop: Arc<watch::Sender<bool>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let base = imds.as_str().trim_end_matches('/').to_string();
    loop {
        if *stop.borrow() {
            return;
        }
        let token = http
            .put(format!("{base}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        if let Some(token) = token
            && let Ok(token) = token.text().await
        {
            let notice = http
                .get(format!("{base}/latest/meta-data/spot/instance-action"))
                .header("X-aws-ec2-metadata-token", token)
                .send()
                .await;
            if let Ok(r) = notice
                && r.status().is_success()
            {
                let what = r.text().await.unwrap_or_default();
                tracing::warn!(notice = %what, "spot interruption notice: leaving the router");
                stop.send_replace(true);
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
