//! The modules as their users run them: `terraform init` installs the provider from a release
//! package, then each module's own `terraform test` files run (plans, expected failures, and a
//! real endpoint applied and asked for an inference), its examples validate and plan, and a bad
//! input fails `terraform validate` with the module's own message.

mod harness;

use std::path::Path;

use harness::{Terraform, fixture, modules, repo_root, text};

/// The blocks starting with `keyword "` in the files of `dir` whose names end with `suffix`.
fn blocks_in(dir: &Path, suffix: &str, keyword: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a test file is readable");
            text.lines()
                .filter(|l| l.starts_with(&format!("{keyword} \"")))
                .count()
        })
        .sum()
}

/// Runs a module's `terraform test` files after installing the provider: every `run` block of
/// every test file must have run and passed. Prints the figures.
fn terraform_test(name: &str) {
    let dir = repo_root().join("modules").join(name);
    let tf = Terraform::new(&dir);
    let init = tf.init();
    let (out, took) = tf.ok(&["test", "-no-color"]);
    let summary = out
        .lines()
        .find(|l| l.starts_with("Success!"))
        .unwrap_or_else(|| {
            panic!(
                "no summary from terraform test in {}:\n{out}",
                dir.display()
            )
        });
    let runs = blocks_in(&dir.join("tests"), ".tftest.hcl", "run");
    assert!(runs > 0, "modules/{name}/tests has no run blocks");
    assert_eq!(
        summary,
        format!("Success! {runs} passed, 0 failed."),
        "every run block of modules/{name}/tests must run and pass:\n{out}"
    );
    println!(
        "modules/{name}: init {:.2} s, test {:.2} s; {summary}",
        init.as_secs_f64(),
        took.as_secs_f64()
    );
}

#[test]
fn hybrid_fabric_passes_its_terraform_tests() {
    terraform_test("hybrid-fabric");
}

#[test]
fn sovereign_endpoint_passes_its_terraform_tests_and_serves() {
    terraform_test("sovereign-endpoint");
}

#[test]
fn policy_pack_passes_its_terraform_tests() {
    terraform_test("policy-pack");
}

/// Every module has the standard layout, is formatted, and its examples validate and plan.
#[test]
fn modules_have_the_standard_layout_and_their_examples_plan() {
    let found: Vec<String> = modules()
        .iter()
        .map(|m| m.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        found,
        ["hybrid-fabric", "policy-pack", "sovereign-endpoint"],
        "modules/ holds another module: give it tests and add it here"
    );
    for module in modules() {
        for file in [
            "main.tf",
            "variables.tf",
            "outputs.tf",
            "versions.tf",
            "README.md",
        ] {
            assert!(
                module.join(file).exists(),
                "{} has no {file}",
                module.display()
            );
        }
        let versions = std::fs::read_to_string(module.join("versions.tf")).unwrap();
        // The `gpucap = { ... }` entry of required_providers names the source and a version.
        let gpucap = versions
            .split("gpucap = {")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .unwrap_or_else(|| {
                panic!(
                    "{}/versions.tf has no gpucap provider requirement",
                    module.display()
                )
            });
        let setting = |key: &str| {
            gpucap.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        assert_eq!(
            setting("source").as_deref(),
            Some("gpucap/gpucap"),
            "{}/versions.tf",
            module.display()
        );
        assert_eq!(
            setting("version").as_deref(),
            Some(">= 0.1.0, < 1.0.0"),
            "{}/versions.tf does not pin gpucap/gpucap to this major version",
            module.display()
        );
        let tf = Terraform::new(&module);
        tf.ok(&["fmt", "-check", "-recursive", "-no-color"]);
        let examples: Vec<_> = std::fs::read_dir(module.join("examples"))
            .unwrap_or_else(|_| panic!("{} has no examples/", module.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!examples.is_empty(), "{} has no example", module.display());
        for example in examples {
            let tf = Terraform::new(&example);
            tf.init();
            tf.ok(&["validate", "-no-color"]);
            let (plan, _) = tf.ok(&["plan", "-no-color"]);
            assert!(
                plan.contains("Plan:") || plan.contains("Changes to Outputs"),
                "{plan}"
            );
        }
    }
}

/// A bad input is refused by `terraform validate` with the message the module gives it, for
/// the variable at fault (a module's `terraform test` can only say which variable failed).
#[test]
fn a_bad_module_variable_fails_validate_with_its_own_message() {
    for (fixture_name, message) in [
        (
            "bad-variable",
            "base.capacity_type must be \"on_prem\" or \"reserved\"",
        ),
        (
            "bad-burst",
            "every burst pool's capacity_type must be \"on_demand\" or \"spot\"",
        ),
    ] {
        let tf = Terraform::new(fixture(fixture_name));
        tf.init();
        let out = tf.run(&["validate", "-no-color"]);
        let said = text(&out);
        assert!(
            !out.status.success(),
            "{fixture_name}: validate passed:\n{said}"
        );
        // Terraform wraps long messages; the words are what count.
        let flat = said.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("Invalid value for variable") && flat.contains(message),
            "{fixture_name}:\n{said}"
        );
        assert_eq!(
            flat.matches("Invalid value for variable").count(),
            1,
            "{fixture_name}: only the variable at fault is refused:\n{said}"
        );
        assert!(
            said.contains("main.tf"),
            "{fixture_name}: the error does not point at the file:\n{said}"
        );
    }
}

/// The pack, loaded by the provider through the module's output, stops a plan that breaks one of
/// its hard rules, and lets the rest plan.
#[test]
fn the_policy_pack_stops_a_plan_that_breaks_a_hard_rule() {
    let tf = Terraform::new(fixture("pack-violation"));
    tf.init();
    let out = tf.run(&["plan", "-no-color", "-var", "region=us-east-1"]);
    let said = text(&out);
    assert!(!out.status.success(), "the plan passed:\n{said}");
    assert!(
        said.contains("pii_stays_in_allowed_jurisdictions"),
        "{said}"
    );
    let (plan, _) = tf.ok(&["plan", "-no-color", "-var", "region=eu-central-1"]);
    assert!(plan.contains("Plan: 2 to add"), "{plan}");
}

/// The pack's rule tests pass under the review CLI, as its README says to run them.
#[test]
fn the_policy_pack_rules_pass_their_own_tests() {
    let pack = repo_root().join("modules/policy-pack/policies");
    let out = std::process::Command::new(harness::bin_dir().join("gpucap-policy"))
        .arg("test")
        .arg(&pack)
        .output()
        .expect("gpucap-policy runs");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let cases = blocks_in(&pack.join("tests"), ".hcl", "case");
    assert!(cases > 0, "the pack has no rule tests");
    assert!(
        said.lines()
            .any(|l| l == format!("{cases} passed, 0 failed")),
        "every case of the pack's tests must run and pass ({cases} written):\n{said}"
    );
}
