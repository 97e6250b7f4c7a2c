//! Access keys → identities, for SigV4: read from `iam.json` once and again only when the
//! file changes (an fstat per request of the file last read, `sys::watch`), so that a new or deleted key takes effect at once
//! without a JSON parse and an unseal on every request.
//!
//! Temporary access keys (`ASIA…`, from `cryptvol sts` or the server's STS) are not in
//! the file: their session token is opened with keys derived from `iam.key`, and the
//! identities it names are checked against the current file on every request, so that
//! deleting a user, role or access key revokes the sessions descending from it at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

use crate::aws::AwsError;
use crate::aws::sigv4::{self, AuthError, RequestParts, Rules, Verified};
use crate::iam::sessions::{SESSION_KEY_PREFIX, SessionKeys, TokenRefusal};
use crate::iam::{Identity, IdentityBody, IdentityStore};
use crate::sys::watch::Watched;

type Keys = HashMap<String, (Arc<Identity>, Zeroizing<String>)>;

/// One reading of iam.json: its access keys and the body sessions are checked against.
struct Snapshot {
    keys: Keys,
    body: IdentityBody,
}

/// A request whose signature verified, and who signed it.
pub struct Authenticated {
    pub verified: Verified,
    pub identity: Arc<Identity>,
    /// The quota the request counts against: its access key's, or for temporary
    /// credentials the long-term key they were issued through (so that minting sessions
    /// does not mint quota).
    pub rate_key: String,
}

pub struct IdentityCache {
    store: IdentityStore,
    path: PathBuf,
    /// The file the snapshot was read from (to notice a change), and the snapshot.
    state: RwLock<(Option<Watched>, Arc<Snapshot>)>,
    sessions: RwLock<Option<Arc<SessionKeys>>>,
}

impl IdentityCache {
    pub fn new(store: IdentityStore) -> IdentityCache {
        IdentityCache {
            path: store.path(),
            store,
            state: RwLock::new((
                None,
                Arc::new(Snapshot {
                    keys: HashMap::new(),
                    body: IdentityBody::default(),
                }),
            )),
            sessions: RwLock::new(None),
        }
    }

    pub fn store(&self) -> &IdentityStore {
        &self.store
    }

    /// The current snapshot (reloaded if iam.json changed).
    fn snapshot(&self) -> Result<Arc<Snapshot>, AwsError> {
        if let Ok(st) = self.state.read()
            && st.0.as_ref().is_some_and(Watched::unchanged)
        {
            return Ok(st.1.clone());
        }
        // Opened before it is read: a write in between is seen at the next request.
        let now = Watched::open(&self.path);
        let body = self.store.load()?;
        let keys: Keys = self
            .store
            .access_keys(&body)?
            .into_iter()
            .map(|(id, identity, secret)| (id, (Arc::new(identity), secret)))
            .collect();
        let snap = Arc::new(Snapshot { keys, body });
        if let Ok(mut st) = self.state.write() {
            *st = (now, snap.clone());
        }
        Ok(snap)
    }

    /// The keys of session tokens, derived once (iam.key does not change under a server).
    fn session_keys(&self) -> Result<Arc<SessionKeys>, AwsError> {
        if let Ok(k) = self.sessions.read()
            && let Some(k) = k.as_ref()
        {
            return Ok(k.clone());
        }
        let k = Arc::new(self.store.session_keys()?);
        if let Ok(mut slot) = self.sessions.write() {
            *slot = Some(k.clone());
        }
        Ok(k)
    }

    /// Verifies a request's signature under `rules` with long-term or temporary
    /// credentials. `Err(Ok(..))` is a refusal for the client (KMS's error codes);
    /// `Err(Err(..))` a failure of the server (iam.json unreadable).
    pub fn authenticate(
        &self,
        parts: &RequestParts,
        now: i64,
        rules: &Rules,
    ) -> Result<Authenticated, Result<AuthError, AwsError>> {
        let snap = self.snapshot().map_err(Err)?;
        let mut session: Option<(Arc<Identity>, String)> = None;
        let mut failure: Option<AwsError> = None;
        let verified = sigv4::verify_session(parts, now, rules, &mut |id, token| {
            let invalid = || AuthError::new(sigv4::UNRECOGNIZED_CLIENT, sigv4::INVALID_TOKEN);
            if !id.starts_with(SESSION_KEY_PREFIX) {
                // A long-term key signs without a token, as AWS demands.
                return match (token, snap.keys.get(id)) {
                    (None, Some((_, secret))) => Ok(secret.clone()),
                    _ => Err(invalid()),
                };
            }
            let Some(token) = token else {
                return Err(invalid());
            };
            let keys = match self.session_keys() {
                Ok(k) => k,
                Err(e) => {
                    failure = Some(e);
                    return Err(invalid());
                }
            };
            let claims = keys.open(token).filter(|c| c.access_key_id == id);
            let Some(claims) = claims else {
                return Err(invalid());
            };
            match self.store.session_identity(&snap.body, &claims, now) {
                Ok(identity) => {
                    // Sessions issued through no key share their origin's quota.
                    let o = &claims.origin;
                    let rate_key = o.access_key_id.clone().unwrap_or_else(|| o.id.clone());
                    session = Some((Arc::new(identity), rate_key));
                    Ok(keys.secret_of(id))
                }
                Err(TokenRefusal::Expired) => Err(AuthError::new(
                    sigv4::EXPIRED_TOKEN,
                    sigv4::EXPIRED_TOKEN_MESSAGE,
                )),
                Err(TokenRefusal::Invalid) => Err(invalid()),
            }
        });
        if let Some(e) = failure {
            return Err(Err(e));
        }
        let verified = verified.map_err(Ok)?;
        let (identity, rate_key) = match session {
            Some(s) => s,
            None => match snap.keys.get(&verified.access_key_id) {
                Some((identity, _)) => (identity.clone(), verified.access_key_id.clone()),
                None => {
                    return Err(Ok(AuthError::new(
                        sigv4::UNRECOGNIZED_CLIENT,
                        sigv4::INVALID_TOKEN,
                    )));
                }
            },
        };
        Ok(Authenticated {
            verified,
            identity,
            rate_key,
        })
    }
}
