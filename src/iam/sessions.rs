//! Temporary credentials, as AWS STS issues them: `GetSessionToken` (a user's own
//! session) and `AssumeRole` (a session of a role, allowed by its trust policy).
//!
//! Nothing is written per session. The session token is self-describing: the session's
//! facts (who, which role session, when it ends, its access key id, and the long-term
//! identity and access key it descends from) sealed with AES-256-GCM under a key derived
//! from the data dir's `iam.key`. Its secret access key is derived from `iam.key` and the
//! access key id, so whoever holds `iam.key` (the server) can check a signature from the
//! token alone; the byte layout is in docs/formats.md.
//!
//! Revocation is by the identities the token names: a session stops working when its
//! user or role, or the user or role it descends from, is deleted (a new one of the same
//! name has another unique id), and when the access key it was issued through is deleted
//! or made inactive. A token cannot be revoked on its own; it expires.

use zeroize::Zeroizing;

use crate::aws::error::{AwsError, Result};
use crate::crypto::{Key256, aead, kdf};
use crate::policy::{self, Policy, PolicyKind};
use crate::sys::clock::UnixTime;

use super::identity::*;
use super::records::*;
use super::store::*;

/// Access key ids of temporary credentials begin so, as AWS's do.
pub const SESSION_KEY_PREFIX: &str = "ASIA";
/// GetSessionToken's limits and default, in seconds (AWS's, for IAM users).
pub const SESSION_TOKEN_SECS: (i64, i64, i64) = (900, 129_600, 43_200);
/// AssumeRole's limits and default (the most a role's MaxSessionDuration allows).
pub const ASSUME_ROLE_SECS: (i64, i64, i64) = (900, 43_200, 3_600);
/// A session assumed by a role session ("role chaining") lives an hour at most.
pub const CHAINED_MAX_SECS: i64 = 3_600;
/// The longest session token accepted (a v1 token is under 700 characters).
pub const MAX_TOKEN_CHARS: usize = 2_048;

const CTX_TOKEN: &str = "cryptvol 2026-12-01 sts session token v1";
const CTX_SECRET: &str = "cryptvol 2026-12-01 sts session secret v1";
const TOKEN_V1: u8 = 1;
const KIND_USER: u8 = 1;
const KIND_ROLE: u8 = 2;

/// The long-term identity a session descends from, and the access key it came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub kind: EntityKind,
    pub name: String,
    pub id: String,
    pub access_key_id: Option<String>,
}

/// What a session token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaims {
    /// `User` for GetSessionToken, `Role` for AssumeRole.
    pub kind: EntityKind,
    pub issued: UnixTime,
    pub expires: UnixTime,
    pub access_key_id: String,
    pub name: String,
    pub id: String,
    /// Empty for a user's session.
    pub role_session_name: String,
    pub origin: Origin,
}

/// The keys derived from `iam.key` for session tokens (the server keeps them).
pub struct SessionKeys {
    token: Key256,
    secret: Key256,
}

impl SessionKeys {
    pub fn from_iam_key(iam_key: &Key256) -> SessionKeys {
        SessionKeys {
            token: kdf::derive(CTX_TOKEN, iam_key, b""),
            secret: kdf::derive(CTX_SECRET, iam_key, b""),
        }
    }

    /// The secret access key of a temporary access key id: 30 derived bytes in base64.
    pub fn secret_of(&self, access_key_id: &str) -> Zeroizing<String> {
        let mut b = Zeroizing::new([0u8; 30]);
        kdf::derive_into(
            CTX_SECRET,
            &[self.secret.expose(), access_key_id.as_bytes()],
            &mut b[..],
        );
        Zeroizing::new(crate::aws::b64::encode(&b[..]))
    }

    fn seal(&self, c: &SessionClaims) -> Result<Zeroizing<String>> {
        let plain = Zeroizing::new(encode_claims(c).ok_or_else(|| {
            AwsError::validation("session", "a name in the session is over 255 bytes")
        })?);
        let mut out = vec![TOKEN_V1];
        out.extend_from_slice(&aead::seal_secret(&self.token, &[TOKEN_V1], &plain));
        Ok(Zeroizing::new(crate::aws::b64::encode(&out)))
    }

