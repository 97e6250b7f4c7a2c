//! Decision-table rows on conditions: encryption context keys and values, and the AWS
//! managed key's policy (`kms:ViaService`, `kms:CallerAccount`).

use super::decision_table::*;
use super::*;

fn managed() -> String {
    managed_key_policy(ACCT, "us-east-1")
}

/// Alice may use the key only when `condition` (a Condition element) holds.
fn alice_if(condition: &str) -> String {
    grant(
        &format!(r#"{{"AWS": "{ALICE}"}}"#),
        &format!(r#", "Condition": {condition}"#),
    )
}

const LINEAGE_EQUALS: &str =
    r#"{"StringEquals": {"kms:EncryptionContext:cryptvol:lineage": "vol-a"}}"#;
const CONTEXT_KEYS_ONLY_OURS: &str = r#"{"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["cryptvol:lineage", "cryptvol:volume"]}}"#;
const CONTEXT_KEYS_HAS_LINEAGE: &str =
    r#"{"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "cryptvol:lineage"}}"#;
const VIA_EBS: &str = "ec2.us-east-1.amazonaws.com";

pub(super) fn cases() -> Vec<Case> {
    use Decision::*;
    use Who::*;
    vec![
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
    ]
}
