//! The `slurm` driver against a real one-node Slurm cluster (Debian's packages, four fake GPUs):
//! jobs submitted through slurmrestd run `gpucap-runtime serve --join` as a job step on the
//! node, the replica joins the daemon over its outbound channel and serves; stops cancel the
//! jobs; a job an admin cancels leaves rotation and is replaced; a job that cannot get a GPU is
//! reported with Slurm's reason instead of waited on forever. A missing Slurm fails, never skips.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::daemon::{Daemon, endpoint_json, join_attempt};
use common::slurm::Cluster;
use common::*;
use serde_json::Value;

const TOKEN: &str = "gpj_fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// The endpoint: one CPU replica on this host (`lab`), bursts as Slurm jobs (`hpc`, one GPU
/// each, up to five on the node's four GPUs).
const BURSTS: &str = "[replicas]\nmin = 1\nmax = 6\n\n[residency]\nallowed_jurisdictions = [\"EU\"]\n\n\
     [policy]\nname = \"burst\"\n\
     [policy.scale_up]\nqueue_depth = 2\nfor = \"1s\"\nstable_window = \"4s\"\npanic_window = \"1s\"\n\
     [policy.scale_down]\nidle_for = \"4s\"\ndrain_timeout = \"5s\"\n\n\
     [[pools]]\nname = \"lab\"\nregion = \"eu-west-1\"\njurisdiction = \"EU\"\ncapacity_type = \"on_prem\"\n\
     gpus_max = 1\n[pools.local]\ndevices = \"cpu\"\n\n\
     [[pools]]\nname = \"hpc\"\nrole = \"burst\"\nregion = \"eu-west-1\"\njurisdiction = \"EU\"\n\
     capacity_type = \"on_prem\"\ngpus_max = 5\n";

/// A burst pool on this host after the Slurm one: where a replica goes when the cluster cannot
/// run one more job.
const CLOUD: &str = "\n[[pools]]\nname = \"cloud\"\nrole = \"burst\"\nregion = \"eu-west-1\"\n\
     jurisdiction = \"EU\"\ncapacity_type = \"on_demand\"\nprice_per_gpu_hour = 3.0\ngpus_max = 1\n\
     [pools.local]\ndevices = \"cpu\"\n";

/// The endpoint: its base as Slurm jobs (`hpc`, one GPU each) whose time limit is two minutes,
/// replaced 100 s ahead of it.
const TIME_LIMITED: &str = "[replicas]\nmin = 1\nmax = 2\n\n[residency]\nallowed_jurisdictions = [\"EU\"]\n\n\
     [policy]\nname = \"base\"\n[policy.scale_down]\ndrain_timeout = \"5s\"\n\n\
     [[pools]]\nname = \"hpc\"\nregion = \"eu-west-1\"\njurisdiction = \"EU\"\n\
     capacity_type = \"on_prem\"\ngpus_max = 2\n";

/// `pools` (the last of them the Slurm pool, without its `[pools.slurm]` table) with that
/// table for `cluster`, joining `daemon` as endpoint `endpoint`; `slurm_extra` ends the table (and may add pools).
fn endpoint_body(
    endpoint: &str,
    pools: &str,
    slurm_extra: &str,
    cluster: &Cluster,
    daemon: &Daemon,
    work: &std::path::Path,
) -> String {
    let token_file = work.join("join-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    format!(
        "{pools}[pools.slurm]\nrest_url = \"{rest}\"\nuser = \"{user}\"\ntoken_file = \"{rest_token}\"\n\
         partition = \"{partition}\"\ngres = \"gpu:1\"\n\
         join_url = \"{join}/v1/join/{endpoint}\"\njoin_token_file = \"{token}\"\nca_cert = \"{ca}\"\n\
         runtime_path = \"{runtime}\"\ndevice = \"cpu\"\nthreads = 1\nwork_dir = \"{work}\"\n\
         join_timeout = \"60s\"\n{slurm_extra}",
        rest = cluster.rest_url,
        user = cluster.user,
        rest_token = cluster.token_file.display(),
        partition = cluster.partition,
        join = daemon.address.trim_end_matches('/'),
        token = token_file.display(),
        ca = daemon.ca().display(),
        runtime = runtime_bin().display(),
        work = work.display(),
    )
}

