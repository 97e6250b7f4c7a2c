//! `cryptvol kms` cryptographic commands: encrypt, decrypt, re-encrypt, generate-data-key,
//! generate-data-key-without-plaintext and generate-random. Plaintext given to a file
//! (`--plaintext-out`) is written mode 0600 and left out of what is printed.

use std::path::{Path, PathBuf};

use clap::builder::{PossibleValuesParser, TypedValueParser};

use crate::cli::Config;
use crate::cli::args::{binary_value, encryption_context, key_ref};
use crate::cli::exit::CliError;
use crate::iam::caller::Caller;
use crate::kms::DataKeySpec;
use crate::kms::embedded::EmbeddedKms;
use crate::sys::fsio;

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

#[derive(Debug, clap::Args)]
pub struct EncryptArgs {
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
}

pub fn encrypt(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: EncryptArgs,
) -> Result<(), CliError> {
    let EncryptArgs {
        key_id,
        plaintext,
        encryption_context: ctx,
        ciphertext_out,
        grant_tokens,
        dry_run,
    } = a;
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

#[derive(Debug, clap::Args)]
pub struct DecryptArgs {
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
}

pub fn decrypt(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: DecryptArgs,
) -> Result<(), CliError> {
    let DecryptArgs {
        ciphertext_blob,
        encryption_context: ctx,
        key_id,
        plaintext_out,
        grant_tokens,
        dry_run,
    } = a;
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

#[derive(Debug, clap::Args)]
pub struct ReEncryptArgs {
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
}

pub fn re_encrypt(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: ReEncryptArgs,
) -> Result<(), CliError> {
    let ReEncryptArgs {
        ciphertext_blob,
        destination_key_id,
        source_encryption_context,
        destination_encryption_context,
        source_key_id,
        ciphertext_out,
        grant_tokens,
        dry_run,
    } = a;
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
            .re_encrypt_dry_run(c, blob.expose(), &src_ctx, src_key.as_ref(), &dst, &dst_ctx)
            .into());
    }
    let res = kms.re_encrypt(c, blob.expose(), &src_ctx, src_key.as_ref(), &dst, &dst_ctx)?;
    if let Some(p) = ciphertext_out {
        write_out(&p, &res.ciphertext_blob)?;
    }
    cfg.print(&res, "ReEncrypt")
}

#[derive(Debug, clap::Args)]
pub struct GenerateDataKeyArgs {
    #[command(flatten)]
    spec: DataKeyArgs,
    /// Write the plaintext data key to this file (mode 0600) instead of printing it
    #[arg(long, value_name = "FILE")]
    plaintext_out: Option<PathBuf>,
}

pub fn generate_data_key(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: GenerateDataKeyArgs,
) -> Result<(), CliError> {
    let GenerateDataKeyArgs {
        spec,
        plaintext_out,
    } = a;
    let c = &c.with_grant_tokens(spec.grant_tokens.clone());
    let r = key_ref(&spec.key_id)?;
    let ctx = encryption_context("--encryption-context", spec.encryption_context.as_deref())?;
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

#[derive(Debug, clap::Args)]
pub struct GenerateDataKeyWithoutPlaintextArgs {
    #[command(flatten)]
    spec: DataKeyArgs,
}

pub fn generate_data_key_without_plaintext(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: GenerateDataKeyWithoutPlaintextArgs,
) -> Result<(), CliError> {
    let GenerateDataKeyWithoutPlaintextArgs { spec } = a;
    let c = &c.with_grant_tokens(spec.grant_tokens.clone());
    let r = key_ref(&spec.key_id)?;
    let ctx = encryption_context("--encryption-context", spec.encryption_context.as_deref())?;
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

#[derive(Debug, clap::Args)]
pub struct GenerateRandomArgs {
    #[arg(long, value_name = "N")]
    number_of_bytes: Option<i64>,
    /// Random bytes from this connected custom key store's token
    #[arg(long)]
    custom_key_store_id: Option<String>,
}

pub fn generate_random(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: GenerateRandomArgs,
) -> Result<(), CliError> {
    let GenerateRandomArgs {
        number_of_bytes,
        custom_key_store_id,
    } = a;
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
