//! Grants, as AWS KMS has them: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant
//! and RevokeGrant, the grant tokens they hand out, and the rules by which a grant lets its
//! grantee use a key (`authz::authorize_key` asks [`allows`]).
//!
//! A grant lives in the keystore beside its key (`KeystoreBody::grants`) and goes when the
//! key is deleted. Grants take effect at once here (AWS's are eventually consistent), so a
//! grant token only has to be well formed and issued by this region: the grant it names
//! is live or not, whoever presents it. Tokens are authenticated (keyed BLAKE3 under a key
//! derived from the region root key), so a token this region did not issue is refused as
//! InvalidGrantTokenException, as AWS refuses one it cannot read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::EmbeddedKms;
use crate::crypto::kdf;
use crate::kms::caller::Caller;
use crate::kms::context::EncryptionContext;
use crate::kms::error::{KmsError, Result};
use crate::kms::event::Call;
use crate::kms::identity::root_arn;
use crate::kms::ids::{KeyId, KeyRef};
use crate::kms::keystore::Keystore;
use crate::kms::model::{GrantConstraint, GrantRecord, UnixTime};

/// AWS's quota of grants per key.
pub const MAX_GRANTS_PER_KEY: usize = 50_000;
/// botocore's `GrantTokenList` and `GrantTokenType` bounds.
pub const MAX_GRANT_TOKENS: usize = 10;
pub const MAX_GRANT_TOKEN_LEN: usize = 8192;
/// AWS's limits on a constraint: pairs per constraint, characters per value.
const MAX_CONSTRAINT_PAIRS: usize = 8;
const MAX_CONSTRAINT_VALUE: usize = 384;
const DEFAULT_LIMIT: usize = 50;

/// Operations a grant may allow on a key that cryptvol serves (all symmetric), and which
/// the authorizer consults grants for.
pub(super) const GRANTABLE: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "DescribeKey",
    "CreateGrant",
    "RetireGrant",
];
/// Valid for a SYMMETRIC_DEFAULT key in AWS although cryptvol has no such operation.
const SYMMETRIC_ONLY_IN_AWS: &[&str] =
    &["GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"];
/// In AWS's `GrantOperation` enum, but for asymmetric or HMAC keys.
const OTHER_KEY_TYPES: &[&str] = &[
    "Sign",
    "Verify",
    "GetPublicKey",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];
/// The operations that take an encryption context, to which constraints apply.
const CRYPTOGRAPHIC: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
];

const TOKEN_MAGIC: &[u8; 4] = b"cvg1";
const TOKEN_MAC_LEN: usize = 16;
const TOKEN_LEN: usize = 4 + 16 + 32 + 16 + TOKEN_MAC_LEN;

/// What a request asks of a grant.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GrantUse<'a> {
    /// A cryptographic operation with this encryption context.
    Context(&'a EncryptionContext),
    /// An operation without an encryption context (DescribeKey): constraints do not apply.
    NoContext,
    /// CreateGrant: the new grant's operations and constraint.
    NewGrant {
        operations: &'a [String],
        constraint: Option<&'a GrantConstraint>,
    },
}

impl<'a> GrantUse<'a> {
    pub(crate) fn of(ctx: Option<&'a EncryptionContext>) -> Self {
        ctx.map_or(GrantUse::NoContext, GrantUse::Context)
    }
}

/// `Constraints` as AWS's API and CLI spell them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct GrantConstraintsInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_subset: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_equals: Option<BTreeMap<String, String>>,
}

impl GrantConstraintsInput {
    fn of(c: &GrantConstraint) -> Self {
        match c {
            GrantConstraint::EncryptionContextSubset(m) => GrantConstraintsInput {
                encryption_context_subset: Some(m.clone()),
                ..Default::default()
            },
            GrantConstraint::EncryptionContextEquals(m) => GrantConstraintsInput {
                encryption_context_equals: Some(m.clone()),
                ..Default::default()
            },
        }
    }
}