struct Site {
    cluster: Cluster,
    daemon: Daemon,
    work: tempfile::TempDir,
    view: Value,
}

impl Site {
    /// A cluster, a daemon, and endpoint `digits` of `pools` on them (see [`endpoint_body`]).
    fn start(pools: &str, slurm_extra: &str) -> Site {
        let cluster = Cluster::start();
        let mut daemon = Daemon::configured("eu-west-1", "EU");
        daemon.launch();
        let work = tempfile::tempdir().unwrap();
        let body = endpoint_body("digits", pools, slurm_extra, &cluster, &daemon, work.path());
        let config = endpoint_json("digits", &body);
        let (code, text) = daemon.api("PUT", "/v1/endpoints/digits", Some(&config), &[]);
        assert_eq!(code, 201, "{text}");
        Site {
            view: serde_json::from_str(&text).unwrap(),
            cluster,
            daemon,
            work,
        }
    }

    fn dirs(&self) -> [PathBuf; 3] {
        [
            self.daemon.dir.path().to_path_buf(),
            self.work.path().to_path_buf(),
            self.cluster.dir().to_path_buf(),
        ]
    }

    fn base(&self) -> String {
        let url = self.view["url"].as_str().unwrap();
        url.split("/v2/").next().unwrap().to_string()
    }

    fn router(&self, path: &str) -> String {
        let address = self.view["router"]["address"].as_str().unwrap();
        http_get(&format!("http://{address}{path}")).1
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.router("/fabric/status")).unwrap()
    }

    /// The router's decisions so far, from its log: `timestamp`, `action`, `subject`, `reason`.
    fn decisions(&self) -> Vec<Value> {
        self.daemon.decisions("digits")
    }
}

