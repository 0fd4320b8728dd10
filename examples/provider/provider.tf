terraform {
  required_providers {
    gpucap = {
      source  = "gpucap/gpucap"
      version = "~> 0.1"
    }
  }
}

# Every argument is optional. Without any, records live in $XDG_STATE_HOME/gpucap (or
# ~/.local/state/gpucap), and endpoints run the gpucap-fabric router and gpucap-runtime replicas
# shipped next to the provider.
provider "gpucap" {
  state_dir = "${path.root}/.gpucap-state"

  # fabric_path   = "/usr/local/bin/gpucap-fabric"
  # runtime_path  = "/usr/local/bin/gpucap-runtime"
  # policy_paths  = ["${path.root}/policies"]
  # price_catalog = "${path.root}/prices.toml" # your own prices; see docs/guides/policy-cost-model.md
}
