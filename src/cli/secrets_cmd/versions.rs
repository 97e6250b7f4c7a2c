//! A secret's versions: list-secret-version-ids and update-secret-version-stage.

use super::listing::PageArgs;
use super::shorthand::either;
use super::values::{Request, Scrubbed};
use super::{Operation, Session};
use crate::cli::exit::CliError;

#[derive(Debug, clap::Args)]
pub struct ListSecretVersionIdsArgs {
    /// The secret: its name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    secret_id: String,
    /// Also list versions with no staging label (kept until there are more than 100)
    #[arg(long, overrides_with = "no_include_deprecated")]
    include_deprecated: bool,
    #[arg(long, overrides_with = "include_deprecated")]
    no_include_deprecated: bool,
    #[command(flatten)]
    page: PageArgs,
}

pub fn list_secret_version_ids(
    s: &Session<'_>,
    a: ListSecretVersionIdsArgs,
) -> Result<(), CliError> {
    let r = Request::new().set("SecretId", a.secret_id).opt(
        "IncludeDeprecated",
        either(a.include_deprecated, a.no_include_deprecated),
    );
    a.page.run(s, "ListSecretVersionIds", r, "Versions")
}

#[derive(Debug, clap::Args)]
pub struct UpdateSecretVersionStageArgs {
    /// The secret: its name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    secret_id: String,
    /// The staging label to move
    #[arg(long, value_name = "LABEL")]
    version_stage: String,
    /// The version that has the label now (required when it is on a version)
    #[arg(long, value_name = "ID")]
    remove_from_version_id: Option<String>,
    /// The version to give the label [default: none: the label is only removed]
    #[arg(long, value_name = "ID")]
    move_to_version_id: Option<String>,
}

impl Operation for UpdateSecretVersionStageArgs {
    const NAME: &'static str = "UpdateSecretVersionStage";
    fn request(self) -> Result<Scrubbed, CliError> {
        Request::new()
            .set("SecretId", self.secret_id)
            .set("VersionStage", self.version_stage)
            .opt("RemoveFromVersionId", self.remove_from_version_id)
            .opt("MoveToVersionId", self.move_to_version_id)
            .done()
    }
}
