//! The credential chain on temporary homes, with the environment given to [`Sources`]
//! per test (the process environment is never changed).

use std::os::unix::fs::PermissionsExt;

use super::*;

const NOW: i64 = 1_800_000_000;

/// A temporary HOME with `~/.aws/credentials` and `~/.aws/config` as given.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new(credentials: &str, config: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".aws")).unwrap();
        if !credentials.is_empty() {
            std::fs::write(dir.path().join(".aws/credentials"), credentials).unwrap();
        }
        if !config.is_empty() {
            std::fs::write(dir.path().join(".aws/config"), config).unwrap();
        }
        Home { dir }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    /// An executable script in the home that runs `body` under sh.
    fn script(&self, name: &str, body: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_str().unwrap().to_string()
    }

    fn resolve(&self, vars: &[(&str, &str)], profile: Option<&str>) -> Result<Resolved> {
        let mut all = vec![("HOME", self.path())];
        all.extend_from_slice(vars);
        resolve_with(&Sources::new(all, NOW), profile)
    }
}

fn problem(r: Result<Resolved>) -> (CredentialProblem, String) {
    match r {
        Err(AwsError::Credentials { problem, message }) => (problem, message),
        other => panic!("expected a credentials error, got {other:?}"),
    }
}

const FILES: &str = "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = sdefault\n\n[work]\naws_access_key_id=AKWORK\naws_secret_access_key=swork\naws_session_token = twork\n";

#[test]
fn environment_first_unless_a_profile_is_named() {
    let h = Home::new(FILES, "");
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKENV"),
        ("AWS_SECRET_ACCESS_KEY", "senv"),
        ("AWS_SESSION_TOKEN", "tenv"),
    ];
    let r = h.resolve(&env, None).unwrap();
    assert_eq!(r.credentials.access_key_id, "AKENV");
    assert_eq!(
        r.credentials.session_token.as_deref().map(String::as_str),
        Some("tenv")
    );
    // AWS_PROFILE does not outrank the keys of the environment...
    let mut with_profile = env.to_vec();
    with_profile.push(("AWS_PROFILE", "work"));
    assert_eq!(
        h.resolve(&with_profile, None)
            .unwrap()
            .credentials
            .access_key_id,
        "AKENV"
    );
    // ...an explicit profile does (as the CLI's --profile).
    let r = h.resolve(&env, Some("work")).unwrap();
    assert_eq!(r.credentials.access_key_id, "AKWORK");
    assert_eq!(r.profile, "work");
    // Half a key in the environment is an error, not a silent fall-through.
    let (p, m) = problem(h.resolve(&[("AWS_ACCESS_KEY_ID", "AKENV")], None));
    assert_eq!(p, CredentialProblem::Malformed);
    assert!(m.contains("AWS_SECRET_ACCESS_KEY"), "{m}");
}

#[test]
fn profile_from_argument_then_aws_profile_then_default() {
    let h = Home::new(FILES, "");
    assert_eq!(
        h.resolve(&[], None).unwrap().credentials.access_key_id,
        "AKDEFAULT"
    );
    let r = h.resolve(&[("AWS_PROFILE", "work")], None).unwrap();
    assert_eq!(r.credentials.access_key_id, "AKWORK");
    assert_eq!(
        r.credentials.session_token.as_deref().map(String::as_str),
        Some("twork")
    );
    let r = h
        .resolve(&[("AWS_PROFILE", "nope")], Some("default"))
        .unwrap();
    assert_eq!(r.credentials.access_key_id, "AKDEFAULT");
}

