//! What the acceptance tests share: the built binaries, the provider packed as a release packs it
//! and laid out as a filesystem mirror, and `terraform` run against that mirror as a user runs it
//! (`terraform init` installs the provider; no `dev_overrides`).
// Each test binary uses part of the harness.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Where cargo put the workspace's binaries: the test binary runs from `TARGET/PROFILE/deps`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries run from TARGET/PROFILE/deps")
        .to_path_buf();
    for bin in [
        "terraform-provider-gpucap",
        "gpucap-runtime",
        "gpucap-fabric",
        "gpucap-policy",
    ] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing; build the binaries first with `cargo build --workspace --bins` \
             (scripts/test.sh does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// Fails (never skips) when Terraform is not installed: these tests are the point.
pub fn terraform_bin() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("terraform"))
        .find(|p| p.is_file())
        .expect("the terraform CLI is not on PATH; the acceptance tests need it (Terraform >= 1.7)")
}

/// The provider as a release ships it: the zip, SHA256SUMS and manifest `scripts/package.sh`
/// writes from the built binaries, and a filesystem mirror holding the zip.
pub struct Package {
    /// The release files.
    pub dist: PathBuf,
    /// The filesystem mirror (`registry.terraform.io/gpucap/gpucap/*.zip`).
    pub mirror: PathBuf,
    /// The CLI config that installs gpucap/gpucap from the mirror and nothing from the network.
    pub cli_config: PathBuf,
}

/// The package, made once per test binary under `target/acceptance/NAME` (so a test binary's
/// runs replace its own and different test binaries never share one).
pub fn package() -> &'static Package {
    static PACKAGE: OnceLock<Package> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let bins = bin_dir();
        let exe = std::env::current_exe().expect("the test binary knows its path");
        let name = exe
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.split('-').next())
            .unwrap_or("acceptance")
            .to_string();
        let root = bins
            .parent()
            .expect("the profile directory is inside the target directory")
            .join("acceptance")
            .join(name);
        if root.exists() {
            std::fs::remove_dir_all(&root).expect("the previous package can be removed");
        }
        let (dist, mirror) = (root.join("dist"), root.join("mirror"));
        let script = repo_root().join("scripts/package.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("--bin-dir")
            .arg(&bins)
            .arg("--mirror")
            .arg(&mirror)
            .arg(&dist)
            .output()
            .expect("bash runs scripts/package.sh");
        assert!(
            out.status.success(),
            "{} failed:\n{}",
            script.display(),
            text(&out)
        );
        let cli_config = root.join("cli.tfrc");
        std::fs::write(
            &cli_config,
            format!(
                "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    \
                 include = [\"registry.terraform.io/gpucap/gpucap\"]\n  }}\n}}\n",
                mirror.display()
            ),
        )
        .expect("the CLI config can be written");
        Package {
            dist,
            mirror,
            cli_config,
        }
    })
}

/// `terraform` in one configuration directory, with the provider installed from the package and
/// everything it writes outside that directory (`.terraform`, the provider's `state_dir`) kept
/// in a directory of the test's own.
pub struct Terraform {
    /// The configuration.
    pub dir: PathBuf,
    /// The test's own directory: Terraform's data directory and the provider's state.
    pub work: tempfile::TempDir,
}

impl Terraform {
    /// Terraform on the configuration in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Terraform {
        Terraform {
            dir: dir.into(),
            work: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// Where the provider keeps its records, configs, pids and logs (`$XDG_STATE_HOME/gpucap`).
    pub fn state_dir(&self) -> PathBuf {
        self.work.path().join("state/gpucap")
    }

    /// Runs `terraform ARGS` and returns what it did.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(terraform_bin())
            .args(args)
            .current_dir(&self.dir)
            .env("TF_CLI_CONFIG_FILE", &package().cli_config)
            .env("TF_DATA_DIR", self.work.path().join("terraform"))
            .env("XDG_STATE_HOME", self.work.path().join("state"))
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("NO_COLOR", "1")
            .env_remove("TF_LOG")
            .output()
            .expect("terraform runs")
    }

    /// Runs `terraform ARGS`, which must succeed; returns its output and how long it took.
    pub fn ok(&self, args: &[&str]) -> (String, Duration) {
        let started = Instant::now();
        let out = self.run(args);
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "terraform {} in {} failed:\n{}",
            args.join(" "),
            self.dir.display(),
            text(&out)
        );
        (text(&out), took)
    }

    /// `terraform init`, from the mirror. A lock file a previous run left beside the configuration
    /// pins the binaries of the previous build, so it goes first: each run locks its own package.
    pub fn init(&self) -> Duration {
        let lock = self.dir.join(".terraform.lock.hcl");
        if let Err(e) = std::fs::remove_file(&lock) {
            assert!(
                e.kind() == std::io::ErrorKind::NotFound,
                "cannot remove {}: {e}",
                lock.display()
            );
        }
        self.ok(&["init", "-input=false", "-no-color"]).1
    }
}

/// Standard output and error, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The module directories.
pub fn modules() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("modules"))
        .expect("modules/ exists")
        .map(|e| e.expect("modules/ can be listed").path())
        .filter(|p| p.join("main.tf").exists())
        .collect();
    dirs.sort();
    dirs
}

/// A fixture configuration of `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}
