//! KMS-shaped requests: what the server must accept, refuse, and read off a request.

use super::*;

#[test]
fn kms_request_signed_by_sign_verifies() {
    let hs = kms_signed_headers();
    assert_eq!(
        hs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "Host",
            "Content-Type",
            "X-Amz-Target",
            "authorization",
            "x-amz-date"
        ]
    );
    assert!(authorization_of(&hs).starts_with(
        "AWS4-HMAC-SHA256 Credential=AKIACRYPTVOLTEST0001/20261129/eu-west-1/kms/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
    ));
    assert_eq!(header_value(&hs, "x-amz-date").unwrap(), "20261129T120000Z");
    let verified = verify_kms(&hs, "/", KMS_BODY, kms_time()).unwrap();
    assert_eq!(
        verified,
        Verified {
            access_key_id: KMS_KEY_ID.to_owned(),
            region: "eu-west-1".to_owned(),
            service: "kms".to_owned(),
            signed_at: kms_time(),
        }
    );
    // Four minutes of skew either way pass, and so do exactly five.
    for skew in [-300, -240, 240, 300] {
        assert!(
            verify_kms(&hs, "/", KMS_BODY, kms_time() + skew).is_ok(),
            "{skew}"
        );
    }
}

#[test]
fn kms_request_tampering_is_refused() {
    let hs = kms_signed_headers();
    let mismatch = |r: Result<Verified, AuthError>| {
        let err = r.unwrap_err();
        assert_eq!(err.code, INVALID_SIGNATURE);
        assert_eq!(err.message, SIGNATURE_MISMATCH);
        assert_eq!(err.status, 400);
    };
    // Wrong secret.
    mismatch(verify(
        &request("POST", "/", "", &hs, KMS_BODY),
        kms_time(),
        &mut |_: &str| Some(Zeroizing::new("not-the-secret".to_owned())),
    ));
    // Body.
    mismatch(verify_kms(
        &hs,
        "/",
        br#"{"CiphertextBlob":"AQIDBAUGBwgK","KeyId":"alias/vol"}"#,
        kms_time(),
    ));
    // Operation.
    let mut other_target = hs.clone();
    set_header(&mut other_target, "x-amz-target", "TrentService.Encrypt");
    mismatch(verify_kms(&other_target, "/", KMS_BODY, kms_time()));
    // Path, method, query.
    mismatch(verify_kms(&hs, "/other", KMS_BODY, kms_time()));
    mismatch(verify(
        &request("PUT", "/", "", &hs, KMS_BODY),
        kms_time(),
        &mut kms_secret,
    ));
    mismatch(verify(
        &request("POST", "/", "a=b", &hs, KMS_BODY),
        kms_time(),
        &mut kms_secret,
    ));
    // A signed header's value, and the signature itself.
    let mut other_host = hs.clone();
    set_header(&mut other_host, "host", "127.0.0.1:4600");
    mismatch(verify_kms(&other_host, "/", KMS_BODY, kms_time()));
    let auth = authorization_of(&hs);
    let mut flipped = hs.clone();
    let last = if auth.ends_with('0') { "1" } else { "0" };
    set_header(
        &mut flipped,
        "authorization",
        &format!("{}{last}", &auth[..auth.len() - 1]),
    );
    mismatch(verify_kms(&flipped, "/", KMS_BODY, kms_time()));
    // Uppercase hex is not how AWS writes signatures.
    let mut upper = hs.clone();
    let sig_at = auth.find("Signature=").unwrap() + "Signature=".len();
    set_header(
        &mut upper,
        "authorization",
        &format!("{}{}", &auth[..sig_at], auth[sig_at..].to_ascii_uppercase()),
    );
    mismatch(verify_kms(&upper, "/", KMS_BODY, kms_time()));
    // content-type dropped from SignedHeaders (its value still sent).
    let mut dropped = hs.clone();
    set_header(
        &mut dropped,
        "authorization",
        &auth.replace("SignedHeaders=content-type;", "SignedHeaders="),
    );
    mismatch(verify_kms(&dropped, "/", KMS_BODY, kms_time()));
}

