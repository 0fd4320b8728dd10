//! One ledger of slots per pool, shared by every router on a host (every endpoint a daemon hosts,
//! or every endpoint the provider deployed here), so that a pool never holds more replicas than
//! its slots however many endpoints use it: a slot is a device, and two replicas must never share
//! one.
//!
//! The rule: each endpoint's reservation on a pool (its share of `replicas.min`, which plan time
//! checks fits) is kept for it; slots above every reservation go first come, first served; a
//! slot is given back when its replica stops, and the slot of a process that no longer runs is
//! taken back by whoever looks next. Every change happens under an exclusive lock on the pool's
//! lock file, so routers in separate processes agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::process::{ProcessRecord, write_atomically};

/// One slot held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// The slot's index on the pool (it picks the device).
    pub slot: usize,
    /// The endpoint holding it.
    pub endpoint: String,
    /// The replica holding it.
    pub replica: String,
    /// The router that claimed it: the holder while the replica starts.
    pub router: ProcessRecord,
    /// The replica's process, once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRecord>,
}

impl Holder {
    fn alive(&self) -> bool {
        match &self.process {
            Some(p) => p.alive(),
            None => self.router.alive(),
        }
    }
}

/// A pool's page of the ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// How many replicas the pool holds at most.
    pub slots: usize,
    /// Slots kept for each endpoint: its share of `replicas.min`.
    pub reserved: BTreeMap<String, usize>,
    /// Who holds which slot.
    pub holders: Vec<Holder>,
}

impl Book {
    fn held_by(&self, endpoint: &str) -> usize {
        self.holders
            .iter()
            .filter(|h| h.endpoint == endpoint)
            .count()
    }

    /// Slots `endpoint` may take now: free ones, less those other endpoints' reservations still
    /// need.
    fn open_to(&self, endpoint: &str) -> usize {
        let free = self.slots.saturating_sub(self.holders.len());
        let others_unmet: usize = self
            .reserved
            .iter()
            .filter(|(e, _)| e.as_str() != endpoint)
            .map(|(e, &r)| r.saturating_sub(self.held_by(e)))
            .sum();
        free.saturating_sub(others_unmet)
    }

    /// Replicas `endpoint` may run on the pool now: what it holds and what it may take.
    pub fn capacity_for(&self, endpoint: &str) -> usize {
        self.held_by(endpoint) + self.open_to(endpoint)
    }

    fn prune(&mut self) -> bool {
        let before = self.holders.len();
        self.holders.retain(Holder::alive);
        self.holders.len() != before
    }
}

/// Why the ledger could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A file of the ledger cannot be read, written or locked.
    #[error("pool ledger {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The ledger file is not a ledger.
    #[error("pool ledger {}: {source}; remove it to start a new one", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// Every slot the endpoint may take is held.
    #[error(
        "pool {pool} has no free slot for endpoint {endpoint}: {held} of {slots} held ({holders})"
    )]
    Full {
        /// The pool.
        pool: String,
        /// The endpoint asking.
        endpoint: String,
        /// Slots held.
        held: usize,
        /// Slots in all.
        slots: usize,
        /// Who holds them.
        holders: String,
    },
}

/// The ledgers of a host's pools, one JSON file per pool in one directory.
#[derive(Debug, Clone)]
pub struct Ledger {
    dir: PathBuf,
}

impl Ledger {
    /// The ledger kept in `dir`.
    pub fn new(dir: &Path) -> Ledger {
        Ledger {
            dir: dir.to_path_buf(),
        }
    }

    fn book_path(&self, pool: &str) -> PathBuf {
        self.dir.join(format!("{pool}.json"))
    }

