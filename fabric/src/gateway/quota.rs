//! Monthly request quotas, counted across router restarts. The file (`quota.json` in the
//! endpoint's state directory) never holds less than what was admitted: before a key's count
//! passes what the file says, the file is advanced by a block (1 % of the quota, at most 1,000
//! requests), replaced atomically. A crash or a kill of the router therefore gives nothing back;
//! it can only overcount by less than a block, and a clean stop writes the exact counts. The
//! advance is not synced to the disk (it is on the request path): a host that loses power may
//! lose the last advance. Months are calendar months in UTC.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

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

/// Every key's count for this month.
pub struct QuotaBook {
    path: PathBuf,
    book: Mutex<Book>,
}

struct Book {
    month: String,
    /// The first instant of the next month, when the counts start again: derived from `month`
    /// once, so a request compares two instants rather than formatting a date.
    resets: SystemTime,
    /// Admitted so far.
    used: BTreeMap<String, u64>,
    /// What the file says (never below `used`).
    persisted: BTreeMap<String, u64>,
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

/// How far ahead of the count the file is advanced.
fn block(quota: u64) -> u64 {
    (quota / 100).clamp(1, 1000)
}

impl QuotaBook {
    /// The book at `path`, as the file left it (this month's counts; none from an earlier
    /// month).
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
        Ok(QuotaBook {
            path: path.to_path_buf(),
            book: Mutex::new(Book {
                resets: next_month_start(&month),
                month,
                persisted: used.clone(),
                used,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one request of key `name` against `quota` at `now` and returns the month's count,
    /// or says the quota is used up. Fails only when the file cannot be advanced: then the
    /// request is refused, never admitted uncounted.
    pub fn charge(&self, name: &str, quota: u64, now: SystemTime) -> Result<u64, ChargeError> {
        let mut book = self.lock();
        if now >= book.resets {
            book.month = month_of(now);
            book.resets = next_month_start(&book.month);
            book.used.clear();
            book.persisted.clear();
        }
        let used = book.used.get(name).copied().unwrap_or(0);
        if used >= quota {
            let resets = book.resets;
            return Err(ChargeError::Exceeded(QuotaExceeded {
                quota,
                resets_at: humantime::format_rfc3339_seconds(resets).to_string(),
                resets_in: resets.duration_since(now).unwrap_or_default(),
            }));
        }
        if used + 1 > book.persisted.get(name).copied().unwrap_or(0) {
            let mark = (used + block(quota)).min(quota);
            book.persisted.insert(name.to_string(), mark);
            let file = QuotaFile {
                month: book.month.clone(),
                used: book.persisted.clone(),
            };
            if let Err(e) = crate::store::replace_json(&self.path, &file, false) {
                book.persisted.insert(name.to_string(), used);
                return Err(ChargeError::Unrecorded(format!(
                    "cannot record the quota in {}: {e}",
                    self.path.display()
                )));
            }
        }
        match book.used.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                book.used.insert(name.to_string(), 1);
            }
        }
        Ok(used + 1)
    }

    /// Requests counted for `name` this month.
    pub fn used(&self, name: &str) -> u64 {
        self.lock().used.get(name).copied().unwrap_or(0)
    }

    /// Writes the exact counts (on a clean stop).
    pub fn flush(&self) -> Result<(), String> {
        let mut book = self.lock();
        book.persisted = book.used.clone();
        let file = QuotaFile {
            month: book.month.clone(),
            used: book.used.clone(),
        };
        crate::store::write_json(&self.path, &file)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
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
        for n in 1..=7 {
            assert_eq!(book.charge("a", 500, now).unwrap(), n);
        }
        // No flush: as after a crash. Block is 5, so the file says at least 7.
        let reopened = QuotaBook::open(&path).unwrap();
        let used = reopened.used("a");
        assert!((7..=12).contains(&used), "{used}");
        reopened.flush().unwrap();
        drop(book);

        let small = QuotaBook::open(&dir.path().join("small.json")).unwrap();
        for _ in 0..3 {
            small.charge("b", 3, now).unwrap();
        }
        let Err(ChargeError::Exceeded(e)) = small.charge("b", 3, now) else {
            panic!("the fourth request must be refused");
        };
        assert_eq!(e.quota, 3);
        assert!(e.resets_in > Duration::ZERO);
        let again = QuotaBook::open(&dir.path().join("small.json")).unwrap();
        assert!(
            matches!(again.charge("b", 3, now), Err(ChargeError::Exceeded(_))),
            "exhausted stays exhausted after a restart"
        );
    }

    #[test]
    fn a_new_month_starts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let book = QuotaBook::open(&dir.path().join("q.json")).unwrap();
        let now = SystemTime::now();
        book.charge("a", 1, now).unwrap();
        assert!(book.charge("a", 1, now).is_err());
        let next = next_month_start(&month_of(now)) + Duration::from_secs(1);
        book.charge("a", 1, next).unwrap();
    }
}
