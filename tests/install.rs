//! The provider installed the way users install it: packed as a release packs it, found by
//! `terraform init` in a filesystem mirror, locked by its package hash, and then running the
//! quickstart for real — the runtime and the fabric found inside the installed package.

mod harness;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use harness::{Terraform, package, repo_root, text};

/// The entries of the zip at `path` (its central directory), with their Unix modes.
fn zip_entries(path: &Path) -> Vec<(String, u32)> {
    let script = "import sys, zipfile\n\
                  for i in zipfile.ZipFile(sys.argv[1]).infolist():\n    \
                  print(oct(i.external_attr >> 16), i.filename)";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 reads the zip");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (mode, name) = l.split_once(' ')?;
            Some((
                name.to_string(),
                u32::from_str_radix(mode.trim_start_matches("0o"), 8).ok()?,
            ))
        })
        .collect()
}

fn version() -> String {
    let cargo = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("the workspace has a version")
        .to_string()
}

/// The zip holds what `.goreleaser.yml` packs, named as it names it, every binary executable,
/// beside the checksums and the registry manifest.
#[test]
fn the_package_is_what_a_release_ships() {
    let p = package();
    let v = version();
    let zip = p
        .dist
        .join(format!("terraform-provider-gpucap_{v}_linux_amd64.zip"));
    assert!(zip.exists(), "{} is missing", zip.display());
    let mut entries = zip_entries(&zip);
    entries.sort();
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let provider = format!("terraform-provider-gpucap_v{v}");
    assert_eq!(
        names,
        [
            "README.md",
            "gpucap-fabric",
            "gpucap-runtime",
            "packaging/systemd/daemon.toml.example",
            "packaging/systemd/gpucap-fabric.service",
            provider.as_str()
        ]
    );
    for (name, mode) in &entries {
        if name != "README.md" && !name.starts_with("packaging/") {
            assert_eq!(mode & 0o111, 0o111, "{name} is not executable ({mode:o})");
        }
    }
    let release = std::fs::read_to_string(repo_root().join(".goreleaser.yml")).unwrap();
    for line in [
        "name_template: \"terraform-provider-gpucap_{{ .Version }}_{{ .Os }}_{{ .Arch }}\"",
        "binary: \"terraform-provider-gpucap_v{{ .Version }}\"",
        "binary: gpucap-runtime",
        "binary: gpucap-fabric",
        "name_template: \"terraform-provider-gpucap_{{ .Version }}_SHA256SUMS\"",
        "name_template: \"terraform-provider-gpucap_{{ .Version }}_manifest.json\"",
        "- packaging/systemd/gpucap-fabric.service",
        "- packaging/systemd/daemon.toml.example",
    ] {
        assert!(
            release.contains(line),
            ".goreleaser.yml no longer has `{line}`: scripts/package.sh must pack what it packs"
        );
    }
    let sums = std::fs::read_to_string(
        p.dist
            .join(format!("terraform-provider-gpucap_{v}_SHA256SUMS")),
    )
    .unwrap();
    let manifest = format!("terraform-provider-gpucap_{v}_manifest.json");
    assert!(sums.contains(&format!(
        "  terraform-provider-gpucap_{v}_linux_amd64.zip\n"
    )));
    assert!(sums.contains(&format!("  {manifest}\n")));
    let manifest = std::fs::read_to_string(p.dist.join(manifest)).unwrap();
    assert!(
        manifest.contains("\"protocol_versions\": [\"5.0\"]"),
        "{manifest}"
    );
}

