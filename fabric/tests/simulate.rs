//! `gpucap-fabric simulate` against the router it stands for: a real router's recorded control
//! rounds replayed through the simulator's control loop give the same decisions (the same policy
//! built from the same file, deciding the same on the same observations; not a check of what the
//! simulator observes); the command reads configs, traces and plans, refuses bad ones naming the
//! line or the name, and its runs add up.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use gpucap_fabric::simulate::engine::Control;
use gpucap_fabric::simulate::source;

fn simulate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(fabric_bin())
        .arg("simulate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_simulator_decides_as_the_router_did_on_the_same_rounds() {
    let _one = serial();
    let mut r = Router::start_recording(&format!(
        "[batching]\nmax_batch_size = 4\n\n[replicas]\nmin = 1\nmax = 3\n\n\
         [residency]\nallowed_jurisdictions = [\"EU\"]\n\n[policy]\nname = \"eu\"\n\
         [policy.scale_up]\nqueue_depth = 2\nfor = \"1s\"\nstable_window = \"4s\"\npanic_window = \"1s\"\n\
         [policy.scale_down]\nidle_for = \"2s\"\ndrain_timeout = \"5s\"\n\n{}\n{}",
        pool("lab", "on_prem", "EU", 1, 0.4),
        burst_pool("cloud", "on_demand", "EU", 2, 2.0)
    ));
    r.wait_for("the base replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });
    let report = bench(&r.url(), 64, "5s");
    assert_eq!(failed(&report), 0, "{report}");
    r.wait_for(
        "the burst replicas to drain",
        Duration::from_secs(20),
        |s| ready_on(s, "cloud") == 0,
    );
    let config = Router::config_path(r.dir.path());
    assert!(r.terminate().success());

    let rounds = r.rounds().unwrap();
    let starts = |d: &gpucap_fabric::autoscaler::Decision| {
        d.actions
            .iter()
            .filter(|a| matches!(a, gpucap_fabric::autoscaler::Action::Start { .. }))
            .count()
    };
    let burst_starts: usize = rounds.iter().map(|r| starts(&r.decision)).sum();
    assert!(
        burst_starts >= 2 && rounds.len() > 10,
        "the router scaled up and down: {} rounds, {burst_starts} starts",
        rounds.len()
    );
    // The simulator's control loop, built from the same file as the simulator builds it.
    let fabric = source::from_config(&config).unwrap();
    let mut control = Control::new(&fabric);
    for (i, round) in rounds.iter().enumerate() {
        let decision = control.decide(&round.observation());
        assert_eq!(decision, round.decision, "round {i} differs");
    }
}

#[test]
fn bad_traces_plans_and_models_are_refused_naming_the_line_or_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo_root().join("examples/simulate/fabric.toml");
    let config = config.to_str().unwrap();
    let trace = dir.path().join("bad.csv");
    std::fs::write(&trace, "second,requests_per_second\n0,10\n60,lots\n").unwrap();
    let (code, _, err) = simulate(&[
        "--config",
        config,
        "--trace",
        trace.to_str().unwrap(),
        "--replica-rps",
        "100",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.csv, line 3") && err.contains("\"lots\" is not a number"),
        "{err}"
    );

    let plan = dir.path().join("plan.json");
    let pool = |name: &str, kind: &str| {
        serde_json::json!({
            "type": "gpucap_gpu_pool",
            "values": {"name": name, "region": "eu-west-1", "jurisdiction": "EU", "capacity_type": kind, "effective_price_per_gpu_hour": 1.0, "gpus_max": 2}
        })
    };
    let doc = serde_json::json!({
        "planned_values": {"root_module": {"resources": [
            pool("lab", "on_prem"),
            {"type": "gpucap_burst_policy", "values": {"name": "eu", "base_pools": ["lab"], "burst_pools": ["cloud"]}},
            {"type": "gpucap_inference_endpoint", "values": {
                "name": "chat", "burst_policy": "eu", "spill_order": ["lab", "cloud"],
                "model": {"path": "m.safetensors"}, "replicas": {"min": 1, "max": 3}
            }}
        ]}}
    });
    std::fs::write(&plan, doc.to_string()).unwrap();
    let good_trace = repo_root().join("examples/traces/flat.csv");
    let good_trace = good_trace.to_str().unwrap();
    let plan_args = |endpoint: &'static str| {
        vec![
            "--plan".to_string(),
            plan.to_str().unwrap().to_string(),
            "--endpoint".into(),
            endpoint.into(),
            "--trace".into(),
            good_trace.into(),
            "--replica-rps".into(),
            "100".into(),
        ]
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        simulate(&refs)
    };
    let (code, _, err) = run(plan_args("search"));
    assert_eq!(code, 2);
    assert!(
        err.contains("no gpucap_inference_endpoint named \"search\"; the endpoints here are: chat"),
        "{err}"
    );
    let (code, _, err) = run(plan_args("chat"));
    assert_eq!(code, 2);
    assert!(
        err.contains("spill_order names pool \"cloud\", which is not a gpucap_gpu_pool here"),
        "{err}"
    );
    let model = dir.path().join("service.json");
    std::fs::write(&model, r#"{"source": "x", "points": []}"#).unwrap();
    let (code, _, err) = simulate(&[
        "--config",
        config,
        "--trace",
        good_trace,
        "--service-model",
        model.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("service.json") && err.contains("`points` is empty"),
        "{err}"
    );
    // A pool outside the endpoint's residency is refused, as serve refuses it.
    let outside = dir.path().join("outside.toml");
    std::fs::write(
        &outside,
        std::fs::read_to_string(config).unwrap().replace(
            "region = \"eu-central-1\"\njurisdiction = \"EU\"\ncapacity_type = \"spot\"",
            "region = \"us-east-1\"\njurisdiction = \"US\"\ncapacity_type = \"spot\"",
        ),
    )
    .unwrap();
    let (code, _, err) = simulate(&[
        "--config",
        outside.to_str().unwrap(),
        "--trace",
        good_trace,
        "--replica-rps",
        "100",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("pools[1]") && err.contains("outside the endpoint's data residency"),
        "{err}"
    );
}

#[test]
fn a_run_prints_the_table_json_and_a_chart_and_repeats_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("spike.csv");
    // An hour: quiet, a spike for ten minutes, quiet.
    std::fs::write(
        &trace,
        "second,requests_per_second\n0,100\n1200,900\n1800,100\n3600,100\n",
    )
    .unwrap();
    let config = repo_root().join("examples/simulate/fabric.toml");
    let png = dir.path().join("chart.png");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--replica-rps",
        "150",
        "--slo-ms",
        "500",
        "--format",
        "json",
        "--seed",
        "3",
    ];
    let (code, out, err) = simulate(&args);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels[0], "fabric");
    assert!(labels.iter().any(|l| l.starts_with("static")), "{labels:?}");
    let fabric = &rows[0];
    let n = |k: &str| fabric[k].as_u64().unwrap();
    assert_eq!(n("requests"), n("served") + n("rejected") + n("timed_out"));
    let pools = fabric["pools"].as_array().unwrap();
    assert!(
        pools
            .iter()
            .any(|p| p["burst"] == true && p["starts"].as_u64().unwrap() > 0),
        "the spike spilled to burst pools: {pools:?}"
    );
    // Replicas over time: one sample a few seconds, a count per pool.
    let timeline = report["timeline"].as_array().unwrap();
    assert!(timeline.len() > 100, "{}", timeline.len());
    assert_eq!(
        timeline[0]["replicas"].as_array().unwrap().len(),
        pools.len()
    );
    // The same seed gives the same figures (the wall time aside).
    let (_, again, _) = simulate(&args);
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(report["rows"], again["rows"]);

    let mut text_args: Vec<&str> = args[..8].to_vec();
    text_args.extend(["--plot", png.to_str().unwrap()]);
    let (code, out, err) = simulate(&text_args);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("within SLO") && out.contains("static"),
        "{out}"
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );

    // The sweep: each signal's threshold (gpu_utilization 0.7, 0.8, 0.9), two panic thresholds
    // and twelve timings, cheapest first, the frontier marked, then the cheapest setting that
    // meets the SLO target as HCL to paste.
    let mut sweep_args: Vec<&str> = args[..8].to_vec();
    sweep_args.extend(["--sweep", "--slo-target", "0.8"]);
    let (code, out, err) = simulate(&sweep_args);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("frontier"), "{out}");
    let rows: Vec<&str> = lines[1..]
        .iter()
        .copied()
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(rows.len(), 3 * 2 * 12, "{out}");
    assert!(rows.iter().any(|l| l.ends_with('*')), "{out}");
    for util in ["util 0.7", "util 0.8", "util 0.9"] {
        assert!(rows.iter().any(|l| l.starts_with(util)), "{util}: {out}");
    }
    let costs: Vec<f64> = rows
        .iter()
        .map(|l| {
            let fields: Vec<&str> = l.trim_end_matches('*').split_whitespace().collect();
            fields[fields.len() - 4].parse().unwrap()
        })
        .collect();
    assert!(costs.windows(2).all(|w| w[0] <= w[1]), "{out}");
    let advice = out.split("\n\n").nth(1).unwrap_or_default();
    assert!(
        advice.starts_with("the cheapest setting that meets 80.000 % within"),
        "{out}"
    );
    for line in [
        "in gpucap_burst_policy \"eu-burst\":",
        "  scale_up {",
        "    gpu_utilization = ",
        "    for             = \"",
        "  scale_down {",
        "    idle_for          = \"",
    ] {
        assert!(advice.contains(line), "{line:?} in {out}");
    }
    // The same as JSON: every point, the recommended one and its HCL.
    sweep_args.extend(["--format", "json"]);
    let (code, json, err) = simulate(&sweep_args);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["points"].as_array().unwrap().len(), rows.len());
    let hcl = json["hcl"].as_str().unwrap();
    assert!(advice.contains(hcl.trim_end()), "{hcl} in {out}");
    let best = &json["points"][json["recommended"].as_u64().unwrap() as usize];
    assert!(best["within_slo"].as_f64().unwrap() >= 0.8, "{best}");
}

