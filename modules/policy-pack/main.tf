# The starter policy pack: rules for residency, latency and spend, with the test cases that hold
# them to what they mean. The module creates nothing: it hands the provider the directory to load
# (`policy_paths`) and which of its rules a configuration overrides.

locals {
  dir   = abspath("${path.module}/policies")
  files = sort(fileset(local.dir, "*.hcl"))

  # Each rule's name and enforcement, read from the pack's files: `rule "NAME" {` opens a rule, and
  # its `enforcement` is the first one that follows.
  rules = tomap(merge([
    for f in local.files : {
      for m in regexall("rule \"([a-z0-9_]+)\"\\s*\\{[^}]*?enforcement\\s*=\\s*\"([a-z]+)\"", file("${local.dir}/${f}")) :
      m[0] => m[1]
    }
  ]...))
  soft_rules = sort([for name, enforcement in local.rules : name if enforcement == "soft"])
}
