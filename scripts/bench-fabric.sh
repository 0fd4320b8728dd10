#!/usr/bin/env bash
# Benchmarks of the fabric (gpucap-fabric) on this machine, each comparison in one run:
#   1. router overhead: the digits model at 1 and 64 clients, straight to its one replica and
#      through the router, alternated; throughput ratio, added median latency, and the CPU time
#      the router and the replica spend per request (this machine's cores are shared by the load
#      generator, the router and the replica);
#   2. scale from zero: time to the first answer when no replica runs (5 rounds);
#   3. spill and drain: 64 clients against one base replica with a burst pool; time from the
#      signal going high to the first burst replica ready (`for` is 2s), and from the end of the
#      load to the last burst replica stopped (`idle_for` is 5s);
#   4. the router against nginx (proxy_pass with upstream keep-alive, 2 workers), one wrk for
#      all at 1 and 64 connections: the replica direct, through nginx, through a router with the
#      gateway off, one with it on (API key, rate limit, quota) and one with TLS, in 5 rounds that
#      interleave the paths (medians reported: this machine's figures drift by 10 % over minutes);
#      then the router's CPU per request for a good key against a wrong one.
# Usage: scripts/bench-fabric.sh [SECONDS_PER_RUN] [SECTIONS]   (default 10 s, section 4 uses 8 s
#        runs; SECTIONS is a comma-separated list such as 1,4, default all)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
sections=${2:-1,2,3,4}
wanted() { [[ ",$sections," == *",$1,"* ]]; }
cargo build --release -q -p gpucap-runtime -p gpucap-fabric
runtime=$PWD/target/release/gpucap-runtime
fabric=$PWD/target/release/gpucap-fabric
model=$PWD/examples/models/digits-mlp.safetensors

work=$(mktemp -d)
pid=
others=()
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  for p in "${others[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

start() { # start NAME BODY: runs a router with the [endpoint] header and BODY; sets $pid and $url
  local name=$1 body=$2
  mkdir -p "$work/$name"
  cat >"$work/$name/fabric.toml" <<EOF
[endpoint]
name = "digits"
address_file = "$work/$name/address"
operator_address_file = "$work/$name/operator.address"
[model]
path = "$model"
[runtime]
path = "$runtime"
[state]
dir = "$work/$name/state"
$body
EOF
  "$fabric" serve --config "$work/$name/fabric.toml" 2>"$work/$name/router.log" &
  pid=$!
  for _ in $(seq 300); do [ -s "$work/$name/address" ] && break; sleep 0.05; done
  [ -s "$work/$name/address" ] || { cat "$work/$name/router.log"; echo "the router did not start" >&2; exit 1; }
  url="http://$(cat "$work/$name/address")"
  operator="http://$(cat "$work/$name/operator.address")"
}
stop() { kill -TERM "$pid"; wait "$pid" || true; pid=; }
status() { curl -sf "$operator/fabric/status"; }
wait_status() { # wait_status PYTHON_EXPR: polls status until the expression (on s) is true
  for _ in $(seq 600); do
    status | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" && return 0
    sleep 0.1
  done
  echo "timed out waiting for: $1" >&2; status >&2; exit 1
}
bench() { "$runtime" bench --model digits --json "$@"; }
pool() { # pool NAME ROLE TYPE SLOTS PRICE
  printf '[[pools]]\nname = "%s"\nrole = "%s"\nregion = "%s-site"\njurisdiction = "EU"\ncapacity_type = "%s"\ngpus_max = %s\nprice_per_gpu_hour = %s\n[pools.local]\ndevices = "cpu"\n' "$1" "$2" "$1" "$3" "$4" "$5"
}
# One row of the test set, as the protocol's JSON.
row=$(head -n 1 examples/models/digits-test.csv)
body="{\"inputs\":[{\"name\":\"pixels\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[${row#*,}]}]}"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

