//! The policy language end to end: a table of authorization questions (key policy,
//! identity policies, caller, action, resource, condition keys → decision), a table of
//! documents that must be refused and where, the templates, and a no-panic mutation run.

use super::*;

const ACCT: &str = "111122223333";
const OTHER_ACCT: &str = "444455556666";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const SECRET_KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/secret-0001";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const BOB: &str = "arn:aws:iam::111122223333:user/bob";
const OPS: &str = "arn:aws:iam::111122223333:role/ops";
const CAROL: &str = "arn:aws:iam::444455556666:user/carol";
const ROOT: &str = "arn:aws:iam::111122223333:root";

#[derive(Debug, Clone, Copy)]
enum Who {
    Root,
    Alice,
    Bob,
    /// A session of role `ops`, identified by the role's ARN.
    Ops,
    /// A user of another account.
    Carol,
}

impl Who {
    fn caller(self) -> Requester {
        let (arn, account, is_root) = match self {
            Who::Root => ("arn:aws:iam::111122223333:root", ACCT, true),
            Who::Alice => (ALICE, ACCT, false),
            Who::Bob => (BOB, ACCT, false),
            Who::Ops => (OPS, ACCT, false),
            Who::Carol => (CAROL, OTHER_ACCT, false),
        };
        Requester {
            arn: arn.to_string(),
            account: account.to_string(),
            is_root,
        }
    }
}

struct Case {
    name: &'static str,
    key_policy: Option<String>,
    identity: Vec<String>,
    who: Who,
    action: &'static str,
    resource: &'static str,
    conditions: Vec<(&'static str, Vec<&'static str>)>,
    expected: Decision,
}

/// A row with defaults: alice decrypts KEY with no policies, expecting Allow.
fn row(name: &'static str) -> Case {
    Case {
        name,
        key_policy: None,
        identity: Vec::new(),
        who: Who::Alice,
        action: "kms:Decrypt",
        resource: KEY,
        conditions: Vec::new(),
        expected: Decision::Allow,
    }
}

impl Case {
    fn key(mut self, policy: impl Into<String>) -> Self {
        self.key_policy = Some(policy.into());
        self
    }
    fn identity(mut self, policy: impl Into<String>) -> Self {
        self.identity.push(policy.into());
        self
    }
    fn by(mut self, who: Who) -> Self {
        self.who = who;
        self
    }
    fn action(mut self, action: &'static str) -> Self {
        self.action = action;
        self
    }
    fn on(mut self, resource: &'static str) -> Self {
        self.resource = resource;
        self
    }
    fn cond(mut self, key: &'static str, values: &[&'static str]) -> Self {
        self.conditions.push((key, values.to_vec()));
        self
    }
    fn expect(mut self, decision: Decision) -> Self {
        self.expected = decision;
        self
    }
}

fn default_policy() -> String {
    default_key_policy(ACCT)
}

fn users_alice() -> String {
    least_privilege_key_policy(ACCT, &[], &[ALICE.to_string()])
}

fn admins_bob() -> String {
    least_privilege_key_policy(ACCT, &[BOB.to_string()], &[])
}

fn managed() -> String {
    managed_key_policy(ACCT, "us-east-1")
}

/// A key policy granting `principal` (JSON) `kms:*`, plus extra statement fields.
fn grant(principal: &str, extra: &str) -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Principal": {principal}, "Action": "kms:*"{extra}}}]}}"#
    )
}

fn only(arn: &str) -> String {
    grant(&format!(r#"{{"AWS": "{arn}"}}"#), "")
}

/// Alice may use the key only when `condition` (a Condition element) holds.
fn alice_if(condition: &str) -> String {
    grant(
        &format!(r#"{{"AWS": "{ALICE}"}}"#),
        &format!(r#", "Condition": {condition}"#),
    )
}

/// A key policy that allows everyone `kms:*` but denies Decrypt to all except `exempt`,
/// with AWS's documented `"Deny", "NotPrincipal"` pattern.
fn not_principal(exempt: &[&str]) -> String {
    let list = exempt
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"{{"Statement": [
            {{"Effect": "Allow", "Principal": "*", "Action": "kms:*"}},
            {{"Effect": "Deny", "NotPrincipal": {{"AWS": [{list}]}}, "Action": "kms:Decrypt"}}]}}"#
    )
}

fn identity_allow(action: &str, resource: &str) -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "{action}", "Resource": "{resource}"}}]}}"#
    )
}

fn identity_deny(action: &str) -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Deny", "Action": "{action}", "Resource": "*"}}]}}"#
    )
}

const LINEAGE_EQUALS: &str =
    r#"{"StringEquals": {"kms:EncryptionContext:cryptvol:lineage": "vol-a"}}"#;
const CONTEXT_KEYS_ONLY_OURS: &str = r#"{"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["cryptvol:lineage", "cryptvol:volume"]}}"#;
const CONTEXT_KEYS_HAS_LINEAGE: &str =
    r#"{"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "cryptvol:lineage"}}"#;
const VIA_EBS: &str = "ec2.us-east-1.amazonaws.com";

