#!/usr/bin/env bash
# Provider figures on this machine, side by side in one run:
#   1. `terraform plan` wall time for N gpucap_gpu_pool (local driver) against N terraform_data
#      (Terraform's built-in resource: the floor any provider is measured against), and the ratio;
#   2. time from starting the provider to its handshake line;
#   3. `terraform apply` time of the quickstart configuration.
# Usage: scripts/bench-provider.sh [N]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
command -v terraform >/dev/null || { echo "terraform is not on PATH" >&2; exit 1; }
cargo build --release -q -p gpucap-provider -p gpucap-runtime
work=$(mktemp -d)
trap 'TF_CLI_CONFIG_FILE=$work/cli.tfrc terraform -chdir="$work/quickstart" destroy -auto-approve -input=false >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
export TF_CLI_CONFIG_FILE="$work/cli.tfrc" CHECKPOINT_DISABLE=1
scripts/dev-tfrc.sh "$TF_CLI_CONFIG_FILE" "$PWD/target/release"

mkdir -p "$work/pools" "$work/data" "$work/data-wide"
cat >"$work/pools/main.tf" <<TF
terraform {
  required_providers {
    gpucap = { source = "gpucap/gpucap" }
  }
}
provider "gpucap" {
  state_dir = "$work/pools/state"
}
resource "gpucap_gpu_pool" "p" {
  count              = $n
  name               = "pool-\${count.index}"
  region             = "eu-central-1"
  price_per_gpu_hour = 2.5
  gpu {
    model    = "H100"
    per_node = 8
  }
  nodes { max = 4 }
  local { devices = "cpu" }
}
TF
cat >"$work/data/main.tf" <<TF
resource "terraform_data" "d" {
  count = $n
  input = {
    name   = "pool-\${count.index}"
    region = "eu-central-1"
    nodes  = 4
  }
}
TF

# terraform_data carrying as many values as a pool's state: separates Terraform's cost of handling
# bigger objects from the cost of talking to an external provider.
cat >"$work/data-wide/main.tf" <<TF
resource "terraform_data" "d" {
  count = $n
  input = {
    name = "pool-\${count.index}", region = "eu-central-1", jurisdiction = "EU", capacity_type = "on_prem"
    price_per_gpu_hour = 2.5, tenancy = "shared", labels = {}, gpus_min = 0, gpus_max = 32
    hourly_cost_min_usd = 0, hourly_cost_max_usd = 80, devices = ["cpu"], id = "pool-\${count.index}"
    gpu = { model = "H100", per_node = 8, memory_gib = 80 }, nodes = { min = 0, max = 4 }
    local = { devices = "cpu" }
  }
}
TF

median_plan() { # median of 5 plan runs, in seconds
  for _ in 1 2 3 4 5; do
    s=$(date +%s.%N)
    terraform -chdir="$1" plan -input=false -refresh=false >/dev/null
    e=$(date +%s.%N)
    echo "$e - $s" | bc
  done | sort -n | sed -n 3p
}
terraform -chdir="$work/pools" plan -input=false >/dev/null # warm caches
terraform -chdir="$work/data" plan -input=false >/dev/null
pools=$(median_plan "$work/pools")
data=$(median_plan "$work/data")
wide=$(median_plan "$work/data-wide")
echo "== 1. terraform plan, $n resources (median of 5)"
python3 -c "print(f'gpucap_gpu_pool: {float(\"$pools\"):.2f} s   terraform_data: {float(\"$data\"):.2f} s   ratio {float(\"$pools\") / float(\"$data\"):.2f}x   (terraform_data with a pool-sized object: {float(\"$wide\"):.2f} s)')"

