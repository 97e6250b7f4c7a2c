//! What the benchmarks print about the machine they ran on, so every figure comes with
//! its CPU, the cores it could use and how busy the machine was.

/// The value of the first `key: value` line of `path` that starts with `key` ("?" if none).
pub fn first_line(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

/// The CPU model name.
pub fn cpu() -> String {
    first_line("/proc/cpuinfo", "model name")
}

/// The cores this process may run on (`Cpus_allowed_list`).
pub fn cores_allowed() -> String {
    first_line("/proc/self/status", "Cpus_allowed_list")
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU time this thread has run, in nanoseconds (`/proc/thread-self/schedstat`); 0 if
/// unknown. Rates per CPU-second leave out the time the thread waited for a core, which
/// on a shared machine swings wall-clock rates far more than a change of the code does.
#[allow(dead_code)]
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of process `pid` (all its threads), in seconds, from
/// `/proc/<pid>/stat` (clock ticks, assumed 100 per second as on Linux); 0 if unknown.
#[allow(dead_code)]
pub fn process_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}
