#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every decoder that takes outside input:
# fuzz/fuzz_targets/*.rs, seeded from fuzz/seeds/, which fuzz/make_seeds.py writes afresh from the
# project's fixtures on every run (so seeds follow the fixtures and are not committed copies).
# Runs on the stable toolchain: no sanitizer (`-s none`), which needs no nightly. cargo fuzz builds
# optimised with debug assertions and overflow checks on, so Rust's own checks (bounds, arithmetic
# overflow, UTF-8) still turn a bug into a crash the fuzzer reports.
#
# Usage: scripts/fuzz.sh [--runs N | --seconds S] [TARGET...]
#   --seconds S  fuzz each target for S seconds (default 30)
#   --runs N     fuzz each target for N executions instead
# The corpus each run grows is kept in fuzz/corpus/TARGET (not committed); a crash leaves its
# input in fuzz/artifacts/TARGET and fails the script. Prints executions and coverage per target.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=(-max_total_time=30)
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) limit=(-max_total_time="$2"); shift 2 ;;
    --runs) limit=(-runs="$2"); shift 2 ;;
    *) break ;;
  esac
done
cargo_fuzz_version=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
  cargo install --quiet --locked cargo-fuzz --version "$cargo_fuzz_version"
fi
python3 fuzz/make_seeds.py
cargo fuzz build -s none
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
printf '%-24s %12s %8s %8s %9s %s\n' target executions exec/s cov features result
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  rc=0
  # -timeout: a single input taking 10 s is a hang; -rss_limit_mb: one growing past 2 GiB a leak.
  cargo fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- "${limit[@]}" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$logs/$t" 2>&1 || rc=$?
  # A target that crashes on its first input prints no status lines: the row must still print.
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$logs/$t")
  last=$(grep -E '^#[0-9]+' "$logs/$t" | tail -1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  speed=$(sed -nE 's/.* exec\/s: ([0-9]+).*/\1/p' <<<"$last")
  if [ "$rc" -eq 0 ]; then result=ok; else result="FAILED (exit $rc)"; failed=1; fi
  printf '%-24s %12s %8s %8s %9s %s\n' "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$result"
  if [ "$rc" -ne 0 ]; then
    grep -E -A2 'panicked|ERROR|SUMMARY|Test unit written|artifact_prefix' "$logs/$t" | head -20 >&2 || true
  fi
done
exit "$failed"
