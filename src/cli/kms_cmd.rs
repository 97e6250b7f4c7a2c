//! `cryptvol kms ...`: the AWS CLI's `aws kms` commands and flags, against the region's
//! embedded KMS. Output uses AWS's response field names.
//!
//! This file has the command list and runs each command; each command's flags and
//! printing are in a file by concern under `kms_cmd/`: `keys.rs` (key lifecycle and
//! rotation), `crypto.rs` (encrypt, decrypt, data keys, random), `policies.rs` (key
//! policies and tags), `aliases.rs`; the grant commands are in `grant_cmd.rs`.

use clap::Subcommand;

use super::Config;
use super::exit::CliError;

mod aliases;
mod crypto;
mod custom_key_stores;
mod keys;
mod policies;

#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// Create a customer master key (symmetric, AES-256-GCM)
    CreateKey(keys::CreateKeyArgs),
    /// Show a key's policy
    GetKeyPolicy(policies::GetKeyPolicyArgs),
    /// Replace a key's policy (validated; refused if it would lock you out)
    PutKeyPolicy(policies::PutKeyPolicyArgs),
    /// List a key's policy names (always "default")
    ListKeyPolicies(KeyIdArgs),
    /// Add or replace tags on a key
    TagResource(policies::TagResourceArgs),
    /// Remove tags from a key
    UntagResource(policies::UntagResourceArgs),
    ListResourceTags(policies::ListResourceTagsArgs),
    /// Serve the AWS KMS protocol (JSON 1.1 over HTTP, SigV4) for the data dir's regions
    Serve(crate::server::ServeArgs),
    /// Requests per key and operation this month, and the bill at AWS list prices
    Usage {
        /// YYYY-MM [default: this month]
        #[arg(long)]
        month: Option<String>,
    },
    /// Show a key's metadata
    DescribeKey(keys::DescribeKeyArgs),
    /// List the region's keys
    ListKeys(keys::ListKeysArgs),
    /// Allow cryptographic use of a disabled key again
    EnableKey(KeyIdArgs),
    /// Refuse every cryptographic use of a key until it is enabled
    DisableKey(KeyIdArgs),
    /// Destroy a key's material after a waiting period (7..30 days, default 30)
    ScheduleKeyDeletion(keys::ScheduleKeyDeletionArgs),
    /// Stop a scheduled deletion; the key comes back disabled
    CancelKeyDeletion(KeyIdArgs),
    /// Encrypt up to 4096 bytes under a key
    Encrypt(crypto::EncryptArgs),
    /// Decrypt a ciphertext blob (the key is read from the blob)
    Decrypt(crypto::DecryptArgs),
    /// Decrypt a blob and encrypt it again under another (or the current) key version
    ReEncrypt(crypto::ReEncryptArgs),
    /// Make a data key: its plaintext and a copy encrypted under a key
    GenerateDataKey(crypto::GenerateDataKeyArgs),
    /// Make a data key and return only its encrypted copy
    GenerateDataKeyWithoutPlaintext(crypto::GenerateDataKeyWithoutPlaintextArgs),
    /// Rotate a key automatically every period (90..2560 days, default 365)
    EnableKeyRotation(keys::EnableKeyRotationArgs),
    DisableKeyRotation(KeyIdArgs),
    GetKeyRotationStatus(KeyIdArgs),
    /// Add a new key version now; older versions still decrypt
    RotateKeyOnDemand(KeyIdArgs),
    ListKeyRotations(keys::ListKeyRotationsArgs),
    /// Give a key a friendly name (alias/NAME)
    CreateAlias(aliases::CreateAliasArgs),
    /// Point an alias at another key
    UpdateAlias(aliases::UpdateAliasArgs),
    DeleteAlias(aliases::DeleteAliasArgs),
    ListAliases(aliases::ListAliasesArgs),
    /// Random bytes from the KMS (1..1024), printed base64 as Plaintext
    GenerateRandom(crypto::GenerateRandomArgs),
    /// Replace a key's description (up to 8192 characters)
    UpdateKeyDescription(keys::UpdateKeyDescriptionArgs),
    /// Let a principal use a key for chosen operations (optionally under an encryption
    /// context constraint), without changing the key policy
    CreateGrant(super::grant_cmd::CreateGrantArgs),
    /// List a key's grants
    ListGrants(super::grant_cmd::ListGrantsArgs),
    /// List the grants a principal may retire
    ListRetirableGrants(super::grant_cmd::ListRetirableGrantsArgs),
    /// Delete a grant as its retiring principal, grantee or issuing account
    RetireGrant(super::grant_cmd::RetireGrantArgs),
    /// Delete a grant (needs kms:RevokeGrant)
    RevokeGrant(super::grant_cmd::RevokeGrantArgs),
    /// Create a custom key store: a PKCS#11 token (HSM) that makes and holds its keys
    CreateCustomKeyStore(custom_key_stores::CreateArgs),
    /// List custom key stores with their connection state
    DescribeCustomKeyStores(custom_key_stores::DescribeArgs),
    /// Rename a custom key store, or (disconnected) change its token or PIN
    UpdateCustomKeyStore(custom_key_stores::UpdateArgs),
    /// Delete a disconnected custom key store that has no keys
    DeleteCustomKeyStore(custom_key_stores::StoreIdArgs),
    /// Log in to a custom key store's token so its keys can be used
    ConnectCustomKeyStore(custom_key_stores::StoreIdArgs),
    /// Stop using a custom key store's token; its keys refuse every use until connected
    DisconnectCustomKeyStore(custom_key_stores::StoreIdArgs),
}