#[test]
fn the_shipped_traces_are_what_the_generator_makes_from_their_seed() {
    for shape in ["diurnal-week", "launch", "flat"] {
        let out = Command::new(fabric_bin())
            .args(["trace", shape, "--peak-rps", "2000", "--seed", "1"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let shipped =
            std::fs::read(repo_root().join(format!("examples/traces/{shape}.csv"))).unwrap();
        assert!(
            out.stdout == shipped,
            "examples/traces/{shape}.csv differs from `gpucap-fabric trace {shape} --peak-rps 2000 --seed 1`"
        );
    }
}

#[test]
fn constant_load_converges_and_then_nothing_starts_or_drains_for_an_hour_on_every_signal() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("flat.csv");
    // Seventy minutes at 1000 req/s: ten to converge, then the hour that must hold still.
    std::fs::write(&trace, "second,requests_per_second\n0,1000\n4200,1000\n").unwrap();
    let shipped =
        std::fs::read_to_string(repo_root().join("examples/simulate/fabric.toml")).unwrap();
    for signal in [
        "gpu_utilization = 0.8",
        "queue_depth = 32",
        "p99_latency_ms = 250",
    ] {
        let config = dir.path().join("fabric.toml");
        std::fs::write(&config, shipped.replace("gpu_utilization = 0.8", signal)).unwrap();
        let log = dir.path().join("rounds.jsonl");
        let (code, out, err) = simulate(&[
            "--config",
            config.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
            "--service-model",
            repo_root()
                .join("examples/simulate/service-model.json")
                .to_str()
                .unwrap(),
            "--slo-ms",
            "500",
            "--spot-reclaims-per-hour",
            "0",
            "--format",
            "json",
            "--record-decisions",
            log.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{signal}: {err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let starts: u64 = report["rows"][0]["pools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["starts"].as_u64().unwrap())
            .sum();
        assert!(
            starts >= 2,
            "{signal}: the load needs more than the base: {out}"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        let late: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["now"]["secs"].as_u64().unwrap() >= 600)
            .flat_map(|r| r["decision"]["actions"].as_array().unwrap().clone())
            .map(|a| a.to_string())
            .collect();
        assert!(late.is_empty(), "{signal}: after convergence: {late:?}");
    }
}
