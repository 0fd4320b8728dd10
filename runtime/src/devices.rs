//! Device discovery: what this host can compute on. The provider's `local` driver reports it as a
//! pool's devices and checks requested devices against it at plan time.

use serde::Serialize;

/// One compute device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceInfo {
    /// How `--device` names it: `cpu` or `cuda:N`.
    pub id: String,
    /// `cpu` or `cuda`.
    pub kind: String,
    /// The model name, e.g. the CPU's brand string.
    pub name: String,
    /// Memory available to it in MiB (system memory for the CPU).
    pub memory_mib: u64,
    /// CPU threads, or 1 for a GPU.
    pub cores: usize,
}

/// Every device on this host: the CPU always, then each GPU the CUDA driver reports (none where
/// CUDA is not installed; why is logged at debug level).
pub fn discover() -> Vec<DeviceInfo> {
    let mut devices = vec![cpu()];
    match crate::cuda::gpus() {
        Ok(gpus) => devices.extend(gpus.into_iter().map(|g| DeviceInfo {
            id: format!("cuda:{}", g.ordinal),
            kind: "cuda".into(),
            name: g.name,
            memory_mib: (g.memory_bytes / (1024 * 1024)) as u64,
            cores: 1,
        })),
        Err(why) => tracing::debug!(%why, "no CUDA devices"),
    }
    devices
}

fn cpu() -> DeviceInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(
            || std::env::consts::ARCH.to_string(),
            |(_, v)| v.trim().to_string(),
        );
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    DeviceInfo {
        id: "cpu".into(),
        kind: "cpu".into(),
        name,
        memory_mib: memory_kib / 1024,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_always_there() {
        let devices = discover();
        assert_eq!(devices[0].id, "cpu");
        assert_eq!(devices[0].kind, "cpu");
        // At least one core, and no more than the CPU affinity allows as coreutils' `nproc`
        // counts them (a cgroup quota may allow fewer, never more; nproc's OpenMP variables
        // are left out).
        let nproc = std::process::Command::new("nproc")
            .env_remove("OMP_NUM_THREADS")
            .env_remove("OMP_THREAD_LIMIT")
            .output()
            .unwrap();
        let allowed: usize = String::from_utf8_lossy(&nproc.stdout)
            .trim()
            .parse()
            .unwrap();
        assert!(
            (1..=allowed).contains(&devices[0].cores),
            "{} cores of {allowed}",
            devices[0].cores
        );
        assert!(devices[0].memory_mib > 0);
        assert!(devices[1..].iter().all(|d| d.kind == "cuda"));
    }
}
