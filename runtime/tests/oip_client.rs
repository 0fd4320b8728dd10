//! The runtime against tritonclient, a standard Open Inference Protocol v2 client library, used
//! unchanged. The Python environment comes from the README's test command (`scripts/test.sh`),
//! which sets `GPUCAP_PYTHON`; without it this test fails rather than skips.

mod common;

use std::process::Command;

use common::{Server, repo_root};

#[test]
fn tritonclient_works_unchanged() {
    let python = std::env::var("GPUCAP_PYTHON").unwrap_or_else(|_| {
        let venv = repo_root().join(".venv/bin/python");
        assert!(
            venv.exists(),
            "no Python with tritonclient: run the tests through scripts/test.sh, or set GPUCAP_PYTHON"
        );
        venv.to_string_lossy().into_owned()
    });
    let s = Server::digits(&[]);
    let out = Command::new(python)
        .arg(repo_root().join("runtime/tests/clients/triton_client_check.py"))
        .arg(s.url.trim_start_matches("http://"))
        .arg(repo_root().join("examples/models/digits-test.csv"))
        .arg(repo_root().join("examples/models/digits-report.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tritonclient check failed:\n{stdout}\n{stderr}"
    );
    // Both passes, binary tensors and JSON, classified the test set as the training run did:
    // the script checks each against the report and says so.
    assert!(
        stdout.contains("correct with binary tensors and with JSON"),
        "{stdout}"
    );
}
