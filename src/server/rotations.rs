//! Due secret rotations while the server runs: each region the server opens (by a
//! request, a refusal recorded in its trail, or the home region at start) looks for due
//! rotations at once and then every minute, on a thread of its own, as the account's root
//! on this machine ([`SecretsManager::rotate_due`], as the region daemon does). They stop
//! with the server, which waits for a rotation in progress (four steps that should not be
//! cut short) before it drops the regions.
//!
//! A failed rotation is one line on stderr naming the secret, the version and the step;
//! not the reason, which ends with the last line the rotation command wrote on its stderr
//! (a value, for all the server knows).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::secrets::{SecretsManager, spawn_due_rotations};

/// How often each region looks for due rotations (as the region daemon).
pub const PERIOD: Duration = Duration::from_secs(60);

/// The rotation loops of the opened regions.
pub struct Rotations {
    running: Arc<AtomicBool>,
    loops: Mutex<Vec<(String, JoinHandle<()>)>>,
}

impl Rotations {
    pub fn new() -> Rotations {
        Rotations {
            running: Arc::new(AtomicBool::new(true)),
            loops: Mutex::new(Vec::new()),
        }
    }

    /// Starts `region`'s loop on `manager` (`secrets::spawn_due_rotations`, the region
    /// daemon's loop, as the account's root), unless it runs already or the server stops.
    pub fn start(&self, region: &str, manager: Arc<SecretsManager>) {
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        if !self.running.load(Ordering::Acquire) || loops.iter().any(|(r, _)| r == region) {
            return;
        }
        let running = self.running.clone();
        let handle = spawn_due_rotations(manager, PERIOD, move || running.load(Ordering::Acquire));
        loops.push((region.to_string(), handle));
    }

    /// The regions whose loop runs, in the order they started.
    #[cfg(test)]
    pub fn regions(&self) -> Vec<String> {
        let loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops.iter().map(|(r, _)| r.clone()).collect()
    }

    /// Stops every loop and waits for each (a rotation in progress finishes first).
    pub fn stop(&self) {
        self.running.store(false, Ordering::Release);
        let loops = std::mem::take(&mut *self.loops.lock().unwrap_or_else(|p| p.into_inner()));
        for (region, handle) in loops {
            if handle.join().is_err() {
                eprintln!("kms serve: the due secret rotations of {region} panicked");
            }
        }
    }
}

impl Default for Rotations {
    fn default() -> Self {
        Rotations::new()
    }
}
