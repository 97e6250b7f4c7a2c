//! Decision-table rows on who and what: cross-account and principal keys, Not-elements,
//! the account entry, account-level actions and identity resource patterns, action
//! patterns, roles, and policy shapes.

use super::decision_table::*;
use super::*;

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

pub(super) fn cases() -> Vec<Case> {
    use Decision::*;
    use Who::*;
    vec![
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
