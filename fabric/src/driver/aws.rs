//! The `aws_autoscaling_group` driver: a pool is an existing EC2 Auto Scaling group, a replica is
//! one of its instances running `gpucap-runtime serve --join` (from the launch template's user
//! data), which dials the router and joins ([`crate::join`]).
//!
//! gpucap steers the group the way Kubernetes' Cluster Autoscaler does and touches nothing else:
//! the group, its launch template and its `MinSize`/`MaxSize` belong to whoever created them.
//! - A start raises `DesiredCapacity` by one, relative to what the group reports at that moment
//!   (never an absolute figure from an older snapshot, which would kill instances launched in
//!   between), and waits for an instance of the pool to join; a machine that already joined and
//!   serves nothing is used first. The instance is then protected from scale-in, so AWS never
//!   picks a busy one.
//! - A stop drains the replica, lifts the protection and terminates that instance with
//!   `ShouldDecrementDesiredCapacity`: the group shrinks by exactly the instance chosen, never by
//!   a lower desired capacity that lets AWS pick. A group at its `MinSize`, or with `Terminate`
//!   suspended, would refuse; that is checked before anything is drained.
//! - An instance that has not joined within the join timeout is terminated the same way and
//!   the start fails (the pool backs off); one whose start is no longer wanted likewise, without
//!   the backoff.
//! - A machine that joins with no start asking for it (it outlived a restarted router, or the
//!   group grew by hand) is adopted and protected, then kept or drained like any replica.
//!
//! Two endpoints bursting into one group never undo each other: each only adds one to what the
//! group reports, and only terminates instances it claimed, by id, with a decrement of one.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::config::{Region, timeout::TimeoutConfig};
use aws_sdk_autoscaling::error::ProvideErrorMetadata;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::{Capacity, Driver, DriverError, ReplicaRecord, ReplicaSpec};
use crate::join::JoinHub;
use crate::metrics::{ApiCallLabels, NameLabels};

use super::ApiMetrics;
use super::joined::JoinedReplicas;

/// Where a group is and how to reach its API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    /// The group's name.
    pub name: String,
    /// Its region (the pool's).
    pub region: String,
    /// A named AWS profile, if not the default chain's.
    pub profile: Option<String>,
    /// The API endpoint, if not AWS's (an emulator in tests).
    pub endpoint_url: Option<String>,
}

/// A group as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// `MinSize`.
    pub min_size: i32,
    /// `MaxSize`.
    pub max_size: i32,
    /// `DesiredCapacity`.
    pub desired: i32,
    /// Its instances.
    pub instances: Vec<InstanceState>,
    /// Scaling processes suspended on it (`Terminate`, `Launch`, …).
    pub suspended: Vec<String>,
    /// Share of on-demand capacity above the base in its mixed-instances policy (100 without one).
    pub on_demand_percentage: i32,
    /// The on-demand base capacity of its mixed-instances policy (0 without one).
    pub on_demand_base: i32,
    /// Whether it has a mixed-instances policy.
    pub mixed_instances: bool,
}

/// One instance of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceState {
    /// Its id.
    pub id: String,
    /// Its lifecycle state (`Pending`, `InService`, `Terminating`, …).
    pub lifecycle: String,
    /// Whether it is protected from scale-in.
    pub protected: bool,
}

/// An API client for one region, with timeouts that keep an unreachable API from stalling
/// anything for long; the SDK's standard retries back off with jitter on throttling.
pub async fn client(group: &GroupRef) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new(group.region.clone()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4));
    if let Some(profile) = &group.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &group.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
}

/// An SDK error as one line (never a credential): the service's code and message where AWS
/// answered (`Throttling: Rate exceeded`), else what kept the call from an answer (a timeout, a
/// refused connection) with its causes.
fn api_error<E>(what: &str, group: &str, e: E) -> DriverError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let msg = match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or("no message")),
        None => crate::errors::chain(&e),
    };
    DriverError(format!("{what} on Auto Scaling group {group}: {msg}"))
}

