//! `cryptvol kms` alias commands: create-alias, update-alias, delete-alias, list-aliases.

use crate::cli::Config;
use crate::cli::args::key_ref;
use crate::cli::exit::CliError;
use crate::cli::kms_ops::PageArgs;
use crate::iam::caller::Caller;
use crate::kms::embedded::EmbeddedKms;

#[derive(Debug, clap::Args)]
pub struct CreateAliasArgs {
    #[arg(long)]
    alias_name: String,
    #[arg(long)]
    target_key_id: String,
}

pub fn create_alias(kms: &EmbeddedKms, c: &Caller, a: CreateAliasArgs) -> Result<(), CliError> {
    let CreateAliasArgs {
        alias_name,
        target_key_id,
    } = a;
    Ok(kms.create_alias(c, &alias_name, &key_ref(&target_key_id)?)?)
}

#[derive(Debug, clap::Args)]
pub struct UpdateAliasArgs {
    #[arg(long)]
    alias_name: String,
    #[arg(long)]
    target_key_id: String,
}

pub fn update_alias(kms: &EmbeddedKms, c: &Caller, a: UpdateAliasArgs) -> Result<(), CliError> {
    let UpdateAliasArgs {
        alias_name,
        target_key_id,
    } = a;
    Ok(kms.update_alias(c, &alias_name, &key_ref(&target_key_id)?)?)
}

#[derive(Debug, clap::Args)]
pub struct DeleteAliasArgs {
    #[arg(long)]
    alias_name: String,
}

pub fn delete_alias(kms: &EmbeddedKms, c: &Caller, a: DeleteAliasArgs) -> Result<(), CliError> {
    let DeleteAliasArgs { alias_name } = a;
    Ok(kms.delete_alias(c, &alias_name)?)
}

#[derive(Debug, clap::Args)]
pub struct ListAliasesArgs {
    /// Only aliases of this key
    #[arg(long)]
    key_id: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

pub fn list_aliases(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: ListAliasesArgs,
) -> Result<(), CliError> {
    let ListAliasesArgs { key_id, page } = a;
    let r = key_id.as_deref().map(key_ref).transpose()?;
    let v = page.run("Aliases", |p| kms.list_aliases_page(c, r.as_ref(), p))?;
    cfg.print(&v, "ListAliases")
}
