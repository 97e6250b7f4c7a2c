//! `cryptvol kms ...`: the AWS CLI's `aws kms` commands and flags, against the region's
//! embedded KMS. Output uses AWS's response field names.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use super::Config;
use super::args::{binary_value, encryption_context, key_ref, tag, text_value};
use super::exit::CliError;
use super::kms_ops::PageArgs;
use crate::kms::{CreateKeyRequest, DataKeySpec};
use crate::policy;
use crate::sys::fsio;

#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// Create a customer master key (symmetric, AES-256-GCM)
    CreateKey {
        #[arg(long, default_value = "")]
        description: String,
        /// Tag as KEY=VALUE; repeat for more
        #[arg(long = "tag", alias = "tags", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Key policy: file://PATH or JSON [default: the account root may do everything]
        #[arg(long, conflicts_with_all = ["admin", "user"])]
        policy: Option<String>,
        /// Least privilege: a principal ARN that may manage but not use the key (repeatable)
        #[arg(long, value_name = "ARN")]
        admin: Vec<String>,
        /// Least privilege: a principal ARN that may use but not manage the key (repeatable)
        #[arg(long, value_name = "ARN")]
        user: Vec<String>,
        /// Accept a policy that would stop you from changing the policy again
        #[arg(long)]
        bypass_policy_lockout_safety_check: bool,
    },
    /// Show a key's policy
    GetKeyPolicy {
        #[arg(long)]
        key_id: String,
        /// Always "default"
        #[arg(long, default_value = "default")]
        policy_name: String,
    },
    /// Replace a key's policy (validated; refused if it would lock you out)
    PutKeyPolicy {
        #[arg(long)]
        key_id: String,
        #[arg(long, default_value = "default")]
        policy_name: String,
        /// file://PATH or JSON
        #[arg(long)]
        policy: String,
        #[arg(long)]
        bypass_policy_lockout_safety_check: bool,
    },
    /// List a key's policy names (always "default")
    ListKeyPolicies {
        #[arg(long)]
        key_id: String,
    },
    /// Add or replace tags on a key
    TagResource {
        #[arg(long)]
        key_id: String,
        /// KEY=VALUE (or TagKey=K,TagValue=V); repeat for more
        #[arg(
            long = "tag",
            alias = "tags",
            value_name = "KEY=VALUE",
            required = true
        )]
        tags: Vec<String>,
    },
    /// Remove tags from a key
    UntagResource {
        #[arg(long)]
        key_id: String,
        #[arg(long = "tag-key", alias = "tag-keys", required = true)]
        tag_keys: Vec<String>,
    },
    ListResourceTags {
        #[arg(long)]
        key_id: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Serve the AWS KMS protocol (JSON 1.1 over HTTP, SigV4) for the data dir's regions
    Serve(crate::server::ServeArgs),
    /// Requests per key and operation this month, and the bill at AWS list prices
    Usage {
        /// YYYY-MM [default: this month]
        #[arg(long)]
        month: Option<String>,
    },
    /// Show a key's metadata
    DescribeKey {
        /// Key id, key ARN, alias name or alias ARN
        #[arg(long)]
        key_id: String,
        /// Grant tokens of grants that allow this call
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
    },
    /// List the region's keys
    ListKeys {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Allow cryptographic use of a disabled key again
    EnableKey {
        #[arg(long)]
        key_id: String,
    },
    /// Refuse every cryptographic use of a key until it is enabled
    DisableKey {
        #[arg(long)]
        key_id: String,
    },
    /// Destroy a key's material after a waiting period (7..30 days, default 30)
    ScheduleKeyDeletion {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        pending_window_days: Option<u32>,
    },
    /// Stop a scheduled deletion; the key comes back disabled
    CancelKeyDeletion {
        #[arg(long)]
        key_id: String,
    },
    /// Encrypt up to 4096 bytes under a key
    Encrypt {
        #[arg(long)]
        key_id: String,
        /// fileb://PATH or base64
        #[arg(long)]
        plaintext: String,
        /// KEY=VALUE[,KEY=VALUE] or a JSON object
        #[arg(long)]
        encryption_context: Option<String>,
        /// Also write the raw ciphertext blob to this file
        #[arg(long, value_name = "FILE")]
        ciphertext_out: Option<PathBuf>,
        /// Grant tokens of grants that allow this call
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
        /// Check permissions and inputs only: fails with DryRunOperationException if the
        /// call would have succeeded
        #[arg(long)]
        dry_run: bool,
    },
    /// Decrypt a ciphertext blob (the key is read from the blob)
    Decrypt {
        /// fileb://PATH or base64
        #[arg(long)]
        ciphertext_blob: String,
        #[arg(long)]
        encryption_context: Option<String>,
        /// Fail unless the blob was made under this key
        #[arg(long)]
        key_id: Option<String>,
        /// Write the plaintext to this file (mode 0600) instead of printing it
        #[arg(long, value_name = "FILE")]
        plaintext_out: Option<PathBuf>,
        /// Grant tokens of grants that allow this call
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
        /// Check permissions and inputs only (DryRunOperationException if it would succeed)
        #[arg(long)]
        dry_run: bool,
    },
    /// Decrypt a blob and encrypt it again under another (or the current) key version
    ReEncrypt {
        #[arg(long)]
        ciphertext_blob: String,
        #[arg(long)]
        destination_key_id: String,
        #[arg(long)]
        source_encryption_context: Option<String>,
        #[arg(long)]
        destination_encryption_context: Option<String>,
        #[arg(long)]
        source_key_id: Option<String>,
        #[arg(long, value_name = "FILE")]
        ciphertext_out: Option<PathBuf>,
        /// Grant tokens of grants that allow this call
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
        /// Check permissions and inputs only (DryRunOperationException if it would succeed)
        #[arg(long)]
        dry_run: bool,
    },
    /// Make a data key: its plaintext and a copy encrypted under a key
    GenerateDataKey {
        #[command(flatten)]
        spec: DataKeyArgs,
        /// Write the plaintext data key to this file (mode 0600) instead of printing it
        #[arg(long, value_name = "FILE")]
        plaintext_out: Option<PathBuf>,
    },
    /// Make a data key and return only its encrypted copy
    GenerateDataKeyWithoutPlaintext {
        #[command(flatten)]
        spec: DataKeyArgs,
    },
    /// Rotate a key automatically every period (90..2560 days, default 365)
    EnableKeyRotation {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        rotation_period_in_days: Option<u32>,
    },
    DisableKeyRotation {
        #[arg(long)]
        key_id: String,
    },
    GetKeyRotationStatus {
        #[arg(long)]
        key_id: String,
    },
    /// Add a new key version now; older versions still decrypt
    RotateKeyOnDemand {
        #[arg(long)]
        key_id: String,
    },
    ListKeyRotations {
        #[arg(long)]
        key_id: String,
        /// ALL_KEY_MATERIAL also lists the material the key was created with
        #[arg(long, value_parser = ["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"])]
        include_key_material: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Give a key a friendly name (alias/NAME)
    CreateAlias {
        #[arg(long)]
        alias_name: String,
        #[arg(long)]
        target_key_id: String,
    },
    /// Point an alias at another key
    UpdateAlias {
        #[arg(long)]
        alias_name: String,
        #[arg(long)]
        target_key_id: String,
    },
    DeleteAlias {
        #[arg(long)]
        alias_name: String,
    },
    ListAliases {
        /// Only aliases of this key
        #[arg(long)]
        key_id: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Random bytes from the KMS (1..1024), printed base64 as Plaintext
    GenerateRandom {
        #[arg(long, value_name = "N")]
        number_of_bytes: Option<i64>,
        /// Refused: cryptvol has no custom key stores
        #[arg(long)]
        custom_key_store_id: Option<String>,
    },
    /// Replace a key's description (up to 8192 characters)
    UpdateKeyDescription {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        description: String,
    },
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
}

#[derive(Debug, clap::Args)]
pub struct DataKeyArgs {
    #[arg(long)]
    key_id: String,
    #[arg(long, conflicts_with = "number_of_bytes", value_parser = key_spec_name())]
    key_spec: Option<DataKeySpec>,
    /// 1..1024
    #[arg(long)]
    number_of_bytes: Option<usize>,
    #[arg(long)]
    encryption_context: Option<String>,
    /// Also write the raw ciphertext blob to this file
    #[arg(long, value_name = "FILE")]
    ciphertext_out: Option<PathBuf>,
    /// Grant tokens of grants that allow this call
    #[arg(long, num_args = 1..)]
    grant_tokens: Vec<String>,
    /// Check permissions and inputs only (DryRunOperationException if it would succeed)
    #[arg(long)]
    dry_run: bool,
}

impl DataKeyArgs {
    fn spec(&self) -> Result<DataKeySpec, CliError> {
        match (self.key_spec, self.number_of_bytes) {
            (Some(spec), None) => Ok(spec),
            (None, Some(n)) => Ok(DataKeySpec::Bytes(n)),
            _ => Err(CliError::bad(
                "--key-spec / --number-of-bytes",
                "give exactly one of --key-spec AES_256|AES_128 or --number-of-bytes N",
            )),
        }
    }
}

/// `--key-spec`: one of AWS's `KeySpec` names (clap lists them in the help and in its error).
fn key_spec_name() -> impl TypedValueParser<Value = DataKeySpec> {
    PossibleValuesParser::new(DataKeySpec::AWS_NAMES)
        .map(|name: String| DataKeySpec::from_aws_name(&name).expect("a listed name"))
}

/// Writes bytes to a file the user named, atomically, mode 0600.
fn write_out(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    fsio::write_atomic(path, bytes, fsio::PRIVATE_FILE).map_err(|source| CliError::OutputFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Prints a result, minus `Plaintext` when it went to a file.
fn print_without_plaintext<T: serde::Serialize>(
    cfg: &Config,
    r: &T,
    title: &str,
) -> Result<(), CliError> {
    let mut v = serde_json::to_value(r).expect("serialises");
    if let Some(m) = v.as_object_mut()
        && let Some(serde_json::Value::String(s)) = m.remove("Plaintext")
    {
        drop(zeroize::Zeroizing::new(s));
    }
    cfg.print(&v, title)
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
        CreateKey {
            description,
            tags,
            policy,
            admin,
            user,
            bypass_policy_lockout_safety_check,
        } => {
            let tags = tags.iter().map(|t| tag(t)).collect::<Result<Vec<_>, _>>()?;
            let policy = match policy {
                Some(p) => Some(text_value("--policy", &p)?),
                None if !admin.is_empty() || !user.is_empty() => Some(
                    policy::least_privilege_key_policy(kms.account().as_str(), &admin, &user),
                ),
                None => None,
            };
            let meta = kms.create_key(
                c,
                &CreateKeyRequest {
                    description,
                    tags,
                    policy,
                    bypass_lockout_check: bypass_policy_lockout_safety_check,
                },
            )?;
            cfg.print(&serde_json::json!({ "KeyMetadata": meta }), "CreateKey")
        }
        GetKeyPolicy {
            key_id,
            policy_name,
        } => {
            let r = kms.get_key_policy(c, &key_ref(&key_id)?, &policy_name)?;
            cfg.print(&r, "GetKeyPolicy")
        }
        PutKeyPolicy {
            key_id,
            policy_name,
            policy,
            bypass_policy_lockout_safety_check,
        } => {
            let text = text_value("--policy", &policy)?;
            Ok(kms.put_key_policy(
                c,
                &key_ref(&key_id)?,
                &policy_name,
                &text,
                bypass_policy_lockout_safety_check,
            )?)
        }
        ListKeyPolicies { key_id } => cfg.print(
            &kms.list_key_policies(c, &key_ref(&key_id)?)?,
            "ListKeyPolicies",
        ),
        Usage { month } => cfg.print(&kms.usage(month.as_deref())?, "Usage"),
        TagResource { key_id, tags } => {
            let tags = tags.iter().map(|t| tag(t)).collect::<Result<Vec<_>, _>>()?;
            Ok(kms.tag_resource(c, &key_ref(&key_id)?, &tags)?)
        }
        UntagResource { key_id, tag_keys } => {
            Ok(kms.untag_resource(c, &key_ref(&key_id)?, &tag_keys)?)
        }
        ListResourceTags { key_id, page } => {
            let r = key_ref(&key_id)?;
            let v = page.run("Tags", |p| kms.list_resource_tags_page(c, &r, p))?;
            cfg.print(&v, "ListResourceTags")
        }
        Serve(_) => unreachable!("served before the region is opened"),
        DescribeKey {
            key_id,
            grant_tokens,
        } => {
            let c = &c.with_grant_tokens(grant_tokens);
            let meta = kms.describe_key(c, &key_ref(&key_id)?)?;
            cfg.print(&serde_json::json!({ "KeyMetadata": meta }), "DescribeKey")
        }
        ListKeys { page } => {
            let v = page.run("Keys", |p| kms.list_keys_page(c, p))?;
            cfg.print(&v, "ListKeys")
        }
        EnableKey { key_id } => Ok(kms.enable_key(c, &key_ref(&key_id)?)?),
        DisableKey { key_id } => Ok(kms.disable_key(c, &key_ref(&key_id)?)?),
        ScheduleKeyDeletion {
            key_id,
            pending_window_days,
        } => {
            let r = kms.schedule_key_deletion(c, &key_ref(&key_id)?, pending_window_days)?;
            cfg.print(&r, "ScheduleKeyDeletion")
        }
        CancelKeyDeletion { key_id } => cfg.print(
            &kms.cancel_key_deletion(c, &key_ref(&key_id)?)?,
            "CancelKeyDeletion",
        ),
        Encrypt {
            key_id,
            plaintext,
            encryption_context: ctx,
            ciphertext_out,
            grant_tokens,
            dry_run,
        } => {
            let c = &c.with_grant_tokens(grant_tokens);
            let r = key_ref(&key_id)?;
            let plaintext = binary_value("--plaintext", &plaintext)?;
            let ctx = encryption_context("--encryption-context", ctx.as_deref())?;
            if dry_run {
                return Err(kms.encrypt_dry_run(c, &r, plaintext.expose(), &ctx).into());
            }
            let res = kms.encrypt(c, &r, plaintext.expose(), &ctx)?;
            if let Some(p) = ciphertext_out {
                write_out(&p, &res.ciphertext_blob)?;
            }
            cfg.print(&res, "Encrypt")
        }
        Decrypt {
            ciphertext_blob,
            encryption_context: ctx,
            key_id,
            plaintext_out,
            grant_tokens,
            dry_run,
        } => {
            let c = &c.with_grant_tokens(grant_tokens);
            let blob = binary_value("--ciphertext-blob", &ciphertext_blob)?;
            let ctx = encryption_context("--encryption-context", ctx.as_deref())?;
            let expected = key_id.as_deref().map(key_ref).transpose()?;
            if dry_run {
                return Err(kms
                    .decrypt_dry_run(c, blob.expose(), &ctx, expected.as_ref())
                    .into());
            }
            let res = kms.decrypt(c, blob.expose(), &ctx, expected.as_ref())?;
            match plaintext_out {
                Some(p) => {
                    write_out(&p, res.plaintext.expose())?;
                    print_without_plaintext(cfg, &res, "Decrypt")
                }
                None => cfg.print(&res, "Decrypt"),
            }
        }
        ReEncrypt {
            ciphertext_blob,
            destination_key_id,
            source_encryption_context,
            destination_encryption_context,
            source_key_id,
            ciphertext_out,
            grant_tokens,
            dry_run,
        } => {
            let c = &c.with_grant_tokens(grant_tokens);
            let blob = binary_value("--ciphertext-blob", &ciphertext_blob)?;
            let src_ctx = encryption_context(
                "--source-encryption-context",
                source_encryption_context.as_deref(),
            )?;
            let dst_ctx = encryption_context(
                "--destination-encryption-context",
                destination_encryption_context.as_deref(),
            )?;
            let src_key = source_key_id.as_deref().map(key_ref).transpose()?;
            let dst = key_ref(&destination_key_id)?;
            if dry_run {
                return Err(kms
                    .re_encrypt_dry_run(
                        c,
                        blob.expose(),
                        &src_ctx,
                        src_key.as_ref(),
                        &dst,
                        &dst_ctx,
                    )
                    .into());
            }
            let res =
                kms.re_encrypt(c, blob.expose(), &src_ctx, src_key.as_ref(), &dst, &dst_ctx)?;
            if let Some(p) = ciphertext_out {
                write_out(&p, &res.ciphertext_blob)?;
            }
            cfg.print(&res, "ReEncrypt")
        }
        GenerateDataKey {
            spec,
            plaintext_out,
        } => {
            let c = &c.with_grant_tokens(spec.grant_tokens.clone());
            let r = key_ref(&spec.key_id)?;
            let ctx =
                encryption_context("--encryption-context", spec.encryption_context.as_deref())?;
            if spec.dry_run {
                return Err(kms
                    .generate_data_key_dry_run(c, &r, spec.spec()?, &ctx, true)
                    .into());
            }
            let res = kms.generate_data_key(c, &r, spec.spec()?, &ctx)?;
            if let Some(p) = &spec.ciphertext_out {
                write_out(p, &res.ciphertext_blob)?;
            }
            match plaintext_out {
                Some(p) => {
                    write_out(&p, res.plaintext.expose())?;
                    print_without_plaintext(cfg, &res, "GenerateDataKey")
                }
                None => cfg.print(&res, "GenerateDataKey"),
            }
        }
        GenerateDataKeyWithoutPlaintext { spec } => {
            let c = &c.with_grant_tokens(spec.grant_tokens.clone());
            let r = key_ref(&spec.key_id)?;
            let ctx =
                encryption_context("--encryption-context", spec.encryption_context.as_deref())?;
            if spec.dry_run {
                return Err(kms
                    .generate_data_key_dry_run(c, &r, spec.spec()?, &ctx, false)
                    .into());
            }
            let res = kms.generate_data_key_without_plaintext(c, &r, spec.spec()?, &ctx)?;
            if let Some(p) = &spec.ciphertext_out {
                write_out(p, &res.ciphertext_blob)?;
            }
            cfg.print(&res, "GenerateDataKeyWithoutPlaintext")
        }
        EnableKeyRotation {
            key_id,
            rotation_period_in_days,
        } => Ok(kms.enable_key_rotation(c, &key_ref(&key_id)?, rotation_period_in_days)?),
        DisableKeyRotation { key_id } => Ok(kms.disable_key_rotation(c, &key_ref(&key_id)?)?),
        GetKeyRotationStatus { key_id } => cfg.print(
            &kms.get_key_rotation_status(c, &key_ref(&key_id)?)?,
            "GetKeyRotationStatus",
        ),
        RotateKeyOnDemand { key_id } => cfg.print(
            &kms.rotate_key_on_demand(c, &key_ref(&key_id)?)?,
            "RotateKeyOnDemand",
        ),
        ListKeyRotations {
            key_id,
            include_key_material,
            page,
        } => {
            let r = key_ref(&key_id)?;
            let all = include_key_material.as_deref() == Some("ALL_KEY_MATERIAL");
            let v = page.run("Rotations", |p| kms.list_key_rotations_page(c, &r, all, p))?;
            cfg.print(&v, "ListKeyRotations")
        }
        CreateAlias {
            alias_name,
            target_key_id,
        } => Ok(kms.create_alias(c, &alias_name, &key_ref(&target_key_id)?)?),
        UpdateAlias {
            alias_name,
            target_key_id,
        } => Ok(kms.update_alias(c, &alias_name, &key_ref(&target_key_id)?)?),
        DeleteAlias { alias_name } => Ok(kms.delete_alias(c, &alias_name)?),
        ListAliases { key_id, page } => {
            let r = key_id.as_deref().map(key_ref).transpose()?;
            let v = page.run("Aliases", |p| kms.list_aliases_page(c, r.as_ref(), p))?;
            cfg.print(&v, "ListAliases")
        }
        CreateGrant(a) => super::grant_cmd::create(cfg, &kms, c, a),
        ListGrants(a) => super::grant_cmd::list(cfg, &kms, c, a),
        ListRetirableGrants(a) => super::grant_cmd::list_retirable(cfg, &kms, c, a),
        RetireGrant(a) => super::grant_cmd::retire(&kms, c, a),
        RevokeGrant(a) => super::grant_cmd::revoke(&kms, c, a),
        GenerateRandom {
            number_of_bytes,
            custom_key_store_id,
        } => {
            let bytes = kms.generate_random(
                c,
                &crate::kms::embedded::GenerateRandomRequest {
                    number_of_bytes,
                    custom_key_store_id,
                    recipient: false,
                },
            )?;
            let text = zeroize::Zeroizing::new(crate::aws::b64::encode(bytes.expose()));
            cfg.print(
                &serde_json::json!({ "Plaintext": text.as_str() }),
                "GenerateRandom",
            )
        }
        UpdateKeyDescription {
            key_id,
            description,
        } => Ok(kms.update_key_description(c, &key_ref(&key_id)?, &description)?),
    }
}