/// CreateGrant's inputs (the request's `GrantTokens` travel with the [`Caller`]).
#[derive(Debug, Clone)]
pub struct CreateGrantRequest {
    pub key: KeyRef,
    pub grantee_principal: String,
    pub retiring_principal: Option<String>,
    pub operations: Vec<String>,
    pub constraints: Option<GrantConstraintsInput>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGrantResponse {
    pub grant_token: String,
    pub grant_id: String,
}

/// ListGrants' inputs.
#[derive(Debug, Clone)]
pub struct ListGrantsRequest {
    pub key: KeyRef,
    pub grant_id: Option<String>,
    pub grantee_principal: Option<String>,
    pub limit: Option<usize>,
    pub marker: Option<String>,
}

/// RetireGrant's inputs: a grant token, or a key and a grant id.
#[derive(Debug, Clone, Default)]
pub struct RetireGrantRequest {
    pub grant_token: Option<String>,
    pub key: Option<KeyRef>,
    pub grant_id: Option<String>,
}

/// AWS's `GrantListEntry`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GrantListEntry {
    pub key_id: String,
    pub grant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub creation_date: UnixTime,
    pub grantee_principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retiring_principal: Option<String>,
    pub issuing_account: String,
    pub operations: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraints: Option<GrantConstraintsInput>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrantsResponse {
    pub grants: Vec<GrantListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

// ---- the rules of a grant ----------------------------------------------------------------

/// Whether grant `g` lets `caller` perform `operation` as `usage` describes.
pub(super) fn allows(g: &GrantRecord, caller: &Caller, operation: &str, usage: &GrantUse) -> bool {
    if !g.operations.iter().any(|o| o == operation)
        || !is_principal(caller, &g.grantee, g.grantee_id.as_deref())
    {
        return false;
    }
    match usage {
        GrantUse::Context(ctx) => constraint_holds(g.constraint.as_ref(), ctx),
        GrantUse::NoContext => true,
        // AWS: a grant can only give what it has, under constraints at least as strict.
        GrantUse::NewGrant {
            operations,
            constraint,
        } => {
            operations.iter().all(|o| g.operations.contains(o))
                && at_least_as_strict(*constraint, g.constraint.as_ref())
        }
    }
}

/// A user or role ARN with its path dropped: IAM matches principals by name.
fn canonical(p: &str) -> String {
    for kind in [":user/", ":role/"] {
        if p.starts_with("arn:aws:iam::")
            && let Some(i) = p.find(kind)
        {
            let name = p.rsplit('/').next().unwrap_or("");
            return format!("{}{name}", &p[..i + kind.len()]);
        }
    }
    p.to_string()
}

/// Whether `caller` is the principal `p` names (and, when `bound` is given, the same
/// user or role as when the grant was made).
pub(super) fn is_principal(caller: &Caller, p: &str, bound: Option<&str>) -> bool {
    let id = &caller.identity;
    let p = canonical(p);
    (id.principal_arn() == p || id.arn() == p) && bound.is_none_or(|b| id.unique_id() == Some(b))
}

/// Constraint keys compare case-insensitively, values exactly (AWS's rule).
fn folded<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, &'a str> {
    pairs.map(|(k, v)| (k.to_lowercase(), v)).collect()
}

fn constraint_holds(c: Option<&GrantConstraint>, ctx: &EncryptionContext) -> bool {
    let have = folded(ctx.iter());
    match c {
        None => true,
        Some(GrantConstraint::EncryptionContextSubset(want)) => {
            let want = folded(want.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            want.iter().all(|(k, v)| have.get(k) == Some(v))
        }
        Some(GrantConstraint::EncryptionContextEquals(want)) => {
            have == folded(want.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        }
    }
}

/// Whether a new grant's constraint is as strict as its parent's or stricter.
fn at_least_as_strict(child: Option<&GrantConstraint>, parent: Option<&GrantConstraint>) -> bool {
    use GrantConstraint::*;
    let f = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let covers = |big: &BTreeMap<String, String>, small: &BTreeMap<String, String>| {
        let (big, small) = (f(big), f(small));
        small.iter().all(|(k, v)| big.get(k) == Some(v))
    };
    match (parent, child) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(EncryptionContextSubset(p)), Some(EncryptionContextSubset(c)))
        | (Some(EncryptionContextSubset(p)), Some(EncryptionContextEquals(c))) => covers(c, p),
        (Some(EncryptionContextEquals(p)), Some(EncryptionContextEquals(c))) => f(p) == f(c),
        (Some(EncryptionContextEquals(_)), Some(EncryptionContextSubset(_))) => false,
    }
}

// ---- validation ----------------------------------------------------------------------------

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

/// `ec2.amazonaws.com`, `ec2.us-east-1.amazonaws.com`: lowercase DNS labels.
fn is_service_principal(s: &str) -> bool {
    let Some(head) = s.strip_suffix(".amazonaws.com") else {
        return false;
    };
    !head.is_empty()
        && head.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A principal a grant may name: an IAM root, user or role ARN, an assumed-role session
/// ARN, or an AWS service principal (botocore's `PrincipalIdType` first).
pub(super) fn check_principal(field: &str, p: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(KmsError::validation(
            field,
            format!(
                "'{p}' {why}: use arn:aws:iam::ACCOUNT:root|user/NAME|role/NAME, arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION, or a service principal such as ec2.REGION.amazonaws.com"
            ),
        ))
    };
    let word = |c: char| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c);
    if p.is_empty() || p.len() > 256 || !p.chars().all(word) {
        return bad("must be 1 to 256 characters of letters, digits and _+=,.@:/-");
    }
    if let Some(rest) = p.strip_prefix("arn:aws:iam::") {
        let ok = rest.split_once(':').is_some_and(|(acct, res)| {
            is_account(acct)
                && (res == "root"
                    || ["user/", "role/"].iter().any(|k| {
                        res.strip_prefix(k)
                            .is_some_and(|path| path.split('/').all(is_name))
                    }))
        });
        return if ok {
            Ok(())
        } else {
            bad("is not a principal")
        };
    }
    if let Some(rest) = p.strip_prefix("arn:aws:sts::") {
        let ok = rest.split_once(':').is_some_and(|(acct, res)| {
            let parts: Vec<&str> = res.split('/').collect();
            is_account(acct)
                && matches!(parts.as_slice(), ["assumed-role", role, session] if is_name(role) && is_name(session))
        });
        return if ok {
            Ok(())
        } else {
            bad("is not a principal")
        };
    }
    if is_service_principal(p) {
        return Ok(());
    }
    bad("is not a principal")
}