/// Reads a group; `Ok(None)` when there is none of that name in the client's region.
pub async fn describe(client: &Client, name: &str) -> Result<Option<GroupState>, DriverError> {
    let out = client
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(|e| api_error("DescribeAutoScalingGroups", name, e))?;
    let Some(g) = out.auto_scaling_groups().first() else {
        return Ok(None);
    };
    let mixed = g.mixed_instances_policy();
    let distribution = mixed.and_then(|m| m.instances_distribution());
    Ok(Some(GroupState {
        min_size: g.min_size().unwrap_or(0),
        max_size: g.max_size().unwrap_or(0),
        desired: g.desired_capacity().unwrap_or(0),
        instances: g
            .instances()
            .iter()
            .map(|i| InstanceState {
                id: i.instance_id().unwrap_or_default().to_string(),
                lifecycle: i
                    .lifecycle_state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                protected: i.protected_from_scale_in().unwrap_or(false),
            })
            .collect(),
        suspended: g
            .suspended_processes()
            .iter()
            .filter_map(|p| p.process_name().map(str::to_string))
            .collect(),
        on_demand_percentage: distribution
            .and_then(|d| d.on_demand_percentage_above_base_capacity())
            .unwrap_or(100),
        on_demand_base: distribution
            .and_then(|d| d.on_demand_base_capacity())
            .unwrap_or(0),
        mixed_instances: mixed.is_some(),
    }))
}

/// One pool on an Auto Scaling group.
pub struct AwsGroupDriver {
    pool: String,
    group: GroupRef,
    slots: usize,
    join_timeout: Duration,
    client: OnceCell<Client>,
    hub: Arc<JoinHub>,
    /// Which replica runs on which instance.
    replicas: JoinedReplicas,
    /// The group as last read, for admissions in quick succession (a join asks three times).
    recent: Mutex<Option<(Instant, GroupState)>>,
    /// Held across reading the desired capacity and setting it one higher: two starts of this
    /// pool at once must not both set the same figure.
    scaling: tokio::sync::Mutex<()>,
    metrics: ApiMetrics,
}

/// How old a read of the group may be to admit a joining machine.
const ADMIT_FRESHNESS: Duration = Duration::from_secs(2);

