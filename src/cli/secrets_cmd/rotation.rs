//! Rotation: rotate-secret (with the local `--rotation-command`), cancel-rotate-secret,
//! and rotate-due.
//!
//! A rotation command is a program on this machine that the Secrets Manager runs as AWS
//! runs a rotation Lambda: `PATH <Step> <SecretARN> <ClientRequestToken>` for each of
//! createSecret, setSecret, testSecret and finishSecret (docs/cli.md, "Secrets Manager").
//! Only the CLI may name one (the request member `RotationCommand`, absolute path).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::secrets::SecretIdArgs;
use super::shorthand::{either, rotation_rules};
use super::values::{Request, Scrubbed};
use super::{Operation, Session};
use crate::cli::exit::CliError;
use crate::secrets::Via;

#[derive(Debug, clap::Args)]
pub struct RotateSecretArgs {
    /// The secret: its name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    secret_id: String,
    /// The new version's id [default: a random UUID]
    #[arg(long, value_name = "TOKEN")]
    client_request_token: Option<String>,
    /// The program that rotates the secret (cryptvol's local stand-in for a Lambda):
    /// run as `PATH <Step> <SecretARN> <ClientRequestToken>` for each step
    #[arg(long, value_name = "PATH", conflicts_with = "rotation_lambda_arn")]
    rotation_command: Option<PathBuf>,
    /// A rotation Lambda's ARN (AWS only: give --rotation-command here)
    #[arg(long, value_name = "ARN")]
    rotation_lambda_arn: Option<String>,
    /// AutomaticallyAfterDays=N or ScheduleExpression=E (rate(...) or cron(...)), with
    /// Duration=D (e.g. 2h), or JSON
    #[arg(long, value_name = "RULES")]
    rotation_rules: Option<String>,
    /// Rotate now (the default), or only at the schedule's next time
    #[arg(long, overrides_with = "no_rotate_immediately")]
    rotate_immediately: bool,
    #[arg(long, overrides_with = "rotate_immediately")]
    no_rotate_immediately: bool,
}

impl Operation for RotateSecretArgs {
    const NAME: &'static str = "RotateSecret";
    fn request(self) -> Result<Scrubbed, CliError> {
        let command = self
            .rotation_command
            .as_deref()
            .map(rotation_command)
            .transpose()?;
        Request::new()
            .set("SecretId", self.secret_id)
            .opt("ClientRequestToken", self.client_request_token)
            .opt("RotationLambdaARN", self.rotation_lambda_arn)
            .opt("RotationCommand", command)
            .opt(
                "RotationRules",
                self.rotation_rules
                    .as_deref()
                    .map(rotation_rules)
                    .transpose()?,
            )
            .opt(
                "RotateImmediately",
                either(self.rotate_immediately, self.no_rotate_immediately),
            )
            .done()
    }
}

/// `--rotation-command PATH` as an absolute path (relative to the working directory) of
/// an executable file.
fn rotation_command(path: &Path) -> Result<String, CliError> {
    const FLAG: &str = "--rotation-command";
    let abs = std::path::absolute(path)
        .map_err(|e| CliError::bad(FLAG, format!("{}: {e}", path.display())))?;
    let shown = abs.display();
    let meta = std::fs::metadata(&abs).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CliError::bad(FLAG, format!("{shown} does not exist")),
        _ => CliError::bad(FLAG, format!("{shown}: {e}")),
    })?;
    if !meta.is_file() {
        return Err(CliError::bad(FLAG, format!("{shown} is not a file")));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(CliError::bad(
            FLAG,
            format!("{shown} is not executable (chmod +x it)"),
        ));
    }
    abs.to_str()
        .map(String::from)
        .ok_or_else(|| CliError::bad(FLAG, format!("{shown} is not a UTF-8 path")))
}

/// `cancel-rotate-secret`.
pub struct Cancel(pub SecretIdArgs);

impl Operation for Cancel {
    const NAME: &'static str = "CancelRotateSecret";
    fn request(self) -> Result<Scrubbed, CliError> {
        self.0.request().done()
    }
}

/// `rotate-due`: runs the rotations whose time has come, prints `{"Rotations": [...]}`
/// (ARN, Name, VersionId, Error), and fails with exit 28 when one of them failed.
pub fn rotate_due(s: &Session<'_>) -> Result<(), CliError> {
    let reports = s.sm.rotate_due(s.caller, Via::Cli)?;
    s.cfg
        .print(&serde_json::json!({ "Rotations": reports }), "RotateDue")?;
    let failed: Vec<_> = reports.iter().filter(|r| r.error.is_some()).collect();
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(CliError::RotationsFailed(format!(
            "{} of {} due rotations failed; the first, of {}: {}",
            failed.len(),
            reports.len(),
            first.arn,
            first.error.as_deref().unwrap_or_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_commands_are_absolute_executable_files() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("rotate.sh");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(rotation_command(&exe).unwrap(), exe.to_str().unwrap());
        let plain = dir.path().join("plain.sh");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let e = rotation_command(&plain).unwrap_err().to_string();
        assert!(
            e.contains("not executable") && e.contains("plain.sh"),
            "{e}"
        );
        let e = rotation_command(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = rotation_command(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a file"), "{e}");
        // Relative to the working directory.
        let rel = rotation_command(Path::new("no-such-rotation-command")).unwrap_err();
        let cwd = std::env::current_dir().unwrap();
        assert!(rel.to_string().contains(cwd.to_str().unwrap()), "{rel}");
    }
}
