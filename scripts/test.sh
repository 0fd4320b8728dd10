#!/usr/bin/env bash
# The whole test suite: sets up the Python side (the real Open Inference Protocol client and the
# training tools for the example model) in .venv, builds the binaries the acceptance tests drive
# (Terraform loads the provider, the provider starts the runtime), then runs every Rust test —
# tests/ among them, which packs those binaries as a release, installs the provider from a
# filesystem mirror with `terraform init` and runs every module's `terraform test` files.
set -euo pipefail
cd "$(dirname "$0")/.."
# The acceptance tests drive the real Terraform CLI; without it they must fail, not skip.
command -v terraform >/dev/null || { echo "terraform is not on PATH; the acceptance tests need Terraform >= 1.5" >&2; exit 1; }
# The Slurm driver's tests run a real one-node cluster from Debian's packages; without them the
# tests fail, never skip.
slurm_packages="slurmctld slurmd slurm-client slurmrestd slurm-wlm-jwt-plugin munge"
if ! dpkg -s $slurm_packages >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o DPkg::Lock::Timeout=600 $slurm_packages >/dev/null
  else
    echo "Slurm is missing: install Debian's $slurm_packages (the slurm driver's tests need them)" >&2
    exit 1
  fi
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
export GPUCAP_PYTHON="$PWD/.venv/bin/python"
# NVRTC (no GPU needed) so the CUDA backend's kernels are really compiled here; the test that does
# it fails rather than skips if the library is missing. GPU-only tests report themselves ignored
# where there is no GPU.
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-cuda.txt
nvrtc_lib=$(.venv/bin/python -c 'import nvidia.cuda_nvrtc as m, os; print(os.path.join(list(m.__path__)[0], "lib"))')
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GPUCAP_REQUIRE_NVRTC=1
cargo build --workspace --bins
cargo test --workspace --all-targets
