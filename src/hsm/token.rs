//! A logged-in PKCS#11 token and the few operations cryptvol asks of it: generate an
//! AES-256 key that never leaves the token, AES-GCM with it, destroy it, random bytes.
//!
//! Sessions are pooled (PKCS#11 sessions are single-threaded; each caller takes one from
//! the pool and gives it back). Login is per token per process in PKCS#11, so the first
//! connect logs in and later ones on the same token must present the same PIN: the process
//! remembers a keyed hash of the PIN each token was logged in with.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use secrecy::ExposeSecret;

use super::HsmError;
use super::slots::find_slot_retrying;
use super::spec::{KeyUse, ObjectRef, TokenSpec};
use crate::crypto::{NONCE_LEN, SecretBytes, TAG_LEN};

/// Sessions kept open per token; more callers than this open and close their own.
pub(super) const POOL_MAX: usize = 16;

/// A token this process is logged in to.
pub struct Token {
    ctx: std::sync::Arc<Pkcs11>,
    pub(super) slot: Slot,
    spec: TokenSpec,
    pub(super) sessions: Mutex<Vec<Session>>,
    handles: Mutex<HashMap<ObjectRef, ObjectHandle>>,
    /// Whether this `Token` still counts among the users of the process's login.
    logged_in: std::sync::atomic::AtomicBool,
}

impl Drop for Token {
    fn drop(&mut self) {
        self.logout();
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("spec", &self.spec).finish()
    }
}

#[cfg(test)]
thread_local! {
    /// C_Login calls made by this thread (tests count the PIN tries a FAILED store makes).
    pub static LOGIN_ATTEMPTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// (module, slot) → keyed hash of the PIN the process logged in with, and how many
/// `Token`s use that login. PKCS#11 login is per token per process, so one `Token`'s
/// logout would log out every other user of the token in the process (another region's
/// store on the same token under `kms serve`, a second `EmbeddedKms` of the region):
/// `C_Logout` runs only when the last of them logs out.
type Logins = Mutex<HashMap<(PathBuf, u64), ([u8; 32], usize)>>;

fn logins() -> &'static Logins {
    static LOGINS: OnceLock<Logins> = OnceLock::new();
    LOGINS.get_or_init(Default::default)
}

fn pin_hash(pin: &AuthPin) -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(crate::crypto::random::array::<32>);
    *blake3::keyed_hash(key, pin.expose_secret().as_bytes()).as_bytes()
}

