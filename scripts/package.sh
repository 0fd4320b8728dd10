#!/usr/bin/env bash
# Packs built binaries the way a release does (.goreleaser.yml): one zip per platform named
# terraform-provider-gpucap_VERSION_OS_ARCH.zip holding terraform-provider-gpucap_vVERSION,
# gpucap-runtime, gpucap-fabric, the README and the fabric daemon's systemd unit and example config
# (packaging/systemd/), beside terraform-provider-gpucap_VERSION_SHA256SUMS
# and the registry manifest terraform-provider-gpucap_VERSION_manifest.json. With --mirror, also
# lays the zip out as a Terraform filesystem mirror (packed layout), which `terraform init`
# installs from with `provider_installation { filesystem_mirror { path = MIRROR } }`.
#
#   scripts/package.sh [--bin-dir DIR] [--mirror MIRROR] OUT_DIR
#     --bin-dir DIR   where the built binaries are (default target/release)
#     --mirror DIR    also place the zip in DIR/registry.terraform.io/gpucap/gpucap/
#
# Debug information is stripped from the packed copies, as release builds carry little: a debug
# build packs to tens of MiB instead of hundreds.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin_dir="$root/target/release"
mirror=""
while [ $# -gt 1 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--bin-dir DIR] [--mirror MIRROR] OUT_DIR" >&2; exit 2; }
out="$1"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *) echo "unsupported OS $(uname -s)" >&2; exit 1 ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
pack() { # SOURCE_NAME PACKED_NAME
  local src="$bin_dir/$1"
  [ -x "$src" ] || { echo "$src is missing: build it first (cargo build -p ${2%%_v*})" >&2; exit 1; }
  strip --strip-debug -o "$stage/$2" "$src" 2>/dev/null || cp "$src" "$stage/$2"
  chmod 755 "$stage/$2"
}
pack terraform-provider-gpucap "terraform-provider-gpucap_v$version"
pack gpucap-runtime gpucap-runtime
pack gpucap-fabric gpucap-fabric
cp "$root/README.md" "$stage/README.md"
mkdir -p "$stage/packaging/systemd"
cp "$root/packaging/systemd/gpucap-fabric.service" "$root/packaging/systemd/daemon.toml.example" \
  "$stage/packaging/systemd/"

mkdir -p "$out"
zip_name="terraform-provider-gpucap_${version}_${os}_${arch}.zip"
rm -f "$out/$zip_name"
# zipfile keeps each file's mode, so the binaries stay executable once Terraform unpacks them;
# each file keeps its path in the stage (no directory entries, as goreleaser packs them).
(cd "$stage" && python3 - "$out/$zip_name" "terraform-provider-gpucap_v$version" gpucap-runtime \
  gpucap-fabric README.md packaging/systemd/gpucap-fabric.service \
  packaging/systemd/daemon.toml.example <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for name in sys.argv[2:]:
        z.write(name, name)
PY
)
manifest="terraform-provider-gpucap_${version}_manifest.json"
cp "$root/terraform-registry-manifest.json" "$out/$manifest"
(cd "$out" && sha256sum "$zip_name" "$manifest" >"terraform-provider-gpucap_${version}_SHA256SUMS")

if [ -n "$mirror" ]; then
  mkdir -p "$mirror/registry.terraform.io/gpucap/gpucap"
  cp "$out/$zip_name" "$mirror/registry.terraform.io/gpucap/gpucap/$zip_name"
fi
echo "$out/$zip_name"
