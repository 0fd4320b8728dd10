//! Monthly request quotas, counted across router restarts. The file (`quota.json` in the
//! endpoint's state directory) never holds less than what was admitted: before a key's count
//! passes what the file says, the file is advanced ahead of it, replaced atomically. A crash or a
//! kill of the router therefore gives nothing back; it can only overcount by less than the last
//! advance, and a clean stop writes the exact counts. An advance is a block (1 % of the quota, at
//! most 1,000 requests) or, for a busy key, what it used in the last second, up to 1 % of the
//! quota.
//!
//! Requests do not wait for the disk: when half a block is left, a writer thread advances the
//! file (a replacement takes about 150 µs here, and a request that waited for it held up every
//! other request of its key). Only a count that catches up with the file (the writer behind, or
//! a quota under 200 whose block is one request) waits for its advance.
//! The advance is not synced to the disk: a host that loses power may lose the last advance.
//! Months are calendar months in UTC.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct QuotaFile {
    /// `YYYY-MM` the counts are for.
    month: String,
    /// Requests counted (at least) per key name.
    used: BTreeMap<String, u64>,
}

/// A key's quota is used up.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaExceeded {
    /// The quota.
    pub quota: u64,
    /// When it resets (the first instant of next month, UTC), RFC 3339.
    pub resets_at: String,
    /// How long until then.
    pub resets_in: Duration,
}

/// Every key's count for this month. Each key's count has a lock of its own, so a request
/// takes no lock that another key's requests take and looks nothing up by name.
pub struct QuotaBook {
    file: Arc<FileBook>,
    /// Each key's count by name, kept across reloads (a key's count goes on while its name
    /// does).
    counts: Mutex<BTreeMap<String, Arc<QuotaCount>>>,
    /// The writer that advances the file ahead of the counts; stopped by a flush.
    ahead: Mutex<Option<Ahead>>,
}

/// The file and what it says. Lock order: a key's count, then this.
struct FileBook {
    path: PathBuf,
    says: Mutex<QuotaFile>,
}

/// The writer thread, and how a key is handed to it.
struct Ahead {
    keys: Sender<Advance>,
    writer: JoinHandle<()>,
}

/// A key whose file mark is to be advanced, and its quota.
struct Advance {
    key: Arc<QuotaCount>,
    quota: u64,
}

/// One key's count this month.
pub struct QuotaCount {
    name: String,
    count: Mutex<Count>,
}

struct Count {
    /// `YYYY-MM` the count is for.
    month: String,
    /// The first instant of the next month, when the count starts again: derived from `month`
    /// once, so a request compares two instants rather than formatting a date.
    resets: SystemTime,
    /// Admitted so far.
    used: u64,
    /// What the file says (never below `used`).
    persisted: u64,
    /// Whether the writer has the key.
    advancing: bool,
    /// When the writer last advanced the file for the key, and the count then.
    advanced: Option<(Instant, u64)>,
}

impl QuotaCount {
    fn lock(&self) -> MutexGuard<'_, Count> {
        lock(&self.count)
    }

    /// Requests counted this month as of `now`.
    pub fn used(&self, now: SystemTime) -> u64 {
        let count = self.lock();
        if now >= count.resets { 0 } else { count.used }
    }
}

/// `YYYY-MM` of `at`, UTC.
fn month_of(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()[..7].to_string()
}

