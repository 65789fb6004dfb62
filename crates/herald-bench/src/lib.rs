//! herald's benchmark scenarios: herald (a release binary) against the testkit's legacy API and
//! webhook receiver on loopback, measured. The `herald-bench` binary runs them and prints a table
//! and one JSON line for docs/benchmarks.md; the crate's tests run each for a few seconds.
#![forbid(unsafe_code)]

pub mod chaos;
pub mod cluster;
pub mod delta;
pub mod fanout;
pub mod freshness;
pub mod handshakes;
pub mod quota;
pub mod savings;
pub mod subscribers;
pub mod token;
pub mod webhooks;

/// CPU time (user + system) and resident memory of a process, from /proc.
#[derive(Default)]
pub(crate) struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

impl Usage {
    /// The usage of two processes together.
    pub(crate) fn sum(self, other: Usage) -> Usage {
        Usage { cpu_seconds: self.cpu_seconds + other.cpu_seconds, rss_bytes: self.rss_bytes + other.rss_bytes }
    }
}

pub(crate) fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) are space-separated.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name; 100 ticks a second.
    let cpu_seconds = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Usage { cpu_seconds, rss_bytes: rss_kib * 1024 }
}

/// The `p`-th percentile (0-100) of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
