//! `cryptvol kms` custom key store commands, with the AWS CLI's names and flags:
//! create-custom-key-store, describe-custom-key-stores, update-custom-key-store,
//! delete-custom-key-store, connect-custom-key-store and disconnect-custom-key-store.
//!
//! `--cloud-hsm-cluster-id` takes the token as a `pkcs11:` URI; `--pkcs11-module` with
//! `--token-label` or `--slot` is the same thing spelled out. The PIN is
//! `--key-store-password` (as the AWS CLI) or, better, `--key-store-password-file` (a
//! command line is visible to other users of the machine).

use std::path::PathBuf;

use crate::cli::Config;
use crate::cli::args::read_file;
use crate::cli::exit::CliError;
use crate::cli::kms_ops::PageArgs;
use crate::hsm::uri::redact;
use crate::hsm::{TokenSelector, TokenSpec};
use crate::iam::caller::Caller;
use crate::kms::embedded::{
    CreateCustomKeyStoreRequest, EmbeddedKms, Paging, UpdateCustomKeyStoreRequest,
};
use crate::kms::model::StorePassword;

/// The token and PIN flags shared by create and update. `Debug` is written out so that it
/// never shows the PIN.
#[derive(clap::Args)]
pub struct TokenArgs {
    /// The token as an RFC 7512 URI: pkcs11:token=LABEL?module-path=/path/to/module.so
    #[arg(long, value_name = "PKCS11-URI", conflicts_with = "pkcs11_module")]
    cloud_hsm_cluster_id: Option<String>,
    /// The PKCS#11 module (a .so registered with p11-kit, or listed in
    /// CRYPTVOL_PKCS11_MODULES)
    #[arg(long, value_name = "PATH", requires = "token")]
    pkcs11_module: Option<PathBuf>,
    /// The token's label (with --pkcs11-module)
    #[arg(long, value_name = "LABEL", group = "token")]
    token_label: Option<String>,
    /// The token's slot id (with --pkcs11-module)
    #[arg(long, value_name = "N", group = "token")]
    slot: Option<u64>,
    /// The crypto user's PIN (7..32 characters); prefer --key-store-password-file
    #[arg(long, value_name = "PIN", conflicts_with = "key_store_password_file")]
    key_store_password: Option<String>,
    /// A file holding the crypto user's PIN (one line)
    #[arg(long, value_name = "PATH")]
    key_store_password_file: Option<PathBuf>,
}

impl std::fmt::Debug for TokenArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenArgs")
            .field(
                "cloud_hsm_cluster_id",
                &self.cloud_hsm_cluster_id.as_deref().map(redact),
            )
            .field("pkcs11_module", &self.pkcs11_module)
            .field("token_label", &self.token_label)
            .field("slot", &self.slot)
            .field(
                "key_store_password",
                &self.key_store_password.as_ref().map(|_| "<redacted>"),
            )
            .field("key_store_password_file", &self.key_store_password_file)
            .finish()
    }
}

impl TokenArgs {
    fn cluster(&self) -> Option<String> {
        if let Some(c) = &self.cloud_hsm_cluster_id {
            return Some(c.clone());
        }
        let module = self.pkcs11_module.clone()?;
        let token = match (&self.token_label, self.slot) {
            (Some(l), _) => TokenSelector::Label(l.clone()),
            (None, Some(s)) => TokenSelector::Slot(s),
            (None, None) => return None,
        };
        Some(TokenSpec { module, token }.uri())
    }

    fn password(&self) -> Result<Option<StorePassword>, CliError> {
        if let Some(p) = &self.key_store_password {
            return Ok(Some(StorePassword::new(p.clone())));
        }
        let Some(path) = &self.key_store_password_file else {
            return Ok(None);
        };
        let bytes = zeroize::Zeroizing::new(read_file(path)?);
        let line = crate::datadir::root_key::without_line_end(&bytes);
        let text = std::str::from_utf8(line).map_err(|_| {
            CliError::bad(
                "--key-store-password-file",
                format!("{} is not UTF-8 text", path.display()),
            )
        })?;
        Ok(Some(StorePassword::new(text.to_string())))
    }
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[arg(long)]
    custom_key_store_name: String,
    /// AWS_CLOUDHSM (a PKCS#11 token); EXTERNAL_KEY_STORE is not offered
    #[arg(long, value_name = "TYPE")]
    custom_key_store_type: Option<String>,
    /// Accepted for the AWS CLI's sake; a local module has no TLS to anchor
    #[arg(long, value_name = "PEM")]
    trust_anchor_certificate: Option<String>,
    #[command(flatten)]
    token: TokenArgs,
}

