//! Grant tokens: what CreateGrant hands out and RetireGrant and other calls' `GrantTokens`
//! present. A token names its key and grant and is authenticated (keyed BLAKE3 under a key
//! derived from the region root key), so a token this region did not issue is refused.

use super::{MAX_GRANT_TOKEN_LEN, MAX_GRANT_TOKENS};
use crate::aws::error::{AwsError, Result};
use crate::crypto::kdf;
use crate::kms::embedded::EmbeddedKms;
use crate::kms::ids::KeyId;

const TOKEN_MAGIC: &[u8; 4] = b"cvg1";
const TOKEN_MAC_LEN: usize = 16;
const TOKEN_LEN: usize = 4 + 16 + 32 + 16 + TOKEN_MAC_LEN;

impl EmbeddedKms {
    fn grant_token_key(&self) -> crate::crypto::Key256 {
        kdf::derive(
            kdf::CTX_GRANT_TOKEN,
            &self.derivation,
            self.dir.region.as_str().as_bytes(),
        )
    }

    /// A new token for grant `grant_id` of key `key`: every call makes a different one,
    /// and all of a grant's tokens are interchangeable, as in AWS.
    pub(super) fn grant_token(&self, key: &KeyId, grant_id: &str) -> String {
        let mut b = Vec::with_capacity(TOKEN_LEN);
        b.extend_from_slice(TOKEN_MAGIC);
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(&hex::decode(grant_id).expect("grant ids are hex"));
        b.extend_from_slice(&crate::crypto::random::array::<16>());
        let mac = blake3::keyed_hash(self.grant_token_key().expose(), &b);
        b.extend_from_slice(&mac.as_bytes()[..TOKEN_MAC_LEN]);
        crate::aws::b64::encode(&b)
    }

    /// The key and grant a token names, if this region issued it.
    pub(super) fn open_grant_token(&self, token: &str) -> Result<(KeyId, String)> {
        let bad = || AwsError::InvalidGrantToken {
            message: format!(
                "the grant token ({} characters) is not one this KMS issued in region {}: use a GrantToken that CreateGrant returned",
                token.len(),
                self.dir.region
            ),
        };
        let b = crate::aws::b64::decode(token).map_err(|_| bad())?;
        if b.len() != TOKEN_LEN || &b[..4] != TOKEN_MAGIC {
            return Err(bad());
        }
        let (body, mac) = b.split_at(TOKEN_LEN - TOKEN_MAC_LEN);
        let want = blake3::keyed_hash(self.grant_token_key().expose(), body);
        // Compared in constant time: a token's validity must not leak byte by byte.
        let diff = mac
            .iter()
            .zip(&want.as_bytes()[..TOKEN_MAC_LEN])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(bad());
        }
        let key = KeyId::from_bytes(body[4..20].try_into().expect("16 bytes"));
        Ok((key, hex::encode(&body[20..52])))
    }

    /// Checks a request's `GrantTokens`: at most 10, each 1..8192 characters and issued
    /// by this region.
    pub(in crate::kms::embedded) fn check_grant_tokens(&self, tokens: &[String]) -> Result<()> {
        if tokens.len() > MAX_GRANT_TOKENS {
            return Err(AwsError::validation(
                "GrantTokens",
                format!(
                    "{} tokens; a request takes at most {MAX_GRANT_TOKENS}",
                    tokens.len()
                ),
            ));
        }
        for t in tokens {
            if t.is_empty() || t.len() > MAX_GRANT_TOKEN_LEN {
                return Err(AwsError::validation(
                    "GrantTokens",
                    format!(
                        "a token of {} characters is outside 1..{MAX_GRANT_TOKEN_LEN}",
                        t.len()
                    ),
                ));
            }
            self.open_grant_token(t)?;
        }
        Ok(())
    }
}
