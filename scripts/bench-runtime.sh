#!/usr/bin/env bash
# Serving benchmarks of gpucap-runtime on this machine, each comparison in one run:
#   1. batching: the benchmark model served with max_batch_size 64 and with 1, at 1, 16 and 64 clients;
#   2. overload: ten times more clients than queue_capacity for 20 s (memory, refusal speed, failures);
#   3. drain: SIGTERM while 64 clients are sending (every accepted request must be answered).
# Usage: scripts/bench-runtime.sh [SECONDS_PER_POINT]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
cargo build --release -q -p gpucap-runtime
bin=$PWD/target/release/gpucap-runtime
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
model=examples/bench/bench-ffn.safetensors
[ -f "$model" ] || .venv/bin/python examples/bench/make_bench_model.py "$model"
"$bin" inspect "$model"

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start() { # start NAME FLAGS...: serves the benchmark model, sets $pid and $url
  local name=$1; shift
  rm -f "$work/addr"
  "$bin" serve --model "$model" --name bench --listen 127.0.0.1:0 --address-file "$work/addr" \
    --log-level warn "$@" 2>"$work/$name.log" &
  pid=$!
  for _ in $(seq 300); do [ -s "$work/addr" ] && break; sleep 0.1; done
  [ -s "$work/addr" ] || { cat "$work/$name.log"; echo "the runtime did not start" >&2; exit 1; }
  url="http://$(cat "$work/addr")"
}
stop() { kill -TERM "$pid"; wait "$pid" || true; pid=; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
bench() { "$bin" bench --url "$url" --model bench --json "$@"; }

echo "== 1. batching: max_batch_size 64 vs 1, ${secs}s per point"
for mbs in 64 1; do
  start "batch$mbs" --max-batch-size "$mbs"
  bench -c 4 --duration 2s >/dev/null # warm-up
  for c in 1 16 64; do
    bench -c "$c" --duration "${secs}s" >"$work/batch-$mbs-$c.json"
  done
  stop
done
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
print(f"{'clients':>7} | {'batched req/s':>13} {'p99 ms':>8} | {'unbatched req/s':>15} {'p99 ms':>8} | speed-up")
for c in (1, 16, 64):
    b = json.load(open(f"{w}/batch-64-{c}.json"))
    u = json.load(open(f"{w}/batch-1-{c}.json"))
    for r in (b, u):
        bad = sum(r["errors_by_status"].values()) + r["transport_errors"] + r["connect_errors"]
        assert bad == 0, f"errors in a batching run: {r}"
    print(f"{c:>7} | {b['throughput_rps']:>13.1f} {b['latency']['p99_ms']:>8.1f} | "
          f"{u['throughput_rps']:>15.1f} {u['latency']['p99_ms']:>8.1f} | {b['throughput_rps'] / u['throughput_rps']:.2f}x")
PY

echo "== 2. overload: queue_capacity 32, 320 clients for 20 s"
start overload --max-batch-size 64 --queue-capacity 32
bench -c 4 --duration 2s >/dev/null
rss_start=$(rss_kib "$pid")
bench -c 320 --duration 20s >"$work/overload.json" &
bench_pid=$!
rss_samples=
for _ in 1 2 3 4; do sleep 5; rss_samples="$rss_samples $(( $(rss_kib "$pid") / 1024 ))"; done
wait "$bench_pid"
rss_end=$(rss_kib "$pid")
echo "resident memory every 5 s under overload (MiB):$rss_samples"

curl -sf "$url/v2/health/ready" >/dev/null && up=yes || up=no
curl -sf "$url/metrics" >"$work/overload.metrics"
stop
python3 - "$work" "$rss_start" "$rss_end" "$up" <<'PY'
import json, re, sys
w, rss0, rss1, up = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = json.load(open(f"{w}/overload.json"))
metrics = open(f"{w}/overload.metrics").read()
def total(name, label):
    pattern = "^" + name + "{[^}]*" + label + "[^}]*} (\\S+)"
    return sum(float(v) for v in re.findall(pattern, metrics, re.M))
failed = {k: v for k, v in r["errors_by_status"].items() if k != "429"}
print(f"server up and ready after the run: {up}")
print(f"resident memory: start {rss0 / 1024:.1f} MiB, end {rss1 / 1024:.1f} MiB")
print(f"answered 200: {r['ok']} ({r['throughput_rps']:.1f} req/s), p99 {r['latency']['p99_ms']:.1f} ms")
ref = r["refused_latency"]
print(f"refused 429: {r['errors_by_status'].get('429', 0)}, refusal latency p50 {ref['p50_ms']:.2f} ms, "
      f"p99 {ref['p99_ms']:.2f} ms, max {ref['max_ms']:.2f} ms")
print(f"accepted but failed (5xx/504, transport): {sum(failed.values())} {failed}, {r['transport_errors']}")
ok_count = total("gpucap_inference_requests_total", 'code="200"')
full_count = total("gpucap_rejected_requests_total", 'reason="queue_full"')
timeout_count = total("gpucap_rejected_requests_total", 'reason="timeout"')
print(f"server counted: 200 = {ok_count:.0f}, rejected queue_full = {full_count:.0f}, timeout = {timeout_count:.0f}")
refusal_s = total("gpucap_request_duration_seconds_sum", 'code="429"')
refusal_n = total("gpucap_request_duration_seconds_count", 'code="429"')
print(f"server time per refusal (arrival to 429 response): mean {1e6 * refusal_s / max(refusal_n, 1):.0f} us; "
      "the client-side figure above also includes waiting for CPU among the 320 clients on this machine")
assert up == "yes" and not failed and r["transport_errors"] == 0, "overload lost accepted requests"
PY

echo "== 3. drain: SIGTERM after 3 s of 64 clients"
start drain --max-batch-size 64
bench -c 64 --duration 8s >"$work/drain.json" &
bench_pid=$!
sleep 3
t0=$(date +%s.%N)
kill -TERM "$pid"
status=0; wait "$pid" || status=$?
t1=$(date +%s.%N)
pid=
wait "$bench_pid"
python3 - "$work" "$status" "$t0" "$t1" <<'PY'
import json, sys
w, status, t0, t1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
r = json.load(open(f"{w}/drain.json"))
failed = {k: v for k, v in r["errors_by_status"].items() if k not in ("503",)}
print(f"server exit status {status}, {t1 - t0:.2f} s from SIGTERM to exit")
print(f"answered 200: {r['ok']}; refused while draining (503): {r['errors_by_status'].get('503', 0)}; "
      f"connection refused after exit: {r['connect_errors']}")
print(f"accepted but unanswered (reset mid-request or 5xx): {r['transport_errors']} {failed}")
assert status == 0 and r["transport_errors"] == 0 and not failed, "drain lost accepted requests"
PY