#[test]
fn config_file_sections_and_region() {
    let config = "[default]\nregion = eu-west-1\n[profile cfg]\nregion=us-east-2\naws_access_key_id = AKCFG\naws_secret_access_key = scfg\n[cfg]\naws_access_key_id = WRONG\n# a comment\n[sso-session x]\nsso_region = a\n";
    let h = Home::new("", config);
    let r = h.resolve(&[], Some("cfg")).unwrap();
    assert_eq!(
        r.credentials.access_key_id, "AKCFG",
        "[profile cfg], not [cfg]"
    );
    assert_eq!(r.region.as_deref(), Some("us-east-2"));
    let r = h
        .resolve(&[("AWS_REGION", "ap-south-1")], Some("cfg"))
        .unwrap();
    assert_eq!(r.region.as_deref(), Some("ap-south-1"), "AWS_REGION wins");
    // [default] of the config file holds a region but no keys.
    let (p, m) = problem(h.resolve(&[], None));
    assert_eq!(p, CredentialProblem::NotFound);
    assert!(
        m.contains("'default'") && m.contains("credential_process"),
        "{m}"
    );
    // The files come from the variables when set.
    let other = Home::new("[x]\naws_access_key_id=AKX\naws_secret_access_key=sx\n", "");
    let creds = format!("{}/.aws/credentials", other.path());
    let r = h
        .resolve(&[("AWS_SHARED_CREDENTIALS_FILE", &creds)], Some("x"))
        .unwrap();
    assert_eq!(r.credentials.access_key_id, "AKX");
}

#[test]
fn credentials_file_then_process_then_config_keys() {
    let h = Home::new("", "");
    let proc_ = h.script(
        "creds.sh",
        r#"printf '{"Version": 1, "AccessKeyId": "AKPROC", "SecretAccessKey": "sproc", "SessionToken": "tproc", "Expiration": "2030-01-01T00:00:00Z"}'"#,
    );
    std::fs::write(
        h.dir.path().join(".aws/config"),
        format!("[profile p]\ncredential_process = {proc_}\naws_access_key_id = AKCFG\naws_secret_access_key = scfg\n"),
    )
    .unwrap();
    let r = h.resolve(&[], Some("p")).unwrap();
    assert_eq!(
        r.credentials.access_key_id, "AKPROC",
        "the process before config keys"
    );
    assert_eq!(
        r.credentials.session_token.as_deref().map(String::as_str),
        Some("tproc")
    );
    assert_eq!(r.credentials.expiration, Some(1_893_456_000));
    std::fs::write(
        h.dir.path().join(".aws/credentials"),
        "[p]\naws_access_key_id = AKFILE\naws_secret_access_key = sfile\n",
    )
    .unwrap();
    let r = h.resolve(&[], Some("p")).unwrap();
    assert_eq!(
        r.credentials.access_key_id, "AKFILE",
        "credentials file first"
    );
}

/// A profile whose credential_process is `script` (a shell body).
fn with_process(body: &str) -> (Home, String) {
    let h = Home::new("", "");
    let s = h.script("p.sh", body);
    std::fs::write(
        h.dir.path().join(".aws/config"),
        format!("[profile p]\ncredential_process = \"{s}\" --flag 'two words'\n"),
    )
    .unwrap();
    (h, s)
}

#[test]
fn credential_process_arguments_and_refusals() {
    // The arguments arrive split as the CLI splits them.
    let (h, _) = with_process(
        r#"[ "$1" = --flag ] && [ "$2" = "two words" ] && [ $# = 2 ] || exit 9
printf '{"Version":1,"AccessKeyId":"AKP","SecretAccessKey":"sp"}'"#,
    );
    let r = h.resolve(&[], Some("p")).unwrap();
    assert_eq!(r.credentials.access_key_id, "AKP");
    assert!(r.credentials.session_token.is_none());

    let cases: [(&str, CredentialProblem, &str); 6] = [
        (
            "echo oops >&2; exit 3",
            CredentialProblem::Process,
            "failed (exit status: 3",
        ),
        (
            "printf 'junk SECRETJUNK'",
            CredentialProblem::Process,
            "not JSON credentials",
        ),
        (
            r#"printf '{"Version":2,"AccessKeyId":"A","SecretAccessKey":"SECRETJUNK"}'"#,
            CredentialProblem::Process,
            "Version 2",
        ),
        (
            r#"printf '{"Version":1,"AccessKeyId":"A"}'"#,
            CredentialProblem::Process,
            "no SecretAccessKey",
        ),
        (
            r#"printf '{"Version":1,"AccessKeyId":"A","SecretAccessKey":"SECRETJUNK","Expiration":"2020-01-01T00:00:00Z"}'"#,
            CredentialProblem::Expired,
            "expired at 2020-01-01T00:00:00Z",
        ),
        (
            r#"printf '{"Version":"SECRETJUNK","AccessKeyId":"A","SecretAccessKey":"s"}'"#,
            CredentialProblem::Process,
            "not JSON credentials",
        ),
    ];
    for (body, want, says) in cases {
        let (h, script) = with_process(body);
        let (p, m) = problem(h.resolve(&[], Some("p")));
        assert_eq!(p, want, "{body}: {m}");
        assert!(m.contains(says), "{body}: {m}");
        assert!(
            m.contains(&script) && m.contains("'p'"),
            "names the command and profile: {m}"
        );
        assert!(
            !m.contains("SECRETJUNK"),
            "stdout leaked into the error: {m}"
        );
        assert!(!m.contains('\n'), "one line: {m}");
    }
    let h = Home::new("", "[profile p]\ncredential_process = /no/such/program\n");
    let (p, m) = problem(h.resolve(&[], Some("p")));
    assert_eq!(p, CredentialProblem::Process);
    assert!(
        m.contains("cannot run") && m.contains("/no/such/program"),
        "{m}"
    );
    let h = Home::new("", "[profile p]\ncredential_process = 'unclosed\n");
    assert_eq!(
        problem(h.resolve(&[], Some("p"))).0,
        CredentialProblem::Malformed
    );
}