impl Token {
    /// Loads the module (if allowed), finds the token and logs the crypto user in.
    pub fn connect(spec: &TokenSpec, pin: &AuthPin) -> Result<Token, HsmError> {
        let (ctx, slot) = find_slot_retrying(spec)?;
        let name = spec.to_string();
        let device = |operation: &'static str, e: CkError| HsmError::Device {
            token: name.clone(),
            operation,
            why: e.to_string(),
        };
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| device("C_GetTokenInfo", e))?;
        if info.user_pin_locked() {
            return Err(HsmError::PinLocked { token: name });
        }
        if !info.user_pin_initialized() {
            return Err(HsmError::UserNotInitialized { token: name });
        }
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| device("C_OpenSession", e))?;
        let key = (spec.module.clone(), slot.id());
        let hash = pin_hash(pin);
        let mut logins = logins().lock().unwrap_or_else(|p| p.into_inner());
        #[cfg(test)]
        LOGIN_ATTEMPTS.with(|n| n.set(n.get() + 1));
        match session.login(UserType::User, Some(pin)) {
            Ok(()) => {
                logins.insert(key, (hash, 1));
            }
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => match logins.get_mut(&key) {
                Some((h, users)) if *h == hash => *users += 1,
                _ => return Err(HsmError::LoggedInWithAnotherPin { token: name }),
            },
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                return Err(HsmError::PinIncorrect { token: name });
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(HsmError::PinLocked { token: name });
            }
            Err(CkError::Pkcs11(RvError::UserPinNotInitialized, _)) => {
                return Err(HsmError::UserNotInitialized { token: name });
            }
            Err(e) => return Err(device("C_Login", e)),
        }
        Ok(Token {
            ctx,
            slot,
            spec: spec.clone(),
            sessions: Mutex::new(vec![session]),
            handles: Mutex::new(HashMap::new()),
            logged_in: std::sync::atomic::AtomicBool::new(true),
        })
    }

    pub fn spec(&self) -> &TokenSpec {
        &self.spec
    }

    /// Stops using the process's login to the token; the process logs out (every session
    /// of it on the token) when no other `Token` on the same token uses the login. Once per
    /// `Token`; dropping it does the same.
    pub fn logout(&self) {
        if !self
            .logged_in
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let mut logins = logins().lock().unwrap_or_else(|p| p.into_inner());
        let key = (self.spec.module.clone(), self.slot.id());
        let last = match logins.get_mut(&key) {
            Some((_, users)) if *users > 1 => {
                *users -= 1;
                false
            }
            _ => true,
        };
        if last {
            if let Ok(s) = self.session() {
                let _ = s.logout();
            }
            logins.remove(&key);
        }
    }

    fn name(&self) -> String {
        self.spec.to_string()
    }

    fn device(&self, operation: &'static str, e: CkError) -> HsmError {
        HsmError::Device {
            token: self.name(),
            operation,
            why: e.to_string(),
        }
    }

    fn session(&self) -> Result<Session, HsmError> {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
        {
            return Ok(s);
        }
        self.ctx
            .open_rw_session(self.slot)
            .map_err(|e| self.device("C_OpenSession", e))
    }

    fn give_back(&self, s: Session) {
        let mut pool = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(s);
        }
    }

    /// Runs `f` on a pooled session; a session the token closed is not given back. The
    /// outer error is failing to open a session at all.
    pub(super) fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, CkError>,
    ) -> Result<Result<T, CkError>, HsmError> {
        let s = self.session()?;
        let out = f(&s);
        match &out {
            Err(CkError::Pkcs11(
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn,
                _,
            )) => {}
            _ => self.give_back(s),
        }
        Ok(out)
    }

    fn template_for(object: &ObjectRef) -> Vec<Attribute> {
        let mut t = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
        ];
        t.push(match object {
            ObjectRef::Id(id) => Attribute::Id(id.clone()),
            ObjectRef::Label(l) => Attribute::Label(l.as_bytes().to_vec()),
        });
        t
    }

    /// The handle of `object`, looked up once and then cached.
    pub(super) fn handle(&self, object: &ObjectRef) -> Result<ObjectHandle, HsmError> {
        if let Some(h) = self.cached(object) {
            return Ok(h);
        }
        let found = self
            .with_session(|s| s.find_objects(&Self::template_for(object)))?
            .map_err(|e| self.device("C_FindObjects", e))?;
        match found.as_slice() {
            [] => Err(HsmError::ObjectMissing {
                token: self.name(),
                object: object.to_string(),
            }),
            [h] => {
                self.handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(object.clone(), *h);
                Ok(*h)
            }
            more => Err(HsmError::Device {
                token: self.name(),
                operation: "C_FindObjects",
                why: format!("{} AES keys match {object}; name one by its id", more.len()),
            }),
        }
    }

    fn cached(&self, object: &ObjectRef) -> Option<ObjectHandle> {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(object)
            .copied()
    }

    fn forget(&self, object: &ObjectRef) {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(object);
    }

    /// Runs `op` with the handle of `object`; a handle another process invalidated (the
    /// object destroyed and made again) is looked up once more.
    fn with_object<T>(
        &self,
        object: &ObjectRef,
        operation: &'static str,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        for attempt in 0..2 {
            let h = self.handle(object)?;
            match self.with_session(|s| op(s, h))? {
                Ok(v) => return Ok(v),
                Err(CkError::Pkcs11(
                    RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid,
                    _,
                )) if attempt == 0 => self.forget(object),
                Err(e) => return Err(self.map_op_error(object, operation, e)),
            }
        }
        Err(HsmError::ObjectMissing {
            token: self.name(),
            object: object.to_string(),
        })
    }

    fn map_op_error(&self, object: &ObjectRef, operation: &'static str, e: CkError) -> HsmError {
        match e {
            CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _) => {
                self.forget(object);
                HsmError::ObjectMissing {
                    token: self.name(),
                    object: object.to_string(),
                }
            }
            // A GCM tag that does not verify is CKR_ENCRYPTED_DATA_INVALID in PKCS#11 3.0;
            // SoftHSM 2.6 reports it as CKR_GENERAL_ERROR, so in C_Decrypt that counts as
            // the ciphertext failing too (a token that is really broken fails the next
            // C_Encrypt or login, which marks the store FAILED).
            CkError::Pkcs11(RvError::GeneralError, _) if operation == "C_Decrypt" => {
                HsmError::AuthenticationFailed {
                    token: self.name(),
                    object: object.to_string(),
                }
            }
            CkError::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, _) => {
                HsmError::AuthenticationFailed {
                    token: self.name(),
                    object: object.to_string(),
                }
            }
            e => self.device(operation, e),
        }
    }

    /// Whether `object` exists.
    pub fn exists(&self, object: &ObjectRef) -> Result<bool, HsmError> {
        match self.handle(object) {
            Ok(_) => Ok(true),
            Err(HsmError::ObjectMissing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Generates an AES-256 key inside the token: a token object, private, sensitive and
    /// not extractable, usable only to encrypt and decrypt. `id` must be new.
    pub fn generate_aes256(&self, id: &[u8], label: &str, use_: KeyUse) -> Result<(), HsmError> {
        let object = ObjectRef::Id(id.to_vec());
        if self.exists(&object)? {
            return Err(HsmError::ObjectExists {
                token: self.name(),
                object: object.to_string(),
            });
        }
        let template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let _ = use_;
        let h = self
            .with_session(|s| s.generate_key(&Mechanism::AesKeyGen, &template))?
            .map_err(|e| self.device("C_GenerateKey", e))?;
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(object, h);
        Ok(())
    }

    /// Whether `id` is an AES-256 key that was generated inside the token and never left
    /// it (CKA_LOCAL, CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE), for encryption and
    /// decryption: what [`Token::generate_aes256`] makes. Nobody can know the value of such
    /// a key, so one left by a write that never happened (a crash between generating the
    /// object and writing the keystore) may be taken as the new version it was made for.
    pub fn is_generated_aes256(&self, id: &[u8]) -> Result<bool, HsmError> {
        use cryptoki::object::AttributeType as A;
        let object = ObjectRef::Id(id.to_vec());
        let wanted = [
            A::Local,
            A::AlwaysSensitive,
            A::NeverExtractable,
            A::Sensitive,
            A::Extractable,
            A::Encrypt,
            A::Decrypt,
            A::ValueLen,
        ];
        let attrs = self.with_object(&object, "C_GetAttributeValue", |s, h| {
            s.get_attributes(h, &wanted)
        })?;
        let ok = attrs.iter().all(|a| match a {
            Attribute::Local(b)
            | Attribute::AlwaysSensitive(b)
            | Attribute::NeverExtractable(b)
            | Attribute::Sensitive(b)
            | Attribute::Encrypt(b)
            | Attribute::Decrypt(b) => *b,
            Attribute::Extractable(b) => !*b,
            Attribute::ValueLen(n) => usize::from(*n) == 32,
            _ => false,
        });
        Ok(ok && attrs.len() == wanted.len())
    }

    /// AES-256-GCM inside the token: returns ciphertext followed by the 16-byte tag.
    pub fn encrypt_gcm(
        &self,
        object: &ObjectRef,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        self.with_object(object, "C_Encrypt", |s, h| {
            let mut iv = *nonce;
            let params = GcmParams::new(&mut iv, aad, ((TAG_LEN * 8) as u64).into())?;
            s.encrypt(&Mechanism::AesGcm(params), h, plaintext)
        })
    }

    /// Opens what [`Token::encrypt_gcm`] made; a wrong tag, nonce or AAD is
    /// `AuthenticationFailed`.
    pub fn decrypt_gcm(
        &self,
        object: &ObjectRef,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes, HsmError> {
        if sealed.len() < TAG_LEN {
            return Err(HsmError::AuthenticationFailed {
                token: self.name(),
                object: object.to_string(),
            });
        }
        self.with_object(object, "C_Decrypt", |s, h| {
            let mut iv = *nonce;
            let params = GcmParams::new(&mut iv, aad, ((TAG_LEN * 8) as u64).into())?;
            s.decrypt(&Mechanism::AesGcm(params), h, sealed)
        })
        .map(SecretBytes::new)
    }

    /// Destroys `object` (crypto-shredding inside the token). False if it was not there.
    pub fn destroy(&self, object: &ObjectRef) -> Result<bool, HsmError> {
        let out = self.with_object(object, "C_DestroyObject", |s, h| s.destroy_object(h));
        self.forget(object);
        match out {
            Ok(()) => Ok(true),
            Err(HsmError::ObjectMissing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `len` random bytes from the token's generator.
    pub fn random(&self, len: usize) -> Result<SecretBytes, HsmError> {
        let mut out = SecretBytes::new(vec![0u8; len]);
        self.with_session(|s| s.generate_random_slice(out.expose_mut()))?
            .map_err(|e| self.device("C_GenerateRandom", e))?;
        Ok(out)
    }
}
