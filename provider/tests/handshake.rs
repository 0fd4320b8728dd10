//! The go-plugin handshake as Terraform performs it: the magic cookie, version negotiation, AutoMTLS
//! with only the announced client certificate accepted, the gRPC services over it, SIGINT ignored
//! and `GRPCController.Shutdown` ending the process.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use gpucap_provider::wire::plugin::grpc_controller_client::GrpcControllerClient;
use gpucap_provider::wire::proto::provider_client::ProviderClient;
use gpucap_provider::wire::{plugin, proto};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const COOKIE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";

/// A client certificate like Terraform's: self-signed ECDSA P-521, marked as a CA.
struct ClientCert {
    pem: String,
    der: CertificateDer<'static>,
    key: Vec<u8>,
}

fn client_cert() -> ClientCert {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    ClientCert {
        pem: cert.pem(),
        der: cert.der().clone(),
        key: key.serialize_der(),
    }
}

struct Plugin {
    child: Child,
    socket: String,
    server_cert: CertificateDer<'static>,
    handshake_time: Duration,
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(cert: &ClientCert) -> Plugin {
    let started = Instant::now();
    let mut child = Command::new(common::provider_bin())
        .env("TF_PLUGIN_MAGIC_COOKIE", COOKIE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
        .env("PLUGIN_CLIENT_CERT", &cert.pem)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let handshake_time = started.elapsed();
    let fields: Vec<&str> = line.trim_end().split('|').collect();
    assert_eq!(fields.len(), 6, "handshake line: {line:?}");
    assert_eq!(&fields[..3], ["1", "5", "unix"]);
    assert_eq!(fields[4], "grpc");
    assert!(
        !fields[5].ends_with('='),
        "the certificate must be base64 without padding"
    );
    let der = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(fields[5])
        .unwrap();
    Plugin {
        child,
        socket: fields[3].to_string(),
        server_cert: CertificateDer::from(der),
        handshake_time,
    }
}

/// Trusts exactly the certificate announced in the handshake line, as go-plugin's client does.
#[derive(Debug)]
struct PinnedServer(CertificateDer<'static>);

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.0.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the announced certificate".into(),
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_client(p: &Plugin, cert: Option<&ClientCert>) -> tokio_rustls::TlsConnector {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(PinnedServer(p.server_cert.clone())));
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.clone())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// What the server does with a client after the TLS handshake.
#[derive(Debug)]
enum Answer {
    /// It speaks HTTP/2: it answers the connection preface with a SETTINGS frame.
    Talks,
    /// It refused the client with a TLS alert, or closed the connection.
    Refused(String),
    /// It neither answered nor refused within the deadline.
    Silent,
    /// The exchange failed some other way (on the client's side, say).
    Failed(String),
}

impl Answer {
    /// A refusal when `e` is the server's TLS alert or the connection closing; else a failure.
    fn from_error(stage: &str, e: &std::io::Error) -> Answer {
        use std::io::ErrorKind;
        let alert = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(|tls| match tls {
                rustls::Error::AlertReceived(alert) => Some(format!("TLS alert {alert:?}")),
                _ => None,
            });
        match (alert, e.kind()) {
            (Some(alert), _) => Answer::Refused(format!("{stage}: {alert}")),
            (
                None,
                ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe,
            ) => Answer::Refused(format!("{stage}: connection closed ({e})")),
            (None, _) => Answer::Failed(format!("{stage}: {e}")),
        }
    }
}

/// Connects with `cert` (or none) and sends the HTTP/2 preface: tells whether the server talks,
/// refuses the client, or says nothing within 10 s (the handshake included).
async fn server_answer(p: &Plugin, cert: Option<&ClientCert>) -> Answer {
    tokio::time::timeout(Duration::from_secs(10), exchange(p, cert))
        .await
        .unwrap_or(Answer::Silent)
}

async fn exchange(p: &Plugin, cert: Option<&ClientCert>) -> Answer {
    let sock = tokio::net::UnixStream::connect(&p.socket).await.unwrap();
    let mut tls = match tls_client(p, cert)
        .connect(ServerName::try_from("localhost").unwrap(), sock)
        .await
    {
        Ok(tls) => tls,
        Err(e) => return Answer::from_error("handshake", &e),
    };
    // With TLS 1.3 the client finishes its side of the handshake before the server has checked
    // the client's certificate, so a refusal arrives on the first read.
    if let Err(e) = tls
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
    {
        return Answer::from_error("write", &e);
    }
    let mut buf = [0u8; 9];
    match tls.read_exact(&mut buf).await {
        Ok(_) if buf[3] == 0x04 => Answer::Talks,
        Ok(_) => Answer::Failed(format!(
            "the preface was answered with frame type {}",
            buf[3]
        )),
        Err(e) => Answer::from_error("read", &e),
    }
}

/// Asserts that the server refuses the client (a TLS alert or a closed connection, not silence).
async fn assert_refused(p: &Plugin, cert: Option<&ClientCert>, who: &str) {
    match server_answer(p, cert).await {
        Answer::Refused(how) => eprintln!("{who}: refused ({how})"),
        Answer::Failed(why) => panic!("{who}: failed, but not refused by the server: {why}"),
        other => panic!("{who} was not refused: {other:?}"),
    }
}

async fn grpc_channel(p: &Plugin, cert: &ClientCert) -> tonic::transport::Channel {
    let connector = tls_client(p, Some(cert));
    let socket = p.socket.clone();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let (connector, socket) = (connector.clone(), socket.clone());
            async move {
                let sock = tokio::net::UnixStream::connect(socket).await?;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), sock)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}

#[tokio::test]
async fn only_the_announced_client_certificate_is_accepted() {
    let terraform = client_cert();
    let plugin = start(&terraform);
    eprintln!("time to handshake line: {:?}", plugin.handshake_time);
    let answer = server_answer(&plugin, Some(&terraform)).await;
    assert!(
        matches!(answer, Answer::Talks),
        "the announced certificate was not accepted: {answer:?}"
    );
    assert_refused(&plugin, None, "a client without a certificate").await;
    assert_refused(&plugin, Some(&client_cert()), "another certificate").await;
}

#[tokio::test]
async fn rpcs_work_sigint_is_ignored_and_shutdown_ends_the_process() {
    let terraform = client_cert();
    let mut plugin = start(&terraform);
    let channel = grpc_channel(&plugin, &terraform).await;

    let schema = ProviderClient::new(channel.clone())
        .get_schema(proto::get_provider_schema::Request {})
        .await
        .unwrap()
        .into_inner();
    let mut types: Vec<_> = schema.resource_schemas.keys().cloned().collect();
    types.sort();
    assert_eq!(
        types,
        [
            "gpucap_api_key",
            "gpucap_burst_policy",
            "gpucap_gpu_pool",
            "gpucap_inference_endpoint",
            "gpucap_join_token"
        ]
    );
    assert!(schema.server_capabilities.unwrap().plan_destroy);

    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "plugin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Ctrl-C in the terminal reaches the whole process group; Terraform handles it, not us.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(plugin.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    // Still serving after the signal: a call answers, and (below) the process exits with success
    // only when Terraform's Shutdown asks it to, not killed by SIGINT.
    ProviderClient::new(channel.clone())
        .get_schema(proto::get_provider_schema::Request {})
        .await
        .expect("the provider answers after SIGINT");
    assert!(
        plugin.child.try_wait().unwrap().is_none(),
        "SIGINT killed the provider"
    );

    ProviderClient::new(channel.clone())
        .stop(proto::stop::Request {})
        .await
        .unwrap();
    let asked = Instant::now();
    GrpcControllerClient::new(channel)
        .shutdown(plugin::Empty {})
        .await
        .unwrap();
    loop {
        if let Some(status) = plugin.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "the provider did not exit after Shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("exit after Shutdown: {:?}", asked.elapsed());
}

#[test]
fn run_by_hand_it_explains_itself_instead_of_hanging() {
    let out = Command::new(common::provider_bin()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    insta::assert_snapshot!(String::from_utf8(out.stderr).unwrap());

    let out = Command::new(common::provider_bin())
        .env("TF_PLUGIN_MAGIC_COOKIE", COOKIE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "6")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("speaks only version 5"));
}

#[test]
fn debug_mode_prints_reattach_info_and_stops_on_ctrl_c() {
    let mut child = Command::new(common::provider_bin())
        .arg("--debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    while !text.contains("TF_REATTACH_PROVIDERS=") {
        assert!(
            reader.read_line(&mut text).unwrap() > 0,
            "no reattach line in: {text}"
        );
    }
    let json = text
        .split("TF_REATTACH_PROVIDERS='")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let reattach: serde_json::Value = serde_json::from_str(json).unwrap();
    let entry = &reattach["registry.terraform.io/gpucap/gpucap"];
    assert_eq!(entry["ProtocolVersion"], 5);
    assert_eq!(entry["Addr"]["Network"], "unix");
    assert!(std::path::Path::new(entry["Addr"]["String"].as_str().unwrap()).exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "--debug did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    }
}