/// Operations: at least one, each AWS's name of an operation valid for a symmetric key.
fn check_operations(ops: &[String]) -> Result<Vec<String>> {
    if ops.is_empty() {
        return Err(KmsError::validation(
            "Operations",
            format!("name at least one of {}", GRANTABLE.join(", ")),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for op in ops {
        if OTHER_KEY_TYPES.contains(&op.as_str()) {
            return Err(KmsError::validation(
                "Operations",
                format!(
                    "{op} is not valid for a SYMMETRIC_DEFAULT key: use {}",
                    GRANTABLE.join(", ")
                ),
            ));
        }
        if !GRANTABLE.contains(&op.as_str()) && !SYMMETRIC_ONLY_IN_AWS.contains(&op.as_str()) {
            return Err(KmsError::validation(
                "Operations",
                format!(
                    "'{op}' is not a grant operation: use {} (names are case-sensitive)",
                    GRANTABLE.join(", ")
                ),
            ));
        }
        if !out.contains(op) {
            out.push(op.clone());
        }
    }
    Ok(out)
}

fn check_constraints(
    c: Option<&GrantConstraintsInput>,
    ops: &[String],
) -> Result<Option<GrantConstraint>> {
    let Some(c) = c else { return Ok(None) };
    let subset = c
        .encryption_context_subset
        .clone()
        .filter(|m| !m.is_empty());
    let equals = c
        .encryption_context_equals
        .clone()
        .filter(|m| !m.is_empty());
    let (kind, pairs) = match (subset, equals) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(KmsError::validation(
                "Constraints",
                "give one of EncryptionContextSubset or EncryptionContextEquals, not both",
            ));
        }
        (Some(m), None) => ("EncryptionContextSubset", m),
        (None, Some(m)) => ("EncryptionContextEquals", m),
    };
    if pairs.len() > MAX_CONSTRAINT_PAIRS {
        return Err(KmsError::validation(
            "Constraints",
            format!(
                "{kind} has {} pairs; a constraint holds at most {MAX_CONSTRAINT_PAIRS}",
                pairs.len()
            ),
        ));
    }
    if let Some((k, _)) = pairs
        .iter()
        .find(|(k, v)| k.is_empty() || v.chars().count() > MAX_CONSTRAINT_VALUE)
    {
        return Err(KmsError::validation(
            "Constraints",
            format!(
                "{kind} pair '{k}': keys must not be empty and values are at most {MAX_CONSTRAINT_VALUE} characters"
            ),
        ));
    }
    if !ops
        .iter()
        .any(|o| CRYPTOGRAPHIC.contains(&o.as_str()) || o == "CreateGrant")
    {
        return Err(KmsError::validation(
            "Constraints",
            format!(
                "an encryption context constraint applies only to cryptographic operations ({}) or CreateGrant; this grant has none",
                CRYPTOGRAPHIC.join(", ")
            ),
        ));
    }
    Ok(Some(if kind == "EncryptionContextSubset" {
        GrantConstraint::EncryptionContextSubset(pairs)
    } else {
        GrantConstraint::EncryptionContextEquals(pairs)
    }))
}

fn check_name(name: &str) -> Result<()> {
    let ok = (1..=256).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":/_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(KmsError::validation(
            "Name",
            format!("'{name}' must be 1 to 256 characters of letters, digits and :/_-"),
        ))
    }
}

