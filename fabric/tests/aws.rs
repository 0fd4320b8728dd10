//! The `aws_autoscaling_group` driver against a real AWS API server (moto's emulator, started
//! here), with replicas that join the router over the connection they open. The emulator boots
//! no machines, so `data/aws_harness.py play` plays the instances: it runs each in-service
//! instance's launch-template user data on this host, which starts `gpucap-runtime serve --join`.
//! The control plane (the SDK and the emulator) and the data plane (the router and the joined
//! replicas) are both real. A missing emulator fails the test, never skips it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, endpoint_json, join_attempt};
use common::moto::{Moto, REGION, Throttle, aws_env, find_joined_replica, joined_replica_pid};
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const GROUP: &str = "gpu-burst";
const TOKEN: &str = "gpj_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        signal(self.0.id() as i32, "TERM");
        let _ = self.0.wait();
    }
}

/// The user data of the group's launch template: start a replica that joins the daemon.
fn user_data(dir: &Path, d: &Daemon, imds_port: u16) -> PathBuf {
    let token_file = dir.join("join-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let script = format!(
        "#!/bin/bash\nexec {runtime} serve --join {url}/v1/join/digits --token-file {token} \
         --pool cloud --machine \"$INSTANCE_ID\" --ca-cert {ca} --cache-dir {cache} \
         --device cpu --threads 1 --imds-url http://127.0.0.1:{imds_port}/$INSTANCE_ID\n",
        runtime = runtime_bin().display(),
        url = d.address.trim_end_matches('/'),
        token = token_file.display(),
        ca = d.ca().display(),
        cache = dir.join("model-cache").display(),
    );
    let path = dir.join("user-data.sh");
    std::fs::write(&path, script).unwrap();
    path
}

/// The endpoint: one CPU replica on this host (`lab`), then the group's pool `cloud` (`role`,
/// `capacity_type`); `min` replicas at least.
fn endpoint_body(api: &str, min: usize, role: &str, capacity_type: &str) -> String {
    let hash = hex::encode(Sha256::digest(TOKEN.as_bytes()));
    format!(
        "[replicas]\nmin = {min}\nmax = 3\n\n[residency]\nallowed_jurisdictions = [\"EU\"]\n\n\
         [policy]\nname = \"burst\"\n\
         [policy.scale_up]\nqueue_depth = 2\nfor = \"1s\"\nstable_window = \"4s\"\npanic_window = \"1s\"\n\
         [policy.scale_down]\nidle_for = \"4s\"\ndrain_timeout = \"5s\"\n\n\
         [[pools]]\nname = \"lab\"\nregion = \"{REGION}\"\njurisdiction = \"EU\"\ncapacity_type = \"on_prem\"\n\
         gpus_max = 1\n[pools.local]\ndevices = \"cpu\"\n\n\
         [[pools]]\nname = \"cloud\"\nrole = \"{role}\"\nregion = \"{REGION}\"\njurisdiction = \"EU\"\n\
         capacity_type = \"{capacity_type}\"\ngpus_max = 2\nprice_per_gpu_hour = 1.2\n\
         join_token_sha256 = [\"{hash}\"]\n\
         [pools.aws_autoscaling_group]\nname = \"{GROUP}\"\nendpoint_url = \"{api}\"\njoin_timeout = \"60s\"\n",
    )
}

