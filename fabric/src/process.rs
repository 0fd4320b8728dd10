//! Detached processes on this host: started in their own process group (so a Ctrl-C in the
//! terminal that ran `terraform` never reaches them) with their output in a log file, recognised
//! later by pid *and* start time (so a recycled pid is never mistaken for them), and stopped with
//! a drain: SIGTERM, then SIGKILL when the drain time is up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A started process as recorded in `state_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Process id.
    pub pid: i32,
    /// The process's start time in clock ticks since boot; 0 when it could not be read.
    pub start_ticks: u64,
}

/// A process that could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The binary could not be executed.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The log file could not be opened.
    #[error("cannot open the log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Signalling failed (not because the process is gone).
    #[error("cannot signal process {pid}: {source}")]
    Signal {
        /// The process.
        pid: i32,
        /// Why.
        source: nix::Error,
    },
    /// Still running after SIGKILL.
    #[error("process {0} did not exit after SIGKILL")]
    Unkillable(i32),
}

/// Starts `binary args…` detached, appending its stdout and stderr to `log`.
pub fn spawn(binary: &Path, args: &[&std::ffi::OsStr], log: &Path) -> Result<Child, ProcessError> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| ProcessError::Log {
                path: log.to_path_buf(),
                source,
            })
    };
    use std::os::unix::process::CommandExt as _;
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .process_group(0)
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })
}

impl ProcessRecord {
    /// The record of a process just started.
    pub fn of(child: &Child) -> ProcessRecord {
        let pid = child.id() as i32;
        ProcessRecord {
            pid,
            start_ticks: proc_stat(pid).map_or(0, |(_, ticks)| ticks),
        }
    }

    /// The record of this process.
    pub fn current() -> ProcessRecord {
        let pid = std::process::id() as i32;
        ProcessRecord {
            pid,
            start_ticks: proc_stat(pid).map_or(0, |(_, ticks)| ticks),
        }
    }

    /// Whether the recorded process still runs: the same process (pid and start time) and not a
    /// zombie. Reaps it first when it is our own exited child.
    pub fn alive(&self) -> bool {
        let _ = nix::sys::wait::waitpid(
            Pid::from_raw(self.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        match proc_stat(self.pid) {
            Some((state, ticks)) => {
                state != 'Z' && (self.start_ticks == 0 || ticks == self.start_ticks)
            }
            None => false,
        }
    }

    /// Sends SIGTERM (the process drains), then SIGKILL if it still runs after `drain`; returns
    /// once it has exited.
    pub async fn stop(&self, drain: Duration) -> Result<(), ProcessError> {
        if !self.alive() {
            return Ok(());
        }
        self.signal(Signal::SIGTERM)?;
        if self.wait_exit(drain).await {
            return Ok(());
        }
        tracing::warn!(pid = self.pid, "process did not drain in time; killing it");
        self.kill_now().await
    }

    /// SIGKILL, waiting until it is gone.
    pub async fn kill_now(&self) -> Result<(), ProcessError> {
        if !self.alive() {
            return Ok(());
        }
        self.signal(Signal::SIGKILL)?;
        if self.wait_exit(Duration::from_secs(5)).await {
            Ok(())
        } else {
            Err(ProcessError::Unkillable(self.pid))
        }
    }

    /// Sends `signal` unless the process is gone.
    pub fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        if !self.alive() {
            return Ok(());
        }
        match kill(Pid::from_raw(self.pid), signal) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(source) => Err(ProcessError::Signal {
                pid: self.pid,
                source,
            }),
        }
    }

    /// Waits up to `limit` for the process to exit; whether it did.
    pub async fn wait_exit(&self, limit: Duration) -> bool {
        let deadline = Instant::now()
            .checked_add(limit)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
        loop {
            if !self.alive() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `(state, start time)` from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; the fields after it are plain.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ticks = fields.get(19)?.parse().ok()?;
    Some((state, ticks))
}

/// The last lines of a log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Writes `contents` through a temporary file and a rename, so a reader never sees half of it.
pub fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, contents.as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_recycled_pid_is_not() {
        let me = std::process::id() as i32;
        let record = ProcessRecord {
            pid: me,
            start_ticks: proc_stat(me).unwrap().1,
        };
        assert!(record.alive());
        assert!(
            !ProcessRecord {
                start_ticks: record.start_ticks + 1,
                ..record.clone()
            }
            .alive()
        );
    }

    #[tokio::test]
    async fn a_started_process_is_recorded_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut child = spawn(
            Path::new("sh"),
            &["-c".as_ref(), "echo up; exec sleep 30".as_ref()],
            &log,
        )
        .unwrap();
        let record = ProcessRecord::of(&child);
        assert!(record.alive());
        for _ in 0..500 {
            if log_tail(&log) == "up" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        record.stop(Duration::from_secs(5)).await.unwrap();
        assert!(!record.alive());
        let _ = child.wait();
        assert_eq!(log_tail(&log), "up");
        let err = spawn(Path::new("/nonexistent/binary"), &[], &log).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot start /nonexistent/binary")
        );
    }
}