if wanted 1; then
echo "== 1. router overhead: digits model, 1 and 64 clients, ${secs}s per run, direct and routed alternated"
start overhead "[policy]
name = \"one\"
$(pool lab base on_prem 1 0.4)"
wait_status 'len([r for r in s["replicas"] if r["phase"] == "ready"]) == 1'
read -r replica replica_pid < <(status | python3 -c 'import json,sys; r=json.load(sys.stdin)["replicas"][0]; print(r["address"], r["pid"])')
bench --url "$url" -c 16 --duration 2s >/dev/null # warm-up: connections, caches
for c in 1 64; do
  for round in 1 2; do
    for path in direct routed; do
      target=$url; [ "$path" = direct ] && target="http://$replica"
      r0=$(cpu_ticks "$pid"); p0=$(cpu_ticks "$replica_pid")
      bench --url "$target" -c "$c" --duration "${secs}s" >"$work/$path-$c-$round.json"
      echo "$(( $(cpu_ticks "$pid") - r0 )) $(( $(cpu_ticks "$replica_pid") - p0 ))" >"$work/$path-$c-$round.cpu"
    done
  done
done
stop
python3 - "$work" "$(getconf CLK_TCK)" <<'PY'
import json, sys
w, hz = sys.argv[1], int(sys.argv[2])
print(f"{'clients':>7} {'path':>7} {'run':>3} | {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} | {'router CPU us/req':>17} {'replica CPU us/req':>18}")
summary = {}
for c in (1, 64):
    for path in ("direct", "routed"):
        for rnd in (1, 2):
            r = json.load(open(f"{w}/{path}-{c}-{rnd}.json"))
            bad = sum(r["errors_by_status"].values()) + r["transport_errors"] + r["connect_errors"]
            assert bad == 0, f"errors in {path} run {rnd}: {r}"
            router, replica = (int(x) for x in open(f"{w}/{path}-{c}-{rnd}.cpu").read().split())
            per = lambda ticks: ticks / hz / r["ok"] * 1e6
            print(f"{c:>7} {path:>7} {rnd:>3} | {r['throughput_rps']:>9.1f} {r['latency']['p50_ms']:>8.3f} "
                  f"{r['latency']['p99_ms']:>8.3f} | {per(router):>17.1f} {per(replica):>18.1f}")
            summary.setdefault((c, path), []).append((r["throughput_rps"], r["latency"]["p50_ms"]))
for c in (1, 64):
    mean = lambda path, i: sum(x[i] for x in summary[(c, path)]) / len(summary[(c, path)])
    print(f"{c:>2} client(s): throughput routed/direct {mean('routed', 0) / mean('direct', 0):.3f} (target >= 0.9), "
          f"added median latency {mean('routed', 1) - mean('direct', 1):.3f} ms (target < 0.3 ms)")
PY
fi

echo
if wanted 2; then
echo "== 2. scale from zero: time to the first answer with no replica running (5 rounds)"
start zero "[replicas]
min = 0
max = 1
[policy]
name = \"zero\"
[policy.scale_down]
idle_for = \"1s\"
$(pool lab base on_prem 1 0.4)"
for round in 1 2 3 4 5; do
  wait_status 'len(s["replicas"]) == 0'
  curl -sf -o /dev/null -w "%{time_total}\n" -H 'Content-Type: application/json' -d "$body" \
    "$url/v2/models/digits/infer" >>"$work/zero.txt"
  status | python3 -c 'import json,sys; print(json.load(sys.stdin)["last_scale_from_zero_s"])' >>"$work/zero-router.txt"
done
stop
python3 - "$work" <<'PY'
import statistics, sys
w = sys.argv[1]
client = [float(x) for x in open(f"{w}/zero.txt")]
router = [float(x) for x in open(f"{w}/zero-router.txt")]
print("first answer (s):     " + "  ".join(f"{x:.3f}" for x in client))
print("first replica (s):    " + "  ".join(f"{x:.3f}" for x in router))
print(f"median first answer {statistics.median(client):.3f} s, worst {max(client):.3f} s (target < 1 s)")
PY
fi