/// A grant id is 64 hexadecimal digits (botocore allows up to 128 characters).
pub(super) fn check_grant_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 128 {
        return Err(KmsError::validation(
            "GrantId",
            format!("{} characters is outside 1..128", id.len()),
        ));
    }
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KmsError::InvalidGrantId {
            message: format!(
                "'{id}' is not a grant id (64 hexadecimal digits, as CreateGrant and ListGrants return)"
            ),
        });
    }
    Ok(())
}

fn constraint_type(c: &GrantConstraint) -> &'static str {
    match c {
        GrantConstraint::EncryptionContextSubset(_) => "EncryptionContextSubset",
        GrantConstraint::EncryptionContextEquals(_) => "EncryptionContextEquals",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (s.len() % 2 == 0)
        .then(|| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

/// `kms:GrantIsForAWSResource`: the call came through an AWS service.
fn for_aws_resource(caller: &Caller) -> &'static str {
    if caller.via_service.is_some() {
        "true"
    } else {
        "false"
    }
}

/// Cuts one page of entries sorted by their sort key; the marker is the sort key of the
/// first entry of the next page, so retiring grants between pages skips nothing.
fn page(
    mut items: Vec<(String, GrantListEntry)>,
    limit: Option<usize>,
    marker: Option<&str>,
) -> Result<ListGrantsResponse> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=1000).contains(&limit) {
        return Err(KmsError::validation(
            "Limit",
            format!("{limit} is outside 1..1000"),
        ));
    }
    if let Some(m) = marker
        && (m.is_empty() || m.len() > 1024)
    {
        return Err(KmsError::validation(
            "Marker",
            "give the NextMarker of the previous page",
        ));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let start = marker.map_or(0, |m| items.partition_point(|(k, _)| k.as_str() < m));
    let rest = items.split_off(start);
    let truncated = rest.len() > limit;
    let next_marker = truncated.then(|| rest[limit].0.clone());
    Ok(ListGrantsResponse {
        grants: rest.into_iter().take(limit).map(|(_, e)| e).collect(),
        next_marker,
        truncated,
    })
}

