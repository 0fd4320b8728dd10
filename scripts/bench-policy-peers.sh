#!/usr/bin/env bash
# `gpucap-policy check` side by side with two Rego engines on the same rules and the same plan:
#   - regorus, Microsoft's Rego interpreter in Rust (its `regorus eval` example CLI);
#   - OPA, the reference Rego engine in Go. No `opa` binary is on the package registries this
#     project reaches, so OPA's Go library runs from the PyPI package opa-golib-python-bindings
#     through scripts/peers/opa_eval.py. Go parses the plan itself (Python only passes its bytes
#     on), but each run also pays for starting Python and loading the library (tens of ms).
# The plan is scripts/peers/policy_plan.py's (N endpoints, 30 pools, 10 burst policies); the ten
# rules are scripts/peers/policy/gpucap/*.hcl and, in Rego, scripts/peers/policy/rego/policy.rego.
# Each engine runs ROUNDS times, in turn, from the command line as a CI job would (reading the plan
# file, writing its findings); the table gives the best and median wall time, the median CPU time
# and the peak RSS. The script fails unless every engine found exactly the same (rule, address)
# violations. gpucap-policy also runs with --jobs 1 (the peers evaluate on one thread) and on
# bench-policy.sh's 50-rule set (the starter pack plus 45 generated rules), which no peer runs.
#
# Usage: scripts/bench-policy-peers.sh [N]   (default 10000 endpoints)
# Environment: ROUNDS (default 3); GPUCAP_POLICY, REGORUS: binaries to use instead of building
#              them (target/release/gpucap-policy, target/peers/regorus/bin/regorus).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
rounds="${ROUNDS:-3}"
regorus_version=0.14.1

if [ -n "${GPUCAP_POLICY:-}" ]; then
  gpucap="$GPUCAP_POLICY"
else
  cargo build -q --release -p gpucap-policy
  gpucap=target/release/gpucap-policy
fi
regorus="${REGORUS:-target/peers/regorus/bin/regorus}"
if [ ! -x "$regorus" ]; then
  # regorus ships its CLI as an example of the crate, not as a binary target.
  cargo install --quiet "regorus@$regorus_version" --example regorus --root target/peers/regorus
fi
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
py=.venv/bin/python
if ! "$py" -c 'import opa_bindings' 2>/dev/null; then
  # The package declares Python >= 3.14 but its ctypes wrapper runs on any Python 3; see the file.
  "$py" -m pip install --quiet --disable-pip-version-check --ignore-requires-python \
    -r scripts/requirements-peers-policy.txt
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 scripts/peers/policy_plan.py --endpoints "$n" --output "$work/plan.json" \
  --generated-rules "$work/generated.hcl"
# bench-policy.sh's rule set, for the 50-rule run.
mkdir "$work/rules50"
cp modules/policy-pack/policies/*.hcl "$work/generated.hcl" "$work/rules50/"

# --timings (phase times on stderr) is newer than some builds; use it where the binary has it.
# (The help is read whole first: `grep -q` in a pipe would close it early and, under pipefail,
# fail the pipe on the writer's SIGPIPE.)
help=$("$gpucap" check --help)
timings=()
if grep -q -- '--timings' <<<"$help"; then timings=(--timings); fi
jobs1=()
if grep -q -- '--jobs' <<<"$help"; then jobs1=(--jobs 1); fi

opa_version=$("$py" - <<'PY'
# The OPA release compiled into the bridge library, from the Go module list it embeds.
import re, opa_bindings, pathlib
lib = pathlib.Path(opa_bindings.__file__).with_name("libopabridge.so").read_bytes()
m = re.search(rb"github\.com/open-policy-agent/opa\tv([0-9.]+)\t", lib)
print(m.group(1).decode() if m else "unknown")
PY
)
bindings_version=$("$py" -m pip show opa-golib-python-bindings 2>/dev/null | awk '/^Version:/ {print $2}')

# Each run: NAME, the label of its row, how to read its result (gpucap or rego), whether its
# violations are compared (the 50-rule run has other rules), the exit codes that mean it worked
# (gpucap-policy exits 1 when a hard or soft rule fails, which this plan is made to do), and the
# command, which writes its result to $out.
rego=scripts/peers/policy/rego/policy.rego
runs_tsv="$work/runs.tsv"
: >"$runs_tsv"
declare -A cmd ok
add_run() {
  local name=$1 label=$2 kind=$3 compared=$4
  ok[$name]=$5
  cmd[$name]=$6
  mkdir "$work/$name"
  printf '%s\t%s\t%s\t%s\n' "$name" "$label" "$kind" "$compared" >>"$runs_tsv"
}
add_run gpucap "gpucap-policy $("$gpucap" --version | awk '{print $2}'), every core ($(nproc))" gpucap yes "0 1" \
  "\"$gpucap\" check --plan \"\$plan\" --policies scripts/peers/policy/gpucap --format json --output \"\$out\" ${timings[*]}"
if [ ${#jobs1[@]} -gt 0 ]; then
  add_run gpucap1 "gpucap-policy, --jobs 1" gpucap yes "0 1" \
    "\"$gpucap\" check --plan \"\$plan\" --policies scripts/peers/policy/gpucap --format json --output \"\$out\" ${jobs1[*]}"
fi
add_run regorus "regorus $regorus_version (regorus eval)" rego yes "0" \
  "\"$regorus\" eval -d $rego -i \"\$plan\" data.gpucap.deny >\"\$out\""
add_run opa "OPA v$opa_version (Go library, bindings $bindings_version)" rego yes "0" \
  "\"$py\" scripts/peers/opa_eval.py --policy $rego --input \"\$plan\" --query gpucap.deny --output \"\$out\""
add_run gpucap50 "gpucap-policy, 50 rules of bench-policy.sh" gpucap no "0 1" \
  "\"$gpucap\" check --plan \"\$plan\" --policies \"$work/rules50\" --format json --output \"\$out\" ${timings[*]}"

# The first round of each would otherwise also time reading the binaries and the plan from disk.
cat "$gpucap" "$regorus" "$work/plan.json" >/dev/null

plan="$work/plan.json"
echo "plan written; $rounds rounds of: $(cut -f1 "$runs_tsv" | tr '\n' ' ')"
for round in $(seq 1 "$rounds"); do
  while IFS=$'\t' read -r name _; do
    out="$work/$name/result"
    rc=0
    plan="$plan" out="$out" /usr/bin/time -f '%e %U %S %M' -o "$work/$name/time.$round" \
      bash -c "${cmd[$name]}" </dev/null 2>"$work/$name/stderr" || rc=$?
    if [[ " ${ok[$name]} " != *" $rc "* ]]; then
      echo "$name failed (exit $rc) in round $round:" >&2
      cat "$work/$name/stderr" >&2
      exit 1
    fi
  done <"$runs_tsv"
done
python3 scripts/peers/policy_report.py "$work"