fn in_service(group: &Value) -> Vec<Value> {
    group["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "InService")
        .cloned()
        .collect()
}

/// The emulator, a daemon that reaches it, a group whose instances join the daemon (played by
/// the harness), groups `unplayed` whose instances never boot, and the endpoint `digits` on them
/// (`body`); the endpoint as created.
struct Site {
    moto: Moto,
    throttle: Option<Throttle>,
    daemon: Daemon,
    work: tempfile::TempDir,
    _player: Killed,
    _imds: Killed,
    view: Value,
}

impl Site {
    /// The emulator, the daemon and the endpoint whose config `body` writes for the driver's
    /// API URL, with the instances of `GROUP` played (those of `unplayed` never boot).
    fn start(body: impl Fn(&str) -> String, unplayed: &[&str]) -> Site {
        Site::launch(body, unplayed, false)
    }

    /// As [`Site::start`], with the driver's API calls through a [`Throttle`].
    fn throttled(body: impl Fn(&str) -> String) -> Site {
        Site::launch(body, &[], true)
    }

    fn launch(body: impl Fn(&str) -> String, unplayed: &[&str], throttled: bool) -> Site {
        let moto = Moto::start();
        let mut daemon = Daemon::configured(REGION, "EU");
        daemon.env = aws_env();
        daemon.launch();
        let work = tempfile::tempdir().unwrap();
        let imds_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::create_dir_all(work.path().join("notices")).unwrap();
        let imds = Killed(
            Command::new(common::moto::python())
                .arg(common::moto::harness())
                .args(["--endpoint", &moto.url, "--region", REGION, "imds"])
                .args(["--port", &imds_port.to_string(), "--notices"])
                .arg(work.path().join("notices"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let script = user_data(work.path(), &daemon, imds_port);
        for group in std::iter::once(&GROUP).chain(unplayed) {
            moto.aws(&[
                "create",
                "--group",
                group,
                "--min",
                "0",
                "--max",
                "2",
                "--user-data",
                script.to_str().unwrap(),
            ]);
        }
        let player = Killed(moto.play(GROUP, &work.path().join("instances")));
        let throttle = throttled.then(|| Throttle::start(&moto, work.path()));
        let api = throttle
            .as_ref()
            .map_or(moto.url.clone(), |t| t.url.clone());
        let config = endpoint_json("digits", &body(&api));
        let (code, text) = daemon.api("PUT", "/v1/endpoints/digits", Some(&config), &[]);
        assert_eq!(
            code,
            201,
            "{text}\n{}",
            logs(&[daemon.dir.path().to_path_buf(), work.path().to_path_buf()])
        );
        Site {
            view: serde_json::from_str(&text).unwrap(),
            moto,
            throttle,
            daemon,
            work,
            _player: player,
            _imds: imds,
        }
    }

    fn dirs(&self) -> [PathBuf; 2] {
        [
            self.daemon.dir.path().to_path_buf(),
            self.work.path().to_path_buf(),
        ]
    }

    /// The endpoint's base URL (where `/v2/...` lives).
    fn base(&self) -> String {
        let url = self.view["url"].as_str().unwrap();
        url.split("/v2/").next().unwrap().to_string()
    }

    /// The router's decisions so far, from its log: `timestamp`, `action`, `subject`, `reason`.
    fn decisions(&self) -> Vec<Value> {
        self.daemon.decisions("digits")
    }

    fn router(&self, path: &str) -> String {
        let address = self.view["router"]["address"].as_str().unwrap();
        http_get(&format!("http://{address}{path}")).1
    }
}

#[test]
fn bursts_scale_an_auto_scaling_group_whose_instances_join_and_leave() {
    let _one = serial();
    let site = Site::start(|api| endpoint_body(api, 1, "burst", "on_demand"), &[]);
    let (moto, d) = (&site.moto, &site.daemon);
    let base = site.base();

    // Load beyond the base: the router raises the group's desired capacity, the instance joins
    // over its own connection and takes requests.
    let started = Instant::now();
    let load = {
        let base = base.clone();
        std::thread::spawn(move || bench(&base, 64, "20s"))
    };
    let dirs = site.dirs();
    wait_until(
        "an instance of the group serving",
        Duration::from_secs(40),
        &dirs,
        || {
            metric(
                &site.router("/metrics"),
                "gpucap_fabric_requests_total",
                &["pool=\"cloud\"", "code=\"200\""],
            ) > 0.0
        },
    );
    eprintln!(
        "scale to a joined replica serving: {:.1} s after the load began",
        started.elapsed().as_secs_f64()
    );
    // An instance is protected once its replica is claimed (one that just joined may be a
    // moment away from it): every in-service instance is, and the group holds no more instances
    // than it desires.
    wait_until(
        "every in-service instance protected from scale-in",
        Duration::from_secs(10),
        &dirs,
        || {
            let group = moto.group(GROUP);
            let serving = in_service(&group);
            !serving.is_empty()
                && serving.iter().all(|i| i["protected"] == true)
                && group["desired"].as_u64() == Some(serving.len() as u64)
        },
    );
    let serving = in_service(&moto.group(GROUP));
    // While the load runs, the group's owner raises its MinSize to what runs now: once idle,
    // AWS would refuse a terminate with a decrement, so the drained replica's stop fails with
    // the reason and its instance is kept, still protected. Once MinSize is back at 0, the stop
    // goes through.
    let held = serving.len().to_string();
    moto.aws(&["set-min", "--group", GROUP, "--min", &held]);
    let report = load.join().unwrap();
    assert_eq!(failed(&report), 0, "{report}");

    // Claims that are not the pool's machines are refused, each counted by its reason.
    let refused = [
        ("gpj_wrong", "cloud", serving[0]["id"].as_str().unwrap()),
        (TOKEN, "cloud", "i-0notinthegroup"),
        (TOKEN, "lab", "i-0labmachine"),
        (TOKEN, "us-cloud", "i-0elsewhere"),
    ];
    for (token, pool, machine) in refused {
        let log = join_attempt(d, site.work.path(), token, pool, machine);
        assert!(log.contains("refused the join"), "{pool}/{machine}: {log}");
    }
    let metrics = site.router("/metrics");
    for reason in ["bad_token", "not_in_pool", "unknown_pool"] {
        let n = metric(
            &metrics,
            "gpucap_fabric_join_refusals_total",
            &[&format!("name=\"{reason}\"")],
        );
        assert!(n >= 1.0, "{reason}: {metrics}");
    }

    // The stops of a drain: refused at MinSize.
    let at_min_size = format!("MinSize ({held})");
    let min_size_refusal = || {
        site.decisions().iter().any(|d| {
            d["action"] == "stop"
                && d["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("failed, will retry") && r.contains(&at_min_size))
        })
    };
    wait_until(
        "the stop refused at MinSize",
        Duration::from_secs(40),
        &dirs,
        min_size_refusal,
    );
    let g = moto.group(GROUP);
    assert!(g["desired"].as_u64() >= held.parse().ok(), "{g}");
    assert!(
        in_service(&g).iter().all(|i| i["protected"] == true),
        "the kept instance stays protected: {g}"
    );
    moto.aws(&["set-min", "--group", GROUP, "--min", "0"]);

    // The joined replica's instance loses its protection and is terminated with the desired
    // capacity lowered by one.
    wait_until(
        "the burst instance terminated",
        Duration::from_secs(60),
        &dirs,
        || {
            let g = moto.group(GROUP);
            g["desired"] == 0 && in_service(&g).is_empty()
        },
    );

    // With Launch suspended, a start fails with the reason and the group is left alone.
    moto.aws(&["suspend", "--group", GROUP, "--processes", "Launch"]);
    let report = bench(&base, 64, "4s");
    assert_eq!(failed(&report), 0, "{report}");
    wait_until(
        "the start refused while Launch is suspended",
        Duration::from_secs(20),
        &dirs,
        || {
            site.decisions().iter().any(|d| {
                d["action"] == "failed"
                    && d["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("has its Launch process suspended"))
            })
        },
    );
    assert_eq!(moto.group(GROUP)["desired"], 0);

    // Deleting the endpoint leaves the group as gpucap found it.
    let (code, body) = d.api("DELETE", "/v1/endpoints/digits", None, &[]);
    assert!(code == 204 || code == 200, "{code} {body}");
    let group = moto.group(GROUP);
    assert_eq!(group["desired"], 0, "{group}");
    assert_eq!(group["min"], 0, "{group}");
    assert_eq!(group["max"], 2, "{group}");
}

#[test]
fn reclaimed_and_interrupted_instances_leave_rotation_at_once_and_a_lost_api_stops_no_routing() {
    let _one = serial();
    // Two replicas at least: one on this host, one on an instance of the group (a spot pool).
    let mut site = Site::start(|api| endpoint_body(api, 2, "base", "spot"), &[]);
    let dirs = site.dirs();
    let ready_on_cloud = || {
        let status: Value = serde_json::from_str(&site.router("/fabric/status")).unwrap();
        ready_on(&status, "cloud")
    };
    wait_until(
        "a joined replica ready",
        Duration::from_secs(40),
        &dirs,
        || ready_on_cloud() == 1,
    );
    let first = in_service(&site.moto.group(GROUP))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Under load, AWS reclaims the instance (no decrement: the group launches a replacement,
    // whose replica joins). Requests on the lost replica are retried elsewhere: none fails.
    let load = {
        let base = site.base();
        std::thread::spawn(move || bench(&base, 16, "12s"))
    };
    std::thread::sleep(Duration::from_secs(3));
    let reclaimed = std::time::SystemTime::now();
    site.moto.aws(&["terminate", "--instance", &first]);
    // The router logs the loss, and a cloud replica on another instance becomes ready.
    let first_machine = format!("aws:{first}");
    let replaced = || {
        let decisions = site.decisions();
        let lost = decisions.iter().position(|d| {
            d["action"] == "lost"
                && d["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(&first_machine))
        })?;
        let ready = decisions[lost..].iter().find(|d| {
            d["action"] == "ready"
                && d["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("cloud-"))
        })?;
        Some((
            decisions[lost]["timestamp"].clone(),
            ready["timestamp"].clone(),
        ))
    };
    wait_until(
        "the reclaimed instance's replica replaced",
        Duration::from_secs(40),
        &dirs,
        || replaced().is_some(),
    );
    let (lost_at, ready_at) = replaced().unwrap();
    let at = |v: &Value| humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    eprintln!(
        "reclaimed instance: lost {:.2} s after the reclaim, a replacement ready {:.3} s after the loss",
        at(&lost_at)
            .duration_since(reclaimed)
            .unwrap_or_default()
            .as_secs_f64(),
        at(&ready_at)
            .duration_since(at(&lost_at))
            .unwrap_or_default()
            .as_secs_f64()
    );
    assert!(
        in_service(&site.moto.group(GROUP))
            .iter()
            .all(|i| i["id"] != first.as_str()),
        "the reclaimed instance is gone"
    );
    let report = load.join().unwrap();
    assert_eq!(failed(&report), 0, "{report}");

    // A spot interruption notice (from the instance metadata service, IMDSv2): the replica
    // answers what it was sent and leaves; the router replaces it at once and gives the
    // instance back. No request fails.
    let noticed = in_service(&site.moto.group(GROUP))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .find(|m| find_joined_replica(m).is_some())
        .expect("an instance with a joined replica");
    let pid = joined_replica_pid(&noticed);
    let load = {
        let base = site.base();
        std::thread::spawn(move || bench(&base, 16, "10s"))
    };
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(site.work.path().join("notices").join(&noticed), "").unwrap();
    let noticed_machine = format!("aws:{noticed}");
    wait_until(
        "the noticed replica replaced",
        Duration::from_secs(30),
        &dirs,
        || {
            let decisions = site.decisions();
            decisions
                .iter()
                .position(|d| {
                    d["action"] == "lost"
                        && d["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains(&noticed_machine))
                })
                .is_some_and(|lost| {
                    decisions[lost..].iter().any(|d| {
                        d["action"] == "ready"
                            && d["subject"]
                                .as_str()
                                .is_some_and(|s| s.starts_with("cloud-"))
                    })
                })
        },
    );
    assert!(
        all_gone(&[pid], Duration::from_secs(10)),
        "the noticed replica exited on its own"
    );
    let report = load.join().unwrap();
    assert_eq!(failed(&report), 0, "{report}");
    wait_until(
        "the noticed instance given back",
        Duration::from_secs(20),
        &dirs,
        || {
            in_service(&site.moto.group(GROUP))
                .iter()
                .all(|i| i["id"] != noticed.as_str())
        },
    );

    // The router dies and the daemon restarts it. The joined replica dials again and is
    // adopted, the same process on the same instance: it serves again without a new instance,
    // and nothing is left idle and paid for. (A start the restarted router raises before the
    // machine is back may add an instance for a moment; it is drained once not needed.)
    // Every instance with a joined replica before the kill (a burst one may still be there).
    let before: Vec<(String, i32)> = in_service(&site.moto.group(GROUP))
        .iter()
        .filter_map(|i| {
            let m = i["id"].as_str().unwrap().to_string();
            find_joined_replica(&m).map(|pid| (m, pid))
        })
        .collect();
    assert!(!before.is_empty(), "an instance with a joined replica");
    let router_pid = site.view["router"]["pid"].as_i64().unwrap() as i32;
    signal(router_pid, "KILL");
    let adopted = || {
        let status: Value = serde_json::from_str(&site.router("/fabric/status")).ok()?;
        let view = site.daemon.endpoint("digits");
        (view["router"]["pid"].as_i64()? as i32 != router_pid).then_some(())?;
        let g = site.moto.group(GROUP);
        let serving = in_service(&g);
        (ready_on(&status, "cloud") == 1
            && serving.len() == 1
            && serving[0]["protected"] == true
            && g["desired"] == 1)
            .then_some(())?;
        serving[0]["id"].as_str().map(str::to_string)
    };
    wait_until(
        "a joined replica adopted by the restarted router, nothing else held",
        Duration::from_secs(60),
        &dirs,
        || adopted().is_some(),
    );
    // Adopted, not started afresh: the rejoined replicas were taken as they were, and one that
    // was there before serves on as the same process.
    let adoptions = site
        .decisions()
        .iter()
        .filter(|d| {
            d["action"] == "adopt"
                && d["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("joined pool cloud"))
        })
        .count();
    assert!(adoptions >= 1, "{:?}", site.decisions());
    let machine = adopted().unwrap();
    if let Some((_, pid)) = before.iter().find(|(m, _)| *m == machine) {
        assert_eq!(
            joined_replica_pid(&machine),
            *pid,
            "the same replica process serves on"
        );
    }
    let (code, answer) = infer(&site.base());
    assert_eq!(code, 200, "{answer}");

    // The API goes away: routing goes on, and what the driver cannot do shows in status and
    // metrics. (The joined replicas are lost too, so the driver must ask the API for another.)
    let machines: Vec<String> = in_service(&site.moto.group(GROUP))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    site.moto.kill();
    for machine in &machines {
        signal(joined_replica_pid(machine), "KILL");
    }
    wait_until(
        "the API error in status",
        Duration::from_secs(60),
        &dirs,
        || {
            let status: Value = serde_json::from_str(&site.router("/fabric/status")).unwrap();
            status["pools"].as_array().unwrap().iter().any(|p| {
                p["name"] == "cloud"
                    && p["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("Auto Scaling"))
            })
        },
    );
    let (code, answer) = infer(&site.base());
    assert_eq!(code, 200, "{answer}");
    let errors = metric(
        &site.router("/metrics"),
        "gpucap_fabric_driver_api_errors_total",
        &["name=\"cloud\""],
    );
    assert!(errors >= 1.0, "API errors counted: {errors}");
}

const SPOT_GROUP: &str = "gpu-spot";

/// The endpoint: one CPU replica on this host (`lab`), then one burst replica at most, on the
/// spot group `gpu-spot` (whose instances never join: spot capacity that cannot start) or, with
/// `spot_fallback`, on the on-demand group.
fn fallback_body(api: &str) -> String {
    let hash = hex::encode(Sha256::digest(TOKEN.as_bytes()));
    let group = |name: &str, group: &str, capacity_type: &str, price: f64, timeout: &str| {
        format!(
            "[[pools]]\nname = \"{name}\"\nrole = \"burst\"\nregion = \"{REGION}\"\njurisdiction = \"EU\"\n\
             capacity_type = \"{capacity_type}\"\ngpus_max = 1\nprice_per_gpu_hour = {price}\n\
             join_token_sha256 = [\"{hash}\"]\n\
             [pools.aws_autoscaling_group]\nname = \"{group}\"\nendpoint_url = \"{api}\"\njoin_timeout = \"{timeout}\"\n\n",
        )
    };
    format!(
        "[replicas]\nmin = 1\nmax = 2\n\n[residency]\nallowed_jurisdictions = [\"EU\"]\n\n\
         [policy]\nname = \"burst\"\nspot_fallback = \"on_demand\"\n\
         [policy.scale_up]\nqueue_depth = 2\nfor = \"1s\"\nstable_window = \"4s\"\npanic_window = \"1s\"\n\
         [policy.scale_down]\nidle_for = \"4s\"\ndrain_timeout = \"5s\"\n\n\
         [[pools]]\nname = \"lab\"\nregion = \"{REGION}\"\njurisdiction = \"EU\"\ncapacity_type = \"on_prem\"\n\
         gpus_max = 1\n[pools.local]\ndevices = \"cpu\"\n\n{spot}{cloud}",
        spot = group("spot", SPOT_GROUP, "spot", 0.4, "20s"),
        cloud = group("cloud", GROUP, "on_demand", 1.2, "60s"),
    )
}

/// The endpoint: one CPU replica on this host (`lab`); bursts go to the Auto Scaling group
/// (`cloud`, the cheaper) and then to a second local pool (`overflow`).
fn throttle_body(api: &str) -> String {
    let hash = hex::encode(Sha256::digest(TOKEN.as_bytes()));
    format!(
        "[replicas]\nmin = 1\nmax = 3\n\n[residency]\nallowed_jurisdictions = [\"EU\"]\n\n\
         [policy]\nname = \"burst\"\n\
         [policy.scale_up]\nqueue_depth = 2\nfor = \"1s\"\nstable_window = \"4s\"\npanic_window = \"1s\"\n\
         [policy.scale_down]\nidle_for = \"30s\"\ndrain_timeout = \"5s\"\n\n\
         [[pools]]\nname = \"lab\"\nregion = \"{REGION}\"\njurisdiction = \"EU\"\ncapacity_type = \"on_prem\"\n\
         gpus_max = 1\n[pools.local]\ndevices = \"cpu\"\n\n\
         [[pools]]\nname = \"cloud\"\nrole = \"burst\"\nregion = \"{REGION}\"\njurisdiction = \"EU\"\n\
         capacity_type = \"on_demand\"\ngpus_max = 1\nprice_per_gpu_hour = 1.2\n\
         join_token_sha256 = [\"{hash}\"]\n\
         [pools.aws_autoscaling_group]\nname = \"{GROUP}\"\nendpoint_url = \"{api}\"\njoin_timeout = \"60s\"\n\n\
         [[pools]]\nname = \"overflow\"\nrole = \"burst\"\nregion = \"{REGION}\"\njurisdiction = \"EU\"\n\
         capacity_type = \"on_demand\"\ngpus_max = 1\nprice_per_gpu_hour = 3.0\n[pools.local]\ndevices = \"cpu\"\n",
    )
}

#[test]
fn a_throttled_api_backs_off_shows_in_status_and_holds_up_no_other_pool() {
    let _one = serial();
    let site = Site::throttled(throttle_body);
    let throttle = site.throttle.as_ref().unwrap();
    let dirs = site.dirs();
    let status = || -> Value { serde_json::from_str(&site.router("/fabric/status")).unwrap() };

    // AWS throttles every Auto Scaling call. A burst under load cannot get the group's
    // capacity: the start fails after the SDK's retries, the pool backs off, and the burst goes
    // to the next pool at once. Every request is answered meanwhile.
    throttle.on(true);
    let throttled_from = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let report = bench(&site.base(), 16, "15s");
    assert_eq!(failed(&report), 0, "{report}");
    wait_until(
        "the burst placed on the next pool",
        Duration::from_secs(30),
        &dirs,
        || ready_on(&status(), "overflow") == 1,
    );
    let pool = |name: &str| -> Value {
        status()["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    let cloud = pool("cloud");
    assert!(
        cloud["error"].as_str().is_some_and(|e| e.contains(
            "DescribeAutoScalingGroups on Auto Scaling group gpu-burst: Throttling: Rate exceeded"
        )),
        "the throttling shows in status: {cloud}"
    );
    assert_eq!(ready_on(&status(), "cloud"), 0);
    let errors = metric(
        &site.router("/metrics"),
        "gpucap_fabric_driver_api_errors_total",
        &["name=\"cloud\""],
    );
    assert!(errors >= 1.0, "API errors counted: {errors}");
    let decisions = site.decisions();
    let failed_start = find_decision(&decisions, 0, "failed", "cloud").expect("a failed start");
    // The other pool's start went ahead while the group's calls were still being retried.
    let overflow = find_decision(&decisions, 0, "ready", "overflow").expect("overflow serving");
    assert!(overflow < failed_start, "{decisions:?}");
    // Backed off, not hammered: each call is tried a few times with jittered pauses (the failed
    // start took that long), and the pool waits before its next start (at least a second after
    // the first failure; the autoscaler's next round would come sooner).
    let at =
        |i: usize| humantime::parse_rfc3339(decisions[i]["timestamp"].as_str().unwrap()).unwrap();
    let first_start = find_decision(&decisions, 0, "start", "cloud").unwrap();
    let retried = at(failed_start).duration_since(at(first_start)).unwrap();
    assert!(
        retried >= Duration::from_millis(200),
        "{retried:?}: {decisions:?}"
    );
    let next_start =
        find_decision(&decisions, failed_start, "start", "cloud").expect("another start later");
    let waited = at(next_start).duration_since(at(failed_start)).unwrap();
    assert!(
        waited >= Duration::from_secs(1),
        "{waited:?}: {decisions:?}"
    );
    let calls = throttle.throttled();
    let until = calls.last().map_or(throttled_from, |(t, _)| *t);
    let rate = calls.len() as f64 / (until - throttled_from).max(1.0);
    assert!(
        !calls.is_empty() && rate < 3.0,
        "{} throttled calls in {:.1} s: {calls:?}",
        calls.len(),
        until - throttled_from
    );
    println!(
        "{} throttled call(s) in {:.1} s",
        calls.len(),
        until - throttled_from
    );
    let gaps: Vec<f64> = calls.windows(2).map(|w| w[1].0 - w[0].0).collect();
    println!("pauses between them, s: {gaps:.2?}");
    assert!(
        gaps.iter().any(|g| *g > 0.3),
        "retries pause between attempts: {gaps:?}"
    );

    // The throttling ends: the group serves the next burst (once the pool's backoff is over).
    throttle.on(false);
    let report = bench(&site.base(), 16, "2s");
    assert_eq!(failed(&report), 0, "{report}");
    let load = std::thread::spawn({
        let base = site.base();
        move || bench(&base, 16, "40s")
    });
    wait_until(
        "a joined replica on the group once the throttling is over",
        Duration::from_secs(60),
        &dirs,
        || ready_on(&status(), "cloud") == 1,
    );
    assert_eq!(failed(&load.join().unwrap()), 0);
    assert_eq!(pool("cloud")["state"], "ok", "{}", pool("cloud"));
}

/// The first decision `action` on a replica of `pool`, after `from` in `decisions`: its index.
fn find_decision(decisions: &[Value], from: usize, action: &str, pool: &str) -> Option<usize> {
    decisions
        .iter()
        .skip(from)
        .position(|d| {
            d["action"] == action
                && d["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("{pool}-")))
        })
        .map(|i| i + from)
}

#[test]
fn an_unneeded_start_is_cancelled_and_spot_that_cannot_start_falls_back_to_on_demand() {
    let _one = serial();
    let site = Site::start(fallback_body, &[SPOT_GROUP]);
    let (moto, dirs) = (&site.moto, site.dirs());
    let at = |v: &Value| humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    let no_spot_instance = || {
        let g = moto.group(SPOT_GROUP);
        g["desired"] == 0 && g["instances"].as_array().unwrap().is_empty()
    };

    // A short burst asks for a spot instance, which boots but never joins. The load is gone
    // long before the join timeout: once nothing has wanted the start for idle_for, it is
    // cancelled and the instance terminated with its desired capacity. Not a failure: no
    // backoff, no fallback. The instance was paid for from the start until its termination.
    let report = bench(&site.base(), 16, "3s");
    assert_eq!(failed(&report), 0, "{report}");
    wait_until(
        "the unneeded spot start cancelled",
        Duration::from_secs(20),
        &dirs,
        || find_decision(&site.decisions(), 0, "cancelled", "spot").is_some(),
    );
    let decisions = site.decisions();
    let stop = find_decision(&decisions, 0, "stop", "spot").expect("a stop of the start");
    let reason = decisions[stop]["reason"].as_str().unwrap();
    assert!(
        reason.contains("while it started; its start is cancelled"),
        "{reason}"
    );
    // Cancelled, not left to time out.
    let cancelled = find_decision(&decisions, 0, "cancelled", "spot").unwrap();
    assert_eq!(
        decisions[cancelled]["reason"], "the start was cancelled",
        "{decisions:?}"
    );
    assert!(
        find_decision(&decisions, 0, "start", "cloud").is_none(),
        "no fallback for a cancelled start: {decisions:?}"
    );
    wait_until(
        "the spot instance terminated",
        Duration::from_secs(10),
        &dirs,
        no_spot_instance,
    );
    let metrics = site.router("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "gpucap_fabric_replica_failures_total",
            &["name=\"spot\""]
        ),
        0.0,
        "{metrics}"
    );
    let spend = metric(&metrics, "gpucap_fabric_burst_spend_usd_total", &[]);
    assert!(spend > 0.0, "the booting instance was metered: {metrics}");
    eprintln!("an unneeded spot start: ${spend:.6} spent on it until its termination");

    // Sustained load: the spot start times out (its instance terminated, the pool backs off)
    // and with spot_fallback = "on_demand" the burst goes to the on-demand group, whose
    // instance joins and serves. Nothing fails meanwhile. The load outlasts the 20 s join
    // timeout and a slow on-demand start on a busy machine (15 s seen), so the fallback replica
    // still has load to serve when it is ready.
    let from = site.decisions().len();
    let load = {
        let base = site.base();
        std::thread::spawn(move || bench(&base, 16, "48s"))
    };
    let fallen_back = || {
        let d = site.decisions();
        let failed = find_decision(&d, from, "failed", "spot")?;
        let ready = find_decision(&d, failed, "ready", "cloud")?;
        Some((d[failed].clone(), d[ready]["timestamp"].clone()))
    };
    wait_until(
        "an on-demand replica serving after spot failed",
        Duration::from_secs(45),
        &dirs,
        || fallen_back().is_some(),
    );
    let (failure, ready_at) = fallen_back().unwrap();
    assert!(
        failure["reason"]
            .as_str()
            .unwrap()
            .contains("no instance of Auto Scaling group gpu-spot joined within 20s"),
        "{failure}"
    );
    eprintln!(
        "spot fallback: an on-demand replica serving {:.2} s after the spot start's timeout",
        at(&ready_at)
            .duration_since(at(&failure["timestamp"]))
            .unwrap_or_default()
            .as_secs_f64()
    );
    let report = load.join().unwrap();
    assert_eq!(failed(&report), 0, "{report}");
    assert!(
        metric(
            &site.router("/metrics"),
            "gpucap_fabric_requests_total",
            &["pool=\"cloud\"", "code=\"200\""],
        ) > 0.0
    );
    assert!(no_spot_instance(), "{}", moto.group(SPOT_GROUP));
}

/// `bench` at `url` with `clients` for `duration`: (requests/s, p50 ms, failed).
fn measure(url: &str, clients: usize, duration: &str) -> (f64, f64, u64) {
    let r = bench(url, clients, duration);
    (
        r["throughput_rps"].as_f64().unwrap(),
        r["latency"]["p50_ms"].as_f64().unwrap(),
        failed(&r),
    )
}

/// The figures of the AWS driver and the join channel, side by side in one run (run by
/// scripts/bench-aws.sh): time from the decision to scale to the joined replica serving (the
/// harness boots instances at once), API calls per start, and the join channel's overhead: the
/// same replica (one CPU thread) reached over the connection it opened against the same runtime
/// reached by address.
#[test]
#[ignore = "a benchmark: scripts/bench-aws.sh runs it"]
fn bench_joined_replicas() {
    let _one = serial();
    let site = Site::start(|api| endpoint_body(api, 2, "base", "on_demand"), &[]);
    let dirs = site.dirs();
    let status = || -> Value { serde_json::from_str(&site.router("/fabric/status")).unwrap() };
    wait_until(
        "a joined replica ready",
        Duration::from_secs(60),
        &dirs,
        || ready_on(&status(), "cloud") == 1,
    );
    // Scale under load: more replicas on the group.
    let report = bench(&site.base(), 64, "15s");
    assert_eq!(failed(&report), 0, "{report}");
    let decisions = site.decisions();
    let times = start_to_ready(&decisions, "cloud");
    let starts = decisions
        .iter()
        .filter(|d| {
            d["action"] == "start"
                && d["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("cloud-"))
        })
        .count();
    let metrics = site.router("/metrics");
    let calls: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("gpucap_fabric_driver_api_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!(
        "decision to a joined replica serving, s (first with the model fetched, then cached):"
    );
    for t in &times {
        println!("  {t:.3}");
    }
    println!(
        "API calls: {calls} for {starts} start(s) (and the stops and joins among them): {:.1} per start",
        calls / starts.max(1) as f64
    );
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("gpucap_fabric_driver_api_calls_total{"))
    {
        println!("  {line}");
    }

    // The join channel against the same runtime reached by address, once the burst has drained
    // back (which joined replica stays is the autoscaler's choice).
    wait_until(
        "the fleet back to its minimum",
        Duration::from_secs(60),
        &dirs,
        || status()["replicas"].as_array().unwrap().len() == 2 && ready_on(&status(), "cloud") == 1,
    );
    let joined = status()["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pool"] == "cloud" && r["phase"] == "ready")
        .and_then(|r| r["address"].as_str())
        .unwrap()
        .to_string();
    // scripts/bench-aws.sh puts its peers (a reverse proxy, a reverse tunnel) in front of the
    // direct runtime's port, which it chooses.
    let direct_port = std::env::var("GPUCAP_BENCH_DIRECT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
    let direct = Killed(
        Command::new(runtime_bin())
            .args(["serve", "--model"])
            .arg(digits_model())
            .args(["--name", "digits", "--device", "cpu", "--threads", "1"])
            .args(["--listen", &format!("127.0.0.1:{direct_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let direct_url = format!("http://127.0.0.1:{direct_port}");
    wait_until("the direct runtime", Duration::from_secs(20), &dirs, || {
        http_get(&format!("{direct_url}/v2/health/ready")).0 == 200
    });
    // Peers as `name=url,name=url`: each reaches the direct runtime through one extra hop.
    let peers = std::env::var("GPUCAP_BENCH_PEERS").unwrap_or_default();
    let mut paths = vec![
        ("by address (direct)".to_string(), direct_url.clone()),
        (
            "joined (reverse channel)".to_string(),
            format!("http://{joined}"),
        ),
    ];
    for peer in peers.split(',').filter(|p| !p.is_empty()) {
        let (name, url) = peer
            .split_once('=')
            .expect("GPUCAP_BENCH_PEERS: name=url,…");
        wait_until(name, Duration::from_secs(20), &dirs, || {
            http_get(&format!("{url}/v2/health/ready")).0 == 200
        });
        paths.push((name.to_string(), url.to_string()));
    }
    // Alternating rounds, each path's median reported: a shared machine's noise moves every
    // path alike.
    let rounds: usize = std::env::var("GPUCAP_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut figures = vec![Vec::new(); paths.len()];
    for _ in 0..rounds {
        for ((_, url), runs) in paths.iter().zip(&mut figures) {
            let (rps, p50, failed) = measure(url, 8, "10s");
            assert_eq!(failed, 0, "{url}");
            runs.push((rps, p50));
        }
    }
    println!(
        "one replica, 1 CPU thread, digits MLP, 8 clients, 10 s a run, {rounds} alternating rounds (median; each round):"
    );
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for ((what, _), runs) in paths.iter().zip(&figures) {
        let rps = median(runs.iter().map(|r| r.0).collect());
        let p50 = median(runs.iter().map(|r| r.1).collect());
        let each: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.0)).collect();
        println!(
            "  {what:28} {rps:8.0} req/s  p50 {p50:.3} ms   ({} req/s)",
            each.join(", ")
        );
    }
    drop(direct);
}
