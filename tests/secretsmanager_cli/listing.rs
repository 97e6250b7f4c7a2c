//! list-secrets (filters, sorting, paging) and get-random-password.

use super::support::*;
use crate::common::*;

#[test]
fn list_secrets_filters() {
    let env = Env::init();
    create(
        &env,
        "db/prod",
        "v-1",
        &[
            "--description",
            "Primary database",
            "--tags",
            "Key=team,Value=storage",
        ],
    );
    create(&env, "db/test", "v-2", &["--tags", "Key=team,Value=qa"]);
    create(&env, "api/key", "v-3", &["--tags", "Key=owner,Value=web"]);
    let all = names(&env, &[]);
    assert_eq!(all, vec!["api/key", "db/prod", "db/test"]);

    assert_eq!(
        names(&env, &["--filters", "Key=name,Values=db/"]),
        vec!["db/prod", "db/test"]
    );
    assert_eq!(
        names(&env, &["--filters", "Key=name,Values=DB/"]),
        Vec::<String>::new()
    );
    assert_eq!(
        names(&env, &["--filters", "Key=name,Values=!db/"]),
        vec!["api/key"]
    );
    assert_eq!(
        names(&env, &["--filters", "Key=name,Values=api,db/p"]),
        vec!["api/key", "db/prod"]
    );
    assert_eq!(
        names(&env, &["--filters", "Key=tag-key,Values=team"]),
        vec!["db/prod", "db/test"]
    );
    assert_eq!(
        names(&env, &["--filters", "Key=tag-value,Values=qa"]),
        vec!["db/test"]
    );
    // Several filters: all must match.
    assert_eq!(
        names(
            &env,
            &[
                "--filters",
                "Key=tag-key,Values=team",
                "Key=name,Values=db/t"
            ]
        ),
        vec!["db/test"]
    );
    assert_eq!(
        names(
            &env,
            &[
                "--filters",
                r#"[{"Key":"description","Values":["Primary"]}]"#
            ]
        ),
        vec!["db/prod"]
    );
    refused(
        &env,
        &["list-secrets", "--filters", "Key=colour,Values=red"],
        6,
        "InvalidParameterException",
    );
    // No value anywhere in a listing.
    let out = env.ok(&sm(&["list-secrets"]));
    for v in ["v-1", "v-2", "v-3"] {
        assert!(!out.contains(&format!("\"{v}\"")), "{out}");
    }
}

/// AWS: "description: Prefix match, not case-sensitive" (API_Filter); so is `all`.
#[test]
fn list_secrets_description_and_all_filters_are_not_case_sensitive() {
    let env = Env::init();
    create(
        &env,
        "db/prod",
        "v-1",
        &["--description", "Primary database"],
    );
    create(&env, "other", "v-2", &[]);
    assert_eq!(
        names(&env, &["--filters", "Key=description,Values=primary"]),
        vec!["db/prod"]
    );
    assert_eq!(
        names(&env, &["--filters", "Key=all,Values=PRIMARY"]),
        vec!["db/prod"]
    );
}

