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
