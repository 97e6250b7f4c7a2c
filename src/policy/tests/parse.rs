//! Documents that must be refused, each with the element its error names and words its
//! message must contain.

use super::*;

/// (name, kind, document, expected path, words the message must contain)
pub(super) type Refusal = (&'static str, PolicyKind, String, &'static str, &'static str);

pub(super) fn refusals() -> Vec<Refusal> {
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
