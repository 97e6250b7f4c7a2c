//! This machine's CPUs and this process's limits, as the kernel reports them, and the two
//! changes the daemons make to them: pinning a thread to a CPU, raising the open-file
//! limit.

use std::io;

/// CPUs the kernel may ever run a task on (`/sys/devices/system/cpu/possible`, e.g.
/// "0-63"): the kernel sizes per-CPU structures by it (FUSE makes one ring queue for each).
pub fn possible_cpus() -> usize {
    cpu_list("possible")
        .and_then(|l| l.into_iter().max())
        .map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |max| max + 1,
        )
}

/// CPUs online now (`/sys/devices/system/cpu/online`, e.g. "0-3,6"); all possible ones if
/// that cannot be read.
pub fn online_cpus() -> Vec<usize> {
    cpu_list("online").unwrap_or_else(|| (0..possible_cpus()).collect())
}

/// The CPUs of one of sysfs's CPU lists ("0-3,6" form); None if unreadable or malformed.
fn cpu_list(which: &str) -> Option<Vec<usize>> {
    let s = std::fs::read_to_string(format!("/sys/devices/system/cpu/{which}")).ok()?;
    parse_cpu_list(&s)
}

fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut v = Vec::new();
    for r in s.trim().split(',') {
        let mut ends = r.split('-').map(|n| n.parse::<usize>());
        let a = ends.next()?.ok()?;
        let b = ends.next().transpose().ok()?.unwrap_or(a);
        // Bounded: a corrupt list must not allocate without end.
        v.extend(a..=b.min(a + 4096));
    }
    Some(v)
}

/// Runs the calling thread on `cpu` only.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(io::Error::from)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) towards `want`, never above the hard
/// limit; returns the soft limit now in force (unchanged if raising it failed, or if it
/// was already at `want`) and the hard one. An error only if the limits cannot be read.
pub fn raise_open_files(want: u64) -> io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft >= want {
        return Ok((soft, hard));
    }
    let raised = want.min(hard);
    let now = if setrlimit(Resource::RLIMIT_NOFILE, raised, hard).is_ok() {
        raised
    } else {
        soft
    };
    Ok((now, hard))
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists_parse_as_sysfs_writes_them() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-3,6"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("0-999999999").map(|v| v.len()), Some(4097));
    }
}
