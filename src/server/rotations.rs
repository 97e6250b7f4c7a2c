//! Due secret rotations while the server runs: every minute (and once at start), each
//! region the server has opened — and its home region, the first time — runs the
//! rotations whose time has come ([`SecretsManager::rotate_due`]), as the account's root
//! on this machine, on the blocking pool. A failure is one line on stderr, naming the
//! secret and the step (never a value). The loop ends with the server: a run in progress
//! is finished first (a rotation is four steps that should not be cut short), and the
//! server waits for it before it drops the regions.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::http::State;
use crate::iam::{Caller, Identity};
use crate::secrets::{SecretsManager, Via};

/// How often due rotations are looked for.
pub const PERIOD: Duration = Duration::from_secs(60);

/// Runs due rotations every [`PERIOD`] until `stop` turns true.
pub async fn run(state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let mut first = true;
    loop {
        let st = state.clone();
        let home = first;
        // A panic in a rotation is reported and the loop goes on.
        if tokio::task::spawn_blocking(move || run_due(&st, home))
            .await
            .is_err()
        {
            eprintln!("kms serve: a run of due secret rotations panicked");
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// One run over the opened regions (with the home region, at start).
fn run_due(state: &State, with_home: bool) {
    let mut regions = state.opened_regions();
    let home = state.refusals.home_region().to_string();
    if with_home && !regions.contains(&home) {
        regions.push(home);
    }
    let root = Caller::local(Identity::root(state.identities.store().account.clone()));
    for region in regions {
        let manager: Arc<SecretsManager> = match state.secrets(&region) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("kms serve: due secret rotations in {region}: {e}");
                continue;
            }
        };
        let request_id = crate::kms::event::fast_uuid();
        let via = Via::Server {
            request_id: &request_id,
        };
        match manager.rotate_due(&root, via) {
            Ok(reports) => {
                for r in reports.iter().filter(|r| r.error.is_some()) {
                    eprintln!(
                        "kms serve: the rotation of secret {} to version {} failed: {}",
                        r.arn,
                        r.version_id,
                        r.error.as_deref().unwrap_or_default()
                    );
                }
            }
            Err(e) => eprintln!("kms serve: due secret rotations in {region}: {e}"),
        }
    }
}
