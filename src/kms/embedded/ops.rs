//! GenerateRandom and UpdateKeyDescription.

use super::{EmbeddedKms, checks};
use crate::aws::error::{AwsError, Result};
use crate::crypto::SecretBytes;
use crate::iam::caller::Caller;
use crate::kms::event::Call;
use crate::kms::ids::KeyRef;
use crate::kms::model::KeyState;

/// NumberOfBytesType: 1..=1024.
pub const MAX_RANDOM_BYTES: i64 = 1024;

/// GenerateRandom's inputs as the API has them; cryptvol serves only the first.
#[derive(Debug, Clone, Default)]
pub struct GenerateRandomRequest {
    pub number_of_bytes: Option<i64>,
    pub custom_key_store_id: Option<String>,
    /// `Recipient` (a Nitro enclave's attestation document) was given.
    pub recipient: bool,
}

fn check_random(req: &GenerateRandomRequest) -> Result<usize> {
    let Some(n) = req.number_of_bytes else {
        return Err(AwsError::InvalidInput {
            message: "NumberOfBytes is required.".into(),
        });
    };
    let bound = if n < 1 {
        "greater than or equal to 1"
    } else if n > MAX_RANDOM_BYTES {
        "less than or equal to 1024"
    } else {
        return Ok(n as usize);
    };
    Err(AwsError::InvalidInput {
        message: format!(
            "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value {bound}"
        ),
    })
}

impl EmbeddedKms {
    /// GenerateRandom: `NumberOfBytes` random bytes from the system's CSPRNG, or from the
    /// token of the custom key store named (which must be connected). No key is involved,
    /// so only identity policies can allow it (kms:GenerateRandom).
    pub fn generate_random(
        &self,
        caller: &Caller,
        req: &GenerateRandomRequest,
    ) -> Result<SecretBytes> {
        let mut call = Call::new("GenerateRandom", true);
        if let Some(n) = req.number_of_bytes {
            call = call.param("numberOfBytes", n);
        }
        if let Some(id) = &req.custom_key_store_id {
            call = call.param("customKeyStoreId", id.as_str());
        }
        let out = self
            .authorize(caller, "kms:GenerateRandom", None, None, &[])
            .and_then(|()| {
                let n = check_random(req)?;
                if req.recipient {
                    return Err(AwsError::Unsupported {
                        message: "Recipient (a Nitro enclave attestation) is not offered: cryptvol runs no enclaves; leave it out to get the plaintext".into(),
                    });
                }
                match &req.custom_key_store_id {
                    Some(id) => self.store_random(id, n),
                    None => Ok(SecretBytes::random(n)),
                }
            });
        self.finish(caller, call, out)
    }

    /// UpdateKeyDescription: on an enabled or disabled customer managed key.
    pub fn update_key_description(
        &self,
        caller: &Caller,
        r: &KeyRef,
        description: &str,
    ) -> Result<()> {
        let call = Call::new("UpdateKeyDescription", false)
            .param("keyId", r.to_string())
            .param("description", description);
        let valid = checks::check_description(description);
        self.change_key(caller, call, r, "kms:UpdateKeyDescription", |k, _, _| {
            valid?;
            self.refuse_managed(k, "given a new description")?;
            if k.state == KeyState::PendingDeletion {
                return Err(self.pending_state_error(k, "UpdateKeyDescription"));
            }
            k.description = description.to_string();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_of_bytes_as_aws_checks_it() {
        let req = |n| GenerateRandomRequest {
            number_of_bytes: n,
            ..Default::default()
        };
        assert_eq!(check_random(&req(Some(1))).unwrap(), 1);
        assert_eq!(check_random(&req(Some(1024))).unwrap(), 1024);
        for (n, end) in [
            (Some(0), "greater than or equal to 1"),
            (Some(1025), "less than or equal to 1024"),
            (None, "NumberOfBytes is required."),
        ] {
            let e = check_random(&req(n)).unwrap_err();
            assert_eq!(e.aws_code(), "ValidationException");
            assert!(e.to_string().ends_with(end), "{e}");
        }
    }
}
