//! Pools on a Slurm partition, with the real Terraform CLI against a real one-node Slurm cluster
//! (Debian's packages, started here with four fake GPUs): plan reads the partition and refuses
//! one that is missing, a `gres` no node has, `nodes.max` beyond what the partition holds and a
//! token slurmrestd rejects, each naming the attribute; the hybrid-slurm example, applied on
//! the partition, serves a real prediction from a job whose replica joined the router; refresh reports the
//! pool's running jobs; destroy cancels every job the fabric submitted and nothing else.

mod common;
// The cluster's harness lives with the fabric's tests, which use it too.
#[allow(dead_code)]
#[path = "../../fabric/tests/common/slurm.rs"]
mod slurm;

use std::time::{Duration, Instant};

use common::*;
use slurm::Cluster;

/// A pool on the cluster's partition, with `slurm_extra` lines in its block and `nodes_max`.
fn pool(cluster: &Cluster, token_file: &str, slurm_extra: &str, nodes_max: u32) -> String {
    format!(
        r#"
resource "gpucap_gpu_pool" "hpc" {{
  name               = "hpc"
  region             = "eu-lab"
  jurisdiction       = "EU"
  price_per_gpu_hour = 0.9
  gpu {{
    model = "L4"
  }}
  nodes {{
    max = {nodes_max}
  }}
  slurm {{
    rest_url   = "{rest}"
    user       = "{user}"
    token_file = "{token_file}"
    partition  = "{partition}"
    time_limit = "2h"
{slurm_extra}  }}
}}

output "running" {{
  value = gpucap_gpu_pool.hpc.slurm.running
}}
"#,
        rest = cluster.rest_url,
        user = cluster.user,
        partition = cluster.partition,
    )
}

/// Terraform's message with its line breaks (it wraps long ones) as spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn plan_reads_the_partition_apply_serves_from_jobs_and_destroy_cancels_only_them() {
    let cluster = Cluster::start();
    let tf = Tf::new("");
    let token = cluster.token_file.display().to_string();

    // Plan-time checks, each an error naming the attribute and Slurm's view.
    let cases = [
        (
            pool(&cluster, &token, "", 1).replace(
                &format!("partition  = \"{}\"", cluster.partition),
                "partition  = \"a100\"",
            ),
            vec![
                "Slurm partition not found",
                "no partition \"a100\"",
                "its partitions: gpu",
            ],
        ),
        (
            pool(&cluster, &token, "    gres = \"gpu:8\"\n", 1),
            vec![
                "No node can run the job",
                "each job asks for 8 gpu",
                "the most is 4",
            ],
        ),
        (
            pool(&cluster, &token, "", 1).replace("time_limit = \"2h\"", "time_limit = \"3d\""),
            vec![
                "Longer than the partition allows",
                "time_limit is 3d but partition \"gpu\" allows jobs at most 2days",
            ],
        ),
        (
            pool(&cluster, &token, "", 5),
            vec![
                "More nodes than the partition holds",
                "nodes.max is 5",
                "runs at most 4 job(s) of 1 gpu",
            ],
        ),
    ];
    for (config, wants) in cases {
        tf.write(&config);
        let err = one_line(&tf.fails(&["plan", "-no-color", "-input=false"]));
        for want in wants {
            assert!(err.contains(want), "{want:?} in:\n{err}");
        }
    }
    // A token slurmrestd rejects: the error says so, and the token shows nowhere.
    let bad_token = tf.path().join("bad-token");
    std::fs::write(&bad_token, "not-a-jwt").unwrap();
    tf.write(&pool(&cluster, &bad_token.display().to_string(), "", 1));
    let err = one_line(&tf.fails(&["plan", "-no-color", "-input=false"]));
    assert!(err.contains("Cannot read the Slurm partition"), "{err}");
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(err.contains("check the pool's token and user"), "{err}");
    assert!(!err.contains("not-a-jwt"), "{err}");

    // Someone else's job on the same partition, under the same user: gpucap never touches it.
    let other = cluster.sbatch("train-resnet", "sleep 600");

    // Apply the hybrid-slurm example on this cluster: the router submits the base replica's
    // job, whose replica joins and serves.
    let mut tf = tf;
    let example = std::fs::read_to_string(repo_root().join("examples/hybrid-slurm/main.tf"))
        .unwrap()
        .replace(
            "\"${path.module}/.gpucap-state\"",
            &format!("{:?}", tf.state_dir().display().to_string()),
        );
    tf.write_raw(&example);
    tf.env.extend([
        ("TF_VAR_slurm_rest_url".into(), cluster.rest_url.clone()),
        ("TF_VAR_slurm_user".into(), cluster.user.clone()),
        ("TF_VAR_slurm_token_file".into(), token.clone()),
        ("TF_VAR_partition".into(), cluster.partition.clone()),
        (
            "TF_VAR_model_path".into(),
            digits_model().display().to_string(),
        ),
    ]);
    let applied = tf.apply();
    // The one-node cluster is this host, so its jobs reach the embedded daemon on loopback; a
    // real cluster's would not, and plan says so.
    assert!(
        one_line(&applied).contains("Slurm jobs join a router on this host's loopback"),
        "{applied}"
    );
    assert!(!applied.contains(&std::fs::read_to_string(&cluster.token_file).unwrap()));
    let ours = cluster.jobs_in("RUNNING", "gpucap-claims.eu-lab-hpc-");
    assert_eq!(
        ours.len(),
        1,
        "one job for replicas.min = 1: {:?}",
        cluster.jobs()
    );
    let url = tf.output("url");
    for _ in 0..8 {
        assert_eq!(predict(&url), first_digit().0);
    }
    // Refresh reads the pool's jobs; the changed count is no change to apply.
    tf.refresh();
    let jobs: serde_json::Value =
        serde_json::from_str(&tf.ok(&["output", "-json", "lab_jobs"])).unwrap();
    assert_eq!(jobs, serde_json::json!({"running": 1, "pending": 0}));
    let (code, plan) = tf.plan();
    assert_eq!(code, 0, "a plan right after apply changes nothing:\n{plan}");

    // Destroy cancels the jobs the fabric submitted, and only those.
    tf.ok(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.jobs_in("RUNNING", "gpucap-").is_empty()
        || !cluster.jobs_in("PENDING", "gpucap-").is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "gpucap's jobs are cancelled after destroy: {:?}",
            cluster.jobs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        cluster
            .jobs()
            .iter()
            .any(|j| j["job_id"].as_u64() == ours[0].parse().ok() && j["job_state"] == "CANCELLED"),
        "{:?}",
        cluster.jobs()
    );
    assert_eq!(
        cluster.state_of(&other).as_deref(),
        Some("RUNNING"),
        "someone else's job runs on"
    );
}
