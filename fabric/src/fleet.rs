//! The fleet: the replicas the router may send requests to, shared by the data plane (which
//! takes and returns request slots) and the control plane (which adds, drains and removes
//! replicas).
//!
//! A replica is *full* at the policy's per-replica target (`spill`, set by the control plane each
//! round) and *saturated* at its hard limit (`concurrency`). A request takes a slot on a ready
//! base replica with the fewest requests in flight; only when every base replica is full does it
//! go to a burst replica, pools in spill order, and only when every replica is full does any take
//! more, up to its hard limit ([`preference`]). Spilling and scaling thus share one notion of
//! "full". When no replica has a free slot the request is *held* in a bounded FIFO until one
//! frees up or a new replica becomes ready, and the control plane is woken (scale from zero,
//! saturation).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tokio::sync::{Notify, oneshot};

use crate::autoscaler::{BatchTotals, Phase};

/// One replica as the router tracks it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its id.
    pub id: String,
    /// Its pool's index in placement order; `None` once the pool is no longer configured.
    pub pool: Option<usize>,
    /// Its pool's name.
    pub pool_name: String,
    /// Whether its pool is a burst pool.
    pub burst: bool,
    /// `host:port`, once known.
    pub address: Option<String>,
    /// Its phase.
    pub phase: Phase,
    /// When it entered that phase.
    pub phase_since: Instant,
    /// Requests in flight on it.
    pub outstanding: usize,
    /// When it last had no request in flight.
    pub idle_since: Instant,
    /// Requests it has answered.
    pub served: u64,
    /// Started with an older runtime configuration.
    pub outdated: bool,
    /// Near the end of its capacity (its driver says when): to be replaced.
    pub expiring: bool,
    /// Requests waiting in its own queue, as last scraped.
    pub queue_depth: f64,
    /// Its devices' busy fraction over the last scrape interval.
    pub busy: f64,
    /// The batches it computed over the last scrape interval.
    pub batches: BatchTotals,
    /// What it computes on, as its metrics label it (e.g. `onnxruntime cpu (2 threads,
    /// CPUExecutionProvider)`), once scraped.
    pub backend: Option<String>,
    /// Its id, address and pool's name as each slot on it carries them.
    names: SlotNames,
}

/// A replica's id, address and pool's name, shared by its slots: a slot taken per request
/// copies no string.
#[derive(Debug, Clone)]
struct SlotNames {
    replica: Arc<str>,
    address: Arc<str>,
    pool: Arc<str>,
}

impl Member {
    /// A replica being started.
    pub fn starting(id: String, pool: usize, pool_name: String, burst: bool) -> Member {
        let now = Instant::now();
        Member {
            names: SlotNames {
                replica: Arc::from(id.as_str()),
                address: Arc::from(""),
                pool: Arc::from(pool_name.as_str()),
            },
            id,
            pool: Some(pool),
            pool_name,
            burst,
            address: None,
            phase: Phase::Starting,
            phase_since: now,
            outstanding: 0,
            idle_since: now,
            served: 0,
            outdated: false,
            expiring: false,
            queue_depth: 0.0,
            busy: 0.0,
            batches: BatchTotals::default(),
            backend: None,
        }
    }
}

/// Why a request gets no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The hold queue is full.
    HoldFull,
    /// Every replica is saturated, more are not affordable and `on_exhausted = "reject"`.
    BudgetExhausted,
    /// The router is shutting down.
    ShuttingDown,
}

/// Whether a request no replica has room for is refused instead of held: when replicas serve
/// but the budget binds with `on_exhausted = "reject"`, or when `held` requests already fill the
/// hold queue. `simulate` refuses by this too.
pub fn refusal(
    serving: bool,
    reject_for_budget: bool,
    held: usize,
    hold_capacity: usize,
) -> Option<Refusal> {
    if serving && reject_for_budget {
        Some(Refusal::BudgetExhausted)
    } else if held >= hold_capacity {
        Some(Refusal::HoldFull)
    } else {
        None
    }
}