/// `terraform init` installs the provider from the mirror and locks it by the zip's hash; the
/// quickstart (through the hybrid-fabric module) then deploys a real endpoint whose runtime and
/// fabric come from the installed package, answers an inference, and is destroyed.
#[test]
fn the_quickstart_runs_on_the_installed_provider() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("quickstart");
    std::fs::create_dir(&config).unwrap();
    let root = repo_root();
    let main = std::fs::read_to_string(root.join("examples/quickstart/main.tf"))
        .unwrap()
        .replace(
            "${path.module}/../models",
            &root.join("examples/models").display().to_string(),
        )
        .replace(
            "\"../../modules/",
            &format!("\"{}/modules/", root.display()),
        );
    std::fs::write(config.join("main.tf"), main).unwrap();
    let tf = Terraform::new(&config);

    let init = tf.init();
    let lock = std::fs::read_to_string(config.join(".terraform.lock.hcl")).unwrap();
    let v = version();
    let zip = package()
        .dist
        .join(format!("terraform-provider-gpucap_{v}_linux_amd64.zip"));
    assert!(
        lock.contains(&format!("version     = \"{v}\"")) && lock.contains(&h1_hash(&zip)),
        "the lock file does not pin the packed zip's contents ({}):\n{lock}",
        h1_hash(&zip)
    );
    let installed = tf.work.path().join(format!(
        "terraform/providers/registry.terraform.io/gpucap/gpucap/{v}/linux_amd64"
    ));
    for bin in [
        format!("terraform-provider-gpucap_v{v}"),
        "gpucap-runtime".into(),
        "gpucap-fabric".into(),
    ] {
        assert!(
            installed.join(&bin).exists(),
            "{bin} is not in {}",
            installed.display()
        );
    }

    let (_, apply) = tf.ok(&["apply", "-auto-approve", "-no-color"]);
    let (url, _) = tf.ok(&["output", "-raw", "url"]);
    let answer = infer(&url);
    // The endpoint's router and its replica run the fabric and the runtime the provider found
    // next to itself in the installed package.
    let running = running_from(&installed);
    assert!(
        running.iter().any(|e| e.ends_with("gpucap-fabric"))
            && running.iter().any(|e| e.ends_with("gpucap-runtime")),
        "no router and replica run from {}: {running:?}",
        installed.display()
    );
    let (_, destroy) = tf.ok(&["destroy", "-auto-approve", "-no-color"]);
    println!(
        "installed from the mirror: init {:.2} s, apply {:.2} s, destroy {:.2} s; {answer}",
        init.as_secs_f64(),
        apply.as_secs_f64(),
        destroy.as_secs_f64()
    );
    // Destroyed, nothing it started runs on (a process that has exited has no executable): the
    // routers and replicas stop with the destroy, the embedded daemon 2 s after its last call.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let left = loop {
        let left = running_from(&installed);
        if left.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(left.is_empty(), "still running after destroy: {left:?}");
}

/// The executables of the running processes that were started from files in `dir`.
fn running_from(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_link(e.ok()?.path().join("exe")).ok())
                .filter(|exe| exe.starts_with(dir))
                .collect()
        })
        .unwrap_or_default()
}

/// Terraform's `h1:` hash of a provider package: SHA-256 over the lines `SHA256(file)  NAME` of
/// the files in the zip, in name order, in base64 (Go's dirhash `Hash1`).
fn h1_hash(zip: &Path) -> String {
    let script = "import base64, hashlib, sys, zipfile\n\
                  z = zipfile.ZipFile(sys.argv[1])\n\
                  lines = ''.join(hashlib.sha256(z.read(n)).hexdigest() + '  ' + n + '\\n' for n in sorted(z.namelist()))\n\
                  print('h1:' + base64.b64encode(hashlib.sha256(lines.encode()).digest()).decode())";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(zip)
        .output()
        .expect("python3 hashes the zip");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Posts the first digit of the held-out test set to `url` and checks the predicted label.
fn infer(url: &str) -> String {
    let csv = std::fs::read_to_string(repo_root().join("examples/models/digits-test.csv")).unwrap();
    let row = csv.lines().next().unwrap();
    let (label, pixels) = row.split_once(',').unwrap();
    let body = format!(
        "{{\"inputs\":[{{\"name\":\"pixels\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[{pixels}]}}]}}"
    );
    let mut child = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "60",
            "-H",
            "Content-Type: application/json",
            "-d",
        ])
        .arg(&body)
        .arg(format!("{url}/infer"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    let mut response = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut response)
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "no answer from {url}/infer"
    );
    let data = response
        .split("\"data\":[")
        .nth(1)
        .and_then(|d| d.split(']').next())
        .unwrap_or_else(|| panic!("no data in {response}"));
    let probs: Vec<f64> = data.split(',').map(|p| p.trim().parse().unwrap()).collect();
    let best = (0..probs.len())
        .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
        .unwrap();
    assert_eq!(best.to_string(), label, "{response}");
    format!(
        "predicted digit {best} (p = {:.3}), true label {label}",
        probs[best]
    )
}