#[test]
fn bursts_run_as_slurm_jobs_that_join_serve_and_are_cancelled() {
    let _one = serial();
    let site = Site::start(
        BURSTS,
        &format!("time_limit = \"1h\"\nqueue_timeout = \"6s\"\n{CLOUD}"),
    );
    let dirs = site.dirs();
    let prefix = "gpucap-digits.hpc-";

    // Load beyond the lab's one replica: jobs are submitted, run on the node and their
    // replicas join and serve. 64 clients want more replicas than the node's four GPUs: the
    // fifth job stays pending (Resources) and is reported, then cancelled, not waited on.
    let load = std::thread::spawn({
        let base = site.base();
        move || bench(&base, 64, "35s")
    });
    wait_until(
        "replicas from Slurm jobs serving",
        Duration::from_secs(40),
        &dirs,
        || ready_on(&site.status(), "hpc") >= 2,
    );
    let running = site.cluster.jobs_in("RUNNING", prefix);
    assert!(running.len() >= 2, "{:?}", site.cluster.jobs());
    wait_until(
        "the fifth job reported pending with Slurm's reason",
        Duration::from_secs(30),
        &dirs,
        || {
            site.decisions().iter().any(|d| {
                d["action"] == "failed"
                    && d["reason"].as_str().is_some_and(|r| {
                        r.contains("stayed PENDING in partition gpu")
                            && r.contains("Slurm's reason: Resources")
                    })
            })
        },
    );

    // The policy allows the next burst pool: the replica the cluster could not run starts there.
    wait_until(
        "a replica started on the next burst pool",
        Duration::from_secs(30),
        &dirs,
        || {
            let decisions = site.decisions();
            let failed = decisions.iter().position(|d| {
                d["action"] == "failed"
                    && d["subject"].as_str().is_some_and(|s| s.starts_with("hpc-"))
            });
            failed.is_some_and(|f| {
                decisions[f..].iter().any(|d| {
                    d["action"] == "start"
                        && d["subject"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("cloud-"))
                })
            })
        },
    );

    // Claims that are not a running job of the pool are refused, even with the pool's token:
    // a job id Slurm does not know, one that is not a number, and the pending job.
    let pending = site.cluster.jobs_in("PENDING", prefix);
    let mut claims = vec!["4242".to_string(), "node-7".to_string()];
    claims.extend(pending.first().cloned());
    for machine in &claims {
        let log = join_attempt(&site.daemon, site.work.path(), TOKEN, "hpc", machine);
        assert!(log.contains("refused the join"), "{machine}: {log}");
    }
    let refusals = metric(
        &site.router("/metrics"),
        "gpucap_fabric_join_refusals_total",
        &["name=\"not_in_pool\""],
    );
    assert!(
        refusals >= claims.len() as f64,
        "refusals counted: {refusals}"
    );

    // An admin cancels a running job under load: its replica leaves rotation, no request
    // fails, and the fabric submits another.
    let victim = site.cluster.jobs_in("RUNNING", prefix)[0].clone();
    let submitted_before = site.cluster.jobs().len();
    site.cluster.scancel(&victim);
    wait_until(
        "a replacement job submitted",
        Duration::from_secs(20),
        &dirs,
        || site.cluster.jobs().len() > submitted_before,
    );
    let report = load.join().unwrap();
    assert_eq!(failed(&report), 0, "{report}");
    let (code, answer) = infer(&site.base());
    assert_eq!(code, 200, "{answer}");

    // The load gone, the bursts drain and their jobs are cancelled: none of gpucap's jobs is
    // left running or pending, and the lab's replica serves on.
    wait_until(
        "every job of the pool cancelled",
        Duration::from_secs(60),
        &dirs,
        || {
            site.cluster.jobs_in("RUNNING", prefix).is_empty()
                && site.cluster.jobs_in("PENDING", prefix).is_empty()
                && ready_on(&site.status(), "hpc") == 0
        },
    );
    assert_eq!(ready_on(&site.status(), "lab"), 1);
    let calls = metric(
        &site.router("/metrics"),
        "gpucap_fabric_driver_api_calls_total",
        &["pool=\"hpc\"", "call=\"SubmitJob\""],
    );
    assert!(calls >= 3.0, "jobs submitted: {calls}");
    // Figures for the record (`--nocapture`): from the decision to the joined replica serving
    // (submit, queue, the job's step, the model fetched, the join), and the REST calls made.
    let times = start_to_ready(&site.decisions(), "hpc");
    println!("decision to a Slurm job's replica serving, s: {times:.2?}");
    let local = start_to_ready(&site.decisions(), "cloud");
    println!("decision to a local replica serving (same run), s: {local:.2?}");
    let metrics = site.router("/metrics");
    for call in ["SubmitJob", "GetJob", "CancelJob"] {
        let n = metric(
            &metrics,
            "gpucap_fabric_driver_api_calls_total",
            &["pool=\"hpc\"", &format!("call=\"{call}\"")],
        );
        println!("slurmrestd {call}: {n} call(s)");
    }

    // slurmctld goes down: requests are still answered (by the lab), a start on the pool fails
    // with what slurmrestd says and shows in status; once the controller is back, the pool
    // serves bursts again.
    site.cluster.controller_down(true);
    let report = bench(&site.base(), 32, "8s");
    assert_eq!(failed(&report), 0, "{report}");
    wait_until(
        "the controller's outage in the pool's status",
        Duration::from_secs(30),
        &dirs,
        || {
            site.status()["pools"].as_array().unwrap().iter().any(|p| {
                p["name"] == "hpc"
                    && p["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("SubmitJob on slurmrestd"))
            })
        },
    );
    let errors = metric(
        &site.router("/metrics"),
        "gpucap_fabric_driver_api_errors_total",
        &["name=\"hpc\""],
    );
    assert!(errors >= 1.0, "errors counted: {errors}");
    site.cluster.controller_down(false);
    let load = std::thread::spawn({
        let base = site.base();
        move || bench(&base, 32, "40s")
    });
    wait_until(
        "a job's replica serving once the controller is back",
        Duration::from_secs(60),
        &dirs,
        || ready_on(&site.status(), "hpc") >= 1,
    );
    assert_eq!(failed(&load.join().unwrap()), 0);
}

#[test]
fn jobs_near_their_time_limit_are_replaced_ahead_and_a_warned_replica_drains() {
    let _one = serial();
    let site = Site::start(
        TIME_LIMITED,
        "time_limit = \"2m\"\nreplace_before = \"100s\"\nshared_model = true\n",
    );
    let dirs = site.dirs();
    let prefix = "gpucap-digits.hpc-";
    let first = site.cluster.jobs_in("RUNNING", prefix);
    assert_eq!(first.len(), 1, "{:?}", site.cluster.jobs());
    // The job carries the pool's time limit, in minutes.
    let submitted = site.cluster.job(&first[0]).unwrap();
    assert_eq!(submitted["time_limit"], 2, "{submitted}");

    // Under load, 20 s into the job (100 s before its 2 min limit) its successor is submitted;
    // once that serves, the old replica drains and its job is cancelled. No request fails.
    let load = std::thread::spawn({
        let base = site.base();
        move || bench(&base, 8, "40s")
    });
    wait_until(
        "the first job replaced ahead of its time limit",
        Duration::from_secs(45),
        &dirs,
        || site.cluster.state_of(&first[0]).as_deref() == Some("CANCELLED"),
    );
    let decisions = site.decisions();
    let replaced = decisions
        .iter()
        .find(|d| {
            d["action"] == "start"
                && d["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("time limit: replacing hpc-1"))
        })
        .unwrap_or_else(|| panic!("{decisions:#?}"));
    let drained = decisions
        .iter()
        .position(|d| d["action"] == "drain" && d["subject"] == "hpc-1")
        .unwrap_or_else(|| panic!("{decisions:#?}"));
    let started = decisions.iter().position(|d| d == replaced).unwrap();
    assert!(started < drained, "the successor first: {decisions:#?}");
    assert!(
        decisions
            .iter()
            .any(|d| d["action"] == "expiring" && d["subject"] == "hpc-1"),
        "{decisions:#?}"
    );
    // The successor's job (by its replica's name) serves on.
    let successor = site.cluster.jobs_in(
        "RUNNING",
        &format!("gpucap-digits.{}", replaced["subject"].as_str().unwrap()),
    );
    assert_eq!(successor.len(), 1, "{:?}", site.cluster.jobs());
    // The model's path is shared with the node (it is this host): the replicas read it there
    // instead of fetching it over their connection.
    let output = std::fs::read_to_string(site.work.path().join(format!("gpucap-{}.out", first[0])))
        .unwrap_or_default();
    assert!(
        output.contains("model read from the shared path"),
        "{output}"
    );

    // The warning signal (what Slurm sends before a time limit or a preemption) reaches the
    // successor's replica: it drains what it accepted and exits, the job ends by itself, and
    // the fabric replaces it. Still no request fails.
    let before = site.decisions().len();
    site.cluster.signal(&successor[0], "TERM");
    wait_until(
        "the warned job ended by itself",
        Duration::from_secs(20),
        &dirs,
        || site.cluster.state_of(&successor[0]).as_deref() == Some("COMPLETED"),
    );
    wait_until(
        "the warned replica replaced and serving",
        Duration::from_secs(30),
        &dirs,
        || {
            let decisions = site.decisions();
            decisions[before..].iter().any(|d| {
                d["action"] == "ready"
                    && decisions[before..]
                        .iter()
                        .any(|s| s["action"] == "start" && s["subject"] == d["subject"])
            })
        },
    );
    let report = load.join().unwrap();
    assert_eq!(failed(&report), 0, "{report}");
}

/// The spill benchmark of `scripts/bench-fabric.sh` with its burst pool as Slurm jobs and, on
/// the same daemon in alternate rounds, as local processes: 64 clients on one base replica, a
/// burst pool of two, `for = 2s`, `idle_for = 5s`. Prints each round's throughput, p99 and
/// failures, the time from the signal going high to the first burst replica serving, and from
/// the end of the load to the last burst replica gone. `scripts/bench-slurm.sh` runs it.
#[test]
#[ignore = "a benchmark: scripts/bench-slurm.sh runs it"]
fn bench_spill_slurm_against_local() {
    let _one = serial();
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (secs, rounds) = (
        env("GPUCAP_BENCH_SECONDS", 15),
        env("GPUCAP_BENCH_ROUNDS", 2),
    );
    let cluster = Cluster::start();
    let mut daemon = Daemon::configured("eu-west-1", "EU");
    daemon.launch();
    let work = tempfile::tempdir().unwrap();
    let spill = |base: &str, burst: &str| {
        format!(
            "[batching]\nmax_batch_size = 8\n[replicas]\nmin = 1\nmax = 3\n\n\
             [residency]\nallowed_jurisdictions = [\"EU\"]\n\n\
             [policy]\nname = \"spill\"\n[policy.scale_up]\nqueue_depth = 4\nfor = \"2s\"\nstable_window = \"4s\"\n\
             [policy.scale_down]\nidle_for = \"5s\"\ndrain_timeout = \"5s\"\n\n\
             [[pools]]\nname = \"{base}\"\nregion = \"eu-west-1\"\njurisdiction = \"EU\"\n\
             capacity_type = \"on_prem\"\ngpus_max = 1\n[pools.local]\ndevices = \"cpu\"\n\n\
             [[pools]]\nname = \"{burst}\"\nrole = \"burst\"\nregion = \"eu-west-1\"\n\
             jurisdiction = \"EU\"\ncapacity_type = \"on_prem\"\ngpus_max = 2\n"
        )
    };
    let endpoints = [
        (
            "local",
            "spill-local",
            "cloud",
            spill("lab-a", "cloud") + "[pools.local]\ndevices = \"cpu\"\n",
        ),
        (
            "slurm",
            "spill-slurm",
            "hpc",
            endpoint_body(
                "spill-slurm",
                &spill("lab-b", "hpc"),
                "time_limit = \"1h\"\n",
                &cluster,
                &daemon,
                work.path(),
            ),
        ),
    ];
    let mut views = Vec::new();
    for (_, name, _, body) in &endpoints {
        let (code, text) = daemon.api(
            "PUT",
            &format!("/v1/endpoints/{name}"),
            Some(&endpoint_json(name, body)),
            &[],
        );
        assert_eq!(code, 201, "{text}");
        views.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    let dirs = [
        daemon.dir.path().to_path_buf(),
        work.path().to_path_buf(),
        cluster.dir().to_path_buf(),
    ];
    let at = |d: &Value| humantime::parse_rfc3339(d["timestamp"].as_str().unwrap()).unwrap();
    // Per driver, each round's figures: req/s, p99 ms, signal to burst serving, load end to
    // burst gone.
    let mut rows: Vec<(&str, [f64; 4])> = Vec::new();
    for round in 0..rounds {
        for ((driver, name, burst, _), view) in endpoints.iter().zip(&views) {
            let status = || -> Value {
                let address = view["router"]["address"].as_str().unwrap();
                serde_json::from_str(&http_get(&format!("http://{address}/fabric/status")).1)
                    .unwrap()
            };
            let base = view["url"].as_str().unwrap().split("/v2/").next().unwrap();
            let before = daemon.decisions(name).len();
            let report = bench_model(base, name, 64, &format!("{secs}s"));
            let load_end = std::time::SystemTime::now();
            wait_until(
                "the burst pool drained",
                Duration::from_secs(60),
                &dirs,
                || replicas(&status()).iter().all(|(pool, _)| pool != burst),
            );
            let drained = load_end.elapsed().unwrap().as_secs_f64();
            let decisions = daemon.decisions(name)[before..].to_vec();
            let high = decisions.iter().find(|d| d["action"] == "signal");
            let ready = decisions.iter().find(|d| {
                d["action"] == "ready"
                    && d["subject"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(&format!("{burst}-")))
            });
            let reaction = match (high, ready) {
                (Some(h), Some(r)) => at(r).duration_since(at(h)).map_or(0.0, |d| d.as_secs_f64()),
                _ => f64::NAN,
            };
            let rps = report["throughput_rps"].as_f64().unwrap();
            let p99 = report["latency"]["p99_ms"].as_f64().unwrap();
            println!(
                "round {round} {driver:>5}: {rps:7.1} req/s, p99 {p99:6.1} ms, failed {}, signal -> burst serving {reaction:.2} s, load end -> burst gone {drained:.2} s",
                failed(&report)
            );
            rows.push((driver, [rps, p99, reaction, drained]));
        }
    }
    let median = |driver: &str, figure: usize| {
        let mut v: Vec<f64> = rows
            .iter()
            .filter(|r| r.0 == driver)
            .map(|r| r.1[figure])
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("medians over {rounds} round(s) of {secs} s:");
    for driver in ["local", "slurm"] {
        println!(
            "  {driver:>5}: {:7.1} req/s, p99 {:6.1} ms, signal -> burst serving {:.2} s, load end -> burst gone {:.2} s",
            median(driver, 0),
            median(driver, 1),
            median(driver, 2),
            median(driver, 3)
        );
    }
}