// `--key-id` alone: the flag of the commands that take only a key. (A plain comment: a
// doc comment here would become the help text of such commands that have none.)
#[derive(Debug, clap::Args)]
pub struct KeyIdArgs {
    #[arg(long)]
    key_id: String,
}

impl KeyIdArgs {
    fn key(&self) -> Result<crate::kms::KeyRef, CliError> {
        super::args::key_ref(&self.key_id)
    }
}

pub fn run(cfg: &Config, cmd: KmsCommand) -> Result<(), CliError> {
    use KmsCommand::*;
    // The server opens the regions its callers name, not only --region.
    if let Serve(args) = cmd {
        return crate::server::serve(
            &cfg.data_dir,
            cfg.passphrase.file.as_deref(),
            &cfg.region,
            args,
        )
        .map_err(CliError::from);
    }
    let kms = cfg.kms()?;
    let caller = cfg.caller(&kms)?;
    let c = &caller;
    match cmd {
        CreateKey(a) => keys::create_key(cfg, &kms, c, a),
        GetKeyPolicy(a) => policies::get_key_policy(cfg, &kms, c, a),
        PutKeyPolicy(a) => policies::put_key_policy(&kms, c, a),
        ListKeyPolicies(a) => cfg.print(&kms.list_key_policies(c, &a.key()?)?, "ListKeyPolicies"),
        TagResource(a) => policies::tag_resource(&kms, c, a),
        UntagResource(a) => policies::untag_resource(&kms, c, a),
        ListResourceTags(a) => policies::list_resource_tags(cfg, &kms, c, a),
        Serve(_) => unreachable!("served before the region is opened"),
        Usage { month } => cfg.print(&kms.usage(month.as_deref())?, "Usage"),
        DescribeKey(a) => keys::describe_key(cfg, &kms, c, a),
        ListKeys(a) => keys::list_keys(cfg, &kms, c, a),
        EnableKey(a) => Ok(kms.enable_key(c, &a.key()?)?),
        DisableKey(a) => Ok(kms.disable_key(c, &a.key()?)?),
        ScheduleKeyDeletion(a) => keys::schedule_key_deletion(cfg, &kms, c, a),
        CancelKeyDeletion(a) => {
            cfg.print(&kms.cancel_key_deletion(c, &a.key()?)?, "CancelKeyDeletion")
        }
        Encrypt(a) => crypto::encrypt(cfg, &kms, c, a),
        Decrypt(a) => crypto::decrypt(cfg, &kms, c, a),
        ReEncrypt(a) => crypto::re_encrypt(cfg, &kms, c, a),
        GenerateDataKey(a) => crypto::generate_data_key(cfg, &kms, c, a),
        GenerateDataKeyWithoutPlaintext(a) => {
            crypto::generate_data_key_without_plaintext(cfg, &kms, c, a)
        }
        EnableKeyRotation(a) => keys::enable_key_rotation(&kms, c, a),
        DisableKeyRotation(a) => Ok(kms.disable_key_rotation(c, &a.key()?)?),
        GetKeyRotationStatus(a) => cfg.print(
            &kms.get_key_rotation_status(c, &a.key()?)?,
            "GetKeyRotationStatus",
        ),
        RotateKeyOnDemand(a) => cfg.print(
            &kms.rotate_key_on_demand(c, &a.key()?)?,
            "RotateKeyOnDemand",
        ),
        ListKeyRotations(a) => keys::list_key_rotations(cfg, &kms, c, a),
        CreateAlias(a) => aliases::create_alias(&kms, c, a),
        UpdateAlias(a) => aliases::update_alias(&kms, c, a),
        DeleteAlias(a) => aliases::delete_alias(&kms, c, a),
        ListAliases(a) => aliases::list_aliases(cfg, &kms, c, a),
        GenerateRandom(a) => crypto::generate_random(cfg, &kms, c, a),
        UpdateKeyDescription(a) => keys::update_key_description(&kms, c, a),
        CreateGrant(a) => super::grant_cmd::create(cfg, &kms, c, a),
        ListGrants(a) => super::grant_cmd::list(cfg, &kms, c, a),
        ListRetirableGrants(a) => super::grant_cmd::list_retirable(cfg, &kms, c, a),
        RetireGrant(a) => super::grant_cmd::retire(&kms, c, a),
        RevokeGrant(a) => super::grant_cmd::revoke(&kms, c, a),
        CreateCustomKeyStore(a) => custom_key_stores::create(cfg, &kms, c, a),
        DescribeCustomKeyStores(a) => custom_key_stores::describe(cfg, &kms, c, a),
        UpdateCustomKeyStore(a) => custom_key_stores::update(&kms, c, a),
        DeleteCustomKeyStore(a) => custom_key_stores::delete(&kms, c, a),
        ConnectCustomKeyStore(a) => custom_key_stores::connect(&kms, c, a),
        DisconnectCustomKeyStore(a) => custom_key_stores::disconnect(&kms, c, a),
    }
}
