//! Keeping key material out of swap and core dumps, for the whole process: no core dumps
//! (and no ptrace by other users) via `PR_SET_DUMPABLE = 0`, and, where the process may
//! lock memory (root, or CAP_IPC_LOCK), every page locked as it is touched (`mlockall`
//! with `MCL_ONFAULT`, so nothing is pre-faulted and RSS does not grow).
//! Best effort: a failure is reported to the caller to log, never fatal.

use nix::sys::mman::{MlockAllFlags, mlockall};

/// What could be applied; `Err` holds a human description of what could not.
pub fn protect_process() -> Result<(), String> {
    let mut problems = vec![];
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        problems.push(format!("cannot disable core dumps: {e}"));
    }
    if nix::unistd::geteuid().is_root() {
        let flags = MlockAllFlags::from_bits_retain(
            libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT,
        );
        if let Err(e) = mlockall(flags) {
            problems.push(format!("cannot lock memory: {e}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