fn cases() -> Vec<Case> {
    use Decision::*;
    use Who::*;
    vec![
        // Least-privilege template, key users only.
        row("user: Encrypt").key(users_alice()).action("kms:Encrypt"),
        row("user: Decrypt").key(users_alice()),
        row("user: GenerateDataKey").key(users_alice()).action("kms:GenerateDataKey"),
        row("user: GenerateDataKeyWithoutPlaintext")
            .key(users_alice())
            .action("kms:GenerateDataKeyWithoutPlaintext"),
        row("user: ReEncryptFrom").key(users_alice()).action("kms:ReEncryptFrom"),
        row("user: DescribeKey").key(users_alice()).action("kms:DescribeKey"),
        row("user: not ScheduleKeyDeletion")
            .key(users_alice())
            .action("kms:ScheduleKeyDeletion")
            .expect(NoIdentityPolicyAllow),
        row("user: not PutKeyPolicy")
            .key(users_alice())
            .action("kms:PutKeyPolicy")
            .expect(NoIdentityPolicyAllow),
        row("user: not DisableKey")
            .key(users_alice())
            .action("kms:DisableKey")
            .expect(NoIdentityPolicyAllow),
        // Least-privilege template, key administrators only.
        row("admin: PutKeyPolicy").key(admins_bob()).by(Bob).action("kms:PutKeyPolicy"),
        row("admin: ScheduleKeyDeletion")
            .key(admins_bob())
            .by(Bob)
            .action("kms:ScheduleKeyDeletion"),
        row("admin: DisableKey").key(admins_bob()).by(Bob).action("kms:DisableKey"),
        row("admin: EnableKeyRotation")
            .key(admins_bob())
            .by(Bob)
            .action("kms:EnableKeyRotation"),
        row("admin: CreateAlias").key(admins_bob()).by(Bob).action("kms:CreateAlias"),
        row("admin: TagResource").key(admins_bob()).by(Bob).action("kms:TagResource"),
        row("admin: GetKeyPolicy").key(admins_bob()).by(Bob).action("kms:GetKeyPolicy"),
        row("admin: not Decrypt")
            .key(admins_bob())
            .by(Bob)
            .expect(NoIdentityPolicyAllow),
        row("admin: not Encrypt")
            .key(admins_bob())
            .by(Bob)
            .action("kms:Encrypt")
            .expect(NoIdentityPolicyAllow),
        row("admin: not GenerateDataKey")
            .key(admins_bob())
            .by(Bob)
            .action("kms:GenerateDataKey")
            .expect(NoIdentityPolicyAllow),
        row("admin: not ReEncryptFrom")
            .key(admins_bob())
            .by(Bob)
            .action("kms:ReEncryptFrom")
            .expect(NoIdentityPolicyAllow),
        row("admin template names no users: alice refused")
            .key(admins_bob())
            .action("kms:PutKeyPolicy")
            .expect(NoIdentityPolicyAllow),
        // Explicit denies.
        row("key policy deny beats a direct allow")
            .key(format!(
                r#"{{"Statement": [
                    {{"Effect": "Allow", "Principal": {{"AWS": "{ALICE}"}}, "Action": "kms:*"}},
                    {{"Effect": "Deny", "Principal": {{"AWS": "{ALICE}"}}, "Action": "kms:Decrypt"}}]}}"#
            ))
            .expect(DenyExplicitInKeyPolicy),
        row("key policy deny leaves other actions allowed")
            .key(format!(
                r#"{{"Statement": [
                    {{"Effect": "Allow", "Principal": {{"AWS": "{ALICE}"}}, "Action": "kms:*"}},
                    {{"Effect": "Deny", "Principal": {{"AWS": "{ALICE}"}}, "Action": "kms:Decrypt"}}]}}"#
            ))
            .action("kms:Encrypt"),
        row("key policy deny of the account applies to its users")
            .key(format!(
                r#"{{"Statement": [
                    {{"Effect": "Allow", "Principal": {{"AWS": "{ALICE}"}}, "Action": "kms:*"}},
                    {{"Effect": "Deny", "Principal": {{"AWS": "{ACCT}"}}, "Action": "kms:Decrypt"}}]}}"#
            ))
            .expect(DenyExplicitInKeyPolicy),
        row("identity deny beats a key policy direct allow")
            .key(only(ALICE))
            .identity(identity_deny("kms:Decrypt"))
            .expect(DenyExplicitInIdentityPolicy),
        row("key policy deny is reported before identity deny")
            .key(r#"{"Statement": {"Effect": "Deny", "Principal": "*", "Action": "kms:*"}}"#)
            .identity(identity_deny("kms:*"))
            .expect(DenyExplicitInKeyPolicy),
        // Delegation to the account.
        row("identity allow is useless without root delegation")
            .key(only(BOB))
            .identity(identity_allow("kms:*", "*"))
            .expect(NoKeyPolicyAllow),
        row("root delegation without identity policy")
            .key(default_policy())
            .expect(NoIdentityPolicyAllow),
        row("root delegation with identity policy")
            .key(default_policy())
            .identity(identity_allow("kms:*", "*")),
        row("root delegation, identity policy for another action")
            .key(default_policy())
            .identity(identity_allow("kms:Encrypt", "*"))
            .expect(NoIdentityPolicyAllow),
        row("root, default policy: Decrypt").key(default_policy()).by(Root),
        row("root, default policy: ScheduleKeyDeletion")
            .key(default_policy())
            .by(Root)
            .action("kms:ScheduleKeyDeletion"),
        row("root, default policy: PutKeyPolicy")
            .key(default_policy())
            .by(Root)
            .action("kms:PutKeyPolicy"),
        row("root under a policy naming only alice")
            .key(only(ALICE))
            .by(Root)
            .expect(NoKeyPolicyAllow),
        row("other account's user under the default policy")
            .key(default_policy())
            .by(Carol)
            .identity(identity_allow("kms:*", "*"))
            .expect(NoKeyPolicyAllow),
        row("key policy resource naming another key")
            .key(grant(
                &format!(r#"{{"AWS": "{ALICE}"}}"#),
                &format!(r#", "Resource": "{SECRET_KEY}""#),
            ))
            .expect(NoKeyPolicyAllow),
        // Encryption context.
        row("context lineage vol-a")
            .key(alice_if(LINEAGE_EQUALS))
            .cond("kms:EncryptionContext:cryptvol:lineage", &["vol-a"]),
        row("context lineage vol-b")
            .key(alice_if(LINEAGE_EQUALS))
            .cond("kms:EncryptionContext:cryptvol:lineage", &["vol-b"])
            .expect(NoKeyPolicyAllow),
        row("context missing")
            .key(alice_if(LINEAGE_EQUALS))
            .expect(NoKeyPolicyAllow),
        row("context key is case-sensitive")
            .key(alice_if(LINEAGE_EQUALS))
            .cond("kms:EncryptionContext:Cryptvol:Lineage", &["vol-a"])
            .expect(NoKeyPolicyAllow),
        row("context prefix is case-insensitive")
            .key(alice_if(LINEAGE_EQUALS))
            .cond("KMS:ENCRYPTIONCONTEXT:cryptvol:lineage", &["vol-a"]),
        row("StringLike vol-a*: matches")
            .key(alice_if(
                r#"{"StringLike": {"kms:EncryptionContext:cryptvol:lineage": "vol-a*"}}"#,
            ))
            .cond("kms:EncryptionContext:cryptvol:lineage", &["vol-a-snap-7"]),
        row("StringLike vol-a*: no match")
            .key(alice_if(
                r#"{"StringLike": {"kms:EncryptionContext:cryptvol:lineage": "vol-a*"}}"#,
            ))
            .cond("kms:EncryptionContext:cryptvol:lineage", &["vol-b"])
            .expect(NoKeyPolicyAllow),
        row("StringNotEquals with the key missing holds")
            .key(alice_if(
                r#"{"StringNotEquals": {"kms:EncryptionContext:cryptvol:lineage": "vol-x"}}"#,
            )),
        row("StringNotEquals with the key equal fails")
            .key(alice_if(
                r#"{"StringNotEquals": {"kms:EncryptionContext:cryptvol:lineage": "vol-x"}}"#,
            ))
            .cond("kms:EncryptionContext:cryptvol:lineage", &["vol-x"])
            .expect(NoKeyPolicyAllow),
        row("StringEqualsIfExists with the key missing holds").key(alice_if(
            r#"{"StringEqualsIfExists": {"kms:EncryptionContext:cryptvol:lineage": "vol-a"}}"#,
        )),
        row("StringEqualsIfExists with a different value fails")
            .key(alice_if(
                r#"{"StringEqualsIfExists": {"kms:EncryptionContext:cryptvol:lineage": "vol-a"}}"#,
            ))
            .cond("kms:EncryptionContext:cryptvol:lineage", &["vol-b"])
            .expect(NoKeyPolicyAllow),
        row("StringEqualsIgnoreCase")
            .key(alice_if(
                r#"{"StringEqualsIgnoreCase": {"kms:EncryptionContext:cryptvol:lineage": "VOL-A"}}"#,
            ))
            .cond("kms:EncryptionContext:cryptvol:lineage", &["vol-a"]),
        row("Null false requires a context: present")
            .key(alice_if(r#"{"Null": {"kms:EncryptionContextKeys": "false"}}"#))
            .cond("kms:EncryptionContextKeys", &["cryptvol:lineage"]),
        row("Null false requires a context: absent")
            .key(alice_if(r#"{"Null": {"kms:EncryptionContextKeys": "false"}}"#))
            .expect(NoKeyPolicyAllow),
        row("Null true: key absent")
            .key(alice_if(r#"{"Null": {"kms:GrantIsForAWSResource": true}}"#)),
        row("Bool SecureTransport true")
            .key(alice_if(r#"{"Bool": {"aws:SecureTransport": "true"}}"#))
            .cond("aws:SecureTransport", &["TRUE"]),
        row("Bool SecureTransport false")
            .key(alice_if(r#"{"Bool": {"aws:SecureTransport": true}}"#))
            .cond("aws:SecureTransport", &["false"])
            .expect(NoKeyPolicyAllow),
        row("NumericLessThan: under")
            .key(alice_if(r#"{"NumericLessThan": {"aws:MultiFactorAuthAge": 3600}}"#))
            .cond("aws:MultiFactorAuthAge", &["100"]),
        row("NumericLessThan: over")
            .key(alice_if(r#"{"NumericLessThan": {"aws:MultiFactorAuthAge": "3600"}}"#))
            .cond("aws:MultiFactorAuthAge", &["7200"])
            .expect(NoKeyPolicyAllow),
        row("ForAllValues: all keys ours")
            .key(alice_if(CONTEXT_KEYS_ONLY_OURS))
            .cond("kms:EncryptionContextKeys", &["cryptvol:lineage"]),
        row("ForAllValues: a foreign key")
            .key(alice_if(CONTEXT_KEYS_ONLY_OURS))
            .cond("kms:EncryptionContextKeys", &["cryptvol:lineage", "other"])
            .expect(NoKeyPolicyAllow),
        row("ForAllValues: empty set holds")
            .key(alice_if(CONTEXT_KEYS_ONLY_OURS))
            .cond("kms:EncryptionContextKeys", &[]),
        row("ForAnyValue: one key matches")
            .key(alice_if(CONTEXT_KEYS_HAS_LINEAGE))
            .cond("kms:EncryptionContextKeys", &["other", "cryptvol:lineage"]),
        row("ForAnyValue: no key matches")
            .key(alice_if(CONTEXT_KEYS_HAS_LINEAGE))
            .cond("kms:EncryptionContextKeys", &["other"])
            .expect(NoKeyPolicyAllow),
        row("ForAnyValue: empty set fails")
            .key(alice_if(CONTEXT_KEYS_HAS_LINEAGE))
            .cond("kms:EncryptionContextKeys", &[])
            .expect(NoKeyPolicyAllow),
        // The AWS managed key's policy (alias/aws/ebs).
        row("managed: Decrypt through EBS")
            .key(managed())
            .cond("kms:ViaService", &[VIA_EBS])
            .cond("kms:CallerAccount", &[ACCT]),
        row("managed: Decrypt directly")
            .key(managed())
            .cond("kms:CallerAccount", &[ACCT])
            .expect(NoKeyPolicyAllow),
        row("managed: Decrypt through EBS of another region")
            .key(managed())
            .cond("kms:ViaService", &["ec2.eu-west-1.amazonaws.com"])
            .cond("kms:CallerAccount", &[ACCT])
            .expect(NoKeyPolicyAllow),
        row("managed: root Decrypt directly")
            .key(managed())
            .by(Root)
            .cond("kms:CallerAccount", &[ACCT])
            .expect(NoKeyPolicyAllow),
        row("managed: root DescribeKey")
            .key(managed())
            .by(Root)
            .action("kms:DescribeKey")
            .cond("kms:CallerAccount", &[ACCT]),
        row("managed: user DescribeKey directly needs IAM")
            .key(managed())
            .action("kms:DescribeKey")
            .cond("kms:CallerAccount", &[ACCT])
            .expect(NoIdentityPolicyAllow),
        row("managed: another account through EBS")
            .key(managed())
            .by(Carol)
            .cond("kms:ViaService", &[VIA_EBS])
            .cond("kms:CallerAccount", &[OTHER_ACCT])
            .expect(NoKeyPolicyAllow),
        // Cross-account and principal keys.
        row("other account delegated, its IAM allows")
            .key(only(&format!("arn:aws:iam::{OTHER_ACCT}:root")))
            .by(Carol)
            .identity(identity_allow("kms:Decrypt", KEY)),
        row("other account delegated, its IAM silent")
            .key(only(&format!("arn:aws:iam::{OTHER_ACCT}:root")))
            .by(Carol)
            .expect(NoIdentityPolicyAllow),
        row("aws:PrincipalArn StringLike matches")
            .key(grant(
                r#""*""#,
                r#", "Condition": {"StringLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:user/a*"}}"#,
            ))
            .cond("aws:PrincipalArn", &[ALICE]),
        row("aws:PrincipalArn StringLike does not match")
            .key(grant(
                r#""*""#,
                r#", "Condition": {"StringLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:user/a*"}}"#,
            ))
            .by(Bob)
            .cond("aws:PrincipalArn", &[BOB])
            .expect(NoKeyPolicyAllow),
        // Not-elements.
        row("NotAction: other actions allowed").key(format!(
            r#"{{"Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "{ALICE}"}}, "NotAction": "kms:ScheduleKeyDeletion"}}]}}"#
        )),
        row("NotAction: the excluded action")
            .key(format!(
                r#"{{"Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "{ALICE}"}}, "NotAction": "kms:ScheduleKeyDeletion"}}]}}"#
            ))
            .action("kms:ScheduleKeyDeletion")
            .expect(NoKeyPolicyAllow),
        row("NotPrincipal deny spares the named").key(format!(
            r#"{{"Statement": [
                {{"Effect": "Allow", "Principal": "*", "Action": "kms:*"}},
                {{"Effect": "Deny", "NotPrincipal": {{"AWS": "{ALICE}"}}, "Action": "kms:Decrypt"}}]}}"#
        )),
        row("NotPrincipal deny hits everyone else")
            .key(format!(
                r#"{{"Statement": [
                    {{"Effect": "Allow", "Principal": "*", "Action": "kms:*"}},
                    {{"Effect": "Deny", "NotPrincipal": {{"AWS": "{ALICE}"}}, "Action": "kms:Decrypt"}}]}}"#
            ))
            .by(Bob)
            .expect(DenyExplicitInKeyPolicy),
        // AWS's documented pattern: the account entry exempts the account principal only.
        row("NotPrincipal [alice, root]: alice spared").key(not_principal(&[ALICE, ROOT])),
        row("NotPrincipal [alice, root]: root spared")
            .key(not_principal(&[ALICE, ROOT]))
            .by(Root),
        row("NotPrincipal [alice, root]: bob denied though another statement allows him")
            .key(not_principal(&[ALICE, ROOT]))
            .by(Bob)
            .expect(DenyExplicitInKeyPolicy),
        row("NotPrincipal [alice, root]: a role denied")
            .key(not_principal(&[ALICE, ROOT]))
            .by(Ops)
            .expect(DenyExplicitInKeyPolicy),
        row("NotPrincipal [12-digit account]: bob denied")
            .key(not_principal(&[ACCT]))
            .by(Bob)
            .expect(DenyExplicitInKeyPolicy),
        row("NotPrincipal [12-digit account]: root spared")
            .key(not_principal(&[ACCT]))
            .by(Root),
        row("NotPrincipal [role]: the role spared")
            .key(not_principal(&[OPS, ROOT]))
            .by(Ops),
        row("NotPrincipal [role]: a user denied")
            .key(not_principal(&[OPS, ROOT]))
            .expect(DenyExplicitInKeyPolicy),
        row("NotPrincipal [role session pattern]: the role's session spared")
            .key(not_principal(&["arn:aws:sts::111122223333:assumed-role/ops/*", ROOT]))
            .by(Ops),
        row("NotPrincipal [other account's root]: its user carol denied")
            .key(not_principal(&["arn:aws:iam::444455556666:root", ROOT]))
            .by(Carol)
            .expect(DenyExplicitInKeyPolicy),
        row("NotPrincipal [other account's user, this root]: carol spared")
            .key(not_principal(&[CAROL, ROOT]))
            .by(Carol),
        row("NotPrincipal [other account's user, this root]: this account's alice denied")
            .key(not_principal(&[CAROL, ROOT]))
            .expect(DenyExplicitInKeyPolicy),
        row("NotPrincipal [other account's root]: this account's root denied")
            .key(not_principal(&["arn:aws:iam::444455556666:root"]))
            .by(Root)
            .expect(DenyExplicitInKeyPolicy),
        row("NotPrincipal \"*\": nobody denied").key(not_principal(&["*"])).by(Bob),
        row("NotPrincipal [alice, root]: another action not denied")
            .key(not_principal(&[ALICE, ROOT]))
            .by(Bob)
            .action("kms:Encrypt"),
        row("identity NotResource: other keys")
            .key(default_policy())
            .identity(
                r#"{"Statement": {"Effect": "Allow", "Action": "kms:*", "NotResource": "arn:aws:kms:*:*:key/secret-*"}}"#,
            ),
        row("identity NotResource: the excluded key")
            .key(default_policy())
            .identity(
                r#"{"Statement": {"Effect": "Allow", "Action": "kms:*", "NotResource": "arn:aws:kms:*:*:key/secret-*"}}"#,
            )
            .on(SECRET_KEY)
            .expect(NoIdentityPolicyAllow),
        // Account-level actions (no key) and identity resource patterns.
        row("key pattern does not cover account-level ListKeys")
            .identity(identity_allow("kms:*", "arn:aws:kms:*:*:key/*"))
            .action("kms:ListKeys")
            .on("*")
            .expect(NoIdentityPolicyAllow),
        row("Resource * covers account-level ListKeys")
            .identity(identity_allow("kms:*", "*"))
            .action("kms:ListKeys")
            .on("*"),
        row("key pattern covers a key")
            .key(default_policy())
            .identity(identity_allow("kms:*", "arn:aws:kms:*:*:key/*")),
        row("root CreateKey without identity policies")
            .by(Root)
            .action("kms:CreateKey")
            .on("*"),
        row("user CreateKey without identity policies")
            .action("kms:CreateKey")
            .on("*")
            .expect(NoIdentityPolicyAllow),
        row("identity policy for IAM actions")
            .identity(identity_allow("iam:*", "*"))
            .action("iam:CreateUser")
            .on("*"),
        row("identity policy for s3 does not cover IAM")
            .identity(identity_allow("s3:GetObject", "*"))
            .action("iam:CreateUser")
            .on("*")
            .expect(NoIdentityPolicyAllow),
        row("identity deny on account-level action")
            .identity(identity_allow("kms:*", "*"))
            .identity(identity_deny("kms:CreateKey"))
            .action("kms:CreateKey")
            .on("*")
            .expect(DenyExplicitInIdentityPolicy),
        // Action patterns.
        row("kms:Generate* covers GenerateDataKeyPair")
            .key(grant(&format!(r#"{{"AWS": "{ALICE}"}}"#), "").replace("kms:*", "kms:Generate*"))
            .action("kms:GenerateDataKeyPair"),
        row("kms:Generate* does not cover Decrypt")
            .key(grant(&format!(r#"{{"AWS": "{ALICE}"}}"#), "").replace("kms:*", "kms:Generate*"))
            .expect(NoKeyPolicyAllow),
        row("kms:* covers Sign").key(only(ALICE)).action("kms:Sign"),
        row("policy action in odd case")
            .key(grant(&format!(r#"{{"AWS": "{ALICE}"}}"#), "").replace("kms:*", "KMS:decrypt")),
        row("request action in odd case")
            .key(grant(&format!(r#"{{"AWS": "{ALICE}"}}"#), "").replace("kms:*", "kms:Decrypt"))
            .action("KMS:DECRYPT"),
        // Roles.
        row("role by role ARN").key(only(OPS)).by(Ops),
        row("role by assumed-role pattern")
            .key(only("arn:aws:sts::111122223333:assumed-role/ops/*"))
            .by(Ops),
        row("assumed-role pattern of another role")
            .key(only("arn:aws:sts::111122223333:assumed-role/audit/*"))
            .by(Ops)
            .expect(NoKeyPolicyAllow),
        row("role with a path").key(only("arn:aws:iam::111122223333:role/team/ops")).by(Ops),
        // Shapes.
        row("Statement as a single object").key(format!(
            r#"{{"Statement": {{"Effect": "Allow", "Principal": {{"AWS": ["{BOB}", "{ALICE}"]}}, "Action": ["kms:Decrypt"], "Resource": "*"}}}}"#
        )),
        row("bare account id, IAM allows")
            .key(only(ACCT))
            .identity(identity_allow("kms:Decrypt", "*")),
        row("bare account id, IAM silent")
            .key(only(ACCT))
            .expect(NoIdentityPolicyAllow),
        row("bare account id, root").key(only(ACCT)).by(Root),
        row("service principal never matches a local caller")
            .key(grant(r#"{"Service": "ec2.amazonaws.com"}"#, ""))
            .by(Root)
            .expect(NoKeyPolicyAllow),
    ]
}

fn run(case: &Case) -> Decision {
    let key_policy = case.key_policy.as_ref().map(|text| {
        Policy::parse(text, PolicyKind::Key)
            .unwrap_or_else(|e| panic!("{}: key policy does not parse: {e}", case.name))
    });
    let identity: Vec<Policy> = case
        .identity
        .iter()
        .map(|text| {
            Policy::parse(text, PolicyKind::Identity)
                .unwrap_or_else(|e| panic!("{}: identity policy does not parse: {e}", case.name))
        })
        .collect();
    let mut conditions = ConditionValues::new();
    for (key, values) in &case.conditions {
        conditions.set_multi(key, values.iter().map(|v| v.to_string()).collect());
    }
    let caller = case.who.caller();
    let request = AccessRequest {
        caller: &caller,
        action: case.action,
        resource: case.resource,
        conditions: &conditions,
    };
    evaluate(key_policy.as_ref(), &identity, &request)
}

#[test]
fn decision_table() {
    let cases = cases();
    assert!(cases.len() >= 45, "only {} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let got = run(case);
            (got != case.expected)
                .then(|| format!("{}: expected {:?}, got {:?}", case.name, case.expected, got))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn root_with_default_policy_may_do_every_kms_action() {
    let policy = Policy::parse(&default_policy(), PolicyKind::Key).expect("default parses");
    let root = Who::Root.caller();
    let conditions = ConditionValues::new();
    for action in KMS_ACTIONS {
        let request = AccessRequest {
            caller: &root,
            action,
            resource: KEY,
            conditions: &conditions,
        };
        assert_eq!(
            evaluate(Some(&policy), &[], &request),
            Decision::Allow,
            "{action}"
        );
    }
}

/// (name, kind, document, expected path, words the message must contain)
type Refusal = (&'static str, PolicyKind, String, &'static str, &'static str);

fn refusals() -> Vec<Refusal> {
    use PolicyKind::{Identity, Key};
    let stmt = |body: &str| format!(r#"{{"Version": "2012-10-17", "Statement": [{body}]}}"#);
    let ok = r#"{"Effect": "Allow", "Principal": "*", "Action": "kms:*"}"#;
    vec![
        (
            "invalid JSON",
            Key,
            "{\n  \"Statement\": [\n}".into(),
            "policy",
            "line 3",
        ),
        ("not an object", Key, "[]".into(), "policy", "JSON object"),
        (
            "too large",
            Key,
            format!(
                r#"{{"Id": "{}", "Statement": {ok}}}"#,
                "x".repeat(MAX_POLICY_BYTES)
            ),
            "policy",
            "at most 32768 bytes",
        ),
        (
            "unknown Effect",
            Key,
            format!(
                "{{\"Statement\": [{ok}, {}]}}",
                r#"{"Effect": "allow", "Principal": "*", "Action": "kms:*"}"#
            ),
            "Statement[1].Effect",
            "unknown Effect 'allow': use \"Allow\" or \"Deny\"",
        ),
        (
            "missing Effect",
            Key,
            stmt(r#"{"Principal": "*", "Action": "kms:*"}"#),
            "Statement[0].Effect",
            "missing",
        ),
        (
            "bad principal ARN",
            Key,
            stmt(&format!(
                r#"{{"Effect": "Allow", "Principal": {{"AWS": ["{ALICE}", "*", "arn:aws:iam::123:user/x"]}}, "Action": "kms:*"}}"#
            )),
            "Statement[0].Principal.AWS[2]",
            "'arn:aws:iam::123:user/x' is not a valid principal: use \"*\", a 12-digit account id",
        ),
        (
            "principal as a bare name",
            Key,
            stmt(r#"{"Effect": "Allow", "Principal": {"AWS": "alice"}, "Action": "kms:*"}"#),
            "Statement[0].Principal.AWS",
            "not a valid principal",
        ),
        (
            "federated principal",
            Key,
            stmt(
                r#"{"Effect": "Allow", "Principal": {"Federated": "cognito-identity.amazonaws.com"}, "Action": "kms:*"}"#,
            ),
            "Statement[0].Principal.Federated",
            "unsupported principal type Federated: use \"AWS\"",
        ),
        (
            "principal string other than *",
            Key,
            stmt(&format!(
                r#"{{"Effect": "Allow", "Principal": "{ALICE}", "Action": "kms:*"}}"#
            )),
            "Statement[0].Principal",
            "{\"AWS\"",
        ),
        (
            "unknown condition operator",
            Key,
            stmt(
                r#"{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Condition": {"StringEqualz": {"kms:ViaService": "x"}}}"#,
            ),
            "Statement[0].Condition.StringEqualz",
            "unknown condition operator 'StringEqualz'",
        ),
        (
            "condition key without prefix",
            Key,
            stmt(
                r#"{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Condition": {"StringEquals": {"ViaService": "x"}}}"#,
            ),
            "Statement[0].Condition.StringEquals.ViaService",
            "prefix:name",
        ),
        (
            "numeric operator with a non-number",
            Key,
            stmt(
                r#"{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Condition": {"NumericLessThan": {"aws:MultiFactorAuthAge": ["60", "soon"]}}}"#,
            ),
            "Statement[0].Condition.NumericLessThan.aws:MultiFactorAuthAge[1]",
            "'soon' is not a number",
        ),
        (
            "Bool with a non-boolean",
            Key,
            stmt(
                r#"{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Condition": {"Bool": {"aws:SecureTransport": "yes"}}}"#,
            ),
            "Statement[0].Condition.Bool.aws:SecureTransport",
            "not a boolean",
        ),
        (
            "unknown top-level field",
            Key,
            format!(r#"{{"Statement": {ok}, "Statment": []}}"#),
            "Statment",
            "unknown top-level field 'Statment'",
        ),
        (
            "unsupported Version",
            Key,
            format!(r#"{{"Version": "2020-01-01", "Statement": {ok}}}"#),
            "Version",
            "2012-10-17",
        ),
        (
            "unknown statement field",
            Key,
            stmt(r#"{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resources": "*"}"#),
            "Statement[0].Resources",
            "unknown statement field 'Resources'",
        ),
        (
            "Principal in identity policy",
            Identity,
            stmt(r#"{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}"#),
            "Statement[0].Principal",
            "an identity policy names no Principal; it applies to the user or role it is attached to",
        ),
        (
            "NotPrincipal in identity policy",
            Identity,
            stmt(
                r#"{"Effect": "Deny", "NotPrincipal": {"AWS": "111122223333"}, "Action": "kms:*", "Resource": "*"}"#,
            ),
            "Statement[0].NotPrincipal",
            "an identity policy names no Principal",
        ),
        (
            "missing Principal in key policy",
            Key,
            stmt(r#"{"Effect": "Allow", "Action": "kms:*"}"#),
            "Statement[0].Principal",
            "must name a Principal",
        ),
        (
            "both Principal and NotPrincipal",
            Key,
            stmt(
                r#"{"Effect": "Allow", "Principal": "*", "NotPrincipal": "*", "Action": "kms:*"}"#,
            ),
            "Statement[0].NotPrincipal",
            "not both",
        ),
        (
            "missing Resource in identity policy",
            Identity,
            stmt(r#"{"Effect": "Allow", "Action": "kms:*"}"#),
            "Statement[0].Resource",
            "must name a Resource",
        ),
        (
            "resource that is not an ARN",
            Identity,
            stmt(r#"{"Effect": "Allow", "Action": "kms:*", "Resource": "key/abc"}"#),
            "Statement[0].Resource",
            "not a resource",
        ),
        (
            "missing Action",
            Key,
            stmt(r#"{"Effect": "Allow", "Principal": "*"}"#),
            "Statement[0].Action",
            "missing",
        ),
        (
            "unknown kms action",
            Key,
            format!(
                "{{\"Statement\": [{ok}, {ok}, {}]}}",
                r#"{"Effect": "Allow", "Principal": "*", "Action": ["kms:Decryptt"]}"#
            ),
            "Statement[2].Action[0]",
            "'kms:Decryptt' is not a KMS action",
        ),
        (
            "unknown kms action in identity policy",
            Identity,
            stmt(r#"{"Effect": "Allow", "Action": "kms:Decryptt", "Resource": "*"}"#),
            "Statement[0].Action",
            "not a KMS action",
        ),
        (
            "kms wildcard matching nothing",
            Key,
            stmt(r#"{"Effect": "Allow", "Principal": "*", "Action": "kms:Frob*"}"#),
            "Statement[0].Action",
            "matches no KMS action",
        ),
        (
            "non-kms action in key policy",
            Key,
            stmt(
                r#"{"Effect": "Allow", "Principal": "*", "Action": ["kms:Decrypt", "s3:GetObject"]}"#,
            ),
            "Statement[0].Action[1]",
            "a key policy controls only kms: actions",
        ),
        (
            "action without a service",
            Identity,
            stmt(r#"{"Effect": "Allow", "Action": "Decrypt", "Resource": "*"}"#),
            "Statement[0].Action",
            "service:Action",
        ),
        (
            "empty Action array",
            Key,
            stmt(r#"{"Effect": "Allow", "Principal": "*", "Action": []}"#),
            "Statement[0].Action",
            "is empty",
        ),
        (
            "empty Statement array",
            Key,
            r#"{"Statement": []}"#.into(),
            "Statement",
            "is empty",
        ),
        (
            "missing Statement",
            Key,
            r#"{"Version": "2012-10-17"}"#.into(),
            "Statement",
            "missing",
        ),
        (
            "duplicate Sid",
            Key,
            format!(
                "{{\"Statement\": [{0}, {0}]}}",
                r#"{"Sid": "a", "Effect": "Allow", "Principal": "*", "Action": "kms:*"}"#
            ),
            "Statement[1].Sid",
            "duplicate Sid 'a'",
        ),
    ]
}

#[test]
fn refused_documents_name_the_element() {
    let mut failures = Vec::new();
    for (name, kind, text, path, words) in refusals() {
        match Policy::parse(&text, kind) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(e) if e.path != path || !e.message.contains(words) => {
                failures.push(format!(
                    "{name}: got {e:?}, want path {path:?} containing {words:?}"
                ));
            }
            Err(e) => assert_eq!(e.to_string(), format!("{}: {}", e.path, e.message)),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn templates_parse_and_round_trip() {
    let users = [
        ALICE.to_string(),
        "arn:aws:iam::111122223333:role/ops".to_string(),
    ];
    let texts = [
        default_key_policy(ACCT),
        least_privilege_key_policy(ACCT, &[BOB.to_string()], &users),
        least_privilege_key_policy(ACCT, &[], &[]),
        managed_key_policy(ACCT, "eu-west-1"),
    ];
    for text in &texts {
        let policy = Policy::parse(text, PolicyKind::Key)
            .unwrap_or_else(|e| panic!("template does not parse: {e}\n{text}"));
        // Round trip: the JSON re-serialised the same way parses to the same principals.
        let value: serde_json::Value = serde_json::from_str(text).expect("template is JSON");
        let again = serde_json::to_string_pretty(&value).expect("re-serialise");
        let reparsed = Policy::parse(&again, PolicyKind::Key).expect("re-serialised parses");
        assert_eq!(policy.principal_arns(), reparsed.principal_arns());
        assert_eq!(policy.statements.len(), reparsed.statements.len());
    }
    // Root, administrators, users, and the users' grants for AWS resources.
    assert_eq!(
        Policy::parse(&texts[1], PolicyKind::Key).map(|p| p.statements.len()),
        Ok(4)
    );
    assert_eq!(
        Policy::parse(&texts[2], PolicyKind::Key).map(|p| p.statements.len()),
        Ok(1)
    );
}

#[test]
fn default_policy_text_is_aws_shaped() {
    let expected = r#"{
  "Version": "2012-10-17",
  "Id": "key-default-1",
  "Statement": [
    {
      "Sid": "Enable IAM User Permissions",
      "Effect": "Allow",
      "Principal": {
        "AWS": "arn:aws:iam::111122223333:root"
      },
      "Action": "kms:*",
      "Resource": "*"
    }
  ]
}"#;
    assert_eq!(default_key_policy(ACCT), expected);
}

#[test]
fn managed_policy_text_names_the_region_and_account() {
    let text = managed_key_policy(ACCT, "us-west-2");
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let first = &value["Statement"][0];
    assert_eq!(
        first["Sid"],
        "Allow access through EBS for all principals in the account that are authorized to use EBS"
    );
    assert_eq!(first["Principal"]["AWS"], "*");
    assert_eq!(
        first["Condition"]["StringEquals"]["kms:CallerAccount"],
        ACCT
    );
    assert_eq!(
        first["Condition"]["StringEquals"]["kms:ViaService"],
        "ec2.us-west-2.amazonaws.com"
    );
    assert_eq!(first["Action"].as_array().map(Vec::len), Some(6));
    let second = &value["Statement"][1];
    assert_eq!(
        second["Sid"],
        "Allow direct access to key metadata to the account"
    );
    assert_eq!(second["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
    assert!(
        text.contains("\n    {\n      \"Sid\""),
        "two-space indent:\n{text}"
    );
}

#[test]
fn least_privilege_statement_order_and_actions() {
    let text = least_privilege_key_policy(ACCT, &[BOB.to_string()], &[ALICE.to_string()]);
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let sids: Vec<&str> = (0..5)
        .filter_map(|i| value["Statement"][i]["Sid"].as_str())
        .collect();
    assert_eq!(
        sids,
        [
            "Enable IAM User Permissions",
            "Allow access for Key Administrators",
            "Allow use of the key",
            "Allow attachment of persistent resources"
        ]
    );
    assert_eq!(value["Statement"][3]["Principal"]["AWS"], ALICE);
    assert_eq!(
        value["Statement"][3]["Condition"],
        serde_json::json!({"Bool": {"kms:GrantIsForAWSResource": "true"}})
    );
    assert_eq!(value["Statement"][1]["Principal"]["AWS"], BOB);
    assert_eq!(
        value["Statement"][1]["Action"].as_array().map(Vec::len),
        Some(ADMIN_ACTIONS.len())
    );
    assert_eq!(
        value["Statement"][2]["Action"].as_array().map(Vec::len),
        Some(USAGE_ACTIONS.len())
    );
}

#[test]
fn principal_arns_expand_and_deduplicate() {
    let text = format!(
        r#"{{"Statement": [
            {{"Effect": "Allow", "Principal": {{"AWS": ["{ACCT}", "*", "{ALICE}"]}}, "Action": "kms:*"}},
            {{"Effect": "Deny", "NotPrincipal": {{"AWS": ["arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:user/team/bob"]}}, "Action": "kms:Decrypt"}},
            {{"Effect": "Allow", "Principal": {{"AWS": "arn:aws:sts::111122223333:assumed-role/ops/s1", "Service": "ec2.amazonaws.com"}}, "Action": "kms:Decrypt"}}
        ]}}"#
    );
    let policy = Policy::parse(&text, PolicyKind::Key).expect("parses");
    assert_eq!(
        policy.principal_arns(),
        [
            "arn:aws:iam::111122223333:root",
            ALICE,
            BOB,
            "arn:aws:iam::111122223333:role/ops"
        ]
    );
}

#[test]
fn denial_messages_have_aws_shape() {
    let msg = |d: Decision| d.denial_message(ALICE, "kms:Decrypt", KEY);
    assert_eq!(msg(Decision::Allow), None);
    let prefix =
        format!("User: {ALICE} is not authorized to perform: kms:Decrypt on resource: {KEY}");
    assert_eq!(
        msg(Decision::NoKeyPolicyAllow),
        Some(format!(
            "{prefix} because no resource-based policy allows the kms:Decrypt action"
        ))
    );
    assert_eq!(
        msg(Decision::DenyExplicitInKeyPolicy),
        Some(format!(
            "{prefix} with an explicit deny in a resource-based policy"
        ))
    );
    assert_eq!(
        msg(Decision::DenyExplicitInIdentityPolicy),
        Some(format!(
            "{prefix} with an explicit deny in an identity-based policy"
        ))
    );
    assert_eq!(
        msg(Decision::NoIdentityPolicyAllow),
        Some(format!(
            "{prefix} because no identity-based policy allows the kms:Decrypt action"
        ))
    );
    assert!(Decision::Allow.is_allowed());
    assert!(!Decision::NoKeyPolicyAllow.is_allowed());
}

/// A small deterministic generator; the point is reproducible variety, not quality.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutated policies (byte flips, deletions, JSON fragments spliced in) must be refused or
/// accepted, never panic, and whatever parses must evaluate without panicking.
#[test]
fn mutated_documents_never_panic() {
    let seeds: Vec<String> = cases()
        .into_iter()
        .flat_map(|c| c.key_policy.into_iter().chain(c.identity))
        .chain(refusals().into_iter().map(|r| r.2))
        .filter(|s| s.len() < 4096)
        .collect();
    const FRAGMENTS: &[&str] = &[
        "*",
        "?",
        "\"",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "null",
        "true",
        "1e999",
        "-0",
        "\"*\"",
        "\"kms:*\"",
        "{\"AWS\":\"*\"}",
        "[]",
        "{}",
        "é",
        "\\u0000",
        "IfExists",
        "ForAllValues:",
        "arn:aws:iam::111122223333:",
        "\"Null\"",
        "\"Condition\"",
        "NaN",
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let caller = Who::Alice.caller();
    let mut conditions = ConditionValues::new();
    conditions.set("kms:EncryptionContext:cryptvol:lineage", "vol-a");
    conditions.set_multi("kms:EncryptionContextKeys", vec!["cryptvol:lineage".into()]);
    conditions.set("aws:MultiFactorAuthAge", "NaN");
    let mut parsed = 0;
    for _ in 0..4000 {
        let mut bytes = seeds[rng.below(seeds.len())].clone().into_bytes();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(3) {
                0 if at < bytes.len() => bytes[at] = (rng.next() & 0x7f) as u8,
                1 if at < bytes.len() => {
                    let end = (at + rng.below(8)).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ => {
                    let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())];
                    bytes.splice(at..at, fragment.bytes());
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        for kind in [PolicyKind::Key, PolicyKind::Identity] {
            if let Ok(policy) = Policy::parse(&text, kind) {
                parsed += 1;
                let _ = policy.principal_arns();
                let request = AccessRequest {
                    caller: &caller,
                    action: "kms:Decrypt",
                    resource: KEY,
                    conditions: &conditions,
                };
                let decision = evaluate(Some(&policy), std::slice::from_ref(&policy), &request);
                assert_eq!(
                    decision.denial_message("a", "b", "c").is_none(),
                    decision.is_allowed()
                );
            }
        }
    }
    // Some mutations are harmless, so the run also exercises evaluation.
    assert!(parsed > 0);
}
