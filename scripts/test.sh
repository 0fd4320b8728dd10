#!/usr/bin/env bash
# The whole test suite: sets up the Python side (the real Open Inference Protocol client and the
# training tools for the example model) in .venv, then runs every Rust test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
export GPUCAP_PYTHON="$PWD/.venv/bin/python"
cargo test --workspace --all-targets