    /// The claims of a token this data dir issued; `None` for anything else.
    pub fn open(&self, token: &str) -> Option<SessionClaims> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        let bytes = crate::aws::b64::decode(token).ok()?;
        let (&version, sealed) = bytes.split_first()?;
        if version != TOKEN_V1 {
            return None;
        }
        let plain = aead::open_secret(&self.token, &[TOKEN_V1], sealed).ok()?;
        decode_claims(plain.expose())
    }
}

/// Why temporary credentials were refused (the server answers each its own way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not a token of this data dir, not for this access key, or revoked.
    Invalid,
    Expired,
}

/// New temporary credentials, as STS returns them.
pub struct Issued {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Zeroizing<String>,
    pub expiration: UnixTime,
    /// AssumeRole's `AssumedRoleUser`: (`AssumedRoleId`, `Arn`).
    pub assumed_role_user: Option<(String, String)>,
}

impl Issued {
    /// The AWS CLI's JSON output of `sts get-session-token` / `sts assume-role`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "Credentials": {
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key.as_str(),
            "SessionToken": self.session_token.as_str(),
            "Expiration": iso(self.expiration),
        }});
        if let Some((id, arn)) = &self.assumed_role_user {
            v["AssumedRoleUser"] = serde_json::json!({ "AssumedRoleId": id, "Arn": arn });
        }
        v
    }
}

/// STS's `GetCallerIdentity`: (`UserId`, `Account`, `Arn`).
pub fn caller_identity(who: &Identity) -> (String, String, String) {
    let user_id = match &who.principal {
        Principal::Role { id, .. } => format!("{id}:{}", who.session_name()),
        Principal::User { id, .. } => id.clone(),
        _ => who.account.to_string(),
    };
    (user_id, who.account.to_string(), who.arn())
}

/// A duration flag within `(min, max, default)`.
pub fn check_duration(given: Option<i64>, limits: (i64, i64, i64)) -> Result<i64> {
    let (min, max, default) = limits;
    match given {
        None => Ok(default),
        Some(d) if (min..=max).contains(&d) => Ok(d),
        Some(d) => Err(AwsError::validation(
            "duration-seconds",
            format!("{d} must be from {min} to {max} seconds"),
        )),
    }
}

/// STS's rule for a role session name: 2 to 64 of `[A-Za-z0-9_+=,.@-]`.
pub fn check_session_name(name: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
    if !(2..=64).contains(&name.len()) || !name.chars().all(ok) {
        return Err(AwsError::validation(
            "role-session-name",
            format!(
                "'{}' must be 2 to 64 characters of letters, digits and _+=,.@-",
                name.escape_debug()
            ),
        ));
    }
    Ok(())
}

impl IdentityStore {
    pub fn session_keys(&self) -> Result<SessionKeys> {
        Ok(SessionKeys::from_iam_key(&self.iam_key()?))
    }

    /// `GetSessionToken` for `caller` (a user), who signed with `access_key_id` (the server)
    /// or acts locally (None).
    pub fn get_session_token(
        &self,
        caller: &Identity,
        access_key_id: Option<&str>,
        duration: Option<i64>,
        now: UnixTime,
    ) -> Result<Issued> {
        let duration = check_duration(duration, SESSION_TOKEN_SECS)?;
        if caller.session.is_some() {
            return Err(AwsError::AccessDenied {
                message: "Cannot call GetSessionToken with session credentials".into(),
            });
        }
        let Principal::User { name, id } = &caller.principal else {
            return Err(AwsError::AccessDenied {
                message: format!(
                    "{} cannot call GetSessionToken: only an IAM user can (use --profile USER)",
                    caller.arn()
                ),
            });
        };
        let origin = Origin {
            kind: EntityKind::User,
            name: name.clone(),
            id: id.clone(),
            access_key_id: access_key_id.map(str::to_string),
        };
        let claims = SessionClaims {
            kind: EntityKind::User,
            issued: now,
            expires: now + duration,
            access_key_id: new_access_key_id(),
            name: name.clone(),
            id: id.clone(),
            role_session_name: String::new(),
            origin,
        };
        self.issue(claims, None)
    }

