# Shared by the served benchmarks (bench-peers.sh, bench-onnx.sh), sourced from the repository
# root. setup_peers sets $bin, $py and $mlserver; the other functions need $work (a scratch
# directory), $secs (seconds per point) and the array pids=() of server process groups to clean up.

make_work() { # a scratch directory $work and the server list pids=(), both cleaned up on exit
  work=$(mktemp -d)
  pids=()
  trap cleanup EXIT
}

cleanup() { # kills every server process group left, removes $work
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null; rm -rf "$work"
}

setup_peers() { # builds the runtime, installs the peers into .venv and wrk from Debian
  cargo build --release -q -p gpucap-runtime
  bin=$PWD/target/release/gpucap-runtime
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt -r scripts/requirements-peers.txt
  py=$PWD/.venv/bin/python
  mlserver=$PWD/.venv/bin/mlserver
  if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null; else
      echo "wrk is missing: install Debian's package wrk" >&2; exit 1; fi
  fi
}

wait_ready() { # wait_ready URL LOG: polls the server's readiness for up to 60 s
  for _ in $(seq 600); do curl -sf "$1/v2/health/ready" >/dev/null && return 0; sleep 0.1; done
  cat "$2" >&2; echo "server at $1 did not become ready" >&2; exit 1
}

load() { # load NAME URL MODEL BODY: wrk at 1, 16 and 64 connections after a short warm-up;
  # writes $work/NAME-cCONNS.wrk
  GPUCAP_BODY=$4 wrk -t1 -c4 -d2s -s scripts/peers/wrk_oip.lua "$2/v2/models/$3/infer" >/dev/null
  for c in 1 16 64; do
    GPUCAP_BODY=$4 wrk -t"$(( c < 2 ? 1 : 2 ))" -c"$c" -d"${secs}s" --latency \
      -s scripts/peers/wrk_oip.lua "$2/v2/models/$3/infer" >"$work/$1-c$c.wrk"
  done
}

stop_last() { # TERM the last server's process group; KILL what is left after 15 s (MLServer 1.7
  # can hang in shutdown waiting for a worker it has not reaped)
  local p=${pids[-1]}
  kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p"
  for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset 'pids[-1]'
}

start_mlserver() { # start_mlserver DIR NAME MODEL.onnx WORKERS THREADS: MLServer on port 18480
  # hosting MODEL in ONNX Runtime (scripts/peers/mlserver_runtime.py) with adaptive batching
  local dir=$1 name=$2 model=$3 workers=$4 threads=$5
  mkdir -p "$dir/$name"
  cp scripts/peers/mlserver_runtime.py "$dir/"
  cat >"$dir/settings.json" <<JSON
{"parallel_workers": $workers, "http_port": 18480, "grpc_port": 18481, "metrics_port": 18482,
 "debug": false, "load_models_at_startup": true}
JSON
  cat >"$dir/$name/model-settings.json" <<JSON
{"name": "$name", "implementation": "mlserver_runtime.OnnxRuntimeModel",
 "max_batch_size": 64, "max_batch_time": 0.002,
 "parameters": {"uri": "$model"}}
JSON
  local per_worker=$(( workers > 0 ? (threads + workers - 1) / workers : threads ))
  # Its own process group, so stopping it reaches its worker processes too.
  (cd "$dir" && GPUCAP_PEER_THREADS=$per_worker exec setsid "$mlserver" start . >"$dir/log" 2>&1) &
  pids+=($!)
  wait_ready http://127.0.0.1:18480 "$dir/log"
}

start_gpucap() { # start_gpucap TAG MODEL_FILE NAME [SERVE FLAGS...]: gpucap-runtime ($bin) on a
  # free port; sets gpucap_url
  local tag=$1 model=$2 name=$3
  shift 3
  rm -f "$work/$tag.addr"
  "$bin" serve --model "$model" --name "$name" --listen 127.0.0.1:0 --address-file "$work/$tag.addr" \
    --log-level warn "$@" 2>"$work/$tag.log" &
  pids+=($!)
  for _ in $(seq 300); do [ -s "$work/$tag.addr" ] && break; sleep 0.1; done
  gpucap_url="http://$(cat "$work/$tag.addr")"
  wait_ready "$gpucap_url" "$work/$tag.log"
}
