terraform {
  required_providers {
    gpucap = {
      source  = "gpucap/gpucap"
      version = "~> 0.1"
    }
  }
}

# Every argument is optional. Without any, the `local` driver keeps its records in
# $XDG_STATE_HOME/gpucap (or ~/.local/state/gpucap) and runs the gpucap-runtime binary shipped
# next to the provider.
provider "gpucap" {
  state_dir = "${path.root}/.gpucap-state"

  # runtime_path  = "/usr/local/bin/gpucap-runtime"
  # policy_paths  = ["${path.root}/policies"]
  # price_catalog = "${path.root}/prices.toml" # your own prices; see docs/policy/cost-model.md
}
