//! The data sources through Terraform: the region table and this host's devices.

mod common;

use common::Tf;

#[test]
fn regions_and_local_devices_read_through_terraform() {
    let tf = Tf::new(
        r#"
data "gpucap_regions" "eu_aws" {
  cloud        = "aws"
  jurisdiction = "EU"
}

data "gpucap_local_devices" "here" {}

output "eu_aws" { value = join(",", data.gpucap_regions.eu_aws.names) }
output "frankfurt_country" {
  value = one([for r in data.gpucap_regions.eu_aws.regions : r.country if r.name == "eu-central-1"])
}
output "first_device" { value = data.gpucap_local_devices.here.devices[0].id }
output "cores" { value = data.gpucap_local_devices.here.devices[0].cores }
"#,
    );
    tf.apply();
    let eu: Vec<String> = tf.output("eu_aws").split(',').map(str::to_string).collect();
    assert!(
        eu.contains(&"eu-central-1".to_string()) && eu.contains(&"eu-west-1".to_string()),
        "{eu:?}"
    );
    assert!(
        !eu.iter().any(|r| r.starts_with("us-") || r == "eu-west-2"),
        "non-EU region listed: {eu:?}"
    );
    assert_eq!(tf.output("frankfurt_country"), "DE");
    assert_eq!(tf.output("first_device"), "cpu");
    let cores: usize = tf.output("cores").parse().unwrap();
    // What the fabric's device discovery finds, carried through Terraform unchanged.
    assert_eq!(cores, gpucap_fabric::driver::local::discover()[0].cores);
}

#[test]
fn an_unknown_jurisdiction_filter_is_a_validation_error() {
    let tf = Tf::new("data \"gpucap_regions\" \"x\" {\n  jurisdiction = \"Europe\"\n}\n");
    let err = tf.fails(&["validate", "-no-color"]);
    assert!(
        err.contains("\"Europe\" is not valid; use one of:") && err.contains("EU"),
        "{err}"
    );
}