echo "== 1b. where a plan of $n pools spends its time"
# The provider under /usr/bin/time (its CPU per process) and with its debug timings on (the time each
# RPC spends in the provider: decoding, resource logic and policy, encoding), against the CPU of
# the whole plan (Terraform and every provider process it started).
mkdir -p "$work/wrapped"
cat >"$work/wrapped/terraform-provider-gpucap" <<SH
#!/bin/sh
exec /usr/bin/time -a -o "$work/provider-cpu" -f "%U %S" "$PWD/target/release/terraform-provider-gpucap" "\$@"
SH
chmod +x "$work/wrapped/terraform-provider-gpucap"
scripts/dev-tfrc.sh "$work/wrapped.tfrc" "$work/wrapped"
: >"$work/provider-cpu"
TF_CLI_CONFIG_FILE="$work/wrapped.tfrc" TF_LOG_PROVIDER=debug TF_LOG_PATH="$work/provider.log" \
  /usr/bin/time -o "$work/plan-cpu" -f "%e %U %S" \
  terraform -chdir="$work/pools" plan -input=false -refresh=false >/dev/null
python3 - "$work" <<'PY'
import re, sys, collections
work = sys.argv[1]
wall, user, sys_ = map(float, open(f"{work}/plan-cpu").read().split()[-3:])
procs = [tuple(map(float, l.split())) for l in open(f"{work}/provider-cpu") if re.match(r"^[0-9.]+ [0-9.]+$", l.strip())]
provider_cpu = sum(u + s for u, s in procs)
rpcs = collections.defaultdict(list)
for line in open(f"{work}/provider.log"):
    m = re.search(r"elapsed_us=(\d+).*?rpc=(\w+)|rpc=(\w+).*?elapsed_us=(\d+)", line)
    if m:
        rpc, us = (m.group(2), m.group(1)) if m.group(1) else (m.group(3), m.group(4))
        rpcs[rpc].append(int(us))
handled = sum(sum(v) for v in rpcs.values()) / 1e6
total = user + sys_
print(f"plan wall {wall:.2f} s; CPU {total:.2f} s in all: Terraform {total - provider_cpu:.2f} s, "
      f"{len(procs)} provider processes {provider_cpu:.2f} s ({100 * provider_cpu / total:.0f} %), "
      f"of which in RPC handlers {handled * 1000:.0f} ms")
for rpc, v in sorted(rpcs.items(), key=lambda kv: -sum(kv[1])):
    print(f"  {rpc:<32} {len(v):5d} calls  {sum(v) / 1000:7.1f} ms  {sum(v) / len(v):7.1f} us each")
PY

echo "== 2. provider start to handshake line (median of 20)"
python3 - "$PWD/target/release/terraform-provider-gpucap" <<'PY'
import os, subprocess, sys, time, statistics
cert = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521",
                       "-nodes", "-keyout", "/dev/null", "-subj", "/CN=localhost", "-days", "1"],
                      capture_output=True, text=True, check=True).stdout
env = dict(os.environ, TF_PLUGIN_MAGIC_COOKIE="d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
           PLUGIN_PROTOCOL_VERSIONS="5", PLUGIN_CLIENT_CERT=cert)
times = []
for _ in range(20):
    t = time.perf_counter()
    p = subprocess.Popen([sys.argv[1]], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.readline()
    times.append(time.perf_counter() - t)
    p.kill(); p.wait()
print(f"median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
PY

echo "== 3. quickstart terraform apply"
cp -r examples/quickstart "$work/quickstart"
rm -rf "$work/quickstart/.gpucap-state" "$work/quickstart/terraform.tfstate"*
sed -i -e "s#\${path.module}/../models#$PWD/examples/models#" \
  -e "s#\"../../modules/#\"$PWD/modules/#" "$work/quickstart/main.tf"
terraform -chdir="$work/quickstart" get >/dev/null
s=$(date +%s.%N)
terraform -chdir="$work/quickstart" apply -auto-approve -input=false >/dev/null
e=$(date +%s.%N)
python3 -c "print(f'apply: {$e - $s:.2f} s (4 resources, runtime started and ready)')"
