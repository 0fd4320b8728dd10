//! Compiling, checking and evaluating expressions end to end.
use std::collections::BTreeMap;

use super::*;
use crate::schema::{Scalar, Shape};
use cel::Context;
use serde_json::{Value as Json, json};

pub(super) fn scope() -> Scope {
    let endpoint = crate::schema::Schemas::gpucap()
        .resource("gpucap_inference_endpoint")
        .unwrap()
        .clone();
    let pool = crate::schema::Schemas::gpucap()
        .resource("gpucap_gpu_pool")
        .unwrap()
        .clone();
    Scope {
        vars: BTreeMap::from([
            ("resource".to_string(), endpoint),
            ("pools".to_string(), Shape::List(Box::new(pool))),
            ("action".to_string(), Shape::Scalar(Scalar::String)),
        ]),
        subject: "gpucap_inference_endpoint".into(),
    }
}

fn compile_err(src: &str) -> Vec<ExprProblem> {
    match on_large_stack(|| compile(src, &scope(), &Limits::default())).unwrap() {
        Ok(_) => panic!("compiled: {}", &src[..src.len().min(80)]),
        Err(p) => p,
    }
}

#[test]
fn field_selection_reads_maps_and_explains_what_is_not_one() {
    let endpoint = json!({"name": "e", "labels": {"team": "risk"}, "replicas": null});
    let vars = [("resource", endpoint)];
    assert_eq!(eval("resource.labels.team", &vars), Ok(json!("risk")));
    assert_eq!(
        eval(
            "has(resource.labels.team) && !has(resource.labels.x)",
            &vars
        ),
        Ok(json!(true))
    );
    assert_eq!(
        eval("resource.labels.x", &vars),
        Err(EvalError::Cel("No such key: x".into()))
    );
    let Err(EvalError::Cel(null)) = eval("resource.replicas.max > 1", &vars) else {
        panic!("a field of null must be an error");
    };
    assert!(null.starts_with("cannot read a field of null"), "{null}");
    assert_eq!(
        eval(
            "resource.replicas != null && resource.replicas.max > 1",
            &vars
        ),
        Ok(json!(false))
    );
}

fn eval(src: &str, vars: &[(&str, Json)]) -> Result<Json, EvalError> {
    let c = on_large_stack(|| compile(src, &scope(), &Limits::default()))
        .unwrap()
        .unwrap();
    eval_in(&c, vars)
}

/// Evaluates `c` with `vars`, on a large stack, with a budget of 1000 steps.
pub(super) fn eval_in(c: &Compiled, vars: &[(&str, Json)]) -> Result<Json, EvalError> {
    on_large_stack(|| {
        let mut ctx = Context::with_env(env());
        for (k, v) in vars {
            ctx.add_variable_as_val(*k, crate::value::from_json(v));
        }
        c.eval(&ctx, 1000).map(|v| to_json(&v))
    })
    .unwrap()
}

#[test]
fn unknown_attributes_and_variables_are_located_with_hints() {
    let p = compile_err("resource.data_residency.clasification == 'pii'");
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].message,
        "`resource.data_residency` has no attribute `clasification`"
    );
    assert_eq!(p[0].hint.as_deref(), Some("did you mean `classification`?"));
    assert_eq!((p[0].start, p[0].end), (24, 37));

    let p = compile_err("pools.all(p, p.jurisdction == 'EU')");
    assert_eq!(p[0].message, "`p` has no attribute `jurisdction`");
    let p = compile_err("resorce.name == 'x'");
    assert_eq!(p[0].message, "unknown variable `resorce`");
    assert_eq!(p[0].hint.as_deref(), Some("did you mean `resource`?"));
    let p = compile_err("resource.nam == 'x'");
    assert_eq!(
        p[0].message,
        "`gpucap_inference_endpoint` has no attribute `nam`"
    );
}

#[test]
fn syntax_errors_point_into_the_expression() {
    let p = compile_err("resource.name == ");
    assert!(p[0].message.starts_with("CEL syntax error"), "{p:?}");
    assert!(p[0].start >= 14, "{p:?}");
}