    /// `AssumeRole`: the role's trust policy, and the caller's identity policies when the
    /// trust policy names only the account, must allow `sts:AssumeRole` (as AWS decides).
    pub fn assume_role(
        &self,
        caller: &Identity,
        access_key_id: Option<&str>,
        role_arn: &str,
        session_name: &str,
        duration: Option<i64>,
        now: UnixTime,
    ) -> Result<Issued> {
        let role = self.role_name_of(role_arn)?;
        check_session_name(session_name)?;
        let duration = check_duration(duration, ASSUME_ROLE_SECS)?;
        let chained = matches!(caller.principal, Principal::Role { .. });
        if chained && duration > CHAINED_MAX_SECS {
            return Err(AwsError::validation(
                "duration-seconds",
                format!(
                    "{duration} exceeds the 1 hour session limit for roles assumed by role chaining"
                ),
            ));
        }
        // A chained session descends from what its parent session descends from.
        let parent = caller.session.as_ref().and_then(|s| s.origin.clone());
        let origin = match (&caller.principal, parent) {
            (Principal::Root, _) | (Principal::Service { .. }, _) => {
                return Err(AwsError::AccessDenied {
                    message: "Roles may not be assumed by root accounts.".into(),
                });
            }
            (_, Some(o)) => o,
            (Principal::User { name, id }, None) => Origin {
                kind: EntityKind::User,
                name: name.clone(),
                id: id.clone(),
                access_key_id: access_key_id.map(str::to_string),
            },
            (Principal::Role { name, id }, None) => Origin {
                kind: EntityKind::Role,
                name: name.clone(),
                id: id.clone(),
                access_key_id: None,
            },
        };
        let body = self.load()?;
        let record = body
            .roles
            .get(&role)
            .ok_or_else(|| no_such(EntityKind::Role, &role))?;
        let arn = super::identity::role_arn(&self.account, &role);
        self.trusts(record, &role, caller, &arn)?;
        let claims = SessionClaims {
            kind: EntityKind::Role,
            issued: now,
            expires: now + duration,
            access_key_id: new_access_key_id(),
            name: role.clone(),
            id: record.id.clone(),
            role_session_name: session_name.to_string(),
            origin,
        };
        let user = (
            format!("{}:{session_name}", record.id),
            format!(
                "arn:aws:sts::{}:assumed-role/{role}/{session_name}",
                self.account
            ),
        );
        self.issue(claims, Some(user))
    }

    fn issue(&self, claims: SessionClaims, user: Option<(String, String)>) -> Result<Issued> {
        let keys = self.session_keys()?;
        Ok(Issued {
            secret_access_key: keys.secret_of(&claims.access_key_id),
            session_token: keys.seal(&claims)?,
            access_key_id: claims.access_key_id,
            expiration: claims.expires,
            assumed_role_user: user,
        })
    }

    /// Whether the trust policy of `role` lets `caller` assume it.
    fn trusts(&self, r: &RoleRecord, role: &str, caller: &Identity, arn: &str) -> Result<()> {
        let denied = || AwsError::AccessDenied {
            message: format!(
                "User: {} is not authorized to perform: sts:AssumeRole on resource: {arn}",
                caller.arn()
            ),
        };
        // A role made without a trust policy trusts no one, as an empty one would.
        let Some(text) = &r.assume_role_policy else {
            return Err(denied());
        };
        let trust = Policy::parse(text, PolicyKind::Trust).map_err(|e| AwsError::Corrupt {
            path: self.path(),
            what: format!("the trust policy of role {role}: {e}"),
        })?;
        let who = caller.policy_caller();
        let mut c = policy::ConditionValues::new();
        c.set("aws:PrincipalArn", caller.principal_arn());
        c.set("aws:PrincipalAccount", caller.account.as_str());
        c.set("aws:PrincipalType", caller.principal_type());
        let d = policy::evaluate(
            Some(&trust),
            &caller.policies,
            &policy::AccessRequest {
                caller: &who,
                action: "sts:AssumeRole",
                resource: arn,
                conditions: &c,
            },
        );
        if d.is_allowed() {
            Ok(())
        } else {
            Err(denied())
        }
    }

