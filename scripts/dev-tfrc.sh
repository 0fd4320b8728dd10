#!/usr/bin/env bash
# Writes a Terraform CLI config whose dev_overrides load the gpucap provider from a build directory
# instead of the registry, so no `terraform init` is needed. Used by the quickstart, the provider
# benchmark and the acceptance tests, so the three cannot drift apart.
#   scripts/dev-tfrc.sh FILE BUILD_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 FILE BUILD_DIR (the directory holding terraform-provider-gpucap)" >&2; exit 2; }
cat >"$1" <<CFG
provider_installation {
  dev_overrides {
    "gpucap/gpucap" = "$2"
  }
  direct {}
}
CFG