#[test]
fn size_and_depth_are_bounded_without_overflowing_the_stack() {
    let long = format!("resource.name == '{}'", "x".repeat(9000));
    assert!(compile_err(&long)[0].message.contains("limit is 8192"));
    let deep = format!("{}1{}", "(".repeat(3000), ")".repeat(3000));
    let problems = compile_err(&deep);
    assert!(
        problems[0]
            .message
            .contains("Recursion limit of 96 exceeded")
            && problems[0].start == 97,
        "{problems:?}"
    );
    let chain = format!("1{}", " + 1".repeat(2000));
    let problems = compile_err(&chain);
    assert_eq!(
        problems[0].message, "expression nests 2001 levels deep; the limit is 64",
        "{problems:?}"
    );
    // The parser folds runs of `!`; what matters is that nothing overflows.
    let nots = format!("{}true", "!".repeat(5000));
    assert!(
        on_large_stack(|| compile(&nots, &scope(), &Limits::default()))
            .unwrap()
            .is_ok()
    );
}

#[test]
fn numbers_strings_and_extensions_evaluate() {
    let r = json!({"name": "Fraud", "replicas": {"min": 2, "max": 2.5}});
    assert_eq!(
        eval("resource.replicas.min + 1", &[("resource", r.clone())]),
        Ok(json!(3))
    );
    assert_eq!(
        eval("resource.replicas.max * 2.0", &[("resource", r.clone())]),
        Ok(json!(5.0))
    );
    assert_eq!(
        eval(
            "resource.name.lowerAscii() + '-' + ['a', 'b'].join(',')",
            &[("resource", r.clone())]
        ),
        Ok(json!("fraud-a,b"))
    );
    assert_eq!(eval("math.greatest(1, 5, 3)", &[]), Ok(json!(5)));
    assert!(matches!(eval("1 / 0 == 1", &[]), Err(EvalError::Cel(_))));
    assert!(matches!(
        eval(
            "resource.labels['team'] == 'x'",
            &[("resource", json!({"labels": {}}))]
        ),
        Err(EvalError::Cel(_))
    ));
}

#[test]
fn comprehensions_run_within_the_budget() {
    let pools: Vec<Json> = (0..40)
        .map(|i| json!({"region": format!("r{i}")}))
        .collect();
    let vars = [("pools", Json::Array(pools))];
    assert_eq!(eval("pools.all(p, p.region != '')", &vars), Ok(json!(true)));
    assert_eq!(
        eval("pools.all(p, pools.all(q, q.region != ''))", &vars),
        Err(EvalError::Budget(1000))
    );
    // `exists` lets a later `true` override an error, so an erring predicate must still count.
    assert_eq!(
        eval("pools.exists(p, pools.exists(q, 1 / 0 == 1))", &vars),
        Err(EvalError::Budget(1000))
    );
    assert_eq!(
        eval(
            "pools.exists(p, p.region.size() / (p.region == 'r0' ? 0 : 1) > 1)",
            &vars
        ),
        Ok(json!(true))
    );
}

#[test]
fn denied_functions_are_refused_at_load() {
    let p = compile_err("__gpucap_matches('a', 'a')");
    assert_eq!(p[0].message, "`__gpucap_matches` is reserved");
    let p = compile_err("lists.range(1000000000).size() > 0");
    assert!(
        p[0].message.contains("`lists.range` is not available"),
        "{p:?}"
    );
}

#[test]
fn resource_paths_keep_the_longest_reads_in_order() {
    let c = on_large_stack(|| {
        compile(
            "resource.data_residency.classification == 'pii' && resource.replicas.min > 0 && has(resource.listen.port)",
            &scope(),
            &Limits::default(),
        )
    })
    .unwrap()
    .unwrap();
    assert_eq!(
        c.resource_paths,
        vec![
            vec!["data_residency".to_string(), "classification".to_string()],
            vec!["replicas".to_string(), "min".to_string()],
            vec!["listen".to_string()],
        ]
    );
}