#[test]
fn list_secrets_pages() {
    let env = Env::init();
    for i in 0..5 {
        create(&env, &format!("page-{i}"), "v", &[]);
    }
    let all: Vec<String> = (0..5).map(|i| format!("page-{i}")).collect();

    // One request per call: --max-results and --next-token.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["list-secrets", "--max-results", "2"];
        if let Some(t) = &token {
            args.extend(["--next-token", t.as_str()]);
        }
        let v = env.json(&sm(&args));
        let list = v["SecretList"].as_array().expect("SecretList");
        assert!(list.len() <= 2, "{v:#}");
        seen.extend(list.iter().map(|s| str_field(s, "Name")));
        pages += 1;
        match v["NextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    seen.sort();
    assert_eq!(seen, all);

    // Every page, merged.
    let v = env.json(&sm(&["list-secrets", "--page-size", "2"]));
    assert_eq!(v["SecretList"].as_array().unwrap().len(), 5, "{v:#}");
    assert!(v.get("NextToken").is_none(), "{v:#}");

    // --max-items, then --starting-token.
    let v = env.json(&sm(&[
        "list-secrets",
        "--max-items",
        "3",
        "--page-size",
        "2",
    ]));
    let first: Vec<String> = v["SecretList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(s, "Name"))
        .collect();
    assert_eq!(first.len(), 3, "{v:#}");
    let t = str_field(&v, "NextToken");
    let v = env.json(&sm(&[
        "list-secrets",
        "--max-items",
        "3",
        "--starting-token",
        &t,
    ]));
    let mut rest: Vec<String> = v["SecretList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(s, "Name"))
        .collect();
    assert_eq!(rest.len(), 2, "{v:#}");
    assert!(v.get("NextToken").is_none(), "{v:#}");
    rest.extend(first);
    rest.sort();
    assert_eq!(rest, all);

    // Sorted by creation date, both ways.
    let order = |o: &str| -> Vec<String> {
        env.json(&sm(&["list-secrets", "--sort-order", o]))["SecretList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| str_field(s, "Name"))
            .collect()
    };
    let mut asc = order("asc");
    let desc = order("desc");
    assert_eq!(asc.len(), 5);
    asc.reverse();
    assert_eq!(asc, desc);

    // By name, both ways.
    let by_name = |o: &str| -> Vec<String> {
        env.json(&sm(&[
            "list-secrets",
            "--sort-by",
            "name",
            "--sort-order",
            o,
        ]))["SecretList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| str_field(s, "Name"))
            .collect()
    };
    assert_eq!(by_name("asc"), all);
    let mut rev = all.clone();
    rev.reverse();
    assert_eq!(by_name("desc"), rev);
    refused(
        &env,
        &["list-secrets", "--sort-by", "colour"],
        6,
        "InvalidParameterException",
    );

    // --max-results out of range.
    for n in ["0", "101"] {
        refused(
            &env,
            &["list-secrets", "--max-results", n],
            6,
            "InvalidParameterException",
        );
    }
    // Flags of the two paging styles do not mix.
    env.run(&sm(&[
        "list-secrets",
        "--max-results",
        "2",
        "--max-items",
        "2",
    ]))
    .usage_error();
}

#[test]
fn get_random_password_honours_length_and_classes() {
    let env = Env::init();
    let p = password(&env, &[]);
    assert_eq!(p.chars().count(), 32, "{p}");
    assert!(!p.contains(' '), "{p}");
    // Each type is included by default (RequireEachIncludedType).
    assert!(p.chars().any(|c| c.is_ascii_lowercase()), "{p}");
    assert!(p.chars().any(|c| c.is_ascii_uppercase()), "{p}");
    assert!(p.chars().any(|c| c.is_ascii_digit()), "{p}");
    assert!(p.chars().any(|c| PUNCTUATION.contains(c)), "{p}");

    for _ in 0..5 {
        let p = password(
            &env,
            &[
                "--password-length",
                "64",
                "--exclude-punctuation",
                "--exclude-uppercase",
            ],
        );
        assert_eq!(p.len(), 64, "{p}");
        assert!(
            p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "{p}"
        );
        assert!(p.chars().any(|c| c.is_ascii_digit()), "{p}");

        let p = password(
            &env,
            &[
                "--password-length",
                "40",
                "--exclude-numbers",
                "--exclude-lowercase",
                "--exclude-characters",
                "ABCDE!\"#",
            ],
        );
        assert_eq!(p.len(), 40, "{p}");
        assert!(
            p.chars()
                .all(|c| (c.is_ascii_uppercase() || PUNCTUATION.contains(c))
                    && !"ABCDE!\"#".contains(c)),
            "{p}"
        );

        let p = password(
            &env,
            &[
                "--password-length",
                "100",
                "--include-space",
                "--exclude-punctuation",
                "--exclude-numbers",
                "--exclude-uppercase",
            ],
        );
        assert_eq!(p.len(), 100, "{p}");
        assert!(p.chars().all(|c| c == ' ' || c.is_ascii_lowercase()), "{p}");
        assert!(p.contains(' '), "{p}");
    }
    // Two passwords differ.
    assert_ne!(password(&env, &[]), password(&env, &[]));
    // A one-character password needs --no-require-each-included-type.
    let p = password(
        &env,
        &["--password-length", "1", "--no-require-each-included-type"],
    );
    assert_eq!(p.chars().count(), 1);
    refused(
        &env,
        &["get-random-password", "--password-length", "2"],
        6,
        "InvalidParameterException",
    );
    for n in ["0", "4097"] {
        refused(
            &env,
            &["get-random-password", "--password-length", n],
            6,
            "InvalidParameterException",
        );
    }
    refused(
        &env,
        &[
            "get-random-password",
            "--exclude-numbers",
            "--exclude-punctuation",
            "--exclude-uppercase",
            "--exclude-lowercase",
        ],
        6,
        "InvalidParameterException",
    );
}