#[test]
fn kms_request_clock_skew_is_refused() {
    let hs = kms_signed_headers();
    let err = verify_kms(&hs, "/", KMS_BODY, kms_time() + 360).unwrap_err();
    assert_eq!(err.code, INVALID_SIGNATURE);
    assert_eq!(
        err.message,
        "Signature expired: 20261129T120000Z is now earlier than 20261129T120100Z \
         (20261129T120600Z - 5 min.)"
    );
    let err = verify_kms(&hs, "/", KMS_BODY, kms_time() - 360).unwrap_err();
    assert_eq!(err.code, INVALID_SIGNATURE);
    assert_eq!(
        err.message,
        "Signature not yet current: 20261129T120000Z is still later than 20261129T115900Z \
         (20261129T115400Z + 5 min.)"
    );
    // Clocks at the ends of i64 must not overflow.
    assert!(verify_kms(&hs, "/", KMS_BODY, i64::MAX).is_err());
    assert!(verify_kms(&hs, "/", KMS_BODY, i64::MIN).is_err());
}

#[test]
fn kms_request_unknown_key_and_session_token_are_unrecognized() {
    let hs = kms_signed_headers();
    let err = verify(
        &request("POST", "/", "", &hs, KMS_BODY),
        kms_time(),
        &mut |_: &str| None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        AuthError::new(
            UNRECOGNIZED_CLIENT,
            "The security token included in the request is invalid."
        )
    );
    let mut with_token = hs.clone();
    with_token.push((
        "X-Amz-Security-Token".to_owned(),
        "FwoGZXIvYXdzE".to_owned(),
    ));
    let err = verify_kms(&with_token, "/", KMS_BODY, kms_time()).unwrap_err();
    assert_eq!(err.code, UNRECOGNIZED_CLIENT);
}

#[test]
fn kms_request_required_signed_headers() {
    let hs = kms_signed_headers();
    let auth = authorization_of(&hs);
    let without = |from: &str, to: &str| {
        let mut changed = hs.clone();
        set_header(&mut changed, "authorization", &auth.replace(from, to));
        verify_kms(&changed, "/", KMS_BODY, kms_time()).unwrap_err()
    };
    let err = without(";host;", ";");
    assert_eq!(err.code, INCOMPLETE_SIGNATURE);
    assert_eq!(
        err.message,
        "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
    );
    let err = without(";x-amz-date;", ";");
    assert_eq!(err.code, INCOMPLETE_SIGNATURE);
    assert!(err.message.contains("'x-amz-date' must be signed"), "{err}");
    let err = without(";x-amz-target,", ",");
    assert_eq!(err.code, INCOMPLETE_SIGNATURE);
    assert!(
        err.message.contains("'x-amz-target' must be signed"),
        "{err}"
    );

    // No date header at all.
    let no_date: Vec<_> = hs
        .iter()
        .filter(|(n, _)| n != "x-amz-date")
        .cloned()
        .collect();
    let err = verify_kms(&no_date, "/", KMS_BODY, kms_time()).unwrap_err();
    assert_eq!(err, incomplete(NO_DATE));
}

#[test]
fn kms_rules_refuse_a_scope_for_another_service() {
    let hs = kms_signed_headers();
    let under_kms = |hs: &[(String, String)]| {
        verify_with(
            &request("POST", "/", "", hs, KMS_BODY),
            kms_time(),
            &Rules::KMS,
            &mut kms_secret,
        )
    };
    assert_eq!(under_kms(&hs).unwrap().service, "kms");
    // The same request signed for S3: a valid signature, for the wrong service.
    let for_s3 = signed_headers_for("s3");
    assert_eq!(
        verify_kms(&for_s3, "/", KMS_BODY, kms_time())
            .unwrap()
            .service,
        "s3"
    );
    let err = under_kms(&for_s3).unwrap_err();
    assert_eq!(err.code, INVALID_SIGNATURE);
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message,
        "Credential should be scoped to correct service: 'kms'. "
    );
}

