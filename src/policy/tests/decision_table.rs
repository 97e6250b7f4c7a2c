//! The decision table: a row is one authorization question (key policy, identity
//! policies, caller, action, resource, condition keys) and the decision it must get.
//! This file has the row type and its builders, the policy texts rows share, the
//! first rows (templates, explicit denies, delegation), and the tests that run them.

use super::conditions;
use super::principals;
use super::*;

pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) key_policy: Option<String>,
    pub(super) identity: Vec<String>,
    pub(super) who: Who,
    pub(super) action: &'static str,
    pub(super) resource: &'static str,
    pub(super) conditions: Vec<(&'static str, Vec<&'static str>)>,
    pub(super) expected: Decision,
}

/// A row with defaults: alice decrypts KEY with no policies, expecting Allow.
pub(super) fn row(name: &'static str) -> Case {
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
    pub(super) fn key(mut self, policy: impl Into<String>) -> Self {
        self.key_policy = Some(policy.into());
        self
    }
    pub(super) fn identity(mut self, policy: impl Into<String>) -> Self {
        self.identity.push(policy.into());
        self
    }
    pub(super) fn by(mut self, who: Who) -> Self {
        self.who = who;
        self
    }
    pub(super) fn action(mut self, action: &'static str) -> Self {
        self.action = action;
        self
    }
    pub(super) fn on(mut self, resource: &'static str) -> Self {
        self.resource = resource;
        self
    }
    pub(super) fn cond(mut self, key: &'static str, values: &[&'static str]) -> Self {
        self.conditions.push((key, values.to_vec()));
        self
    }
    pub(super) fn expect(mut self, decision: Decision) -> Self {
        self.expected = decision;
        self
    }
}

pub(super) fn default_policy() -> String {
    default_key_policy(ACCT)
}

pub(super) fn users_alice() -> String {
    least_privilege_key_policy(ACCT, &[], &[ALICE.to_string()])
}

pub(super) fn admins_bob() -> String {
    least_privilege_key_policy(ACCT, &[BOB.to_string()], &[])
}

/// A key policy granting `principal` (JSON) `kms:*`, plus extra statement fields.
pub(super) fn grant(principal: &str, extra: &str) -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Principal": {principal}, "Action": "kms:*"{extra}}}]}}"#
    )
}

pub(super) fn only(arn: &str) -> String {
    grant(&format!(r#"{{"AWS": "{arn}"}}"#), "")
}

pub(super) fn identity_allow(action: &str, resource: &str) -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "{action}", "Resource": "{resource}"}}]}}"#
    )
}

pub(super) fn identity_deny(action: &str) -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Deny", "Action": "{action}", "Resource": "*"}}]}}"#
    )
}

/// Every row of the table, in order.
pub(super) fn cases() -> Vec<Case> {
    let mut all = template_and_deny_cases();
    all.extend(conditions::cases());
    all.extend(principals::cases());
    all
}

/// Templates, explicit denies, delegation to the account.
fn template_and_deny_cases() -> Vec<Case> {
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
