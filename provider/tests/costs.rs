//! Costs known at plan time from the shared cost model: a pool's own price, else the price catalog
//! (the shipped one or the user's), through `terraform plan`.

mod common;

use common::Tf;

const POOLS: &str = r#"
resource "gpucap_gpu_pool" "cloud" {
  name          = "cloud"
  region        = "eu-central-1"
  capacity_type = "on_demand"
  gpu {
    model    = "H100"
    per_node = 8
  }
  nodes { max = 2 }
  local { devices = "cpu" }
}

resource "gpucap_gpu_pool" "exotic" {
  name   = "exotic"
  region = "eu-west-1"
  gpu { model = "MI300X" }
  nodes { max = 1 }
  local { devices = "cpu" }
}

output "price" { value = gpucap_gpu_pool.cloud.effective_price_per_gpu_hour }
output "source" { value = gpucap_gpu_pool.cloud.price_source }
output "max" { value = gpucap_gpu_pool.cloud.hourly_cost_max_usd }
output "exotic_max" { value = coalesce(gpucap_gpu_pool.exotic.hourly_cost_max_usd, -1) }
"#;

#[test]
fn unpriced_pools_use_the_catalog_and_say_so() {
    let tf = Tf::new(POOLS);
    let (_, plan) = tf.plan();
    // Known at plan time, not "(known after apply)".
    assert!(
        plan.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains("hourly_cost_max_usd = 110.08"),
        "{plan}"
    );
    tf.apply();
    assert_eq!(tf.output("price"), "6.88");
    assert!(
        tf.output("source")
            .starts_with("catalog: AWS EC2 p5.48xlarge")
    );
    assert_eq!(tf.output("max"), "110.08"); // 16 GPUs x 6.88
    assert_eq!(
        tf.output("exotic_max"),
        "-1",
        "a model no catalog prices has no cost"
    );
}

#[test]
fn a_users_catalog_replaces_the_shipped_one_and_a_bad_one_is_named() {
    let tf = Tf::new("");
    let catalog = tf.path().join("prices.toml");
    std::fs::write(
        &catalog,
        "[[price]]\ngpu = \"h100\"\ncapacity_type = \"on_demand\"\nusd_per_gpu_hour = 3.5\nsource = \"our negotiated rate\"\n",
    )
    .unwrap();
    let provider = |catalog: &std::path::Path| {
        format!(
            "terraform {{\n  required_providers {{\n    gpucap = {{ source = \"gpucap/gpucap\" }}\n  }}\n}}\n\
             provider \"gpucap\" {{\n  state_dir     = \"{}\"\n  price_catalog = \"{}\"\n}}\n{POOLS}",
            tf.state_dir().display(),
            catalog.display()
        )
    };
    tf.write_raw(&provider(&catalog));
    tf.apply();
    assert_eq!(tf.output("price"), "3.5");
    assert_eq!(tf.output("source"), "catalog: our negotiated rate");

    std::fs::write(&catalog, "[[price]]\ngpu = \"h100\"\ncapacity_type = \"on_demand\"\nusd_per_gpu_hour = -2\nsource = \"x\"\n").unwrap();
    // Terraform wraps long lines; compare words.
    let err = tf
        .fails(&["plan", "-no-color", "-input=false"])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(err.contains("Invalid price catalog"), "{err}");
    assert!(
        err.contains("entry 1 (h100/on_demand): usd_per_gpu_hour must be a number of 0 or more"),
        "{err}"
    );
}
