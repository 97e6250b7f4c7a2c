//! Due rotations: the rotations whose NextRotationDate has come, run for a caller
//! allowed `secretsmanager:RotateSecret` on each (`secretsmanager rotate-due`), and a loop
//! that runs them as the account root while the region daemon or `kms serve` is up. An
//! unfinished rotation is retried with its own token.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::rotation::unfinished;
use super::{Call, RotationReport, SecretsManager, Via};
use crate::aws::AwsError;
use crate::iam::caller::Caller;

impl SecretsManager {
    /// Rotates every secret whose rotation is enabled and due.
    pub(super) fn run_due_rotations(
        &self,
        caller: &Caller,
        via: Via,
    ) -> Result<Vec<RotationReport>, AwsError> {
        let now = self.now();
        let due: Vec<(String, String, String)> = self
            .load()?
            .secrets
            .values()
            .filter(|s| {
                s.deletion.is_none()
                    && s.rotation.enabled
                    && s.rotation.command.is_some()
                    && s.rotation.next_rotation.is_some_and(|t| t <= now)
            })
            .map(|s| {
                // A rotation left unfinished is retried with its own token, as AWS does.
                let token = unfinished(s, "").unwrap_or_else(crate::kms::event::fast_uuid);
                (s.arn.clone(), s.name.clone(), token)
            })
            .collect();
        let mut reports = Vec::new();
        let call = Call {
            caller,
            operation: "RotateSecret",
            via,
            request_id: crate::kms::event::fast_uuid(),
            request_parameters: Value::Null,
            conditions: Vec::new(),
            recorded: Default::default(),
        };
        let body = self.load()?;
        for (arn, name, token) in due {
            // Only a caller who may rotate the secret runs its command; the others' due
            // rotations are not theirs to run or to hear of.
            if self
                .authorized(&call, &body, &arn, "secretsmanager:RotateSecret")
                .is_err()
            {
                continue;
            }
            let outcome = self.rotate_now(caller, via, &arn, &token).err();
            let failed_step = match &outcome {
                Some(AwsError::RotationFailed { step, .. }) => Some(*step),
                _ => None,
            };
            let error = outcome.map(|e| e.to_string());
            reports.push(RotationReport {
                arn,
                name,
                version_id: token,
                error,
                failed_step,
            });
        }
        Ok(reports)
    }
}

/// Runs due rotations as the account root every `every` on a thread of its own, for as
/// long as `keep_going` says (the region daemon and `kms serve` run one per region).
/// Failures are logged to stderr by secret and version only.
pub fn spawn_due_rotations(
    sm: std::sync::Arc<SecretsManager>,
    every: Duration,
    keep_going: impl Fn() -> bool + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let root = Caller::local(crate::iam::Identity::root(sm.kms.account().clone()));
        while keep_going() {
            match sm.rotate_due(&root, Via::Cli) {
                Ok(reports) => {
                    // The reason ends with the command's last stderr line, which may hold
                    // a value: a log names the secret and version only.
                    for r in reports.iter().filter(|r| r.error.is_some()) {
                        eprintln!(
                            "cryptvol: due rotation of secret {} (version {}) failed at {}: run `cryptvol secretsmanager rotate-secret --secret-id {}` to see why",
                            r.arn,
                            r.version_id,
                            r.failed_step.unwrap_or("its start"),
                            r.arn
                        );
                    }
                }
                Err(e) => eprintln!("cryptvol: due secret rotations: {e}"),
            }
            let until = Instant::now() + every;
            while Instant::now() < until && keep_going() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    })
}