#[test]
fn missing_profiles_half_keys_roles_and_expired_environment() {
    let h = Home::new(
        FILES,
        "[profile role]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = default\n",
    );
    let (p, m) = problem(h.resolve(&[], Some("ghost")));
    assert_eq!(p, CredentialProblem::NoSuchProfile);
    assert!(
        m.contains("'ghost'") && m.contains("/.aws/credentials") && m.contains("--aws-profile"),
        "{m}"
    );
    assert_eq!(
        problem(h.resolve(&[("AWS_PROFILE", "ghost")], None)).0,
        CredentialProblem::NoSuchProfile
    );
    let (p, m) = problem(h.resolve(&[], Some("role")));
    assert_eq!(p, CredentialProblem::Unsupported);
    assert!(
        m.contains("role_arn") && m.contains("export-credentials"),
        "{m}"
    );

    let h = Home::new("[h]\naws_access_key_id = A\n", "");
    let (p, m) = problem(h.resolve(&[], Some("h")));
    assert_eq!(p, CredentialProblem::Malformed);
    assert!(
        m.contains("aws_secret_access_key") && m.contains("'h'"),
        "{m}"
    );

    let h = Home::new("", "");
    let (p, m) = problem(h.resolve(&[], None));
    assert_eq!(p, CredentialProblem::NotFound);
    assert!(m.contains("AWS_ACCESS_KEY_ID"), "{m}");

    let env = [
        ("AWS_ACCESS_KEY_ID", "AKENV"),
        ("AWS_SECRET_ACCESS_KEY", "senv"),
        ("AWS_CREDENTIAL_EXPIRATION", "2020-01-01T00:00:00Z"),
    ];
    let (p, m) = problem(h.resolve(&env, None));
    assert_eq!(p, CredentialProblem::Expired);
    assert!(m.contains("AKENV") && !m.contains("senv"), "{m}");
}

#[test]
fn words_split_as_the_aws_cli_splits_them() {
    let split = |s: &str| split_command(s);
    let w = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(split("a b\tc"), w(&["a", "b", "c"]));
    assert_eq!(split("  a   'b c'  "), w(&["a", "b c"]));
    assert_eq!(split(r#"a "b \" \\ \$ c""#), w(&["a", r#"b " \ \$ c"#]));
    assert_eq!(split(r"a\ b 'c\d'"), w(&["a b", r"c\d"]));
    assert_eq!(split("x''y \"\""), w(&["xy", ""]));
    assert_eq!(split("a 'b"), None);
    assert_eq!(split("a \"b"), None);
    assert_eq!(split("a\\"), None);
    assert_eq!(split(""), w(&[]));
}

#[test]
fn debug_shows_no_secret() {
    let c = Credentials {
        access_key_id: "AKID".into(),
        secret_access_key: Zeroizing::new("SECRETVALUE".into()),
        session_token: Some(Zeroizing::new("TOKENVALUE".into())),
        expiration: None,
    };
    let d = format!("{c:?}");
    assert!(
        d.contains("AKID") && !d.contains("SECRETVALUE") && !d.contains("TOKENVALUE"),
        "{d}"
    );
    assert_eq!(c.sigv4().session_token, Some("TOKENVALUE"));
}