/// What [`Fleet::acquire`] gives.
pub enum Acquired {
    /// A slot now.
    Now(Slot),
    /// Held: the slot arrives when one frees up.
    Held(oneshot::Receiver<Slot>),
    /// Refused.
    Refused(Refusal),
}

/// A request's place on a replica; returned when dropped.
pub struct Slot {
    fleet: Arc<Fleet>,
    armed: bool,
    /// The replica.
    pub replica: Arc<str>,
    /// Its address.
    pub address: Arc<str>,
    /// Its pool.
    pub pool: Arc<str>,
    /// Whether its pool is a burst pool.
    pub burst: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.fleet.release(&self.replica);
        }
    }
}

struct Waiter {
    tx: oneshot::Sender<Slot>,
    exclude: Option<String>,
}

/// The number of held requests averaged over time, so a signal read once a second sees how many
/// were waiting over that second, not at one instant.
struct Meter {
    since: Instant,
    last: Instant,
    count: usize,
    integral: f64,
}

impl Meter {
    fn new() -> Self {
        let now = Instant::now();
        Meter {
            since: now,
            last: now,
            count: 0,
            integral: 0.0,
        }
    }

    fn set(&mut self, count: usize) {
        let now = Instant::now();
        self.integral += self.count as f64 * now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.count = count;
    }

    /// The mean since the last call.
    fn take_mean(&mut self) -> f64 {
        self.set(self.count);
        let span = self.last.duration_since(self.since).as_secs_f64();
        let mean = if span > 0.0 {
            self.integral / span
        } else {
            self.count as f64
        };
        self.since = self.last;
        self.integral = 0.0;
        mean
    }
}

struct Inner {
    members: Vec<Member>,
    waiters: VecDeque<Waiter>,
    held: Meter,
    /// Requests in flight on replicas, over time.
    in_flight: Meter,
    /// Requests refused since the control plane last asked.
    refused: u64,
    /// Requests that arrived since then (retries not counted again).
    arrivals: u64,
    concurrency: usize,
    spill: usize,
    hold_capacity: usize,
    reject_when_exhausted: bool,
    budget_bound: bool,
    accepting: bool,
    /// When a request was first held with nothing running (for the scale-from-zero time).
    zero_since: Option<Instant>,
}

/// Which replica with a free slot a request goes to: the lowest key wins. Replicas below
/// `spill` (the per-replica target) come first: base replicas, the least busy of them, so the
/// baseline shares the load evenly; then burst pools in spill order, and within a burst pool the
/// *busiest* replica below its target, so burst load is packed onto as few replicas as it needs.
/// Once every replica is at its target, the least busy takes more, up to its hard limit.
/// `simulate` routes by this too.
pub fn preference(
    burst: bool,
    pool: usize,
    outstanding: usize,
    spill: usize,
) -> (bool, bool, usize, isize) {
    if outstanding >= spill {
        (true, false, 0, outstanding as isize)
    } else if burst {
        (false, true, pool, -(outstanding as isize))
    } else {
        (false, false, 0, outstanding as isize)
    }
}

/// Brings the in-flight meter up to date after a replica's count changed.
fn meter_in_flight(inner: &mut Inner) {
    let total = inner.members.iter().map(|m| m.outstanding).sum();
    inner.in_flight.set(total);
}

/// The shared replica table.
pub struct Fleet {
    me: Weak<Fleet>,
    inner: Mutex<Inner>,
    /// Woken when a request is held with no replica running or starting, so the control plane
    /// scales from zero at once.
    pub wake: Notify,
}

