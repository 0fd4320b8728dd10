//! Policy files the provider cannot load fail the plan with the file, line and column. (The rules'
//! findings in `terraform plan` and in `gpucap-policy check` are compared in tests/policy.rs.)

mod common;

use common::Tf;

#[test]
fn broken_rules_fail_the_plan_with_file_line_and_column() {
    let tf = Tf::new("");
    let rules = tf.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("broken.hcl"),
        "rule \"typo\" {\n  resources   = [\"gpucap_gpu_pool\"]\n  enforcement = \"hard\"\n  condition   = \"resource.regin == 'x'\"\n  message     = \"m\"\n}\n",
    )
    .unwrap();
    tf.write_with(
        &format!("  policy_paths = [\"{}\"]\n", rules.display()),
        "resource \"gpucap_gpu_pool\" \"p\" {\n  name   = \"p\"\n  region = \"eu-central-1\"\n  gpu { model = \"cpu\" }\n  nodes { max = 1 }\n  local {}\n}\n",
    );
    let err = tf.fails(&["plan", "-no-color", "-input=false"]);
    insta::assert_snapshot!(err);
}
