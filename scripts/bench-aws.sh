#!/usr/bin/env bash
# Benchmarks of the aws_autoscaling_group driver and the join channel, against moto's AWS emulator
# on this machine, in one run (fabric/tests/aws.rs, bench_joined_replicas): decision to a joined
# replica serving, API calls per start, and a joined replica's requests/s and p50 against the same
# runtime reached by address. Needs .venv with scripts/requirements.txt (scripts/test.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
export GPUCAP_PYTHON="${GPUCAP_PYTHON:-$PWD/.venv/bin/python}"
cargo build -q -p gpucap-runtime -p gpucap-fabric
cargo test -q -p gpucap-fabric --test aws -- --ignored --nocapture bench_joined_replicas
