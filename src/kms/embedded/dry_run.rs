//! `DryRun` of the operations that take it (Encrypt, Decrypt, ReEncrypt, GenerateDataKey,
//! GenerateDataKeyWithoutPlaintext): the call is authorized and checked exactly as the
//! real one, key state included, and then answers DryRunOperationException instead of a
//! result. A failing check answers its own error. Either way the call is audited, the
//! dry run with errorCode DryRunOperationException, as CloudTrail records it.

use super::EmbeddedKms;
use crate::aws::error::{AwsError, Result};
use crate::iam::caller::Caller;
use crate::kms::backend::DataKeySpec;
use crate::kms::context::EncryptionContext;
use crate::kms::ids::KeyRef;

/// A checked call's outcome under DryRun: its error, or DryRunOperationException.
fn dry<T>(out: Result<T>) -> Result<()> {
    out.and(Err(AwsError::DryRun))
}

/// What a dry run answers once recorded: the error of a check that failed (or of the
/// recording), else DryRunOperationException. Never a success, so that a caller cannot
/// fall through from a dry run into the real call.
pub(super) fn answer(recorded: Result<()>) -> AwsError {
    recorded.err().unwrap_or(AwsError::DryRun)
}

impl EmbeddedKms {
    pub fn encrypt_dry_run(
        &self,
        caller: &Caller,
        r: &KeyRef,
        plaintext: &[u8],
        ctx: &EncryptionContext,
    ) -> AwsError {
        let mut call = Self::encrypt_call(r, ctx).param("dryRun", true);
        let out = dry(self.encrypt_inner(caller, &mut call, r, plaintext, ctx));
        answer(self.finish(caller, call, out))
    }

    pub fn decrypt_dry_run(
        &self,
        caller: &Caller,
        blob_bytes: &[u8],
        ctx: &EncryptionContext,
        key: Option<&KeyRef>,
    ) -> AwsError {
        let mut call = Self::decrypt_call(key, ctx).param("dryRun", true);
        let out = dry(self.read(|ks, _| {
            self.open_blob(ks, caller, &mut call, blob_bytes, ctx, key, "kms:Decrypt")
                .map(|_| ())
        }));
        answer(self.finish(caller, call, out))
    }

    pub fn re_encrypt_dry_run(
        &self,
        caller: &Caller,
        blob_bytes: &[u8],
        source_ctx: &EncryptionContext,
        source_key: Option<&KeyRef>,
        destination: &KeyRef,
        destination_ctx: &EncryptionContext,
    ) -> AwsError {
        let mut call = Self::re_encrypt_call(source_key, source_ctx, destination, destination_ctx)
            .param("dryRun", true);
        let out = dry(self.re_encrypt_inner(
            caller,
            &mut call,
            blob_bytes,
            source_ctx,
            source_key,
            destination,
            destination_ctx,
        ));
        answer(self.finish(caller, call, out))
    }

    /// GenerateDataKey (`with_plaintext`) or GenerateDataKeyWithoutPlaintext.
    pub fn generate_data_key_dry_run(
        &self,
        caller: &Caller,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
        with_plaintext: bool,
    ) -> AwsError {
        let name = if with_plaintext {
            "GenerateDataKey"
        } else {
            "GenerateDataKeyWithoutPlaintext"
        };
        let mut call = Self::data_key_call(name, r, spec, ctx).param("dryRun", true);
        let out = dry(self.data_key(caller, &mut call, r, spec, ctx));
        answer(self.finish(caller, call, out))
    }
}