pub fn create(cfg: &Config, kms: &EmbeddedKms, c: &Caller, a: CreateArgs) -> Result<(), CliError> {
    let id = kms.create_custom_key_store(
        c,
        &CreateCustomKeyStoreRequest {
            name: a.custom_key_store_name,
            store_type: a.custom_key_store_type,
            cluster: a.token.cluster(),
            password: a.token.password()?,
            trust_anchor_certificate: a.trust_anchor_certificate,
        },
    )?;
    cfg.print(
        &serde_json::json!({ "CustomKeyStoreId": id }),
        "CreateCustomKeyStore",
    )
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    #[arg(long, conflicts_with = "custom_key_store_name")]
    custom_key_store_id: Option<String>,
    #[arg(long)]
    custom_key_store_name: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

pub fn describe(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: DescribeArgs,
) -> Result<(), CliError> {
    let v = a.page.run("CustomKeyStores", |p: &Paging| {
        kms.describe_custom_key_stores(
            c,
            a.custom_key_store_id.as_deref(),
            a.custom_key_store_name.as_deref(),
            p,
        )
        .map(|(_, page)| page)
    })?;
    cfg.print(&v, "DescribeCustomKeyStores")
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    #[arg(long)]
    custom_key_store_id: String,
    #[arg(long)]
    new_custom_key_store_name: Option<String>,
    #[command(flatten)]
    token: TokenArgs,
}

pub fn update(kms: &EmbeddedKms, c: &Caller, a: UpdateArgs) -> Result<(), CliError> {
    Ok(kms.update_custom_key_store(
        c,
        &UpdateCustomKeyStoreRequest {
            id: a.custom_key_store_id,
            new_name: a.new_custom_key_store_name,
            cluster: a.token.cluster(),
            password: a.token.password()?,
        },
    )?)
}

#[derive(Debug, clap::Args)]
pub struct StoreIdArgs {
    #[arg(long)]
    custom_key_store_id: String,
}

pub fn delete(kms: &EmbeddedKms, c: &Caller, a: StoreIdArgs) -> Result<(), CliError> {
    Ok(kms.delete_custom_key_store(c, &a.custom_key_store_id)?)
}

pub fn disconnect(kms: &EmbeddedKms, c: &Caller, a: StoreIdArgs) -> Result<(), CliError> {
    Ok(kms.disconnect_custom_key_store(c, &a.custom_key_store_id)?)
}

/// Connects, then says at once (one line, exit 27) when the store is FAILED: AWS answers
/// a connect before the cluster is reached, and a script should not have to poll.
pub fn connect(kms: &EmbeddedKms, c: &Caller, a: StoreIdArgs) -> Result<(), CliError> {
    let id = a.custom_key_store_id.as_str();
    kms.connect_custom_key_store(c, id)?;
    let (stores, _) = kms.describe_custom_key_stores(c, Some(id), None, &Paging::default())?;
    match stores.into_iter().find(|s| s.connection_state == "FAILED") {
        None => Ok(()),
        Some(s) => Err(crate::aws::AwsError::KeyStoreFailed {
            store: id.to_string(),
            code: s.connection_error_code.unwrap_or("INTERNAL_ERROR"),
            problem: s.problem.unwrap_or_default(),
        }
        .into()),
    }
}

#[cfg(test)]
mod debug_tests {
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        token: super::TokenArgs,
    }

    /// A PIN given on the command line (or inside a URI) never shows in `{:?}`.
    #[test]
    fn debug_never_shows_the_pin() {
        let w = Wrap::parse_from([
            "x",
            "--cloud-hsm-cluster-id",
            "pkcs11:token=t?module-path=/m.so&pin-value=uri-pin-77",
            "--key-store-password",
            "flag-pin-88",
        ]);
        let text = format!("{:?}", w.token);
        assert!(
            !text.contains("uri-pin-77") && !text.contains("flag-pin-88"),
            "{text}"
        );
        assert!(text.contains("<redacted>"), "{text}");
    }
}
