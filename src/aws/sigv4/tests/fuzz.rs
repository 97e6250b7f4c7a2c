//! Property tests: random and damaged authentication is refused, arbitrary requests do
//! not panic, whatever is signed verifies.

use super::*;

#[test]
fn fuzz_baseline_is_valid() {
    let (_, auth) = example_valid_authorization();
    assert!(verify_example_with(&auth).is_ok());
}

proptest! {
    #[test]
    fn fuzz_random_authorization_is_refused(auth in ".{0,300}") {
        prop_assert!(verify_example_with(&auth).is_err());
    }

    #[test]
    fn fuzz_shaped_authorization_is_refused(
        auth in concat!(
            "AWS4-HMAC-SHA256( |,|Credential=|SignedHeaders=|Signature=|/|;|[a-z0-9]{1,9}",
            "|aws4_request|20150830|host|x-amz-date|=){0,30}",
        )
    ) {
        prop_assert!(verify_example_with(&auth).is_err());
    }

    #[test]
    fn fuzz_truncated_authorization_is_refused(cut in 0usize..1000) {
        let (_, auth) = example_valid_authorization();
        let cut = cut % auth.len();
        prop_assert!(verify_example_with(&auth[..cut]).is_err());
    }

    #[test]
    fn fuzz_garbled_authorization_is_refused(at in 0usize..1000, c in "[0-9A-Za-z]") {
        let (_, auth) = example_valid_authorization();
        let at = at % auth.len();
        prop_assume!(auth[at..=at] != c);
        let garbled = format!("{}{c}{}", &auth[..at], &auth[at + 1..]);
        prop_assert!(verify_example_with(&garbled).is_err(), "{}", garbled);
    }

    #[test]
    fn fuzz_arbitrary_requests_do_not_panic(
        method in ".{0,8}",
        path in ".{0,40}",
        query in "([a-zA-Z%=&+ ]|X-Amz-[A-Za-z]{0,12}|ሴ|%[0-9a-fA-F]{0,2}){0,20}",
        hs in prop::collection::vec(("[A-Za-z-]{0,14}", ".{0,40}"), 0..6),
        body in prop::collection::vec(any::<u8>(), 0..64),
        now in any::<i64>(),
    ) {
        let mut hs = hs;
        let (_, auth) = example_valid_authorization();
        hs.push(("authorization".to_owned(), auth));
        let parts = request(&method, &path, &query, &hs, &body);
        let _ = verify(&parts, now, &mut example_secret);
        let _ = sign(&parts, &example_creds(), "r", "s", SystemTime::now());
    }

    #[test]
    fn fuzz_dates_do_not_panic(date in ".{0,24}", now in any::<i64>()) {
        let (mut hs, auth) = example_valid_authorization();
        set_header(&mut hs, "x-amz-date", &date);
        hs.push(("Authorization".to_owned(), auth));
        let r = verify(&request("GET", "/", "", &hs, b""), now, &mut example_secret);
        // What the verifier reads: the header's value with its whitespace folded.
        let sent = date.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
        let expected = match parse_amz_date(&sent) {
            None => Err((INCOMPLETE_SIGNATURE, "X-Amz-Date must be in the ISO-8601 basic format")),
            Some(_) if !sent.starts_with("20150830") => {
                Err((INVALID_SIGNATURE, "Date in Credential scope does not match"))
            }
            Some(t) if t > now.saturating_add(MAX_CLOCK_SKEW_SECS) => {
                Err((INVALID_SIGNATURE, "Signature not yet current"))
            }
            Some(t) if t < now.saturating_sub(MAX_CLOCK_SKEW_SECS) => {
                Err((INVALID_SIGNATURE, "Signature expired"))
            }
            Some(_) if sent != "20150830T123600Z" => Err((INVALID_SIGNATURE, SIGNATURE_MISMATCH)),
            Some(_) => Ok(()),
        };
        match (&r, expected) {
            (Ok(_), Ok(())) => {}
            (Err(err), Err((code, start))) => {
                prop_assert!(err.code == code && err.message.starts_with(start), "{:?}: {}", date, err);
            }
            (r, expected) => prop_assert!(false, "{:?} at {}: {:?}, expected {:?}", date, now, r, expected),
        }
    }

    #[test]
    fn fuzz_sign_then_verify(
        method in "(GET|POST|PUT)",
        path in "/[a-zA-Z0-9 %/ሴ._~-]{0,20}",
        query in "([a-zA-Z0-9]{1,5}=[a-zA-Z0-9 %]{0,5}&){0,4}",
        value in "[ a-zA-Z0-9]{0,20}",
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let hs = headers(&[("Host", "example.amazonaws.com"), ("X-Custom", &value)]);
        let mut signed = hs.clone();
        signed.extend(sign(
            &request(&method, &path, &query, &hs, &body),
            &example_creds(),
            "us-east-1",
            "kms",
            at(EXAMPLE_TIME),
        ));
        let parts = request(&method, &path, &query, &signed, &body);
        let r = verify(&parts, EXAMPLE_TIME, &mut example_secret);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}
