//! `serve --join` against a router that sends a model other than the one its spec announces:
//! the real binary, over real HTTP, against a small router played here. The bytes are checked as
//! they arrive; nothing unverified is kept in the cache or served.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use gpucap_runtime::config::BatchingSection;
use gpucap_runtime::join::JoinSpec;
use sha2::{Digest, Sha256};

struct Joining(Child);

impl Drop for Joining {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A router on loopback that announces `spec` and sends `model`; its address.
fn router(spec: JoinSpec, model: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route(
                    "/join/spec",
                    get(move || {
                        let spec = spec.clone();
                        async move { axum::Json(spec) }
                    }),
                )
                .route(
                    "/join/model",
                    get(move || {
                        let model = model.clone();
                        async move { model }
                    }),
                );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    address
}

/// Runs `serve --join` against `address` until its log says `expected`; the log.
fn join_until(address: &str, cache: &Path, expected: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "gpj_test").unwrap();
    let log = dir.path().join("join.log");
    let _child = Joining(
        Command::new(env!("CARGO_BIN_EXE_gpucap-runtime"))
            .args(["serve", "--join", &format!("http://{address}/join")])
            .arg("--token-file")
            .arg(&token)
            .args(["--pool", "p", "--machine", "m", "--device", "cpu"])
            .arg("--cache-dir")
            .arg(cache)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(expected) {
            return text;
        }
        assert!(Instant::now() < deadline, "{expected:?} not in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spec_of(model: &[u8]) -> JoinSpec {
    JoinSpec {
        model_name: "digits".into(),
        model_version: "1".into(),
        model_sha256: hex::encode(Sha256::digest(model)),
        model_bytes: model.len() as u64,
        batching: BatchingSection::default(),
        max_body_bytes: 1 << 20,
    }
}

fn cached(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_model_that_is_not_the_one_announced_is_refused_and_not_kept() {
    let model = std::fs::read(common::digits_model()).unwrap();
    let cache = tempfile::tempdir().unwrap();

    // The same length, one byte changed.
    let mut tampered = model.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    let address = router(spec_of(&model), tampered);
    join_until(&address, cache.path(), "as announced; it is not used");
    assert_eq!(cached(cache.path()), Vec::<String>::new());

    // More bytes than announced: refused while they arrive.
    let mut longer = model.clone();
    longer.extend_from_slice(&[0; 4096]);
    let address = router(spec_of(&model), longer);
    join_until(
        &address,
        cache.path(),
        &format!(
            "the router sent more than the {} bytes its spec announced",
            model.len()
        ),
    );
    assert_eq!(cached(cache.path()), Vec::<String>::new());

    // The model announced: fetched, verified and kept under its digest.
    let address = router(spec_of(&model), model.clone());
    join_until(&address, cache.path(), "model fetched and verified");
    let digest = hex::encode(Sha256::digest(&model));
    assert_eq!(cached(cache.path()), [format!("{digest}.safetensors")]);
}
