//! Mutated policies must be refused or accepted, never panic.

use super::decision_table::cases;
use super::parse::refusals;
use super::*;

/// A small deterministic generator; the point is reproducible variety, not quality.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutated policies (byte flips, deletions, JSON fragments spliced in) must be refused or
/// accepted, never panic, and whatever parses must evaluate without panicking.
#[test]
fn mutated_documents_never_panic() {
    let seeds: Vec<String> = cases()
        .into_iter()
        .flat_map(|c| c.key_policy.into_iter().chain(c.identity))
        .chain(refusals().into_iter().map(|r| r.2))
        .filter(|s| s.len() < 4096)
        .collect();
    const FRAGMENTS: &[&str] = &[
        "*",
        "?",
        "\"",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "null",
        "true",
        "1e999",
        "-0",
        "\"*\"",
        "\"kms:*\"",
        "{\"AWS\":\"*\"}",
        "[]",
        "{}",
        "é",
        "\\u0000",
        "IfExists",
        "ForAllValues:",
        "arn:aws:iam::111122223333:",
        "\"Null\"",
        "\"Condition\"",
        "NaN",
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let caller = Who::Alice.caller();
    let mut conditions = ConditionValues::new();
    conditions.set("kms:EncryptionContext:cryptvol:lineage", "vol-a");
    conditions.set_multi("kms:EncryptionContextKeys", vec!["cryptvol:lineage".into()]);
    conditions.set("aws:MultiFactorAuthAge", "NaN");
    let mut parsed = 0;
    for _ in 0..4000 {
        let mut bytes = seeds[rng.below(seeds.len())].clone().into_bytes();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(3) {
                0 if at < bytes.len() => bytes[at] = (rng.next() & 0x7f) as u8,
                1 if at < bytes.len() => {
                    let end = (at + rng.below(8)).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ => {
                    let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())];
                    bytes.splice(at..at, fragment.bytes());
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        for kind in [PolicyKind::Key, PolicyKind::Identity] {
            if let Ok(policy) = Policy::parse(&text, kind) {
                parsed += 1;
                let _ = policy.principal_arns();
                let request = AccessRequest {
                    caller: &caller,
                    action: "kms:Decrypt",
                    resource: KEY,
                    conditions: &conditions,
                };
                let decision = evaluate(Some(&policy), std::slice::from_ref(&policy), &request);
                assert_eq!(
                    decision.denial_message("a", "b", "c").is_none(),
                    decision.is_allowed()
                );
            }
        }
    }
    // Some mutations are harmless, so the run also exercises evaluation.
    assert!(parsed > 0);
}
