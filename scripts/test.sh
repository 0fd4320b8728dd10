#!/usr/bin/env bash
# The whole test suite: sets up the Python side (the real Open Inference Protocol client and the
# training tools for the example model) in .venv, builds the binaries the acceptance tests drive
# (Terraform loads the provider, the provider starts the runtime), then runs every Rust test.
set -euo pipefail
cd "$(dirname "$0")/.."
# The acceptance tests drive the real Terraform CLI; without it they must fail, not skip.
command -v terraform >/dev/null || { echo "terraform is not on PATH; the acceptance tests need Terraform >= 1.5" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
export GPUCAP_PYTHON="$PWD/.venv/bin/python"
cargo build --workspace --bins
cargo test --workspace --all-targets