    /// The role a role ARN of this account names.
    fn role_name_of(&self, arn: &str) -> Result<String> {
        let bad = |why: &str| AwsError::InvalidArn {
            arn: arn.escape_debug().to_string(),
            why: why.to_string(),
        };
        let rest = arn
            .strip_prefix("arn:aws:iam::")
            .ok_or_else(|| bad("a role ARN is arn:aws:iam::ACCOUNT:role/NAME"))?;
        let (account, resource) = rest
            .split_once(':')
            .ok_or_else(|| bad("a role ARN is arn:aws:iam::ACCOUNT:role/NAME"))?;
        let path = resource
            .strip_prefix("role/")
            .ok_or_else(|| bad("it names no role (arn:aws:iam::ACCOUNT:role/NAME)"))?;
        let name = path.rsplit('/').next().unwrap_or("");
        check_name("role-arn", name, 64)?;
        if account != self.account.as_str() {
            return Err(AwsError::NoSuchEntity {
                what: format!("role {name} of account {}", account.escape_debug()),
                hint: format!(": this data dir is account {}", self.account),
            });
        }
        Ok(name.to_string())
    }

    /// The identity a verified token stands for, if its identities still stand and it has
    /// not expired at `now`. `body` is the current iam.json.
    pub fn session_identity(
        &self,
        body: &IdentityBody,
        claims: &SessionClaims,
        now: UnixTime,
    ) -> std::result::Result<Identity, TokenRefusal> {
        let id_of = |kind: EntityKind, name: &str| match kind {
            EntityKind::User => body.users.get(name).map(|u| u.id.as_str()),
            EntityKind::Role => body.roles.get(name).map(|r| r.id.as_str()),
        };
        let o = &claims.origin;
        let key_active = match (&o.access_key_id, o.kind) {
            (None, _) => true,
            (Some(k), EntityKind::User) => body
                .users
                .get(&o.name)
                .and_then(|u| u.access_keys.get(k))
                .is_some_and(|k| k.status == "Active"),
            (Some(_), EntityKind::Role) => false,
        };
        if id_of(claims.kind, &claims.name) != Some(claims.id.as_str())
            || id_of(o.kind, &o.name) != Some(o.id.as_str())
            || !key_active
        {
            return Err(TokenRefusal::Invalid);
        }
        if now >= claims.expires {
            return Err(TokenRefusal::Expired);
        }
        let mut identity = self
            .identity_of(body, claims.kind, &claims.name)
            .map_err(|_| TokenRefusal::Invalid)?;
        identity.session = Some(SessionContext {
            role_session_name: (claims.kind == EntityKind::Role)
                .then(|| claims.role_session_name.clone()),
            created: claims.issued,
            expires: claims.expires,
            origin: Some(claims.origin.clone()),
        });
        Ok(identity)
    }
}

/// `ASIA` and 16 characters of IAM's id alphabet: 20 characters, as AWS's.
fn new_access_key_id() -> String {
    let tail: String = unique_id("").chars().take(16).collect();
    format!("{SESSION_KEY_PREFIX}{tail}")
}

fn kind_byte(k: EntityKind) -> u8 {
    match k {
        EntityKind::User => KIND_USER,
        EntityKind::Role => KIND_ROLE,
    }
}

fn kind_of(b: u8) -> Option<EntityKind> {
    match b {
        KIND_USER => Some(EntityKind::User),
        KIND_ROLE => Some(EntityKind::Role),
        _ => None,
    }
}