echo
if wanted 3; then
echo "== 3. spill reaction and drain: 64 clients for ${secs}s on 1 base replica, burst pool of 2"
start spill "[batching]
max_batch_size = 8
[replicas]
min = 1
max = 3
[policy]
name = \"spill\"
[policy.scale_up]
queue_depth = 4
for = \"2s\"
[policy.scale_down]
idle_for = \"5s\"
$(pool lab base on_prem 1 0.4)
$(pool cloud burst on_demand 2 2.0)"
wait_status 'len([r for r in s["replicas"] if r["phase"] == "ready"]) == 1'
bench --url "$url" -c 64 --duration "${secs}s" >"$work/spill.json"
load_end=$(date +%s.%N)
wait_status 'all(r["pool"] != "cloud" for r in s["replicas"])'
drained=$(date +%s.%N)
status >"$work/spill-status.json"
curl -sf "$operator/metrics" >"$work/spill-metrics.txt"
stop
python3 - "$work" "$load_end" "$drained" <<'PY'
import json, sys
from datetime import datetime
w, load_end, drained = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
r = json.load(open(f"{w}/spill.json"))
s = json.load(open(f"{w}/spill-status.json"))
t = lambda d: datetime.fromisoformat(d["at"].replace("Z", "+00:00")).timestamp()
ds = s["decisions"]
high = next(d for d in ds if d["action"] == "signal")
ready = next(d for d in ds if d["action"] == "ready" and d["subject"].startswith("cloud"))
bad = sum(r["errors_by_status"].values()) + r["transport_errors"] + r["connect_errors"]
by_pool = {}
for line in open(f"{w}/spill-metrics.txt"):
    if line.startswith("gpucap_fabric_requests_total") and 'code="200"' in line:
        pool = line.split('pool="')[1].split('"')[0]
        by_pool[pool] = by_pool.get(pool, 0) + float(line.split()[-1])
print(f"load: {r['throughput_rps']:.1f} req/s, p99 {r['latency']['p99_ms']:.1f} ms, failed {bad}; served by pool: {by_pool}")
print(f"signal high -> first burst replica ready: {t(ready) - t(high):.2f} s (for = 2s; target <= 4 s)  [{high['reason']}]")
print(f"load stopped -> last burst replica stopped: {drained - load_end:.2f} s (idle_for = 5s)")
PY
fi

