#!/usr/bin/env bash
# Benchmarks of `gpucap-fabric daemon` on this machine, in one run (scripts/bench_daemon.py says
# what each figure is): the admin API's PUT and GET p50/p99, memory per hosted endpoint, restart
# to all endpoints answering (after SIGKILL, routers adopted; after SIGTERM, everything started
# afresh), and `terraform apply`/`destroy` through a running daemon against the embedded mode.
# Usage: scripts/bench-daemon.sh [--endpoints N] [--calls N] [--terraform-runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p gpucap-provider -p gpucap-fabric -p gpucap-runtime
python3 scripts/bench_daemon.py "$@"
