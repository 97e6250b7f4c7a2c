//! The KMS action names a policy may mention, and the two action sets the console's
//! least-privilege template hands out. Validation uses [`KMS_ACTIONS`] to catch typos
//! (`kms:Decryptt`) that would otherwise silently grant nothing.

use super::wildcard::{Case, glob_match, has_wildcard};

/// Every KMS API action, as AWS spells it.
pub const KMS_ACTIONS: &[&str] = &[
    "kms:CancelKeyDeletion",
    "kms:ConnectCustomKeyStore",
    "kms:CreateAlias",
    "kms:CreateCustomKeyStore",
    "kms:CreateGrant",
    "kms:CreateKey",
    "kms:Decrypt",
    "kms:DeleteAlias",
    "kms:DeleteCustomKeyStore",
    "kms:DeleteImportedKeyMaterial",
    "kms:DescribeCustomKeyStores",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:DisconnectCustomKeyStore",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateMac",
    "kms:GenerateRandom",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:GetParametersForImport",
    "kms:GetPublicKey",
    "kms:ImportKeyMaterial",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListKeys",
    "kms:ListResourceTags",
    "kms:ListRetirableGrants",
    "kms:PutKeyPolicy",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:ReplicateKey",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:Sign",
    "kms:SynchronizeMultiRegionKey",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateCustomKeyStore",
    "kms:UpdateKeyDescription",
    "kms:UpdatePrimaryRegion",
    "kms:Verify",
    "kms:VerifyMac",
];

/// Every Secrets Manager API action, as AWS spells it.
pub const SECRETS_ACTIONS: &[&str] = &[
    "secretsmanager:BatchGetSecretValue",
    "secretsmanager:CancelRotateSecret",
    "secretsmanager:CreateSecret",
    "secretsmanager:DeleteResourcePolicy",
    "secretsmanager:DeleteSecret",
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetRandomPassword",
    "secretsmanager:GetResourcePolicy",
    "secretsmanager:GetSecretValue",
    "secretsmanager:ListSecretVersionIds",
    "secretsmanager:ListSecrets",
    "secretsmanager:PutResourcePolicy",
    "secretsmanager:PutSecretValue",
    "secretsmanager:RemoveRegionsFromReplication",
    "secretsmanager:ReplicateSecretToRegions",
    "secretsmanager:RestoreSecret",
    "secretsmanager:RotateSecret",
    "secretsmanager:StopReplicationToReplica",
    "secretsmanager:TagResource",
    "secretsmanager:UntagResource",
    "secretsmanager:UpdateSecret",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:ValidateResourcePolicy",
];

/// "Allow access for Key Administrators" in AWS's console template: manage the key, never
/// use it for cryptography.
pub const ADMIN_ACTIONS: &[&str] = &[
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
];

/// "Allow use of the key" in AWS's console template: cryptographic use and DescribeKey.
pub const USAGE_ACTIONS: &[&str] = &[
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:DescribeKey",
];

/// Whether a `kms:` pattern (service prefix included) names at least one real action:
/// exactly (ignoring case) when it has no wildcard, by glob otherwise.
pub(crate) fn names_known_kms_action(pattern: &str) -> bool {
    if has_wildcard(pattern) {
        KMS_ACTIONS
            .iter()
            .any(|action| glob_match(pattern, action, Case::Insensitive))
    } else {
        KMS_ACTIONS
            .iter()
            .any(|action| action.eq_ignore_ascii_case(pattern))
    }
}

/// Whether a `secretsmanager:` pattern names at least one real action.
pub(crate) fn names_known_secrets_action(pattern: &str) -> bool {
    SECRETS_ACTIONS.iter().any(|action| {
        if has_wildcard(pattern) {
            glob_match(pattern, action, Case::Insensitive)
        } else {
            action.eq_ignore_ascii_case(pattern)
        }
    })
}

/// "Allow attachment of persistent resources" in AWS's console template: grants, only for
/// AWS resources (`kms:GrantIsForAWSResource`), such as a volume's grant to the volume
/// service.
pub const PERSISTENT_RESOURCE_ACTIONS: &[&str] =
    &["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"];

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn admin_actions_never_reach_cryptographic_use() {
        for crypto in [
            "kms:Decrypt",
            "kms:Encrypt",
            "kms:GenerateDataKey",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:ReEncryptFrom",
            "kms:ReEncryptTo",
        ] {
            for admin in ADMIN_ACTIONS {
                assert!(
                    !glob_match(admin, crypto, Case::Insensitive),
                    "{admin} matches {crypto}"
                );
            }
        }
    }

    #[test]
    fn every_template_pattern_names_an_action() {
        for pattern in ADMIN_ACTIONS
            .iter()
            .chain(USAGE_ACTIONS)
            .chain(PERSISTENT_RESOURCE_ACTIONS)
        {
            assert!(names_known_kms_action(pattern), "{pattern}");
        }
    }

    #[test]
    fn known_action_lookup() {
        assert!(names_known_kms_action("kms:decrypt"));
        assert!(!names_known_kms_action("kms:Decryptt"));
        assert!(names_known_kms_action("kms:Generate*"));
        assert!(!names_known_kms_action("kms:Frobnicate*"));
    }
}
