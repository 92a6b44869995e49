//! The host's own figures (Amazon MQ's CpuUtilization and memory of the broker instance): CPU
//! time per mode from `/proc/stat`, memory from `/proc/meminfo`. In a network namespace these
//! are still the machine's, as they would be on an appliance host.

use super::Sample;
use anyhow::{Context, Result};

const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

pub fn samples() -> Result<Vec<Sample>> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    let mut out = cpu(&stat, ticks);
    out.extend(memory(&meminfo));
    Ok(out)
}

/// Seconds of CPU time per mode, all CPUs together: `rate()` over it gives the utilization.
fn cpu(stat: &str, ticks_per_second: f64) -> Vec<Sample> {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return vec![];
    };
    let mut out: Vec<Sample> = line
        .split_whitespace()
        .skip(1)
        .zip(CPU_MODES)
        .filter_map(|(v, mode)| {
            let ticks: f64 = v.parse().ok()?;
            Some(
                Sample::counter(
                    "ferrymq_host_cpu_seconds_total",
                    "CpuUtilization (as rate): CPU seconds of the host, per mode, all CPUs.",
                    ticks / ticks_per_second,
                )
                .label("mode", mode),
            )
        })
        .collect();
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    out.push(Sample::gauge(
        "ferrymq_host_cpus",
        "CPUs of the host (divide the CPU seconds rate by it for a utilization ratio).",
        cpus as f64,
    ));
    out
}

fn memory(meminfo: &str) -> Vec<Sample> {
    let kib = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    let mut out = Vec::new();
    if let Some(total) = kib("MemTotal") {
        out.push(Sample::gauge(
            "ferrymq_host_memory_total_bytes",
            "Memory of the host.",
            total * 1024.0,
        ));
    }
    if let Some(available) = kib("MemAvailable") {
        out.push(Sample::gauge(
            "ferrymq_host_memory_available_bytes",
            "Memory the host can still give to processes without swapping.",
            available * 1024.0,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_from_proc() {
        let stat = "cpu  100 0 50 800 10 0 5 0 0 0\ncpu0 50 0 25 400 5 0 2 0 0 0\ncpu1 50 0 25 400 5 0 3 0 0 0\nintr 1\n";
        let s = cpu(stat, 100.0);
        assert_eq!(s.len(), 9);
        assert_eq!(s[0].labels, [("mode", "user".to_string())]);
        assert_eq!(s[0].value, 1.0);
        assert_eq!(s[3].value, 8.0);
        assert_eq!(s[8].name, "ferrymq_host_cpus");
        assert_eq!(s[8].value, 2.0);
        let m = memory("MemTotal:       2000 kB\nMemFree: 1 kB\nMemAvailable:   1000 kB\n");
        assert_eq!(m[0].value, 2_048_000.0);
        assert_eq!(m[1].value, 1_024_000.0);
    }
}