impl AwsGroupDriver {
    /// The driver for pool `pool` of at most `slots` replicas on `group`, whose instances join
    /// through `hub`; API calls are counted in `metrics`.
    pub fn new(
        pool: &str,
        group: GroupRef,
        slots: usize,
        join_timeout: Duration,
        hub: Arc<JoinHub>,
        metrics: ApiMetrics,
    ) -> AwsGroupDriver {
        AwsGroupDriver {
            pool: pool.to_string(),
            group,
            slots,
            join_timeout,
            client: OnceCell::new(),
            replicas: JoinedReplicas::new(pool, "aws", hub.clone()),
            hub,
            recent: Mutex::default(),
            scaling: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    /// The client, counting a call of `action`.
    async fn call(&self, action: &str) -> &Client {
        self.metrics
            .calls
            .get_or_create(&ApiCallLabels {
                pool: self.pool.clone(),
                call: action.to_string(),
            })
            .inc();
        self.client.get_or_init(|| client(&self.group)).await
    }

    /// Counts a failed call.
    fn failed(&self, e: DriverError) -> DriverError {
        self.metrics
            .errors
            .get_or_create(&NameLabels {
                name: self.pool.clone(),
            })
            .inc();
        tracing::warn!(pool = %self.pool, error = %e, "Auto Scaling API call failed");
        e
    }

    async fn state(&self) -> Result<GroupState, DriverError> {
        let state = describe(
            self.call("DescribeAutoScalingGroups").await,
            &self.group.name,
        )
        .await
        .map_err(|e| self.failed(e))?
        .ok_or_else(|| {
            DriverError(format!(
                "Auto Scaling group {} does not exist in {}",
                self.group.name, self.group.region
            ))
        })?;
        *self.recent.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), state.clone()));
        Ok(state)
    }

    /// The group as read within [`ADMIT_FRESHNESS`], else read now.
    async fn fresh_state(&self) -> Result<GroupState, DriverError> {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|(at, _)| at.elapsed() < ADMIT_FRESHNESS);
        match recent {
            Some((_, state)) => Ok(state),
            None => self.state().await,
        }
    }

    async fn protect(&self, machine: &str, protected: bool) -> Result<(), DriverError> {
        self.call("SetInstanceProtection")
            .await
            .set_instance_protection()
            .auto_scaling_group_name(&self.group.name)
            .instance_ids(machine)
            .protected_from_scale_in(protected)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.failed(api_error("SetInstanceProtection", &self.group.name, e)))
    }

    /// Terminates `machine` and lowers the desired capacity by one with it.
    async fn terminate(&self, machine: &str) -> Result<(), DriverError> {
        self.call("TerminateInstanceInAutoScalingGroup")
            .await
            .terminate_instance_in_auto_scaling_group()
            .instance_id(machine)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                self.failed(api_error(
                    "TerminateInstanceInAutoScalingGroup",
                    &self.group.name,
                    e,
                ))
            })
    }

    /// Raises the desired capacity by one, from what the group reports now.
    async fn add_one(&self) -> Result<BTreeSet<String>, DriverError> {
        let _one_at_a_time = self.scaling.lock().await;
        let g = self.state().await?;
        if g.suspended.iter().any(|p| p == "Launch") {
            return Err(DriverError(format!(
                "Auto Scaling group {} has its Launch process suspended",
                self.group.name
            )));
        }
        if g.desired >= g.max_size {
            return Err(DriverError(format!(
                "Auto Scaling group {} is at its MaxSize ({})",
                self.group.name, g.max_size
            )));
        }
        self.call("SetDesiredCapacity")
            .await
            .set_desired_capacity()
            .auto_scaling_group_name(&self.group.name)
            .desired_capacity(g.desired + 1)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| self.failed(api_error("SetDesiredCapacity", &self.group.name, e)))?;
        Ok(g.instances.into_iter().map(|i| i.id).collect())
    }

    /// Gives back the capacity of a start that did not produce a replica: an instance launched
    /// since `before` that nobody claimed and nobody protected is terminated with a decrement.
    async fn give_back(&self, before: &BTreeSet<String>) {
        let state = match self.state().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot give back an unused start");
                return;
            }
        };
        let unclaimed: BTreeSet<String> = self.hub.unclaimed(&self.pool).into_iter().collect();
        let spare = state.instances.iter().find(|i| {
            !before.contains(&i.id)
                && !i.protected
                && !i.lifecycle.starts_with("Terminating")
                && (unclaimed.contains(&i.id) || self.hub.address(&i.id).is_none())
        });
        match spare {
            Some(i) => {
                self.hub.release(&i.id, Duration::ZERO).await;
                if let Err(e) = self.terminate(&i.id).await {
                    tracing::warn!(error = %e, "cannot give back an unused start");
                }
            }
            None => tracing::warn!(
                pool = %self.pool,
                "an unused start's instance was not found; its capacity stays until the group's owner lowers it"
            ),
        }
    }

    async fn take(
        &self,
        spec: &ReplicaSpec,
        machine: String,
        address: String,
    ) -> Result<ReplicaRecord, DriverError> {
        if let Err(e) = self.protect(&machine, true).await {
            self.hub.release(&machine, Duration::ZERO).await;
            let _ = self.terminate(&machine).await;
            return Err(e);
        }
        Ok(self.replicas.record(spec, &machine, address))
    }
}

