//! Glob matching for the policy language: `*` matches any run of characters (including
//! none), `?` matches exactly one, everything else matches itself.
//!
//! Policies are untrusted input, so the matcher is iterative (no recursion, no
//! exponential backtracking): the classic single-star-backtrack walk, O(pattern × text)
//! at worst. It knows nothing about actions, ARNs or conditions.

/// Whether letters compare exactly or ASCII-case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    Sensitive,
    Insensitive,
}

/// Whether `pattern` contains a wildcard character.
pub(crate) fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Matches the whole of `text` against `pattern`.
pub(crate) fn glob_match(pattern: &str, text: &str, case: Case) -> bool {
    // Every call authorizes against a few patterns, most of them `*` or a literal
    // (`kms:*`, an ARN): those need no walk and no allocation.
    if pattern == "*" {
        return true;
    }
    if !has_wildcard(pattern) {
        return match case {
            Case::Sensitive => pattern == text,
            Case::Insensitive => pattern.eq_ignore_ascii_case(text),
        };
    }
    if pattern.is_ascii() && text.is_ascii() {
        // One byte is one character: the walk below on bytes, without collecting chars.
        return walk(pattern.as_bytes(), text.as_bytes(), |p, t| match case {
            Case::Sensitive => p == t,
            Case::Insensitive => p.eq_ignore_ascii_case(&t),
        });
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    walk(&pattern, &text, |p, t| match case {
        Case::Sensitive => p == t,
        Case::Insensitive => p.eq_ignore_ascii_case(&t),
    })
}

/// A character of a pattern: itself, or one of the two wildcards.
trait Glyph: Copy + PartialEq {
    const STAR: Self;
    const ANY: Self;
}

impl Glyph for char {
    const STAR: char = '*';
    const ANY: char = '?';
}

impl Glyph for u8 {
    const STAR: u8 = b'*';
    const ANY: u8 = b'?';
}

/// The single-star-backtrack walk of `text` against `pattern`.
fn walk<C: Glyph>(pattern: &[C], text: &[C], same: impl Fn(C, C) -> bool) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was seen, and the text position it is currently standing in for.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(&c) if c == C::STAR => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == C::ANY || same(c, text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last star swallow one more character and retry after it.
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == C::STAR)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn literals_stars_and_question_marks() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*", "a", true),
            ("a*", "ab", true),
            ("a*", "ba", false),
            ("*a", "ba", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("kms:Generate*", "kms:GenerateDataKey", true),
            ("vol-a*", "vol-b", false),
            ("*", "*", true),
            ("arn:*", "*", false),
            ("**a**", "a", true),
            (
                "a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
            ("é?", "éx", true),
        ];
        for &(pattern, text, want) in cases {
            assert_eq!(
                glob_match(pattern, text, Case::Sensitive),
                want,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    /// The shortcuts (a lone star, a literal, ASCII bytes) answer as the walk on chars.
    #[test]
    fn shortcuts_agree_with_the_walk() {
        let words = [
            "",
            "*",
            "?",
            "a",
            "A",
            "kms:*",
            "kms:Decrypt",
            "KMS:DECRYPT",
            "kms:De?rypt",
            "é",
            "é*",
            "É",
            "arn:aws:kms:*:key/*",
            "arn:aws:kms:r:1:key/x",
            "a*?",
            "*?*",
        ];
        for p in words {
            for t in words {
                for case in [Case::Sensitive, Case::Insensitive] {
                    let (pc, tc): (Vec<char>, Vec<char>) =
                        (p.chars().collect(), t.chars().collect());
                    let slow = walk(&pc, &tc, |a, b| match case {
                        Case::Sensitive => a == b,
                        Case::Insensitive => a.eq_ignore_ascii_case(&b),
                    });
                    assert_eq!(glob_match(p, t, case), slow, "{p:?} {t:?} {case:?}");
                }
            }
        }
    }

    #[test]
    fn case_modes() {
        assert!(!glob_match("kms:decrypt", "kms:Decrypt", Case::Sensitive));
        assert!(glob_match("KMS:decrypt", "kms:Decrypt", Case::Insensitive));
        assert!(glob_match(
            "kms:re*",
            "kms:ReEncryptFrom",
            Case::Insensitive
        ));
    }

    #[test]
    fn detects_wildcards() {
        assert!(has_wildcard("kms:*"));
        assert!(has_wildcard("kms:Get?"));
        assert!(!has_wildcard("kms:Decrypt"));
    }
}