impl Fleet {
    /// An empty fleet.
    pub fn new(
        concurrency: usize,
        hold_capacity: usize,
        reject_when_exhausted: bool,
    ) -> Arc<Fleet> {
        Arc::new_cyclic(|me| Fleet {
            me: me.clone(),
            inner: Mutex::new(Inner {
                members: Vec::new(),
                waiters: VecDeque::new(),
                held: Meter::new(),
                in_flight: Meter::new(),
                refused: 0,
                arrivals: 0,
                concurrency,
                spill: concurrency,
                hold_capacity,
                reject_when_exhausted,
                budget_bound: false,
                accepting: true,
                zero_since: None,
            }),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies new settings (after a reload).
    pub fn configure(&self, concurrency: usize, hold_capacity: usize, reject_when_exhausted: bool) {
        let mut inner = self.lock();
        inner.concurrency = concurrency;
        inner.hold_capacity = hold_capacity;
        inner.reject_when_exhausted = reject_when_exhausted;
        self.dispatch(&mut inner);
    }

    /// A slot for a request, avoiding `exclude` (a replica that just failed it).
    pub fn acquire(&self, exclude: Option<&str>) -> Acquired {
        let mut inner = self.lock();
        if !inner.accepting {
            return Acquired::Refused(Refusal::ShuttingDown);
        }
        if exclude.is_none() {
            inner.arrivals += 1;
        }
        if let Some(slot) = self.take(&mut inner, exclude) {
            return Acquired::Now(slot);
        }
        let serving = inner.members.iter().any(|m| m.phase == Phase::Ready);
        inner.waiters.retain(|w| !w.tx.is_closed());
        if let Some(why) = refusal(
            serving,
            inner.budget_bound && inner.reject_when_exhausted,
            inner.waiters.len(),
            inner.hold_capacity,
        ) {
            inner.refused += 1;
            return Acquired::Refused(why);
        }
        let (tx, rx) = oneshot::channel();
        inner.waiters.push_back(Waiter {
            tx,
            exclude: exclude.map(str::to_string),
        });
        // With nothing running or starting, the control loop must act now (scale from zero);
        // otherwise its next tick sees the held requests in the signals.
        let nothing = inner.members.iter().all(|m| m.phase == Phase::Draining);
        if nothing {
            inner.zero_since.get_or_insert_with(Instant::now);
        }
        let n = inner.waiters.len();
        inner.held.set(n);
        drop(inner);
        if nothing {
            self.wake.notify_one();
        }
        Acquired::Held(rx)
    }

    /// The replica a request should go to now, with its slot taken: a ready base replica with
    /// the fewest requests in flight, else a burst replica, pools in spill order. `exclude` (the
    /// replica a retried request failed on) is avoided while another has room; it is out of
    /// rotation anyway until its health check passes.
    fn take(&self, inner: &mut Inner, exclude: Option<&str>) -> Option<Slot> {
        self.take_avoiding(inner, exclude)
            .or_else(|| exclude.and_then(|_| self.take_avoiding(inner, None)))
    }

    fn take_avoiding(&self, inner: &mut Inner, exclude: Option<&str>) -> Option<Slot> {
        // `self` is always owned by the Arc that `me` points to.
        let fleet = self.me.upgrade()?;
        let limit = inner.concurrency;
        let spill = inner.spill;
        let chosen = inner
            .members
            .iter_mut()
            .filter(|m| {
                m.phase == Phase::Ready
                    && m.pool.is_some()
                    && m.address.is_some()
                    && m.outstanding < limit
                    && Some(m.id.as_str()) != exclude
            })
            .min_by_key(|m| {
                preference(m.burst, m.pool.unwrap_or(usize::MAX), m.outstanding, spill)
            })?;
        chosen.outstanding += 1;
        let slot = Slot {
            fleet,
            armed: true,
            replica: chosen.names.replica.clone(),
            address: chosen.names.address.clone(),
            pool: chosen.names.pool.clone(),
            burst: chosen.burst,
        };
        meter_in_flight(inner);
        Some(slot)
    }

    fn release(&self, replica: &str) {
        let mut inner = self.lock();
        if let Some(m) = inner.members.iter_mut().find(|m| m.id == replica) {
            m.outstanding = m.outstanding.saturating_sub(1);
            m.served += 1;
            if m.outstanding == 0 {
                m.idle_since = Instant::now();
            }
        }
        meter_in_flight(&mut inner);
        self.dispatch(&mut inner);
    }

    /// Hands free slots to held requests, oldest first.
    fn dispatch(&self, inner: &mut Inner) {
        while let Some(front) = inner.waiters.front() {
            if front.tx.is_closed() {
                inner.waiters.pop_front();
                continue;
            }
            let exclude = front.exclude.clone();
            // The oldest waiter cannot be served: later ones (with other exclusions) might be,
            // but first come stays first served.
            let Some(slot) = self.take(inner, exclude.as_deref()) else {
                break;
            };
            let Some(waiter) = inner.waiters.pop_front() else {
                break;
            };
            if let Err(mut returned) = waiter.tx.send(slot) {
                // It timed out between the check and the send: give the slot back by hand (its
                // Drop would take the lock held here).
                returned.armed = false;
                if let Some(m) = inner
                    .members
                    .iter_mut()
                    .find(|m| *m.id == *returned.replica)
                {
                    m.outstanding = m.outstanding.saturating_sub(1);
                }
                meter_in_flight(inner);
            }
        }
        let n = inner.waiters.len();
        inner.held.set(n);
    }

    /// Adds a replica (starting, or adopted).
    pub fn add(&self, member: Member) {
        let mut inner = self.lock();
        inner.members.retain(|m| m.id != member.id);
        inner.members.push(member);
        self.dispatch(&mut inner);
    }

    /// Marks a replica ready at `address`; held requests go to it at once.
    pub fn ready(&self, id: &str, address: &str) {
        let mut inner = self.lock();
        if let Some(m) = inner.members.iter_mut().find(|m| m.id == id) {
            m.address = Some(address.to_string());
            m.names.address = Arc::from(address);
            // A replica of a pool dropped meanwhile never enters rotation.
            if m.phase != Phase::Draining && m.pool.is_some() {
                m.phase = Phase::Ready;
                m.phase_since = Instant::now();
                m.idle_since = Instant::now();
            }
        }
        self.dispatch(&mut inner);
    }

    /// Sets a replica's phase (not back from draining).
    pub fn set_phase(&self, id: &str, phase: Phase) {
        let mut inner = self.lock();
        if let Some(m) = inner.members.iter_mut().find(|m| m.id == id)
            && m.phase != phase
            && m.phase != Phase::Draining
        {
            m.phase = phase;
            m.phase_since = Instant::now();
        }
        if phase == Phase::Ready {
            self.dispatch(&mut inner);
        }
    }

    /// Takes a replica out of rotation after it failed a request; returns whether it was in
    /// rotation.
    pub fn fail(&self, id: &str) -> bool {
        let mut inner = self.lock();
        match inner.members.iter_mut().find(|m| m.id == id) {
            Some(m) if m.phase == Phase::Ready => {
                m.phase = Phase::Unhealthy;
                m.phase_since = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Forgets a replica (stopped or gone); its slots in flight return to nothing.
    pub fn remove(&self, id: &str) {
        let mut inner = self.lock();
        inner.members.retain(|m| m.id != id);
        meter_in_flight(&mut inner);
    }

    /// The distinct backends of the ready replicas, as they report them (sorted).
    pub fn ready_backends(&self) -> Vec<String> {
        let backends: std::collections::BTreeSet<String> = self
            .lock()
            .members
            .iter()
            .filter(|m| m.phase == Phase::Ready)
            .filter_map(|m| m.backend.clone())
            .collect();
        backends.into_iter().collect()
    }

    /// Updates what a scrape of a replica found.
    pub fn observe(
        &self,
        id: &str,
        queue_depth: f64,
        busy: f64,
        batches: BatchTotals,
        backend: Option<String>,
    ) {
        if let Some(m) = self.lock().members.iter_mut().find(|m| m.id == id) {
            m.queue_depth = queue_depth;
            m.busy = busy;
            m.batches = batches;
            if backend.is_some() {
                m.backend = backend;
            }
        }
    }

    /// Marks replicas started with another configuration digest as outdated.
    pub fn mark_outdated(&self, ids: &[String]) {
        for m in self.lock().members.iter_mut() {
            if ids.contains(&m.id) {
                m.outdated = true;
            }
        }
    }

    /// Marks replicas near the end of their capacity as expiring; the ids newly marked.
    pub fn mark_expiring(&self, ids: &[String]) -> Vec<String> {
        let mut marked = Vec::new();
        for m in self.lock().members.iter_mut() {
            if !m.expiring && ids.contains(&m.id) {
                m.expiring = true;
                marked.push(m.id.clone());
            }
        }
        marked
    }

    /// Re-indexes replicas after the pools changed: `index_of(pool name)` gives the new index and
    /// whether it is a burst pool, or `None` when the pool is gone — its replicas leave rotation
    /// at once (the control loop stops them), so no request goes to a pool no longer allowed.
    pub fn reindex(&self, index_of: impl Fn(&str) -> Option<(usize, bool)>) {
        for m in self.lock().members.iter_mut() {
            match index_of(&m.pool_name) {
                Some((i, burst)) => {
                    m.pool = Some(i);
                    m.burst = burst;
                }
                None => {
                    m.pool = None;
                    m.phase = Phase::Draining;
                    m.phase_since = Instant::now();
                }
            }
        }
    }

    /// Whether the budget currently binds (set by the control plane).
    pub fn set_budget_bound(&self, bound: bool) {
        self.lock().budget_bound = bound;
    }

    /// Stops taking requests (shutdown); held ones are refused.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.accepting = false;
        inner.waiters.clear();
    }

    /// Copies of every replica.
    pub fn members(&self) -> Vec<Member> {
        self.lock().members.clone()
    }

    /// Requests held now.
    pub fn held(&self) -> usize {
        let mut inner = self.lock();
        inner.waiters.retain(|w| !w.tx.is_closed());
        let n = inner.waiters.len();
        inner.held.set(n);
        n
    }

    /// Requests held on average since the last call.
    pub fn held_mean(&self) -> f64 {
        let mut inner = self.lock();
        inner.waiters.retain(|w| !w.tx.is_closed());
        let n = inner.waiters.len();
        inner.held.set(n);
        inner.held.take_mean()
    }

    /// When the current scale from zero began (a request held with nothing running), once.
    pub fn take_zero_since(&self) -> Option<Instant> {
        self.lock().zero_since.take()
    }

    /// Whether any replica serves.
    pub fn any_ready(&self) -> bool {
        self.lock().members.iter().any(|m| m.phase == Phase::Ready)
    }

    /// Sets the per-replica target the router spills beyond (the control plane's, each round).
    pub fn set_spill(&self, spill: usize) {
        let mut inner = self.lock();
        inner.spill = spill.max(1);
        self.dispatch(&mut inner);
    }

    /// Requests in flight on replicas averaged since the last call, and the requests that
    /// arrived and were refused since then.
    pub fn take_round(&self) -> (f64, u64, u64) {
        let mut inner = self.lock();
        let mean = inner.in_flight.take_mean();
        let arrivals = std::mem::take(&mut inner.arrivals);
        (mean, arrivals, std::mem::take(&mut inner.refused))
    }

    /// Requests in flight on replicas.
    pub fn in_flight(&self) -> usize {
        self.lock().members.iter().map(|m| m.outstanding).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(fleet: &Fleet, id: &str, pool: usize, burst: bool) {
        fleet.add(Member::starting(
            id.into(),
            pool,
            format!("pool{pool}"),
            burst,
        ));
        fleet.ready(id, &format!("127.0.0.1:{}", 9000 + pool));
    }

    fn now(a: Acquired) -> Slot {
        match a {
            Acquired::Now(s) => s,
            _ => panic!("no slot"),
        }
    }

    #[test]
    fn base_replicas_fill_before_burst_ones_in_pool_order() {
        let fleet = Fleet::new(2, 10, false);
        ready(&fleet, "burst-b", 2, true);
        ready(&fleet, "burst-a", 1, true);
        ready(&fleet, "base", 0, false);
        let taken: Vec<String> = (0..6)
            .map(|_| now(fleet.acquire(None)))
            .map(|s| {
                let id = s.replica.to_string();
                std::mem::forget(s);
                id
            })
            .collect();
        assert_eq!(
            taken,
            ["base", "base", "burst-a", "burst-a", "burst-b", "burst-b"]
        );
    }

    #[test]
    fn burst_load_is_packed_onto_the_busiest_burst_replica_with_room() {
        let fleet = Fleet::new(3, 10, false);
        ready(&fleet, "base", 0, false);
        ready(&fleet, "x", 1, true);
        ready(&fleet, "y", 1, true);
        let slots: Vec<Slot> = (0..6).map(|_| now(fleet.acquire(None))).collect();
        let on = |id: &str| slots.iter().filter(|s| *s.replica == *id).count();
        assert_eq!((on("base"), on("x"), on("y")), (3, 3, 0));
        // One of x's requests ends: x takes the next, y stays idle (and can drain).
        let mut slots = slots;
        let i = slots.iter().position(|s| &*s.replica == "x").unwrap();
        slots.remove(i);
        let next = now(fleet.acquire(None));
        assert_eq!(&*next.replica, "x");
        assert_eq!(&*now(fleet.acquire(None)).replica, "y");
    }

    #[tokio::test]
    async fn a_held_request_gets_the_first_slot_that_frees_and_the_count_stays_right() {
        let fleet = Fleet::new(1, 10, false);
        ready(&fleet, "a", 0, false);
        let first = now(fleet.acquire(None));
        let Acquired::Held(rx) = fleet.acquire(None) else {
            panic!("should be held")
        };
        assert_eq!(fleet.held(), 1);
        drop(first);
        let second = rx.await.unwrap();
        assert_eq!(&*second.replica, "a");
        assert_eq!(fleet.in_flight(), 1);
        drop(second);
        assert_eq!(fleet.in_flight(), 0);
        assert_eq!(fleet.members()[0].served, 2);
    }

    #[test]
    fn a_full_hold_queue_refuses_and_a_binding_budget_rejects_when_asked() {
        let fleet = Fleet::new(1, 1, true);
        ready(&fleet, "a", 0, false);
        let _busy = now(fleet.acquire(None));
        let _held = fleet.acquire(None);
        assert!(matches!(
            fleet.acquire(None),
            Acquired::Refused(Refusal::HoldFull)
        ));
        fleet.set_budget_bound(true);
        assert!(matches!(
            fleet.acquire(None),
            Acquired::Refused(Refusal::BudgetExhausted)
        ));
    }

    #[test]
    fn a_retry_avoids_the_failed_replica_unless_it_is_the_only_one_with_room() {
        let fleet = Fleet::new(4, 10, false);
        ready(&fleet, "a", 0, false);
        ready(&fleet, "b", 1, false);
        let s = now(fleet.acquire(Some("a")));
        assert_eq!(&*s.replica, "b");
        fleet.remove("b");
        assert_eq!(&*now(fleet.acquire(Some("a"))).replica, "a");
    }

    #[test]
    fn replicas_of_a_dropped_pool_leave_rotation_at_once() {
        let fleet = Fleet::new(4, 10, false);
        ready(&fleet, "a", 0, false);
        ready(&fleet, "gone", 1, true);
        fleet.reindex(|name| (name == "pool0").then_some((0, false)));
        let _a = now(fleet.acquire(None));
        for _ in 0..3 {
            assert_eq!(&*now(fleet.acquire(None)).replica, "a");
        }
        assert_eq!(fleet.members()[1].phase, Phase::Draining);
    }
}