fn grant_params(call: Call, req: &CreateGrantRequest) -> Call {
    let mut call = call
        .param("keyId", req.key.to_string())
        .param("granteePrincipal", req.grantee_principal.as_str())
        .param("operations", req.operations.clone());
    if let Some(r) = &req.retiring_principal {
        call = call.param("retiringPrincipal", r.as_str());
    }
    if let Some(n) = &req.name {
        call = call.param("name", n.as_str());
    }
    if let Some(c) = &req.constraints {
        let mut m = serde_json::Map::new();
        if let Some(s) = &c.encryption_context_subset {
            m.insert("encryptionContextSubset".into(), serde_json::json!(s));
        }
        if let Some(e) = &c.encryption_context_equals {
            m.insert("encryptionContextEquals".into(), serde_json::json!(e));
        }
        call = call.param("constraints", serde_json::Value::Object(m));
    }
    call
}

impl EmbeddedKms {
    fn grant_token_key(&self) -> crate::crypto::Key256 {
        kdf::derive(
            kdf::CTX_GRANT_TOKEN,
            &self.root,
            self.dir.region.as_str().as_bytes(),
        )
    }

    /// A new token for grant `grant_id` of key `key`: every call makes a different one,
    /// and all of a grant's tokens are interchangeable, as in AWS.
    fn grant_token(&self, key: &KeyId, grant_id: &str) -> String {
        let mut b = Vec::with_capacity(TOKEN_LEN);
        b.extend_from_slice(TOKEN_MAGIC);
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(&unhex(grant_id).expect("grant ids are hex"));
        b.extend_from_slice(&crate::crypto::random::array::<16>());
        let mac = blake3::keyed_hash(self.grant_token_key().expose(), &b);
        b.extend_from_slice(&mac.as_bytes()[..TOKEN_MAC_LEN]);
        crate::kms::b64::encode(&b)
    }

    /// The key and grant a token names, if this region issued it.
    fn open_grant_token(&self, token: &str) -> Result<(KeyId, String)> {
        let bad = || KmsError::InvalidGrantToken {
            message: format!(
                "the grant token ({} characters) is not one this KMS issued in region {}: use a GrantToken that CreateGrant returned",
                token.len(),
                self.dir.region
            ),
        };
        let b = crate::kms::b64::decode(token).map_err(|_| bad())?;
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
        Ok((key, hex(&body[20..52])))
    }