echo
if wanted 4; then
rounds=5
echo "== 4. the router against nginx, the gateway on and off, TLS against plain: wrk, 8s runs, $rounds rounds interleaved"
command -v wrk >/dev/null || { echo "wrk is missing: install Debian's package wrk" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is missing: install Debian's package nginx-light" >&2; exit 1; }
printf '%s' "$body" >"$work/body.json"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
# Three routers side by side, each with a replica of its own, so that every path is measured in
# every round: TLS, plain with the gateway off, and plain with the gateway on: a key with a rate
# limit and a quota far above what one machine does, so every request pays for every check and
# none is refused.
start tls "[tls]
cert_file = \"$work/cert.pem\"
key_file = \"$work/key.pem\"
$(pool lab base on_prem 1 0.4)"
wait_status 'len([r for r in s["replicas"] if r["phase"] == "ready"]) == 1'
tls_url="https://${url#http://}"
tls_pid=$pid
others+=("$pid")
start plain "[policy]
name = \"one\"
$(pool lab base on_prem 1 0.4)"
wait_status 'len([r for r in s["replicas"] if r["phase"] == "ready"]) == 1'
plain_url=$url
plain_pid=$pid
others+=("$pid")
secret=gpk_$(openssl rand -hex 32)
mkdir -p "$work/gateway/state"
python3 - "$work/gateway/state/keys.json" "$secret" <<'PY'
import hashlib, json, os, sys
path, secret = sys.argv[1], sys.argv[2]
key = {"name": "bench", "sha256": hashlib.sha256(secret.encode()).hexdigest(),
       "rate_limit": {"requests_per_second": 1000000, "rows_per_second": 1000000},
       "monthly_request_quota": 1000000000}
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, json.dumps({"keys": [key]}).encode())
os.close(fd)
PY
start gateway "[auth]
mode = \"api_key\"
[policy]
name = \"one\"
$(pool lab base on_prem 1 0.4)"
wait_status 'len([r for r in s["replicas"] if r["phase"] == "ready"]) == 1'
wait_status 's["router"]["auth"] == "api_key"'
# The replica that nginx proxies to and that is reached directly is the gateway router's own, so
# the comparison the target is about (nginx against the router with the gateway on) runs
# against one replica process: replicas started alike differ by a few per cent.
replica=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["replicas"][0]["address"])')
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  upstream replica { server $replica; keepalive 64; }
  server {
    listen 127.0.0.1:18490;
    location / {
      proxy_pass http://replica;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' &
nginx_pid=$!
others+=("$nginx_pid")
for _ in $(seq 100); do curl -sf http://127.0.0.1:18490/v2/health/ready >/dev/null && break; sleep 0.1; done
cpu_of() { local t=0 p; for p in "$@"; do t=$(( t + $(cpu_ticks "$p") )); done; echo "$t"; }
run_wrk() { # run_wrk TAG URL CONNS KEY PID...: one 8 s wrk run; its JSON line appended to
  # $work/TAG.wrk and the CPU ticks the processes PID... spent to $work/TAG.cpu
  local tag=$1 target=$2 conns=$3 key=$4
  shift 4
  local t0
  t0=$(cpu_of "$@")
  GPUCAP_BODY=$work/body.json GPUCAP_KEY=$key wrk -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -d8s --latency \
    -s scripts/peers/wrk_oip.lua "$target/v2/models/digits/infer" | grep '^WRK_JSON ' | cut -c10- >>"$work/$tag.wrk"
  echo $(( $(cpu_of "$@") - t0 )) >>"$work/$tag.cpu"
}
for u in "$plain_url" "$url" "$tls_url" http://127.0.0.1:18490; do
  GPUCAP_BODY=$work/body.json GPUCAP_KEY=$secret wrk -t1 -c4 -d2s -s scripts/peers/wrk_oip.lua "$u/v2/models/digits/infer" >/dev/null
done
read -r -a nginx_pids <<<"$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')"
for _ in $(seq "$rounds"); do
  for c in 1 64; do
    run_wrk "direct-$c" "http://$replica" "$c" ""
    run_wrk "nginx-$c" http://127.0.0.1:18490 "$c" "" "${nginx_pids[@]}"
    run_wrk "router-$c" "$plain_url" "$c" "" "$plain_pid"
    run_wrk "gateway-$c" "$url" "$c" "$secret" "$pid"
    run_wrk "tls-$c" "$tls_url" "$c" "" "$tls_pid"
  done
done
run_wrk keys-good "$url" 64 "$secret" "$pid"
run_wrk keys-bad "$url" 64 "gpk_$(openssl rand -hex 32)" "$pid"
python3 - "$work" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
w, hz = sys.argv[1], int(sys.argv[2])
runs = lambda tag: [json.loads(line) for line in open(f"{w}/{tag}.wrk")]
# The median round for throughput and latency; CPU per request over every round.
rps = lambda tag: statistics.median(x["requests"] / x["duration_us"] * 1e6 for x in runs(tag))
p50 = lambda tag: statistics.median(x["p50_ms"] for x in runs(tag))
p99 = lambda tag: statistics.median(x["p99_ms"] for x in runs(tag))
failed = lambda tag: sum(x["non_2xx"] + x["socket_errors"] for x in runs(tag))
cpu = lambda tag: sum(int(t) for t in open(f"{w}/{tag}.cpu")) / hz / sum(x["requests"] for x in runs(tag)) * 1e6
print(f"{'conns':>5} {'path':>22} | {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} | {'proxy CPU us/req':>16}   (medians of the rounds)")
names = {"direct": "replica direct", "nginx": "nginx", "router": "router, gateway off",
         "gateway": "router, gateway on", "tls": "router with TLS"}
for c in (1, 64):
    for tag, name in names.items():
        t = f"{tag}-{c}"
        proxy = "-" if tag == "direct" else f"{cpu(t):.1f}"
        print(f"{c:>5} {name:>22} | {rps(t):>9.0f} {p50(t):>8.3f} {p99(t):>8.3f} {failed(t):>8} | {proxy:>16}")
for c in (1, 64):
    ratios = [g["requests"] / g["duration_us"] / (n["requests"] / n["duration_us"])
              for g, n in zip(runs(f"gateway-{c}"), runs(f"nginx-{c}"))]
    print(f"{c:>2} conn(s): router (gateway on) / nginx {rps(f'gateway-{c}') / rps(f'nginx-{c}'):.2f}x "
          f"(target >= 1.0; by round {', '.join(f'{r:.2f}' for r in ratios)}); "
          f"added p50: router {p50(f'gateway-{c}') - p50(f'direct-{c}'):.3f} ms, nginx {p50(f'nginx-{c}') - p50(f'direct-{c}'):.3f} ms; "
          f"gateway on / off {rps(f'gateway-{c}') / rps(f'router-{c}'):.3f} (target >= 0.95); "
          f"TLS / plain {rps(f'tls-{c}') / rps(f'router-{c}'):.3f}")
for tag in ("good", "bad"):
    x = runs(f"keys-{tag}")[0]
    print(f"{tag} key: {x['requests']} requests at 64 connections ({x['non_2xx']} refused), "
          f"router CPU {cpu(f'keys-{tag}'):.1f} us per request")
PY
fi