    /// Runs `change` on the pool's book under the pool's lock, pruning dead holders first, and
    /// writes the book back when anything changed.
    fn with_book<T>(
        &self,
        pool: &str,
        change: impl FnOnce(&mut Book) -> T,
    ) -> Result<T, LedgerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LedgerError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let lock_path = self.dir.join(format!("{pool}.lock"));
        let file = crate::store::open_lock_file(&lock_path).map_err(io(&lock_path))?;
        let _lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io(&lock_path)(std::io::Error::from(e)))?;
        let path = self.book_path(pool);
        let mut book: Book = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| LedgerError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Book::default(),
            Err(e) => return Err(io(&path)(e)),
        };
        let before = book.clone();
        book.prune();
        let out = change(&mut book);
        if book != before {
            let text = serde_json::to_string_pretty(&book).unwrap_or_default();
            write_atomically(&path, &text).map_err(io(&path))?;
        }
        Ok(out)
    }

    /// Records the pool's size and the slots kept for `endpoint` on it.
    pub fn reserve(
        &self,
        pool: &str,
        slots: usize,
        endpoint: &str,
        reserved: usize,
    ) -> Result<(), LedgerError> {
        self.with_book(pool, |b| {
            b.slots = slots;
            if reserved == 0 {
                b.reserved.remove(endpoint);
            } else {
                b.reserved.insert(endpoint.to_string(), reserved);
            }
        })
    }

    /// Replicas `endpoint` may run on `pool` now.
    pub fn capacity_for(&self, pool: &str, endpoint: &str) -> Result<usize, LedgerError> {
        self.with_book(pool, |b| b.capacity_for(endpoint))
    }

    /// Takes a slot of `pool` for `replica` of `endpoint`, claimed by `router`; the slot's index.
    pub fn claim(
        &self,
        pool: &str,
        endpoint: &str,
        replica: &str,
        router: ProcessRecord,
    ) -> Result<usize, LedgerError> {
        self.with_book(pool, |b| {
            if b.open_to(endpoint) == 0 {
                return Err(LedgerError::Full {
                    pool: pool.to_string(),
                    endpoint: endpoint.to_string(),
                    held: b.holders.len(),
                    slots: b.slots,
                    holders: describe(&b.holders),
                });
            }
            let slot = (0..)
                .find(|s| b.holders.iter().all(|h| h.slot != *s))
                .unwrap_or_default();
            b.holders.push(Holder {
                slot,
                endpoint: endpoint.to_string(),
                replica: replica.to_string(),
                router,
                process: None,
            });
            Ok(slot)
        })?
    }

    /// Records the process now holding `replica`'s slot.
    pub fn bind(
        &self,
        pool: &str,
        endpoint: &str,
        replica: &str,
        process: ProcessRecord,
    ) -> Result<(), LedgerError> {
        self.with_book(pool, |b| {
            if let Some(h) = b
                .holders
                .iter_mut()
                .find(|h| h.endpoint == endpoint && h.replica == replica)
            {
                h.process = Some(process);
            }
        })
    }

    /// Gives `replica`'s slot back.
    pub fn release(&self, pool: &str, endpoint: &str, replica: &str) -> Result<(), LedgerError> {
        self.with_book(pool, |b| {
            b.holders
                .retain(|h| !(h.endpoint == endpoint && h.replica == replica));
        })
    }

    /// Makes the book agree with the replicas `endpoint` runs on `pool` (adopted after a restart,
    /// or recorded before there was a ledger): each is entered in its recorded slot, and the
    /// endpoint's entries for replicas it no longer runs are given back, except slots still being
    /// started.
    pub fn sync(
        &self,
        pool: &str,
        endpoint: &str,
        running: &[(String, usize, ProcessRecord)],
        router: &ProcessRecord,
    ) -> Result<(), LedgerError> {
        self.with_book(pool, |b| {
            b.holders.retain(|h| {
                h.endpoint != endpoint
                    || h.process.is_none()
                    || running.iter().any(|(id, _, _)| *id == h.replica)
            });
            for (id, slot, process) in running {
                if !b
                    .holders
                    .iter()
                    .any(|h| h.endpoint == endpoint && h.replica == *id)
                {
                    b.holders.push(Holder {
                        slot: *slot,
                        endpoint: endpoint.to_string(),
                        replica: id.clone(),
                        router: router.clone(),
                        process: Some(process.clone()),
                    });
                }
            }
        })
    }

    /// Drops `endpoint`'s reservations on every pool but `pools` (it no longer uses the others).
    pub fn keep_reservations(&self, endpoint: &str, pools: &[&str]) -> Result<(), LedgerError> {
        for (pool, book) in self.books()? {
            if !pools.contains(&pool.as_str()) && book.reserved.contains_key(endpoint) {
                self.with_book(&pool, |b| {
                    b.reserved.remove(endpoint);
                })?;
            }
        }
        Ok(())
    }

    /// Removes everything of `endpoint` from every pool (it was deleted).
    pub fn forget(&self, endpoint: &str) -> Result<(), LedgerError> {
        for (pool, _) in self.books()? {
            self.with_book(&pool, |b| {
                b.reserved.remove(endpoint);
                b.holders.retain(|h| h.endpoint != endpoint);
            })?;
        }
        Ok(())
    }

    /// Every pool's book, by pool name, dead holders pruned.
    pub fn books(&self) -> Result<Vec<(String, Book)>, LedgerError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(LedgerError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut pools: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect();
        pools.sort();
        pools
            .into_iter()
            .map(|p| Ok((p.clone(), self.with_book(&p, |b| b.clone())?)))
            .collect()
    }
}

/// Slots kept for the endpoint on each pool: `replicas.min` filled into the base pools in order
/// (where the autoscaler keeps the minimum), none on burst pools.
pub fn reservations(pools: &[crate::config::Pool], min: usize) -> Vec<usize> {
    let mut left = min;
    pools
        .iter()
        .map(|p| {
            let kept = if p.burst { 0 } else { left.min(p.slots) };
            left -= kept;
            kept
        })
        .collect()
}

