//! Spill-over, drain-back, scale to zero, the budget and live reloads, with the real router, real
//! runtime replicas and real load (`gpucap-runtime bench`).

mod common;

use std::time::{Duration, Instant};

use common::*;

fn burst_config(base: &str, burst: &str, extra_policy: &str) -> String {
    format!(
        r#"
[batching]
max_batch_size = 4

[replicas]
min = 1
max = 3

[residency]
allowed_jurisdictions = ["EU"]

[policy]
name = "eu"
{extra_policy}

{base}
{burst}
"#
    )
}

#[test]
fn load_spills_to_burst_replicas_which_drain_after_idle_for() {
    let _one = serial();
    let r = Router::start(&burst_config(
        &pool("lab", "on_prem", "EU", 1, 0.4),
        &burst_pool("cloud", "on_demand", "EU", 2, 2.0),
        "[policy.scale_up]\nqueue_depth = 2\nfor = \"1s\"\nstable_window = \"4s\"\npanic_window = \"1s\"\n[policy.scale_down]\nidle_for = \"3s\"\ndrain_timeout = \"5s\"",
    ));
    r.wait_for("the base replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });

    let report = bench(&r.url(), 64, "8s");
    assert_eq!(failed(&report), 0, "{report}");
    let metrics = r.metrics();
    let on_burst = metric(
        &metrics,
        "gpucap_fabric_requests_total",
        &["pool=\"cloud\"", "code=\"200\""],
    );
    let on_base = metric(
        &metrics,
        "gpucap_fabric_requests_total",
        &["pool=\"lab\"", "code=\"200\""],
    );
    assert!(
        on_burst > 0.0 && on_base > 0.0,
        "base {on_base}, burst {on_burst}"
    );
    let status = r.status();
    let start = status["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["action"] == "start" && d["subject"].as_str().unwrap().starts_with("cloud"))
        .unwrap_or_else(|| panic!("no burst start: {status}"));
    // 64 clients at 2 per replica: the fleet panics (or grows after `for`) on queue_depth.
    assert!(
        start["reason"].as_str().unwrap().contains("queue_depth"),
        "{start}"
    );
    let burst_pids = r.replica_pids();
    assert!(burst_pids.len() >= 2, "{burst_pids:?}");

    // The load has stopped: burst replicas drain once the load has needed only the base for
    // idle_for; the base stays.
    let drained_at = Instant::now();
    let s = r.wait_for(
        "the burst replicas to drain",
        Duration::from_secs(15),
        |s| replicas(s) == [("lab".to_string(), "ready".to_string())],
    );
    println!(
        "drain: burst replicas gone {:.1} s after the load stopped (idle_for 3s)",
        drained_at.elapsed().as_secs_f64()
    );
    assert!(
        s["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["action"] == "drain"
                && d["reason"] == "the load has needed only 1 replica(s) for 3s"),
        "{s}"
    );
    let left = r.replica_pids();
    assert_eq!(left.len(), 1);
    let stopped: Vec<i32> = burst_pids
        .into_iter()
        .filter(|p| !left.contains(p))
        .collect();
    assert!(
        all_gone(&stopped, Duration::from_secs(5)),
        "drained replicas still run"
    );
}

#[test]
fn scaled_to_zero_nothing_runs_and_the_next_request_is_answered() {
    let _one = serial();
    let r = Router::start_recording(&format!(
        "[replicas]\nmin = 0\nmax = 1\n\n[policy]\nname = \"zero\"\n\
         [policy.scale_down]\nidle_for = \"2s\"\n\n{}",
        pool("lab", "on_prem", "EU", 1, 0.4)
    ));
    // Three control rounds without a request decide nothing, and nothing runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let quiet = loop {
        // The log is read while it is written: a half-written last line is read next time.
        if let Ok(rounds) = r.rounds()
            && rounds.len() >= 3
        {
            break rounds;
        }
        assert!(
            Instant::now() < deadline,
            "the router ran no control rounds"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        quiet.iter().all(|round| round.decision.actions.is_empty()),
        "the router acted before the first request: {:?}",
        quiet
            .iter()
            .map(|round| &round.decision)
            .collect::<Vec<_>>()
    );
    assert!(
        r.replicas().is_empty(),
        "nothing should run before the first request"
    );
    assert!(r.replica_pids().is_empty());
    let (code, _) = http_get(&format!("{}/v2/models/digits/ready", r.url()));
    assert_eq!(
        code, 200,
        "a scale-to-zero endpoint is ready to take requests"
    );

    for round in 0..2 {
        let t = Instant::now();
        let (code, body) = infer(&r.url());
        let took = t.elapsed();
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("probabilities"), "{body}");
        let s = r.status();
        let reported = s["last_scale_from_zero_s"].as_f64().unwrap();
        println!(
            "scale from zero, round {round}: first answer after {:.3} s (router reports {:.3} s to the first replica)",
            took.as_secs_f64(),
            reported
        );
        assert!(
            reported > 0.0 && reported <= took.as_secs_f64() + 0.01,
            "the router reports {reported} s for an answer that took {took:?}"
        );
        let pids = r.replica_pids();
        assert_eq!(pids.len(), 1);
        r.wait_for("scale to zero", Duration::from_secs(10), |s| {
            s["replicas"].as_array().unwrap().is_empty()
        });
        assert!(
            all_gone(&pids, Duration::from_secs(5)),
            "a runtime still runs at zero"
        );
    }
    let metrics = r.metrics();
    assert_eq!(
        metric(&metrics, "gpucap_fabric_scale_from_zero_seconds_count", &[]),
        2.0
    );
}

#[test]
fn a_budget_that_affords_one_burst_replica_never_runs_two_and_rejects_with_429() {
    let _one = serial();
    let r = Router::start_recording(&burst_config(
        &pool("lab", "on_prem", "EU", 1, 0.4),
        &burst_pool("cloud", "on_demand", "EU", 3, 1.0),
        "[policy.scale_up]\nqueue_depth = 1\nfor = \"1s\"\n[policy.scale_down]\nidle_for = \"60s\"\n\
         [policy.budget]\nmax_hourly_usd = 1.5\non_exhausted = \"reject\"",
    ));
    r.wait_for("the base replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });
    let url = r.url();
    let load = std::thread::spawn(move || bench(&url, 64, "6s"));
    let mut most_burst = 0;
    let mut saw_bound = false;
    let mut retry_after = None;
    while !load.is_finished() {
        let s = r.status();
        let burst = replicas(&s).iter().filter(|(p, _)| p == "cloud").count();
        most_burst = most_burst.max(burst);
        saw_bound |= s["budget"]["bound"].as_bool().unwrap();
        assert!(s["budget"]["burst_rate_usd_per_hour"].as_f64().unwrap() <= 1.5);
        if retry_after.is_none() {
            let (code, head) = infer_headers(&r.url());
            if code == 429 {
                retry_after = Some(head);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = load.join().unwrap();
    assert_eq!(
        most_burst, 1,
        "the budget affords exactly one burst replica"
    );
    // Polling can miss a replica that lived between two looks; the control rounds cannot. In
    // every round, the cloud replicas the router saw and the ones it decided to start add up to
    // at most one.
    let rounds = r.rounds().unwrap();
    let cloud = rounds[0]
        .pools
        .iter()
        .position(|p| p.name == "cloud")
        .unwrap();
    let mut started = 0;
    for (i, round) in rounds.iter().enumerate() {
        let running = round
            .replicas
            .iter()
            .filter(|rep| rep.pool == Some(cloud))
            .count();
        let starting = round
            .decision
            .actions
            .iter()
            .filter(|a| matches!(a, gpucap_fabric::autoscaler::Action::Start { pool, .. } if *pool == cloud))
            .count();
        started += starting;
        assert!(
            running + starting <= 1,
            "round {i}: {running} cloud replicas and {starting} more started: {:?}",
            round.decision
        );
    }
    assert_eq!(
        started, 1,
        "the budget affords one burst replica, and it was started"
    );
    assert!(saw_bound, "the budget never bound");
    let rejected = report["errors_by_status"]["429"].as_u64().unwrap_or(0);
    assert!(rejected > 0, "on_exhausted = reject gave no 429: {report}");
    assert_eq!(failed(&report), rejected, "only 429s: {report}");
    let head = retry_after.expect("no 429 seen by a probe");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let spend = metric(&r.metrics(), "gpucap_fabric_burst_spend_usd_total", &[]);
    assert!(spend > 0.0, "burst spend is metered");
}

#[test]
fn a_reload_under_load_rolls_every_replica_without_a_failed_request() {
    let _one = serial();
    let config = |batch: usize| {
        format!(
            "[batching]\nmax_batch_size = {batch}\n\n[replicas]\nmin = 2\nmax = 2\n\n\
             [policy]\nname = \"lab-only\"\n\n{}",
            pool("lab", "on_prem", "EU", 2, 0.4)
        )
    };
    let mut r = Router::start(&config(8));
    r.wait_for("two replicas", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 2
    });
    let before = r.replica_pids();
    let url = r.url();
    let load = std::thread::spawn(move || bench(&url, 32, "6s"));
    // Reloaded once the load is flowing.
    r.wait_for_answers(&[], 100.0, &load);
    let digest = r.status()["router"]["config_digest"].clone();
    Router::write_config(r.dir.path(), &config(16));
    r.sighup();
    let s = r.wait_for("the rolling restart", Duration::from_secs(30), |s| {
        s["router"]["config_digest"] != digest
            && s["router"]["rollout_pending"] == 0
            && ready_on(s, "lab") == 2
    });
    let report = load.join().unwrap();
    assert_eq!(failed(&report), 0, "{report}");
    let after = r.replica_pids();
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} -> {after:?}"
    );
    assert!(all_gone(&before, Duration::from_secs(5)));
    assert!(
        s["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"].as_str().unwrap().starts_with("rolling restart")),
        "{s}"
    );

    // A broken config is refused; the router keeps serving with what it has.
    std::fs::write(
        Router::config_path(r.dir.path()),
        std::fs::read_to_string(Router::config_path(r.dir.path()))
            .unwrap()
            .replace("max_batch_size = 16", "max_batch_size = 16\nmax_batch = 2"),
    )
    .unwrap();
    r.sighup();
    let s = r.wait_for("the refusal", Duration::from_secs(10), |s| {
        !s["router"]["reload_error"].is_null()
    });
    let e = s["router"]["reload_error"].as_str().unwrap();
    assert!(e.contains("unknown field `max_batch`"), "{e}");
    assert_eq!(infer(&r.url()).0, 200);
    assert_eq!(r.terminate().code(), Some(0));
    assert!(
        all_gone(&after, Duration::from_secs(5)),
        "SIGTERM left replicas running"
    );
}

#[test]
fn sixty_four_steady_clients_scale_the_fleet_within_a_panic_window_and_it_then_holds() {
    let _one = serial();
    // A replica takes 16 requests, and queue_depth = 16 spills beyond them: 64 clients need up to
    // 4 replicas (fewer while clients spend part of each round trip outside the router), however
    // fast each answers.
    let r = Router::start(&format!(
        "[batching]\nmax_batch_size = 16\n\n[replicas]\nmin = 1\nmax = 6\n\n\
         [residency]\nallowed_jurisdictions = [\"EU\"]\n\n[policy]\nname = \"eu\"\n\
         [policy.scale_up]\nqueue_depth = 16\nfor = \"2s\"\n\
         [policy.scale_down]\nidle_for = \"20s\"\n\n{}\n{}",
        pool("lab", "on_prem", "EU", 1, 0.4),
        burst_pool("cloud", "on_demand", "EU", 5, 2.0)
    ));
    r.wait_for("the base replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });
    let url = r.url();
    let load = std::thread::spawn(move || bench(&url, 64, "60s"));
    // The live replicas (starting or serving) four times a second while the load lasts.
    let began = Instant::now();
    let mut counts: Vec<(f64, usize)> = Vec::new();
    while !load.is_finished() {
        let live = replicas(&r.status())
            .iter()
            .filter(|(_, phase)| phase != "draining")
            .count();
        counts.push((began.elapsed().as_secs_f64(), live));
        std::thread::sleep(Duration::from_millis(250));
    }
    let report = load.join().unwrap();
    assert_eq!(failed(&report), 0, "{report}");
    let first = counts
        .iter()
        .position(|&(_, n)| n != 1)
        .unwrap_or_else(|| panic!("no scale-up: {counts:?}"));
    let began_at = counts[first].0;
    // Within one panic window (6 s) of the first step the fleet may grow again: the first step
    // is taken on a window that still holds the seconds before the load, so it can fall one
    // short. After that it holds: no further start, no drain.
    let settled = counts
        .iter()
        .position(|&(t, _)| t > began_at + 6.0)
        .unwrap_or_else(|| panic!("the load ended within 6 s of the scale-up: {counts:?}"));
    let (at, scaled) = counts[settled];
    assert!(
        (2..=4).contains(&scaled),
        "64 clients at 16 per replica: {counts:?}"
    );
    let mut grew = counts[first..settled].iter().map(|&(_, n)| n);
    assert!(
        grew.clone().zip(grew.clone().skip(1)).all(|(a, b)| a <= b) && grew.all(|n| n <= scaled),
        "within its panic window the fleet only grows: {counts:?}"
    );
    let later: Vec<&(f64, usize)> = counts[settled..]
        .iter()
        .filter(|(_, n)| *n != scaled)
        .collect();
    assert!(
        later.is_empty(),
        "settled at {scaled} by {at:.1} s, the fleet changed again: {later:?}"
    );
    println!(
        "steady: first step {began_at:.1} s into the load, settled at {scaled} replicas, then held for {:.0} s ({} samples)",
        counts.last().map_or(0.0, |c| c.0) - at,
        counts.len() - settled
    );
}
