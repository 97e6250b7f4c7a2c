//! `cryptvol sts ...`: temporary credentials, as the AWS CLI's `aws sts` commands, issued
//! locally for the `--profile` identity (the server issues the same over STS's protocol).
//! The credentials are shown once, here; nothing is written.

use clap::Subcommand;

use super::Config;
use super::exit::CliError;
use crate::datadir;
use crate::iam::IdentityStore;
use crate::iam::sessions;

#[derive(Debug, Subcommand)]
pub enum StsCommand {
    /// Temporary credentials of the --profile user (not of a role or the root)
    GetSessionToken {
        /// Lifetime, 900 to 129600 seconds [default: 43200]
        #[arg(long, value_name = "SECS")]
        duration_seconds: Option<String>,
    },
    /// Temporary credentials of a role its trust policy lets the --profile identity assume
    AssumeRole {
        /// The role: arn:aws:iam::ACCOUNT:role/NAME
        #[arg(long, value_name = "ARN")]
        role_arn: String,
        /// The session's name (2 to 64 of letters, digits and _+=,.@-), seen in ARNs and the trail
        #[arg(long, value_name = "NAME")]
        role_session_name: String,
        /// Lifetime, 900 to 43200 seconds (3600 at most from a role) [default: 3600]
        #[arg(long, value_name = "SECS")]
        duration_seconds: Option<String>,
    },
    /// Who the --profile identity is: UserId, Account, Arn
    GetCallerIdentity,
}

/// `--duration-seconds`: a whole number (its range is checked with the action's limits).
fn duration(text: Option<String>) -> Result<Option<i64>, CliError> {
    text.map(|t| {
        t.trim().parse::<i64>().map_err(|_| {
            CliError::bad(
                "--duration-seconds",
                format!("'{}' is not a whole number of seconds", t.escape_debug()),
            )
        })
    })
    .transpose()
}

pub fn run(cfg: &Config, cmd: StsCommand) -> Result<(), CliError> {
    let store = IdentityStore::new(&cfg.data_dir, datadir::read_account_id(&cfg.data_dir)?);
    let caller = store.resolve_profile(cfg.profile.as_deref())?;
    let now = cfg.clock.now();
    match cmd {
        StsCommand::GetSessionToken { duration_seconds } => {
            let d = duration(duration_seconds)?;
            let issued = store.get_session_token(&caller, None, d, now)?;
            cfg.print(&issued.to_json(), "Credentials")
        }
        StsCommand::AssumeRole {
            role_arn,
            role_session_name,
            duration_seconds,
        } => {
            let d = duration(duration_seconds)?;
            let issued = store.assume_role(&caller, None, &role_arn, &role_session_name, d, now)?;
            cfg.print(&issued.to_json(), "Credentials")
        }
        StsCommand::GetCallerIdentity => {
            let (user_id, account, arn) = sessions::caller_identity(&caller);
            cfg.print(
                &serde_json::json!({ "UserId": user_id, "Account": account, "Arn": arn }),
                "CallerIdentity",
            )
        }
    }
}
