//! The policy language end to end: a table of authorization questions (key policy,
//! identity policies, caller, action, resource, condition keys → decision), a table of
//! documents that must be refused and where, the templates, and a no-panic mutation run.
//!
//! Files: `decision_table.rs` (the table's rows, how a row runs, and its first rows: the
//! templates, explicit denies, delegation), `conditions.rs` and `principals.rs` (the
//! rows by concern), `parse.rs` (refused documents), `templates.rs` (the built-in
//! policies' text and denial messages), `mutation.rs` (the no-panic run).

use super::*;

mod conditions;
mod decision_table;
mod mutation;
mod parse;
mod principals;
mod templates;

const ACCT: &str = "111122223333";
const OTHER_ACCT: &str = "444455556666";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const SECRET_KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/secret-0001";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const BOB: &str = "arn:aws:iam::111122223333:user/bob";
const OPS: &str = "arn:aws:iam::111122223333:role/ops";
const CAROL: &str = "arn:aws:iam::444455556666:user/carol";
const ROOT: &str = "arn:aws:iam::111122223333:root";

#[derive(Debug, Clone, Copy)]
enum Who {
    Root,
    Alice,
    Bob,
    /// A session of role `ops`, identified by the role's ARN.
    Ops,
    /// A user of another account.
    Carol,
}

impl Who {
    fn caller(self) -> Requester {
        let (arn, account, is_root) = match self {
            Who::Root => ("arn:aws:iam::111122223333:root", ACCT, true),
            Who::Alice => (ALICE, ACCT, false),
            Who::Bob => (BOB, ACCT, false),
            Who::Ops => (OPS, ACCT, false),
            Who::Carol => (CAROL, OTHER_ACCT, false),
        };
        Requester {
            arn: arn.to_string(),
            account: account.to_string(),
            is_root,
        }
    }
}
