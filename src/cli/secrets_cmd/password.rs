//! `get-random-password`.

use super::Operation;
use super::shorthand::either;
use super::values::{Request, Scrubbed};
use crate::cli::exit::CliError;

#[derive(Debug, clap::Args)]
pub struct GetRandomPasswordArgs {
    /// 1..4096 characters [default: 32]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    password_length: Option<i64>,
    /// Characters never to use (e.g. '"@/\')
    #[arg(long, value_name = "CHARS", allow_hyphen_values = true)]
    exclude_characters: Option<String>,
    /// No digits
    #[arg(long, overrides_with = "no_exclude_numbers")]
    exclude_numbers: bool,
    #[arg(long, overrides_with = "exclude_numbers")]
    no_exclude_numbers: bool,
    /// None of !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~
    #[arg(long, overrides_with = "no_exclude_punctuation")]
    exclude_punctuation: bool,
    #[arg(long, overrides_with = "exclude_punctuation")]
    no_exclude_punctuation: bool,
    /// No uppercase letters
    #[arg(long, overrides_with = "no_exclude_uppercase")]
    exclude_uppercase: bool,
    #[arg(long, overrides_with = "exclude_uppercase")]
    no_exclude_uppercase: bool,
    /// No lowercase letters
    #[arg(long, overrides_with = "no_exclude_lowercase")]
    exclude_lowercase: bool,
    #[arg(long, overrides_with = "exclude_lowercase")]
    no_exclude_lowercase: bool,
    /// Spaces may occur too
    #[arg(long, overrides_with = "no_include_space")]
    include_space: bool,
    #[arg(long, overrides_with = "include_space")]
    no_include_space: bool,
    /// At least one character of every included type [default: on]
    #[arg(long, overrides_with = "no_require_each_included_type")]
    require_each_included_type: bool,
    #[arg(long, overrides_with = "require_each_included_type")]
    no_require_each_included_type: bool,
}

impl Operation for GetRandomPasswordArgs {
    const NAME: &'static str = "GetRandomPassword";
    fn request(self) -> Result<Scrubbed, CliError> {
        let a = self;
        Request::new()
            .opt("PasswordLength", a.password_length)
            .opt("ExcludeCharacters", a.exclude_characters)
            .opt(
                "ExcludeNumbers",
                either(a.exclude_numbers, a.no_exclude_numbers),
            )
            .opt(
                "ExcludePunctuation",
                either(a.exclude_punctuation, a.no_exclude_punctuation),
            )
            .opt(
                "ExcludeUppercase",
                either(a.exclude_uppercase, a.no_exclude_uppercase),
            )
            .opt(
                "ExcludeLowercase",
                either(a.exclude_lowercase, a.no_exclude_lowercase),
            )
            .opt("IncludeSpace", either(a.include_space, a.no_include_space))
            .opt(
                "RequireEachIncludedType",
                either(
                    a.require_each_included_type,
                    a.no_require_each_included_type,
                ),
            )
            .done()
    }
}
