#!/usr/bin/env bash
# Benchmarks of the aws_autoscaling_group driver and the join channel, against moto's AWS emulator
# on this machine, in one run (fabric/tests/aws.rs, bench_joined_replicas), release builds:
# decision to a joined replica serving, API calls per start, and a joined replica's requests/s and
# p50 against the same runtime reached by address, through nginx (a reverse proxy: one extra hop)
# and through an OpenSSH reverse tunnel (`ssh -R`: a replica's outbound connection, as ours).
# Needs .venv with scripts/requirements.txt (scripts/test.sh makes it); installs Debian's nginx
# and openssh-server when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export GPUCAP_PYTHON="${GPUCAP_PYTHON:-$PWD/.venv/bin/python}"
if ! command -v nginx >/dev/null || ! [ -x /usr/sbin/sshd ]; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light openssh-server >/dev/null
  else
    echo "nginx or sshd is missing: install Debian's nginx-light and openssh-server" >&2; exit 1
  fi
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
free_port() { "$GPUCAP_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
direct=$(free_port); proxied=$(free_port); sshport=$(free_port); tunneled=$(free_port)

# nginx in front of the direct runtime, keeping connections to it open as the router does.
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  upstream runtime { server 127.0.0.1:$direct; keepalive 64; }
  server {
    listen 127.0.0.1:$proxied;
    location / {
      proxy_pass http://runtime;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & pids+=($!)

# An sshd on loopback, and the replica side's `ssh -R`: the tunnel's port on the "router" side
# reaches the direct runtime over the connection the "replica" opened.
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
mkdir -p /run/sshd
/usr/sbin/sshd -D -f /dev/null -p "$sshport" -o ListenAddress=127.0.0.1 -o HostKey="$work/host_key" \
  -o AuthorizedKeysFile="$work/authorized_keys" -o PermitRootLogin=prohibit-password \
  -o StrictModes=no -o PidFile=none & pids+=($!)
sleep 0.5
ssh -N -q -i "$work/client_key" -p "$sshport" -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o ExitOnForwardFailure=yes -c aes128-gcm@openssh.com \
  -R "127.0.0.1:$tunneled:127.0.0.1:$direct" "$(id -un)@127.0.0.1" & pids+=($!)

cargo build --release -q -p gpucap-runtime -p gpucap-fabric
GPUCAP_BENCH_DIRECT_PORT=$direct \
GPUCAP_BENCH_PEERS="nginx (reverse proxy)=http://127.0.0.1:$proxied,ssh -R (reverse tunnel)=http://127.0.0.1:$tunneled" \
  cargo test --release -q -p gpucap-fabric --test aws -- --ignored --nocapture bench_joined_replicas