/// The token's plaintext (docs/formats.md): fixed fields big-endian, strings as a length
/// byte and UTF-8. `None` if a string is over 255 bytes.
fn encode_claims(c: &SessionClaims) -> Option<Vec<u8>> {
    let mut out = vec![kind_byte(c.kind)];
    out.extend_from_slice(&c.issued.to_be_bytes());
    out.extend_from_slice(&c.expires.to_be_bytes());
    let o = &c.origin;
    let origin_key = o.access_key_id.as_deref().unwrap_or("");
    for s in [&c.access_key_id, &c.name, &c.id, &c.role_session_name] {
        put_str(&mut out, s)?;
    }
    out.push(kind_byte(o.kind));
    for s in [o.name.as_str(), o.id.as_str(), origin_key] {
        put_str(&mut out, s)?;
    }
    Some(out)
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Option<()> {
    out.push(u8::try_from(s.len()).ok()?);
    out.extend_from_slice(s.as_bytes());
    Some(())
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::from(self.byte()?);
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn decode_claims(b: &[u8]) -> Option<SessionClaims> {
    let mut r = Reader(b);
    let kind = kind_of(r.byte()?)?;
    let (issued, expires) = (r.i64()?, r.i64()?);
    let (access_key_id, name, id, role_session_name) = (r.str()?, r.str()?, r.str()?, r.str()?);
    let origin_kind = kind_of(r.byte()?)?;
    let (origin_name, origin_id, origin_key) = (r.str()?, r.str()?, r.str()?);
    if !r.0.is_empty() {
        return None;
    }
    Some(SessionClaims {
        kind,
        issued,
        expires,
        access_key_id,
        name,
        id,
        role_session_name,
        origin: Origin {
            kind: origin_kind,
            name: origin_name,
            id: origin_id,
            access_key_id: (!origin_key.is_empty()).then_some(origin_key),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> SessionClaims {
        SessionClaims {
            kind: EntityKind::Role,
            issued: 1_700_000_000,
            expires: 1_700_003_600,
            access_key_id: new_access_key_id(),
            name: "reader".into(),
            id: "AROAABCDEFGHIJKLMNOPQ".into(),
            role_session_name: "s-1".into(),
            origin: Origin {
                kind: EntityKind::User,
                name: "alice".into(),
                id: "AIDAABCDEFGHIJKLMNOPQ".into(),
                access_key_id: Some("AKIAABCDEFGHIJKLMNOP".into()),
            },
        }
    }

    #[test]
    fn a_token_opens_to_its_claims_and_only_under_its_key() {
        let keys = SessionKeys::from_iam_key(&Key256::generate());
        let c = claims();
        let t = keys.seal(&c).unwrap();
        assert_eq!(keys.open(&t), Some(c.clone()));
        assert!(t.len() < 700, "{}", t.len());
        let other = SessionKeys::from_iam_key(&Key256::generate());
        assert_eq!(other.open(&t), None);
        // Any changed byte is refused.
        let mut raw = crate::aws::b64::decode(&t).unwrap();
        for i in [0, 1, 20, raw.len() - 1] {
            raw[i] ^= 1;
            assert_eq!(keys.open(&crate::aws::b64::encode(&raw)), None, "byte {i}");
            raw[i] ^= 1;
        }
        assert_eq!(keys.open("not base64!"), None);
        assert_eq!(keys.open(""), None);
    }

    #[test]
    fn the_secret_depends_on_the_key_id_and_the_iam_key() {
        let keys = SessionKeys::from_iam_key(&Key256::generate());
        let a = keys.secret_of("ASIAAAAAAAAAAAAAAAAA");
        assert_eq!(a.len(), 40);
        assert_eq!(*a, *keys.secret_of("ASIAAAAAAAAAAAAAAAAA"));
        assert_ne!(*a, *keys.secret_of("ASIAAAAAAAAAAAAAAAAB"));
        let other = SessionKeys::from_iam_key(&Key256::generate());
        assert_ne!(*a, *other.secret_of("ASIAAAAAAAAAAAAAAAAA"));
    }

    #[test]
    fn names_and_durations_are_checked() {
        assert!(check_session_name("ok").is_ok());
        assert!(check_session_name("a").is_err());
        assert!(check_session_name("has space").is_err());
        assert!(check_session_name(&"x".repeat(65)).is_err());
        assert_eq!(check_duration(None, ASSUME_ROLE_SECS).unwrap(), 3600);
        assert!(check_duration(Some(899), ASSUME_ROLE_SECS).is_err());
        assert!(check_duration(Some(43_201), ASSUME_ROLE_SECS).is_err());
        assert_eq!(
            check_duration(Some(129_600), SESSION_TOKEN_SECS).unwrap(),
            129_600
        );
    }
}
