#!/usr/bin/env bash
# The spill benchmark with its burst pool on a Slurm partition against the same on this host's
# local driver, alternated on one daemon, release builds (fabric/tests/slurm.rs,
# bench_spill_slurm_against_local): 64 clients on one base replica, a burst pool of two; each
# round's throughput, p99 and failures, signal to the first burst replica serving, and load end
# to the burst pool drained, then the medians. A real one-node Slurm cluster (Debian's packages,
# which scripts/test.sh installs) is started for it.
# Usage: scripts/bench-slurm.sh [SECONDS_PER_ROUND] [ROUNDS]   (default 15 s, 2 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
export GPUCAP_BENCH_SECONDS="${1:-15}" GPUCAP_BENCH_ROUNDS="${2:-2}"
cargo build --release -q -p gpucap-runtime -p gpucap-fabric
cargo test --release -q -p gpucap-fabric --test slurm -- --ignored --nocapture bench_spill_slurm_against_local