fn describe(holders: &[Holder]) -> String {
    holders
        .iter()
        .map(|h| format!("slot {} by {}/{}", h.slot, h.endpoint, h.replica))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> ProcessRecord {
        ProcessRecord::current()
    }

    fn gone() -> ProcessRecord {
        ProcessRecord {
            pid: i32::MAX,
            start_ticks: 1,
        }
    }

    #[test]
    fn two_endpoints_never_hold_more_than_the_pools_slots() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path());
        l.reserve("lab", 2, "a", 0).unwrap();
        l.reserve("lab", 2, "b", 0).unwrap();
        assert_eq!(l.claim("lab", "a", "a-1", me()).unwrap(), 0);
        assert_eq!(l.claim("lab", "b", "b-1", me()).unwrap(), 1);
        let full = l.claim("lab", "a", "a-2", me()).unwrap_err().to_string();
        assert_eq!(
            full,
            "pool lab has no free slot for endpoint a: 2 of 2 held (slot 0 by a/a-1, slot 1 by b/b-1)"
        );
        l.release("lab", "a", "a-1").unwrap();
        assert_eq!(
            l.claim("lab", "b", "b-2", me()).unwrap(),
            0,
            "the lowest free slot"
        );
    }

    #[test]
    fn a_reservation_is_kept_for_its_endpoint_and_the_rest_is_first_come() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path());
        l.reserve("lab", 3, "a", 1).unwrap();
        l.reserve("lab", 3, "b", 1).unwrap();
        assert_eq!(l.capacity_for("lab", "a").unwrap(), 2);
        l.claim("lab", "a", "a-1", me()).unwrap();
        l.claim("lab", "a", "a-2", me()).unwrap();
        // b's one reserved slot is not a's to take.
        assert!(l.claim("lab", "a", "a-3", me()).is_err());
        assert_eq!(l.capacity_for("lab", "a").unwrap(), 2);
        assert_eq!(l.capacity_for("lab", "b").unwrap(), 1);
        l.claim("lab", "b", "b-1", me()).unwrap();
        assert!(l.claim("lab", "b", "b-2", me()).is_err());
    }

    #[test]
    fn slots_of_processes_that_are_gone_are_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path());
        l.reserve("lab", 1, "a", 0).unwrap();
        l.claim("lab", "a", "a-1", gone()).unwrap();
        assert_eq!(l.claim("lab", "b", "b-1", me()).unwrap(), 0);
        // A replica that runs keeps its slot after the router that claimed it is gone.
        l.bind("lab", "b", "b-1", me()).unwrap();
        let book = &l.books().unwrap()[0].1;
        assert_eq!(book.holders.len(), 1);
        assert_eq!(book.holders[0].process, Some(me()));
    }

    #[test]
    fn sync_enters_adopted_replicas_and_returns_stopped_ones() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path());
        l.reserve("lab", 4, "a", 0).unwrap();
        l.claim("lab", "a", "starting", me()).unwrap();
        l.claim("lab", "a", "stopped", me()).unwrap();
        l.bind("lab", "a", "stopped", me()).unwrap();
        l.sync("lab", "a", &[("adopted".into(), 3, me())], &me())
            .unwrap();
        let book = &l.books().unwrap()[0].1;
        let held: Vec<(&str, usize)> = book
            .holders
            .iter()
            .map(|h| (h.replica.as_str(), h.slot))
            .collect();
        assert_eq!(held, [("starting", 0), ("adopted", 3)]);
        l.forget("a").unwrap();
        assert!(l.books().unwrap()[0].1.holders.is_empty());
    }

    #[test]
    fn the_minimum_is_reserved_on_the_base_pools_in_order() {
        let pool = |name: &str, burst: bool, slots: usize| crate::config::Pool {
            name: name.into(),
            region: "r".into(),
            jurisdiction: "EU".into(),
            capacity_type: crate::capacity::CapacityType::OnPrem,
            price_per_gpu_hour: None,
            slots,
            burst,
            driver: None,
            join_token_sha256: Vec::new(),
        };
        let pools = [pool("a", false, 2), pool("b", false, 4), pool("c", true, 8)];
        assert_eq!(reservations(&pools, 3), [2, 1, 0]);
        assert_eq!(reservations(&pools, 0), [0, 0, 0]);
        assert_eq!(
            reservations(&pools, 9),
            [2, 4, 0],
            "never more than a pool's slots"
        );
    }

    #[test]
    fn a_corrupt_ledger_is_named_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lab.json"), "{").unwrap();
        let err = Ledger::new(dir.path())
            .claim("lab", "a", "a-1", me())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lab.json") && err.contains("remove it"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("lab.json")).unwrap(),
            "{"
        );
    }
}
