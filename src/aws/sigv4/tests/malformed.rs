//! Missing and malformed authentication, canonicalization of odd input, secrets kept
//! out of `Debug` and errors.

use super::*;

#[test]
fn missing_and_malformed_authorization() {
    let base = headers(&[
        ("host", "example.amazonaws.com"),
        ("x-amz-date", "20150830T123600Z"),
    ]);
    let check = |value: Option<&str>| {
        let mut hs = base.clone();
        if let Some(v) = value {
            hs.push(("authorization".to_owned(), v.to_owned()));
        }
        verify(
            &request("GET", "/", "", &hs, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        )
        .unwrap_err()
    };
    assert_eq!(
        check(None),
        AuthError::new(
            MISSING_AUTHENTICATION_TOKEN,
            "Request is missing Authentication Token"
        )
    );
    assert_eq!(check(None).status, 400);

    let err = check(Some(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date",
    ));
    assert_eq!(
        err,
        incomplete("Authorization header requires 'Signature' parameter.")
    );
    let err = check(Some("AWS4-HMAC-SHA256"));
    assert_eq!(
        err.message,
        "Authorization header requires 'Credential' parameter. Authorization header \
         requires 'Signature' parameter. Authorization header requires 'SignedHeaders' \
         parameter."
    );
    for (value, needle) in [
        (
            "AWS AKIDEXAMPLE:c2lnbmF0dXJl",
            "Unsupported Authorization algorithm 'AWS'",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service, \
             SignedHeaders=host;x-amz-date, Signature=00",
            "Credential must have the form",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2015-08-30/us-east-1/service/x/y, \
             SignedHeaders=host;x-amz-date, Signature=00",
            "Credential must have the form",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_req, \
             SignedHeaders=host;x-amz-date, Signature=00",
            "valid terminator: 'aws4_request', not 'aws4_req'",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2015083x/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00",
            "valid date",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830//service/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00",
            "valid region",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;;x-amz-date, Signature=00",
            "SignedHeaders must be",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00",
            "'Credential' parameter twice",
        ),
    ] {
        let err = check(Some(value));
        assert_eq!(err.code, INCOMPLETE_SIGNATURE, "{value}");
        assert!(err.message.contains(needle), "{value}: {err}");
    }

    // The scope's date must be the request's.
    let err = check(Some(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150831/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=00",
    ));
    assert_eq!(
        err,
        invalid(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
             from HTTP: '20150831' != '20150830', from '20150830T123600Z'."
        )
    );
}

#[test]
fn header_canonicalization() {
    let hs = headers(&[
        ("My-Header", "  a   b \t c  "),
        ("HOST", "example.amazonaws.com"),
        ("my-header", "second"),
        ("X-Empty", ""),
    ]);
    let names: Vec<String> = ["host", "my-header", "x-empty"].map(String::from).into();
    assert_eq!(
        canonical_headers(&hs, &names),
        "host:example.amazonaws.com\nmy-header:a b c,second\nx-empty:\n"
    );
    // Signed with one spacing and case, verified with another (as a proxy may re-fold).
    let added = sign(
        &request("GET", "/", "", &hs, b""),
        &example_creds(),
        "us-east-1",
        "service",
        at(EXAMPLE_TIME),
    );
    assert!(
        added[0]
            .1
            .contains("SignedHeaders=host;my-header;x-amz-date;x-empty,"),
        "{:?}",
        added[0]
    );
    let mut respaced = headers(&[
        ("host", "example.amazonaws.com"),
        ("MY-HEADER", "a b c"),
        ("My-Header", "   second"),
        ("x-empty", "  "),
    ]);
    respaced.extend(added.clone());
    let ok = verify(
        &request("GET", "/", "", &respaced, b""),
        EXAMPLE_TIME,
        &mut example_secret,
    );
    assert!(ok.is_ok(), "{ok:?}");
    // The order of repeated values is signed.
    let mut reordered = headers(&[
        ("host", "example.amazonaws.com"),
        ("my-header", "second"),
        ("my-header", "a b c"),
        ("x-empty", ""),
    ]);
    reordered.extend(added);
    let err = verify(
        &request("GET", "/", "", &reordered, b""),
        EXAMPLE_TIME,
        &mut example_secret,
    )
    .unwrap_err();
    assert_eq!(err.message, SIGNATURE_MISMATCH);
}

#[test]
fn query_canonicalization() {
    assert_eq!(
        canonical_query(
            &parse_query("b=2&a=x%20y&a=%21&c=a+b&d&&e=%2F%3d&f=/:&A=upper&%7E=~"),
            None
        ),
        "A=upper&a=%21&a=x%20y&b=2&c=a%2Bb&d=&e=%2F%3D&f=%2F%3A&~=~"
    );
    assert_eq!(canonical_query(&parse_query(""), None), "");
    // A stray '%' is a literal percent sign.
    assert_eq!(
        canonical_query(&parse_query("p=100%&q=%zz"), None),
        "p=100%25&q=%25zz"
    );

    // Signed and verified with reserved characters and spaces.
    let query = "Marker=a%20b%2Fc&Action=List&Filter=x%3Dy%26z&Action=Describe";
    let hs = headers(&[("host", "example.amazonaws.com")]);
    let mut signed = hs.clone();
    signed.extend(sign(
        &request("GET", "/", query, &hs, b""),
        &example_creds(),
        "us-east-1",
        "service",
        at(EXAMPLE_TIME),
    ));
    let ok = verify(
        &request("GET", "/", query, &signed, b""),
        EXAMPLE_TIME,
        &mut example_secret,
    );
    assert!(ok.is_ok(), "{ok:?}");
    // The same parameters in another order are the same request.
    let reordered = "Action=Describe&Filter=x%3dy%26z&Marker=a%20b%2fc&Action=List";
    let ok = verify(
        &request("GET", "/", reordered, &signed, b""),
        EXAMPLE_TIME,
        &mut example_secret,
    );
    assert!(ok.is_ok(), "{ok:?}");
    let err = verify(
        &request("GET", "/", "Marker=a%20b%2Fc&Action=List", &signed, b""),
        EXAMPLE_TIME,
        &mut example_secret,
    )
    .unwrap_err();
    assert_eq!(err.message, SIGNATURE_MISMATCH);
}

#[test]
fn uri_canonicalization() {
    assert_eq!(canonical_uri("/"), "/");
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(canonical_uri("/a b/%7e/x%2Fy/"), "/a%20b/~/x%2Fy/");
    assert_eq!(canonical_uri("/ሴ"), "/%E1%88%B4");
    assert_eq!(canonical_uri("/%E1%88%B4"), "/%E1%88%B4");
    assert_eq!(canonical_uri("/a:b*c"), "/a%3Ab%2Ac");
}

#[test]
fn secrets_stay_out_of_debug_and_errors() {
    let creds = Credentials {
        access_key_id: KMS_KEY_ID,
        secret_access_key: KMS_SECRET,
        session_token: Some("token-value"),
    };
    let shown = format!("{creds:?}");
    assert!(shown.contains(KMS_KEY_ID), "{shown}");
    assert!(
        !shown.contains(KMS_SECRET) && !shown.contains("token-value"),
        "{shown}"
    );
    let hs = headers(&[("x-amz-security-token", "token-value"), ("host", "h")]);
    let shown = format!("{:?}", request("POST", "/", "", &hs, b"body"));
    assert!(!shown.contains("token-value"), "{shown}");

    let hs = kms_signed_headers();
    for now in [kms_time() + 1000, kms_time()] {
        for body in [KMS_BODY, b"{}"] {
            let err = verify(&request("POST", "/", "", &hs, body), now, &mut |_: &str| {
                Some(Zeroizing::new("wrong/secret".to_owned()))
            })
            .unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(
                !text.contains("wrong/secret") && !text.contains(KMS_SECRET),
                "{text}"
            );
        }
    }
}