/// The first instant of the month after `month` (`YYYY-MM`).
fn next_month_start(month: &str) -> SystemTime {
    let (year, mon) = month.split_once('-').unwrap_or(("1970", "01"));
    let (year, mon): (u32, u32) = (year.parse().unwrap_or(1970), mon.parse().unwrap_or(1));
    let (year, mon) = if mon >= 12 {
        (year + 1, 1)
    } else {
        (year, mon + 1)
    };
    humantime::parse_rfc3339(&format!("{year:04}-{mon:02}-01T00:00:00Z"))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// How far ahead of the count the file is advanced, at least.
fn block(quota: u64) -> u64 {
    (quota / 100).clamp(1, 1000)
}

/// How far the writer advances the file for a key that counted `used` requests in `over`:
/// what it uses in a second at that rate, so that a busy key costs about one file replacement a
/// second rather than one per block (a replacement cost the writer about 0.25 ms of CPU here: at
/// 30,000 requests a second, one per block was about 0.4 µs per request); at least a
/// block, at most 1 % of the quota.
fn step_ahead(quota: u64, used: u64, over: Duration) -> u64 {
    let per_second = used as f64 / over.as_secs_f64().max(1e-6);
    (per_second as u64).clamp(block(quota), (quota / 100).max(block(quota)))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FileBook {
    /// Advances the file to say at least `mark` for `name` in `month`.
    fn record(&self, name: &str, month: &str, mark: u64) -> Result<(), ChargeError> {
        let mut file = lock(&self.says);
        if month < file.month.as_str() {
            // A request stamped in the last instant of a month that another request has
            // already left: that month's count is over, nothing of it needs keeping.
            return Ok(());
        }
        if month > file.month.as_str() {
            file.month = month.to_string();
            file.used.clear();
        }
        let before = file.used.get(name).copied();
        if before.is_some_and(|before| before >= mark) {
            return Ok(());
        }
        file.used.insert(name.to_string(), mark);
        crate::store::replace_json(&self.path, &*file, false).map_err(|e| {
            match before {
                Some(before) => file.used.insert(name.to_string(), before),
                None => file.used.remove(name),
            };
            ChargeError::Unrecorded(format!(
                "cannot record the quota in {}: {e}",
                self.path.display()
            ))
        })
    }

    /// The writer thread's work: each key it is handed, the file advanced past what it says by
    /// [`step_ahead`] (a block the first time). A failed advance is left to the request that needs it, which then waits for it
    /// and is refused if it fails again.
    fn advance_ahead(&self, keys: mpsc::Receiver<Advance>) {
        for Advance { key, quota } in keys {
            let (month, mark) = {
                let mut count = key.lock();
                let now = Instant::now();
                let step = match count.advanced {
                    Some((at, then)) => {
                        step_ahead(quota, count.used.saturating_sub(then), now - at)
                    }
                    None => block(quota),
                };
                count.advanced = Some((now, count.used));
                (
                    count.month.clone(),
                    (count.persisted.max(count.used) + step).min(quota),
                )
            };
            let recorded = self.record(&key.name, &month, mark).is_ok();
            let mut count = key.lock();
            if recorded && count.month == month && mark > count.persisted {
                count.persisted = mark;
            }
            count.advancing = false;
        }
    }
}

impl QuotaBook {
    /// The book at `path`, as the file left it (this month's counts; none from an earlier
    /// month), with its writer thread started.
    pub fn open(path: &Path) -> Result<QuotaBook, String> {
        let month = month_of(SystemTime::now());
        let file: QuotaFile = crate::store::read_json(path)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let used = if file.month == month {
            file.used
        } else {
            BTreeMap::new()
        };
        let file = Arc::new(FileBook {
            path: path.to_path_buf(),
            says: Mutex::new(QuotaFile { month, used }),
        });
        let (keys, advances) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("quota-writer".to_string())
            .spawn({
                let file = file.clone();
                move || file.advance_ahead(advances)
            })
            .map_err(|e| format!("cannot start the quota writer thread: {e}"))?;
        Ok(QuotaBook {
            file,
            counts: Mutex::default(),
            ahead: Mutex::new(Some(Ahead { keys, writer })),
        })
    }

    /// The count of the key `name`: the one it had if the name was counted before, else
    /// starting where the file left it this month.
    pub fn count(&self, name: &str) -> Arc<QuotaCount> {
        let mut counts = lock(&self.counts);
        if let Some(count) = counts.get(name) {
            return count.clone();
        }
        let now = SystemTime::now();
        let month = month_of(now);
        let file = lock(&self.file.says);
        let used = match file.used.get(name) {
            Some(&used) if file.month == month => used,
            _ => 0,
        };
        drop(file);
        let count = Arc::new(QuotaCount {
            name: name.to_string(),
            count: Mutex::new(Count {
                resets: next_month_start(&month),
                month,
                used,
                persisted: used,
                advancing: false,
                advanced: None,
            }),
        });
        counts.insert(name.to_string(), count.clone());
        count
    }

    /// Counts one request on `key` against `quota` at `now` and returns the month's count, or
    /// says the quota is used up. Fails only when the file cannot be advanced: then the request
    /// is refused, never admitted uncounted.
    pub fn charge(
        &self,
        key: &Arc<QuotaCount>,
        quota: u64,
        now: SystemTime,
    ) -> Result<u64, ChargeError> {
        let mut count = key.lock();
        if now >= count.resets {
            count.month = month_of(now);
            count.resets = next_month_start(&count.month);
            count.used = 0;
            count.persisted = 0;
        }
        if count.used >= quota {
            let resets = count.resets;
            return Err(ChargeError::Exceeded(QuotaExceeded {
                quota,
                resets_at: humantime::format_rfc3339_seconds(resets).to_string(),
                resets_in: resets.duration_since(now).unwrap_or_default(),
            }));
        }
        if count.used + 1 > count.persisted {
            let mark = (count.used + block(quota)).min(quota);
            self.file.record(&key.name, &count.month, mark)?;
            count.persisted = mark;
        }
        count.used += 1;
        let used = count.used;
        if !count.advancing
            && count.persisted < quota
            && count.persisted.saturating_sub(used) <= block(quota) / 2
        {
            count.advancing = self.send_ahead(key, quota);
        }
        Ok(used)
    }

    /// Hands `key` to the writer; false once it has stopped.
    fn send_ahead(&self, key: &Arc<QuotaCount>, quota: u64) -> bool {
        lock(&self.ahead).as_ref().is_some_and(|ahead| {
            ahead
                .keys
                .send(Advance {
                    key: key.clone(),
                    quota,
                })
                .is_ok()
        })
    }

    /// Stops the writer and writes the exact counts (on a clean stop).
    pub fn flush(&self) -> Result<(), String> {
        let ahead = lock(&self.ahead).take();
        if let Some(Ahead { keys, writer }) = ahead {
            drop(keys);
            writer
                .join()
                .map_err(|_| "the quota writer thread panicked".to_string())?;
        }
        let counts: Vec<Arc<QuotaCount>> = lock(&self.counts).values().cloned().collect();
        for key in counts {
            let mut count = key.lock();
            let mut file = lock(&self.file.says);
            if count.month == file.month {
                file.used.insert(key.name.clone(), count.used);
                count.persisted = count.used;
            }
        }
        let file = lock(&self.file.says);
        crate::store::write_json(&self.file.path, &*file)
            .map_err(|e| format!("cannot write {}: {e}", self.file.path.display()))
    }
}

/// Why a request was not counted.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeError {
    /// The quota is used up.
    Exceeded(QuotaExceeded),
    /// The count could not be made durable.
    Unrecorded(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_roll_over_at_the_year_end() {
        assert_eq!(
            humantime::format_rfc3339_seconds(next_month_start("2026-12")).to_string(),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            humantime::format_rfc3339_seconds(next_month_start("2026-03")).to_string(),
            "2026-04-01T00:00:00Z"
        );
    }

    #[test]
    fn a_crash_never_gives_back_what_was_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quota.json");
        let now = SystemTime::now();
        let book = QuotaBook::open(&path).unwrap();
        let a = book.count("a");
        for n in 1..=7 {
            assert_eq!(book.charge(&a, 500, now).unwrap(), n);
        }
        // No flush: as after a crash. Block is 5, so the file says at least 7.
        let reopened = QuotaBook::open(&path).unwrap();
        let used = reopened.count("a").used(now);
        assert!((7..=12).contains(&used), "{used}");
        reopened.flush().unwrap();
        drop(book);

        let small = QuotaBook::open(&dir.path().join("small.json")).unwrap();
        let b = small.count("b");
        for _ in 0..3 {
            small.charge(&b, 3, now).unwrap();
        }
        let Err(ChargeError::Exceeded(e)) = small.charge(&b, 3, now) else {
            panic!("the fourth request must be refused");
        };
        assert_eq!(e.quota, 3);
        assert!(e.resets_in > Duration::ZERO);
        let again = QuotaBook::open(&dir.path().join("small.json")).unwrap();
        assert!(
            matches!(
                again.charge(&again.count("b"), 3, now),
                Err(ChargeError::Exceeded(_))
            ),
            "exhausted stays exhausted after a restart"
        );
    }

    #[test]
    fn a_new_month_starts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.json");
        let book = QuotaBook::open(&path).unwrap();
        let (a, b) = (book.count("a"), book.count("b"));
        let now = SystemTime::now();
        book.charge(&a, 1, now).unwrap();
        book.charge(&b, 5, now).unwrap();
        assert!(book.charge(&a, 1, now).is_err());
        let next = next_month_start(&month_of(now)) + Duration::from_secs(1);
        assert_eq!(b.used(next), 0, "last month's count is not this month's");
        book.charge(&a, 1, next).unwrap();
        let file: QuotaFile = crate::store::read_json(&path).unwrap().unwrap();
        assert_eq!(file.month, month_of(next));
        assert_eq!(file.used, BTreeMap::from([("a".to_string(), 1)]));
    }

    #[test]
    fn the_file_is_advanced_ahead_of_the_count_without_a_request_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quota.json");
        let book = QuotaBook::open(&path).unwrap();
        let a = book.count("a");
        let now = SystemTime::now();
        // Block 10: the first request advances the file to 10 itself; the fifth leaves half a
        // block and hands the key to the writer, which advances it by a block.
        for _ in 0..6 {
            book.charge(&a, 1_000, now).unwrap();
        }
        let ahead = (0..500).find_map(|_| {
            let file: QuotaFile = crate::store::read_json(&path).unwrap().unwrap();
            let mark = file.used["a"];
            std::thread::sleep(Duration::from_millis(10));
            (mark > 10).then_some(mark)
        });
        assert_eq!(ahead, Some(20), "a block past what the file said");
        for used in 7..=15 {
            assert_eq!(book.charge(&a, 1_000, now).unwrap(), used);
        }
        book.flush().unwrap();
        let file: QuotaFile = crate::store::read_json(&path).unwrap().unwrap();
        assert_eq!(file.used["a"], 15);
        assert_eq!(
            book.charge(&a, 1_000, now).unwrap(),
            16,
            "counts on after a flush"
        );
    }

    #[test]
    fn a_busy_key_is_advanced_by_a_second_of_its_use_up_to_a_hundredth_of_its_quota() {
        assert_eq!(
            step_ahead(1_000_000, 30_000, Duration::from_secs(1)),
            10_000
        );
        assert_eq!(
            step_ahead(10_000_000, 30_000, Duration::from_secs(1)),
            30_000
        );
        assert_eq!(step_ahead(10_000_000, 300, Duration::from_secs(1)), 1_000);
        assert_eq!(step_ahead(50, 30_000, Duration::ZERO), 1);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quota.json");
        let book = QuotaBook::open(&path).unwrap();
        let a = book.count("a");
        let now = SystemTime::now();
        let mark = || -> u64 {
            let file: QuotaFile = crate::store::read_json(&path).unwrap().unwrap();
            file.used["a"]
        };
        let wait_for = |done: &dyn Fn(u64) -> bool| {
            for _ in 0..500 {
                if done(mark()) {
                    return mark();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("the file still says {}", mark());
        };
        // Block 1,000: the first advance is a block; by the second the key has used 1,000 in
        // a fraction of a second, so the writer advances it by more (at most 10,000).
        for _ in 0..500 {
            book.charge(&a, 1_000_000, now).unwrap();
        }
        assert_eq!(wait_for(&|m| m > 1_000), 2_000);
        for _ in 500..1_500 {
            book.charge(&a, 1_000_000, now).unwrap();
        }
        let second = wait_for(&|m| m > 2_000);
        assert!((3_001..=12_000).contains(&second), "{second}");
    }

    #[test]
    fn keys_counted_from_many_threads_are_counted_exactly_and_never_ahead_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quota.json");
        let book = QuotaBook::open(&path).unwrap();
        let now = SystemTime::now();
        std::thread::scope(|s| {
            for thread in 0..4 {
                let (book, path) = (&book, &path);
                s.spawn(move || {
                    let key = book.count(if thread % 2 == 0 { "a" } else { "b" });
                    for _ in 0..2_500 {
                        let used = book.charge(&key, 1_000_000, now).unwrap();
                        let file: QuotaFile = crate::store::read_json(path).unwrap().unwrap();
                        assert!(file.used[&key.name] >= used, "admitted past the file");
                    }
                });
            }
        });
        assert_eq!(book.count("a").used(now), 5_000);
        assert_eq!(book.count("b").used(now), 5_000);
        book.flush().unwrap();
        let file: QuotaFile = crate::store::read_json(&path).unwrap().unwrap();
        assert_eq!(file.used["a"], 5_000, "a clean stop writes the exact count");

        // Counting on after a flush advances the file again before admitting.
        let a = book.count("a");
        assert_eq!(book.charge(&a, 1_000_000, now).unwrap(), 5_001);
        let reopened = QuotaBook::open(&path).unwrap();
        assert!(reopened.count("a").used(now) >= 5_001);
    }
}
