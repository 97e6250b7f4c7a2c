//! Due secret rotations while the server runs: each region the server opens (by a
//! request, a refusal recorded in its trail, or the home region at start) looks for due
//! rotations at once and then every minute, on a thread of its own, as the account's root
//! on this machine ([`SecretsManager::rotate_due`], as the region daemon does). They stop
//! with the server, which waits for a rotation in progress (four steps that should not be
//! cut short) before it drops the regions.
//!
//! A failed rotation is one line on stderr naming the secret and the version it was to
//! make; not the reason, which ends with the last line the rotation command wrote on its
//! stderr (a value, for all the server knows). The step is in the trail's RotationFailed
//! event, and the command's own output is the command's to log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::aws::ids::AccountId;
use crate::iam::{Caller, Identity};
use crate::secrets::{SecretsManager, Via};

/// How often each region looks for due rotations (as the region daemon).
pub const PERIOD: Duration = Duration::from_secs(60);

/// How soon a loop notices that the server stops, between two runs.
const STOP_POLL: Duration = Duration::from_millis(200);

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

    /// Starts `region`'s loop on `manager` as `account`'s root, unless it runs already or
    /// the server stops.
    pub fn start(&self, region: &str, account: &AccountId, manager: Arc<SecretsManager>) {
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        if !self.running.load(Ordering::Acquire) || loops.iter().any(|(r, _)| r == region) {
            return;
        }
        let running = self.running.clone();
        let root = Caller::local(Identity::root(account.clone()));
        let name = region.to_string();
        let handle = std::thread::spawn(move || {
            while running.load(Ordering::Acquire) {
                run_due(&name, &manager, &root);
                let until = Instant::now() + PERIOD;
                while Instant::now() < until && running.load(Ordering::Acquire) {
                    std::thread::sleep(STOP_POLL);
                }
            }
        });
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

/// One look for due rotations in `region`; failures to stderr, without their reason.
fn run_due(region: &str, manager: &SecretsManager, root: &Caller) {
    match manager.rotate_due(root, Via::Cli) {
        Ok(reports) => {
            for r in reports.iter().filter(|r| r.error.is_some()) {
                // Not run at all when another process (the region daemon) is rotating it.
                eprintln!(
                    "kms serve: the due rotation of secret {} to version {} did not complete \
                     (a step that failed is named by the RotationFailed event of {region}'s \
                     trail)",
                    r.arn, r.version_id
                );
            }
        }
        // Errors of the store or the trail: paths and codes, never a value.
        Err(e) => eprintln!("kms serve: due secret rotations in {region}: {e}"),
    }
}
