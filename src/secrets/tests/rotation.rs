use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::{events, fixture};

fn script(dir: &std::path::Path, body: &str) -> String {
    let p = dir.join("rotate.sh");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn a_failing_test_step_leaves_awscurrent_and_is_reported() {
    let f = fixture();
    let c = f.ok("CreateSecret", json!({"Name": "r", "SecretString": "v1"}));
    let current = c["VersionId"].as_str().unwrap().to_string();
    let log = f.dir.path().join("steps");
    let cmd = script(
        f.dir.path(),
        &format!(
            "echo \"$1 $CRYPTVOL_ROTATION_STEP\" >> {}\n[ \"$1\" = testSecret ] && {{ echo 'db refused the new password' >&2; exit 3; }}\nexit 0",
            log.display()
        ),
    );
    let e = f
        .call("RotateSecret", json!({"SecretId": "r", "RotationCommand": cmd, "RotationRules": {"AutomaticallyAfterDays": 7}}))
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            crate::aws::AwsError::RotationFailed {
                step: "testSecret",
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("db refused the new password"), "{msg}");
    let steps = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        steps,
        "createSecret createSecret\nsetSecret setSecret\ntestSecret testSecret\n"
    );
    let d = f.ok("DescribeSecret", json!({"SecretId": "r"}));
    assert_eq!(d["VersionIdsToStages"][&current], json!(["AWSCURRENT"]));
    assert!(d.get("LastRotatedDate").is_none());
    let ev = events(&f);
    let failed = ev
        .iter()
        .find(|e| e["eventName"] == "RotationFailed")
        .expect("RotationFailed event");
    assert!(
        !failed.to_string().contains("db refused"),
        "the command's output stays out of the trail"
    );
    // Over the network a command cannot be set.
    let e =
        f.sm.call(
            &f.root,
            "RotateSecret",
            &json!({"SecretId": "r", "RotationCommand": "/bin/true"}),
            super::Via::Server { request_id: "x" },
        )
        .unwrap_err();
    assert_eq!(e.aws_code(), "InvalidParameterException");
    assert_eq!(f.code("RotateSecret", json!({"SecretId": "r", "RotationLambdaARN": "arn:aws:lambda:test-1:111122223333:function:f"})), "InvalidParameterException");
}

#[test]
fn a_finish_step_that_does_not_move_awscurrent_fails_the_rotation() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "r", "SecretString": "v1"}));
    let cmd = script(f.dir.path(), "exit 0");
    let e = f
        .call(
            "RotateSecret",
            json!({"SecretId": "r", "RotationCommand": cmd}),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            crate::aws::AwsError::RotationFailed {
                step: "finishSecret",
                ..
            }
        ),
        "{e}"
    );
    // Due rotations: none is due (no schedule), so nothing runs.
    assert!(
        f.sm.rotate_due(&f.root, super::Via::Cli)
            .unwrap()
            .is_empty()
    );
    f.ok("CancelRotateSecret", json!({"SecretId": "r"}));
    assert_eq!(
        f.ok("DescribeSecret", json!({"SecretId": "r"}))["RotationEnabled"],
        false
    );
}

#[test]
fn rules_are_checked_from_now_and_a_window_fits_between_two_rotations() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "r", "SecretString": "v1"}));
    let cmd = script(f.dir.path(), "exit 0");
    // A schedule naming a year to come is accepted (it was checked from 1970 before).
    let next_year = 1971 + f.kms.clock().now() / 31_556_952;
    let r = f.call(
        "RotateSecret",
        json!({"SecretId": "r", "RotationCommand": cmd, "RotateImmediately": false,
               "RotationRules": {"ScheduleExpression": format!("cron(0 12 1 6 ? {next_year})")}}),
    );
    assert!(r.is_ok(), "{r:?}");
    // Every 6 hours from midnight: a 7 h window runs into the next rotation, 6 h fits.
    for (duration, ok) in [("7h", false), ("6h", true)] {
        let r = f.call(
            "RotateSecret",
            json!({"SecretId": "r", "RotateImmediately": false,
                   "RotationRules": {"ScheduleExpression": "cron(0 0/6 * * ? *)", "Duration": duration}}),
        );
        assert_eq!(r.is_ok(), ok, "{duration}: {r:?}");
    }
}