#[test]
fn kms_rules_bound_presigned_requests_to_five_minutes() {
    let hs = presigned_headers();
    let check = |query: &str, now: i64, rules: &Rules| {
        verify_with(
            &request("POST", "/", query, &hs, KMS_BODY),
            now,
            rules,
            &mut kms_secret,
        )
    };
    let t = kms_time();
    let hour = presigned_query("kms", t, 3600);
    // Inside the window: accepted under both rules.
    assert_eq!(check(&hour, t + 299, &Rules::KMS).unwrap().signed_at, t);
    assert!(check(&hour, t + 3599, &Rules::default()).is_ok());
    // An hour's X-Amz-Expires does not stretch the KMS server's 5 minutes.
    let err = check(&hour, t + 301, &Rules::KMS).unwrap_err();
    assert_eq!(err.code, INVALID_SIGNATURE);
    assert!(err.message.starts_with("Signature expired"), "{err}");
    // X-Amz-Expires shorter than 5 minutes bounds it further.
    let minute = presigned_query("kms", t, 60);
    assert!(check(&minute, t + 60, &Rules::KMS).is_ok());
    let err = check(&minute, t + 61, &Rules::KMS).unwrap_err();
    assert_eq!(err.code, INVALID_SIGNATURE);
    assert!(err.message.starts_with("Request has expired"), "{err}");
    // Not yet valid, as with a header.
    let err = check(&minute, t - 301, &Rules::KMS).unwrap_err();
    assert!(
        err.message.starts_with("Signature not yet current"),
        "{err}"
    );
    // Presigned for another service.
    let s3 = presigned_query("s3", t, 60);
    assert!(check(&s3, t, &Rules::default()).is_ok());
    let err = check(&s3, t, &Rules::KMS).unwrap_err();
    assert!(err.message.contains("correct service: 'kms'"), "{err}");
}

#[test]
fn presign_then_verify() {
    let hs = headers(&[
        ("Host", "127.0.0.1:4599"),
        ("X-Amz-Target", "TrentService.Decrypt"),
    ]);
    let creds = Credentials {
        access_key_id: KMS_KEY_ID,
        secret_access_key: KMS_SECRET,
        session_token: None,
    };
    let parts = request("POST", "/", "", &hs, KMS_BODY);
    let query = presign(&parts, &creds, "eu-west-1", "kms", at(kms_time()), 120);
    let signed = request("POST", "/", &query, &hs, KMS_BODY);
    let v = verify_with(&signed, kms_time() + 60, &Rules::KMS, &mut kms_secret).unwrap();
    assert_eq!(v.access_key_id, KMS_KEY_ID);
    let err = verify_with(&signed, kms_time() + 121, &Rules::KMS, &mut kms_secret).unwrap_err();
    assert!(err.message.starts_with("Request has expired"), "{err}");
    let tampered = request("POST", "/", &query, &hs, b"{}");
    assert_eq!(
        verify_with(&tampered, kms_time(), &Rules::KMS, &mut kms_secret)
            .unwrap_err()
            .message,
        SIGNATURE_MISMATCH
    );
}

#[test]
fn a_signed_host_must_be_sent() {
    let hs: Vec<_> = kms_signed_headers()
        .into_iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
        .collect();
    let err = verify_kms(&hs, "/", KMS_BODY, kms_time()).unwrap_err();
    assert_eq!(err.code, INCOMPLETE_SIGNATURE);
    assert!(err.message.contains("'Host'"), "{err}");
}

#[test]
fn claimed_credentials_are_read_without_verifying() {
    let hs = kms_signed_headers();
    let c = claimed(&request("POST", "/", "", &hs, KMS_BODY));
    assert_eq!(c.access_key_id.as_deref(), Some(KMS_KEY_ID));
    assert_eq!(c.region.as_deref(), Some("eu-west-1"));
    let q = presigned_query("kms", kms_time(), 60);
    let c = claimed(&request("POST", "/", &q, &presigned_headers(), b""));
    assert_eq!(c.access_key_id.as_deref(), Some(KMS_KEY_ID));
    assert_eq!(c.region.as_deref(), Some("eu-west-1"));
    let none = headers(&[("Authorization", "Bearer abc")]);
    assert_eq!(
        claimed(&request("POST", "/", "", &none, b"")),
        Claimed::default()
    );
    let long = headers(&[(
        "Authorization",
        &format!("AWS4-HMAC-SHA256 Credential={}", "A".repeat(5000)),
    )]);
    let c = claimed(&request("POST", "/", "", &long, b""));
    assert_eq!(c.access_key_id.unwrap().len(), MAX_CLAIMED_CHARS);
    assert_eq!(c.region, None);
}
