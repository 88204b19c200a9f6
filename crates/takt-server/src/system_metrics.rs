//! The machine's and takt's own process's figures in `/metrics`, read from `/proc` and
//! `statvfs` when scraped: CPU, memory, open files, load, and the data directory's disk. The
//! process figures use the names every Prometheus client library uses (`process_*`), so
//! dashboards made for them work; the machine's are takt's (`takt_host_*`, `takt_disk_*`).
//! Where a figure cannot be read (not Linux), it is left out.

use std::fmt::Write;
use std::path::Path;

/// The CPU seconds (user + system) and start time (seconds after boot) of `/proc/self/stat`.
pub fn parse_stat(stat: &str, ticks_per_second: f64) -> Option<(f64, f64)> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15, starttime 22 (1-based, proc(5)).
    let at = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    Some(((at(14)? + at(15)?) / ticks_per_second, at(22)? / ticks_per_second))
}

/// A `Key: N kB` line's value in bytes (`/proc/self/status`, `/proc/meminfo`).
pub fn kib_field(text: &str, key: &str) -> Option<f64> {
    let v = text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    Some(v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()? * 1024.0)
}

/// The machine's CPU seconds by mode, from `/proc/stat`'s first line.
pub fn parse_cpu(stat: &str, ticks_per_second: f64) -> Vec<(&'static str, f64)> {
    const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Vec::new();
    };
    line.split_whitespace()
        .skip(1)
        .zip(MODES)
        .filter_map(|(v, mode)| Some((mode, v.parse::<f64>().ok()? / ticks_per_second)))
        .collect()
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

fn one(v: Option<f64>) -> Vec<(String, f64)> {
    v.map(|v| vec![(String::new(), v)]).unwrap_or_default()
}

/// The figures, in the Prometheus text format.
pub fn render(data_dir: &Path) -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64);
    let mut out = String::new();
    let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s, ticks));
    // Read once: the boot time and the machine's CPU both come from it.
    let proc_stat = read("/proc/stat").unwrap_or_default();
    let boot = Some(&proc_stat).and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|b| b.trim().parse::<f64>().ok())
    });
    let status = read("/proc/self/status").unwrap_or_default();
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
    let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft as f64);
    metric(
        &mut out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        &one(stat.map(|s| s.0)),
    );
    metric(
        &mut out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        &one(kib_field(&status, "VmRSS")),
    );
    metric(
        &mut out,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        &one(kib_field(&status, "VmSize")),
    );
    metric(
        &mut out,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        &one(fds),
    );
    metric(
        &mut out,
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        &one(max_fds),
    );
    metric(
        &mut out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        &one(stat.zip(boot).map(|(s, b)| b + s.1)),
    );
    let cpu: Vec<(String, f64)> = parse_cpu(&proc_stat, ticks)
        .into_iter()
        .map(|(mode, v)| (format!("{{mode=\"{mode}\"}}"), v))
        .collect();
    metric(
        &mut out,
        "takt_host_cpu_seconds_total",
        "counter",
        "The machine's CPU time by mode, all CPUs together",
        &cpu,
    );
    let meminfo = read("/proc/meminfo").unwrap_or_default();
    metric(
        &mut out,
        "takt_host_memory_total_bytes",
        "gauge",
        "The machine's memory",
        &one(kib_field(&meminfo, "MemTotal")),
    );
    metric(
        &mut out,
        "takt_host_memory_available_bytes",
        "gauge",
        "The machine's memory available to new work (MemAvailable)",
        &one(kib_field(&meminfo, "MemAvailable")),
    );
    let load = read("/proc/loadavg").and_then(|l| l.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()));
    metric(
        &mut out,
        "takt_host_load1",
        "gauge",
        "The machine's 1-minute load average",
        &one(load),
    );
    if let Ok(fs) = nix::sys::statvfs::statvfs(data_dir) {
        let block = fs.fragment_size() as f64;
        metric(
            &mut out,
            "takt_disk_total_bytes",
            "gauge",
            "Size of the file system that holds the data directory",
            &one(Some(fs.blocks() as f64 * block)),
        );
        metric(
            &mut out,
            "takt_disk_free_bytes",
            "gauge",
            "Space left for takt on the file system that holds the data directory",
            &one(Some(fs.blocks_available() as f64 * block)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_read_as_proc5_says() {
        let stat = "4242 (takt serve (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 9 0 1000 123456 789 18446744073709551615";
        assert_eq!(parse_stat(stat, 100.0), Some((3.0, 10.0)));
        assert_eq!(parse_stat("garbage", 100.0), None);
        let status = "Name:\ttakt\nVmSize:\t  2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(1024.0 * 1024.0));
        assert_eq!(kib_field(status, "VmSwap"), None);
        let cpu = parse_cpu("cpu  100 0 50 1000 5 0 0 0 0 0\ncpu0 1 2 3\n", 100.0);
        assert_eq!(cpu[0], ("user", 1.0));
        assert_eq!(cpu[3], ("idle", 10.0));
        assert_eq!(cpu.len(), 8);
    }
}
