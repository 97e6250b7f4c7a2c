//! AWS's published examples: the IAM ListUsers walk-through of the documentation and
//! cases of aws-sig-v4-test-suite, signed by [`sign`] and verified by [`verify`].

use super::*;

#[test]
fn amz_dates_round_trip() {
    assert_eq!(parse_amz_date("20150830T123600Z"), Some(EXAMPLE_TIME));
    assert_eq!(format_amz_date(EXAMPLE_TIME), "20150830T123600Z");
    assert_eq!(parse_amz_date("20240229T000000Z"), Some(1_709_164_800));
    for bad in [
        "",
        "20150830T123600",
        "20150830 123600Z",
        "20150230T123600Z",
        "20151330T123600Z",
        "20150830T243600Z",
        "2015083OT123600Z",
        "+0150830T123600Z",
        "20150830T12360ሴ",
    ] {
        assert_eq!(parse_amz_date(bad), None, "{bad}");
    }
    assert_eq!(
        parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
        Some(EXAMPLE_TIME)
    );
    assert_eq!(format_amz_date(-5), "19700101T000000Z");
}

/// "Examples of the complete Signature Version 4 signing process" (IAM ListUsers).
#[test]
fn aws_documentation_iam_list_users() {
    let hs = headers(&[
        (
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
        ("Host", "iam.amazonaws.com"),
        ("X-Amz-Date", "20150830T123600Z"),
    ]);
    let query = "Action=ListUsers&Version=2010-05-08";
    let names: Vec<String> = ["content-type", "host", "x-amz-date"]
        .map(String::from)
        .into();
    let canonical = canonical_request(
        "GET",
        &canonical_uri("/"),
        &canonical_query(&parse_query(query), None),
        &canonical_headers(&hs, &names),
        "content-type;host;x-amz-date",
        &hex_sha256(b""),
    );
    assert_eq!(
        canonical,
        "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
         content-type:application/x-www-form-urlencoded; charset=utf-8\n\
         host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
         content-type;host;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex_sha256(canonical.as_bytes()),
        "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    );
    let expected = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/\
        aws4_request, SignedHeaders=content-type;host;x-amz-date, \
        Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";

    // sign: the given x-amz-date is replaced by ours, which is the same.
    let added = sign(
        &request("GET", "/", query, &hs, b""),
        &example_creds(),
        "us-east-1",
        "iam",
        at(EXAMPLE_TIME),
    );
    assert_eq!(
        added,
        headers(&[
            ("authorization", expected),
            ("x-amz-date", "20150830T123600Z")
        ])
    );

    // verify: the same request with the header.
    let mut signed = hs.clone();
    signed.push(("Authorization".to_owned(), expected.to_owned()));
    let verified = verify(
        &request("GET", "/", query, &signed, b""),
        EXAMPLE_TIME,
        &mut example_secret,
    )
    .unwrap();
    assert_eq!(
        verified,
        Verified {
            access_key_id: AKID.to_owned(),
            region: "us-east-1".to_owned(),
            service: "iam".to_owned(),
            signed_at: EXAMPLE_TIME,
        }
    );
}

/// Cases of aws-sig-v4-test-suite (service "service", region us-east-1, 20150830T123600Z):
/// each verifies as published, and `sign` gives the published header from the request
/// before signing.
#[test]
fn aws_sig_v4_test_suite_header_vectors() {
    struct Case {
        name: &'static str,
        method: &'static str,
        path: &'static str,
        query: &'static str,
        extra: &'static [(&'static str, &'static str)],
        signed_headers: &'static str,
        signature: &'static str,
    }
    let cases = [
        Case {
            name: "get-vanilla",
            method: "GET",
            path: "/",
            query: "",
            extra: &[],
            signed_headers: "host;x-amz-date",
            signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        },
        Case {
            name: "post-vanilla",
            method: "POST",
            path: "/",
            query: "",
            extra: &[],
            signed_headers: "host;x-amz-date",
            signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        },
        Case {
            name: "get-vanilla-query-order-key-case",
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            extra: &[],
            signed_headers: "host;x-amz-date",
            signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        },
        Case {
            name: "get-vanilla-query-unreserved",
            method: "GET",
            path: "/",
            query: "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=\
                    -._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            extra: &[],
            signed_headers: "host;x-amz-date",
            signature: "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        },
        Case {
            name: "get-vanilla-utf8-query",
            method: "GET",
            path: "/",
            query: "ሴ=bar",
            extra: &[],
            signed_headers: "host;x-amz-date",
            signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        },
        Case {
            name: "get-utf8",
            method: "GET",
            path: "/ሴ",
            query: "",
            extra: &[],
            signed_headers: "host;x-amz-date",
            signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        },
        Case {
            name: "get-space (unnormalized)",
            method: "GET",
            path: "/example space/",
            query: "",
            extra: &[],
            signed_headers: "host;x-amz-date",
            signature: "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        },
        Case {
            name: "get-header-key-duplicate",
            method: "GET",
            path: "/",
            query: "",
            extra: &[
                ("My-Header1", "value2"),
                ("My-Header1", "value2"),
                ("My-Header1", "value1"),
            ],
            signed_headers: "host;my-header1;x-amz-date",
            signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        },
        Case {
            name: "get-header-value-trim",
            method: "GET",
            path: "/",
            query: "",
            extra: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
            signed_headers: "host;my-header1;my-header2;x-amz-date",
            signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        },
    ];
    for case in cases {
        let mut unsigned = headers(&[("Host", "example.amazonaws.com")]);
        unsigned.extend(headers(case.extra));
        let expected = authorization(case.signed_headers, case.signature);

        let added = sign(
            &request(case.method, case.path, case.query, &unsigned, b""),
            &example_creds(),
            "us-east-1",
            "service",
            at(EXAMPLE_TIME),
        );
        assert_eq!(
            added[0],
            ("authorization".to_owned(), expected.clone()),
            "{}",
            case.name
        );

        let mut signed = unsigned.clone();
        signed.push(("X-Amz-Date".to_owned(), "20150830T123600Z".to_owned()));
        signed.push(("Authorization".to_owned(), expected));
        let verified = verify(
            &request(case.method, case.path, case.query, &signed, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        );
        assert_eq!(
            verified.map(|v| v.service),
            Ok("service".to_owned()),
            "{}",
            case.name
        );
    }
}

/// get-vanilla-with-session-token: `sign` adds and signs the token; the server, which
/// issues no tokens, refuses it.
#[test]
fn aws_sig_v4_test_suite_session_token() {
    let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
    let unsigned = headers(&[("Host", "example.amazonaws.com")]);
    let creds = Credentials {
        session_token: Some(token),
        ..example_creds()
    };
    let added = sign(
        &request("GET", "/", "", &unsigned, b""),
        &creds,
        "us-east-1",
        "service",
        at(EXAMPLE_TIME),
    );
    let expected = authorization(
        "host;x-amz-date;x-amz-security-token",
        "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
    );
    assert_eq!(
        added,
        headers(&[
            ("authorization", &expected),
            ("x-amz-date", "20150830T123600Z"),
            ("x-amz-security-token", token),
        ])
    );
    let mut signed = unsigned.clone();
    signed.extend(added);
    let err = verify(
        &request("GET", "/", "", &signed, b""),
        EXAMPLE_TIME,
        &mut example_secret,
    )
    .unwrap_err();
    assert_eq!(err.code, UNRECOGNIZED_CLIENT);
    assert_eq!(err.message, INVALID_TOKEN);
}

/// post-x-www-form-urlencoded, signed with x-amz-content-sha256 (aws-c-auth's variant).
#[test]
fn aws_sig_v4_test_suite_signed_body_header() {
    let body = b"Param1=value1";
    let unsigned = headers(&[
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Host", "example.amazonaws.com"),
        ("Content-Length", "13"),
    ]);
    let added = sign_with(
        &request("POST", "/", "", &unsigned, body),
        &example_creds(),
        "us-east-1",
        "service",
        at(EXAMPLE_TIME),
        SignOptions {
            content_sha256_header: true,
        },
    );
    let expected = authorization(
        "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
        "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
    );
    assert_eq!(
        added,
        headers(&[
            ("authorization", &expected),
            ("x-amz-date", "20150830T123600Z"),
            (
                "x-amz-content-sha256",
                "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
            ),
        ])
    );
    let mut signed = unsigned.clone();
    signed.extend(added);
    let ok = verify(
        &request("POST", "/", "", &signed, body),
        EXAMPLE_TIME,
        &mut example_secret,
    );
    assert!(ok.is_ok(), "{ok:?}");
    // The header is signed, so the signature holds for another body: the hash check
    // is what refuses it.
    let err = verify(
        &request("POST", "/", "", &signed, b"Param1=value2"),
        EXAMPLE_TIME,
        &mut example_secret,
    )
    .unwrap_err();
    assert_eq!(err.code, INVALID_SIGNATURE);
    assert!(err.message.contains("x-amz-content-sha256"), "{err}");
}

/// get-vanilla-query-order-key-case, presigned (query-signed-request).
#[test]
fn aws_sig_v4_test_suite_presigned() {
    let query = "Param2=value2&Param1=value1&X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request\
        &X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600\
        &X-Amz-Signature=86012e2c9ad4d77369f5d81c11f75158aae4f895a085212cc6d3f923d300bed5";
    let hs = headers(&[
        ("Host", "example.amazonaws.com"),
        ("X-Amz-Date", "20150830T123600Z"),
    ]);
    let parts = request("GET", "/", query, &hs, b"");
    let verified = verify(&parts, EXAMPLE_TIME + 3599, &mut example_secret).unwrap();
    assert_eq!(verified.signed_at, EXAMPLE_TIME);
    // Presigned requests live for X-Amz-Expires, not for the 5 minutes of skew.
    let err = verify(&parts, EXAMPLE_TIME + 3601, &mut example_secret).unwrap_err();
    assert_eq!(err.code, INVALID_SIGNATURE);
    assert!(err.message.starts_with("Request has expired"), "{err}");
    let tampered = query.replace("value1", "value3");
    let err = verify(
        &request("GET", "/", &tampered, &hs, b""),
        EXAMPLE_TIME,
        &mut example_secret,
    )
    .unwrap_err();
    assert_eq!(err.message, SIGNATURE_MISMATCH);
    // Both mechanisms at once is refused.
    let mut both = hs.clone();
    both.push((
        "Authorization".to_owned(),
        authorization("host;x-amz-date", &"0".repeat(64)),
    ));
    let err = verify(
        &request("GET", "/", query, &both, b""),
        EXAMPLE_TIME,
        &mut example_secret,
    )
    .unwrap_err();
    assert_eq!(err.code, INCOMPLETE_SIGNATURE);
}

/// A `Date` header (HTTP date) in place of `x-amz-date`: the string to sign has the
/// date in the basic format.
#[test]
fn date_header_stands_for_x_amz_date() {
    let hs = headers(&[
        ("Date", "Sun, 30 Aug 2015 12:36:00 GMT"),
        ("Host", "example.amazonaws.com"),
    ]);
    let canonical = canonical_request(
        "GET",
        "/",
        "",
        "date:Sun, 30 Aug 2015 12:36:00 GMT\nhost:example.amazonaws.com\n",
        "date;host",
        EMPTY_SHA256,
    );
    let key = signing_key(SECRET, "20150830", "us-east-1", "service");
    let to_sign = string_to_sign(
        "20150830T123600Z",
        "20150830/us-east-1/service/aws4_request",
        &canonical,
    );
    let signature = hex::encode(&hmac_sha256(&key[..], to_sign.as_bytes())[..]);
    let mut signed = hs.clone();
    signed.push((
        "Authorization".to_owned(),
        authorization("date;host", &signature),
    ));
    let verified = verify(
        &request("GET", "/", "", &signed, b""),
        EXAMPLE_TIME,
        &mut example_secret,
    )
    .unwrap();
    assert_eq!(verified.signed_at, EXAMPLE_TIME);
}