#[async_trait]
impl Driver for AwsGroupDriver {
    fn capacity(&self) -> Capacity {
        Capacity {
            slots: self.slots,
            devices: vec![format!("aws:{}", self.group.name)],
        }
    }

    async fn start(
        &self,
        spec: &ReplicaSpec,
        cancel: &CancellationToken,
    ) -> Result<ReplicaRecord, DriverError> {
        if let Some((machine, address)) = self.hub.claim(&self.pool, &spec.id) {
            return self.take(spec, machine, address).await;
        }
        // Replicas whose machine is gone no longer count, even while giving it back fails.
        self.replicas.check_room(self.slots)?;
        let before = self.add_one().await?;
        let deadline = Instant::now() + self.join_timeout;
        loop {
            if let Some((machine, address)) = self.hub.claim(&self.pool, &spec.id) {
                return self.take(spec, machine, address).await;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.give_back(&before).await;
                return Err(DriverError(format!(
                    "no instance of Auto Scaling group {} joined within {}",
                    self.group.name,
                    humantime::format_duration(self.join_timeout)
                )));
            }
            tokio::select! {
                _ = self.hub.changed() => {}
                _ = tokio::time::sleep(left.min(Duration::from_secs(1))) => {}
                _ = cancel.cancelled() => {
                    self.give_back(&before).await;
                    return Err(DriverError("the start was cancelled".into()));
                }
            }
        }
    }

    async fn stop(&self, replica: &ReplicaRecord, drain: Duration) -> Result<(), DriverError> {
        let Some(machine) = self.replicas.machine_of(replica) else {
            return Err(DriverError(format!(
                "replica {} names no instance",
                replica.id
            )));
        };
        let g = self.state().await?;
        if !g.instances.iter().any(|i| i.id == machine) {
            // AWS already took it (reclaimed, unhealthy): nothing to give back.
            self.hub.release(machine, Duration::ZERO).await;
            self.replicas.forget(&replica.id);
            return Ok(());
        }
        if g.suspended.iter().any(|p| p == "Terminate") {
            return Err(DriverError(format!(
                "Auto Scaling group {} has its Terminate process suspended; {machine} is kept",
                self.group.name
            )));
        }
        if g.desired <= g.min_size {
            return Err(DriverError(format!(
                "Auto Scaling group {} is at its MinSize ({}); AWS would refuse to terminate {machine} with a decrement, so it is kept",
                self.group.name, g.min_size
            )));
        }
        self.hub.release(machine, drain).await;
        self.protect(machine, false).await?;
        self.terminate(machine).await?;
        self.replicas.forget(&replica.id);
        tracing::info!(pool = %self.pool, %machine, "instance terminated");
        Ok(())
    }

    fn list(&self) -> Result<Vec<ReplicaRecord>, DriverError> {
        Ok(self.replicas.list())
    }

    fn alive(&self, replica: &ReplicaRecord) -> bool {
        self.replicas.alive(replica)
    }

    async fn adopt_joined(
        &self,
        spec: &ReplicaSpec,
        machine: String,
        address: String,
    ) -> Result<ReplicaRecord, DriverError> {
        self.take(spec, machine, address).await
    }

    async fn admit(&self, machine: &str) -> Result<(), DriverError> {
        let mut g = self.fresh_state().await?;
        if !g
            .instances
            .iter()
            .any(|i| i.id == machine && i.lifecycle == "InService")
        {
            // A read from before the machine came into service says nothing: read again.
            g = self.state().await?;
        }
        match g.instances.iter().find(|i| i.id == machine) {
            Some(i) if i.lifecycle == "InService" => Ok(()),
            Some(i) => Err(DriverError(format!(
                "{machine} is {} in Auto Scaling group {}, not InService",
                i.lifecycle, self.group.name
            ))),
            None => Err(DriverError(format!(
                "{machine} is not an instance of Auto Scaling group {}",
                self.group.name
            ))),
        }
    }
}