    /// Checks a request's `GrantTokens`: at most 10, each 1..8192 characters and issued
    /// by this region.
    pub(super) fn check_grant_tokens(&self, tokens: &[String]) -> Result<()> {
        if tokens.len() > MAX_GRANT_TOKENS {
            return Err(KmsError::validation(
                "GrantTokens",
                format!(
                    "{} tokens; a request takes at most {MAX_GRANT_TOKENS}",
                    tokens.len()
                ),
            ));
        }
        for t in tokens {
            if t.is_empty() || t.len() > MAX_GRANT_TOKEN_LEN {
                return Err(KmsError::validation(
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

    /// Refuses a grantee or retiring principal of this account that does not exist, and
    /// returns the unique id of the user or role it names.
    fn principal_binding(&self, field: &str, p: &str) -> Result<Option<String>> {
        let body = self.identities.load()?;
        if !self.identities.principal_exists(&body, p) {
            return Err(KmsError::validation(
                field,
                format!(
                    "'{p}' does not exist: create it with `cryptvol iam create-user` / `create-role`, or fix the ARN"
                ),
            ));
        }
        Ok(self.identities.unique_id_of(&body, &canonical(p)))
    }

    fn grant_entry(&self, key: &KeyId, g: &GrantRecord) -> GrantListEntry {
        GrantListEntry {
            key_id: self.arn(key),
            grant_id: g.id.clone(),
            name: g.name.clone(),
            creation_date: g.created,
            grantee_principal: g.grantee.clone(),
            retiring_principal: g.retiring.clone(),
            issuing_account: g.issuing_account.clone(),
            operations: g.operations.clone(),
            constraints: g.constraint.as_ref().map(GrantConstraintsInput::of),
        }
    }

    pub fn create_grant(
        &self,
        caller: &Caller,
        req: &CreateGrantRequest,
    ) -> Result<CreateGrantResponse> {
        let mut call = grant_params(Call::new("CreateGrant", false), req);
        let out = self.create_grant_inner(caller, req, &mut call);
        self.finish(caller, call, out)
    }

    fn create_grant_inner(
        &self,
        caller: &Caller,
        req: &CreateGrantRequest,
        call: &mut Call,
    ) -> Result<CreateGrantResponse> {
        check_principal("GranteePrincipal", &req.grantee_principal)?;
        if let Some(r) = &req.retiring_principal {
            check_principal("RetiringPrincipal", r)?;
        }
        let operations = check_operations(&req.operations)?;
        let constraint = check_constraints(req.constraints.as_ref(), &operations)?;
        if let Some(n) = &req.name {
            check_name(n)?;
        }
        let grantee_id = self.principal_binding("GranteePrincipal", &req.grantee_principal)?;
        if let Some(r) = &req.retiring_principal {
            self.principal_binding("RetiringPrincipal", r)?;
        }
        self.ensure_managed(&req.key)?;
        let mut extra: Vec<(&str, &str)> = vec![
            ("kms:GrantIsForAWSResource", for_aws_resource(caller)),
            ("kms:GranteePrincipal", req.grantee_principal.as_str()),
        ];
        if let Some(r) = &req.retiring_principal {
            extra.push(("kms:RetiringPrincipal", r.as_str()));
        }
        extra.extend(
            operations
                .iter()
                .map(|o| ("kms:GrantOperations", o.as_str())),
        );
        if let Some(c) = &constraint {
            extra.push(("kms:GrantConstraintType", constraint_type(c)));
        }
        self.mutate(Some(caller), call, |ks, now, call| {
            let id = self.resolve(ks, &req.key)?;
            call.resource(&self.arn(&id));
            let k = &ks.body.keys[&id];
            let usage = GrantUse::NewGrant {
                operations: &operations,
                constraint: constraint.as_ref(),
            };
            self.authorize_key(ks, caller, call, "kms:CreateGrant", k, usage, &extra)?;
            self.require_enabled(k, "CreateGrant")?;
            let list = ks.body.grants.entry(id).or_default();
            // AWS's idempotence: the same Name with the same parameters is the same grant
            // (a new token each time); without a Name every call makes a new grant.
            let same = |g: &&GrantRecord| {
                req.name.is_some()
                    && g.name == req.name
                    && g.grantee == req.grantee_principal
                    && g.retiring == req.retiring_principal
                    && g.constraint == constraint
                    && g.operations.len() == operations.len()
                    && operations.iter().all(|o| g.operations.contains(o))
            };
            let grant_id = match list.iter().find(same) {
                Some(g) => g.id.clone(),
                None => {
                    check_grant_limit(list, &self.arn(&id))?;
                    let grant_id = hex(&crate::crypto::random::array::<32>());
                    list.push(GrantRecord {
                        id: grant_id.clone(),
                        name: req.name.clone(),
                        created: now,
                        grantee: req.grantee_principal.clone(),
                        grantee_id,
                        retiring: req.retiring_principal.clone(),
                        issuing_account: root_arn(&self.account),
                        operations: operations.clone(),
                        constraint: constraint.clone(),
                    });
                    grant_id
                }
            };
            call.respond(serde_json::json!({ "grantId": grant_id, "keyId": self.arn(&id) }));
            Ok(CreateGrantResponse {
                grant_token: self.grant_token(&id, &grant_id),
                grant_id,
            })
        })
    }

    pub fn list_grants(
        &self,
        caller: &Caller,
        req: &ListGrantsRequest,
    ) -> Result<ListGrantsResponse> {
        let mut call = Call::new("ListGrants", true).param("keyId", req.key.to_string());
        if let Some(g) = &req.grant_id {
            call = call.param("grantId", g.as_str());
        }
        if let Some(p) = &req.grantee_principal {
            call = call.param("granteePrincipal", p.as_str());
        }
        if let Some(l) = req.limit {
            call = call.param("limit", l);
        }
        if let Some(m) = &req.marker {
            call = call.param("marker", m.as_str());
        }
        let out = (|| {
            if let Some(g) = &req.grant_id {
                check_grant_id(g)?;
            }
            if let Some(p) = &req.grantee_principal {
                check_principal("GranteePrincipal", p)?;
            }
            self.ensure_managed(&req.key)?;
            self.read(|ks, _| {
                let id = self.resolve(ks, &req.key)?;
                call.resource(&self.arn(&id));
                let k = &ks.body.keys[&id];
                let aws = [("kms:GrantIsForAWSResource", for_aws_resource(caller))];
                self.authorize(caller, "kms:ListGrants", Some(k), None, &aws)?;
                let items = ks
                    .body
                    .grants
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter(|g| {
                        req.grant_id
                            .as_ref()
                            .is_none_or(|x| x.eq_ignore_ascii_case(&g.id))
                    })
                    .filter(|g| {
                        req.grantee_principal
                            .as_ref()
                            .is_none_or(|p| canonical(p) == canonical(&g.grantee))
                    })
                    .map(|g| {
                        (
                            format!("{:020}/{}", g.created, g.id),
                            self.grant_entry(&id, g),
                        )
                    })
                    .collect();
                page(items, req.limit, req.marker.as_deref())
            })
        })();
        self.finish(caller, call, out)
    }

    pub fn list_retirable_grants(
        &self,
        caller: &Caller,
        retiring_principal: &str,
        limit: Option<usize>,
        marker: Option<&str>,
    ) -> Result<ListGrantsResponse> {
        let mut call =
            Call::new("ListRetirableGrants", true).param("retiringPrincipal", retiring_principal);
        if let Some(l) = limit {
            call = call.param("limit", l);
        }
        if let Some(m) = marker {
            call = call.param("marker", m);
        }
        let out = check_principal("RetiringPrincipal", retiring_principal)
            .and_then(|()| self.authorize(caller, "kms:ListRetirableGrants", None, None, &[]))
            .and_then(|()| {
                self.read(|ks, _| {
                    let want = canonical(retiring_principal);
                    let items = ks
                        .body
                        .grants
                        .iter()
                        .flat_map(|(id, gs)| gs.iter().map(move |g| (id, g)))
                        .filter(|(_, g)| {
                            g.retiring.as_deref().is_some_and(|r| canonical(r) == want)
                        })
                        .map(|(id, g)| {
                            (
                                format!("{id}/{:020}/{}", g.created, g.id),
                                self.grant_entry(id, g),
                            )
                        })
                        .collect();
                    page(items, limit, marker)
                })
            });
        self.finish(caller, call, out)
    }

    /// RetireGrant: allowed to the grant's retiring principal, its grantee when the grant
    /// includes RetireGrant, and the account that issued it (AWS's rule), unless a policy
    /// explicitly denies kms:RetireGrant.
    pub fn retire_grant(&self, caller: &Caller, req: &RetireGrantRequest) -> Result<()> {
        let mut call = Call::new("RetireGrant", false);
        if let Some(k) = &req.key {
            call = call.param("keyId", k.to_string());
        }
        if let Some(g) = &req.grant_id {
            call = call.param("grantId", g.as_str());
        }
        let out = self.retire_inner(caller, req, &mut call);
        self.finish(caller, call, out)
    }

    fn retire_target(&self, req: &RetireGrantRequest) -> Result<(KeyRef, String)> {
        match (&req.grant_token, &req.key, &req.grant_id) {
            (Some(t), key, grant) => {
                if t.is_empty() || t.len() > MAX_GRANT_TOKEN_LEN {
                    return Err(KmsError::validation(
                        "GrantToken",
                        format!("{} characters is outside 1..{MAX_GRANT_TOKEN_LEN}", t.len()),
                    ));
                }
                let (k, g) = self.open_grant_token(t)?;
                if grant.as_ref().is_some_and(|x| !x.eq_ignore_ascii_case(&g))
                    || (key.is_some() && grant.is_none())
                {
                    return Err(KmsError::validation(
                        "GrantToken",
                        "the token names another grant than KeyId and GrantId: give the token alone, or KeyId and GrantId",
                    ));
                }
                Ok((key.clone().unwrap_or(KeyRef::Id(k)), g))
            }
            (None, Some(k), Some(g)) => {
                check_grant_id(g)?;
                Ok((k.clone(), g.to_ascii_lowercase()))
            }
            _ => Err(KmsError::validation(
                "GrantToken",
                "give a GrantToken, or both KeyId and GrantId",
            )),
        }
    }

    fn retire_inner(
        &self,
        caller: &Caller,
        req: &RetireGrantRequest,
        call: &mut Call,
    ) -> Result<()> {
        let (key, grant_id) = self.retire_target(req)?;
        self.mutate(Some(caller), call, |ks, _, call| {
            let id = self.resolve(ks, &key)?;
            let arn = self.arn(&id);
            call.resource(&arn);
            let (pos, g) = find_grant(ks, &id, &grant_id, &arn)?;
            let k = &ks.body.keys[&id];
            let aws = [("kms:GrantIsForAWSResource", for_aws_resource(caller))];
            self.explicitly_denied(caller, "kms:RetireGrant", k, &aws)?;
            let retiring = g
                .retiring
                .as_deref()
                .is_some_and(|r| is_principal(caller, r, None));
            let grantee = allows(g, caller, "RetireGrant", &GrantUse::NoContext);
            let issuer = caller.identity.is_root() && g.issuing_account == root_arn(&self.account);
            if !(retiring || grantee || issuer) {
                return Err(KmsError::AccessDenied {
                    message: format!(
                        "User: {} is not authorized to perform: kms:RetireGrant on resource: {arn} because it is not the grant's retiring principal, nor its grantee with RetireGrant among the grant's operations, nor the account that issued it",
                        caller.identity.arn()
                    ),
                });
            }
            if grantee && !retiring && !issuer {
                call.grant_id = Some(g.id.clone());
            }
            remove_grant(ks, &id, pos);
            call.respond(serde_json::json!({ "keyId": arn }));
            Ok(())
        })
    }

    pub fn revoke_grant(&self, caller: &Caller, key: &KeyRef, grant_id: &str) -> Result<()> {
        let mut call = Call::new("RevokeGrant", false)
            .param("keyId", key.to_string())
            .param("grantId", grant_id);
        let out = check_grant_id(grant_id).and_then(|()| {
            self.mutate(Some(caller), &mut call, |ks, _, call| {
                let id = self.resolve(ks, key)?;
                let arn = self.arn(&id);
                call.resource(&arn);
                let k = &ks.body.keys[&id];
                let aws = [("kms:GrantIsForAWSResource", for_aws_resource(caller))];
                self.authorize(caller, "kms:RevokeGrant", Some(k), None, &aws)?;
                let (pos, _) = find_grant(ks, &id, &grant_id.to_ascii_lowercase(), &arn)?;
                remove_grant(ks, &id, pos);
                call.respond(serde_json::json!({ "keyId": arn }));
                Ok(())
            })
        });
        self.finish(caller, call, out)
    }
}

fn find_grant<'k>(
    ks: &'k Keystore,
    key: &KeyId,
    grant_id: &str,
    arn: &str,
) -> Result<(usize, &'k GrantRecord)> {
    ks.body
        .grants
        .get(key)
        .and_then(|gs| gs.iter().enumerate().find(|(_, g)| g.id == grant_id))
        .ok_or_else(|| KmsError::NotFound {
            what: format!(
                "grant {grant_id} on key {arn} (it was retired or revoked, or never made: see `cryptvol kms list-grants --key-id {arn}`)"
            ),
        })
}

fn remove_grant(ks: &mut Keystore, key: &KeyId, pos: usize) {
    if let Some(gs) = ks.body.grants.get_mut(key) {
        gs.remove(pos);
        if gs.is_empty() {
            ks.body.grants.remove(key);
        }
    }
}

/// AWS's quota: LimitExceededException past 50,000 grants on one key.
pub(super) fn check_grant_limit(list: &[GrantRecord], key_arn: &str) -> Result<()> {
    if list.len() >= MAX_GRANTS_PER_KEY {
        return Err(KmsError::LimitExceeded {
            what: format!(
                "key {key_arn} already has {MAX_GRANTS_PER_KEY} grants, AWS's limit per key: retire or revoke some with `cryptvol kms retire-grant` / `revoke-grant`"
            ),
        });
    }
    Ok(())
}
