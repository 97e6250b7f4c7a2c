//! Reading Rust source for the layering test: just enough of a lexer to find paths
//! (comments dropped, strings kept whole), use trees expanded, `#[path]` declarations.

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Sep, // ::
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Bang,
    Hash,
    Str(String),
    Other,
}

/// The tokens of `text` with their line numbers; comments dropped, string literals kept
/// as one token (their contents are not code).
pub fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let (mut i, mut line, mut out) = (0, 1, vec![]);
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied().unwrap_or('\0');
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"'
            || (ch == 'r' && (next == '"' || next == '#'))
            || (ch == 'b' && next == '"')
        {
            // A string, raw string or byte string: up to its closing quote (and hashes).
            let start_line = line;
            let mut j = i;
            if c[j] == 'b' {
                j += 1;
            }
            let raw = c[j] == 'r';
            let mut hashes = 0;
            if raw {
                j += 1;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    // `r#ident`: a raw identifier, not a string.
                    out.push((Tok::Other, line));
                    i = j;
                    continue;
                }
            }
            j += 1;
            let mut s = String::new();
            while j < c.len() {
                if !raw && c[j] == '\\' {
                    s.push(c[j]);
                    if let Some(&e) = c.get(j + 1) {
                        s.push(e);
                    }
                    j += 2;
                    continue;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                if c[j] == '\n' {
                    line += 1;
                }
                s.push(c[j]);
                j += 1;
            }
            out.push((Tok::Str(s), start_line));
            i = j;
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == '\\' {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
            out.push((Tok::Other, line));
        } else if ch.is_alphabetic() || ch == '_' {
            let mut j = i;
            while j < c.len() && (c[j].is_alphanumeric() || c[j] == '_') {
                j += 1;
            }
            out.push((Tok::Ident(c[i..j].iter().collect()), line));
            i = j;
        } else {
            let t = match ch {
                ':' if next == ':' => {
                    i += 1;
                    Tok::Sep
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                ';' => Tok::Semi,
                '*' => Tok::Star,
                '!' => Tok::Bang,
                '#' => Tok::Hash,
                _ => Tok::Other,
            };
            out.push((t, line));
            i += 1;
        }
    }
    out
}

/// One path found in a file: its segments (`["crate", "kms", "Blob"]`, `["super", "x"]`,
/// `["*"]` for a glob), the line it starts on, and how many inline `mod x { }` blocks
/// enclose it.
#[derive(Debug)]
pub struct FoundPath {
    pub segments: Vec<String>,
    pub line: usize,
    pub inline_depth: usize,
    /// `use crate as x` and the like: a second name for a module.
    pub renamed: bool,
}

pub fn ident(t: &Tok) -> Option<&str> {
    match t {
        Tok::Ident(s) => Some(s),
        _ => None,
    }
}

/// Expands the use tree at `toks[*i..]` under `prefix` into full paths.
/// Each path comes with the line of its last segment, so a multi-line group names the
/// line of the offending item.
pub fn use_tree(
    toks: &[(Tok, usize)],
    i: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, bool, usize)>,
) {
    let mut path = prefix;
    let mut line = toks.get(*i).map_or(0, |t| t.1);
    loop {
        match toks.get(*i).map(|t| &t.0) {
            Some(Tok::Ident(s)) if s == "as" => {
                *i += 2;
                out.push((path, true, line));
                return;
            }
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                line = toks[*i].1;
                *i += 1;
            }
            Some(Tok::Star) => {
                path.push("*".into());
                line = toks[*i].1;
                *i += 1;
                out.push((path, false, line));
                return;
            }
            Some(Tok::Open) => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| &t.0) {
                        Some(Tok::Close) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Comma) => *i += 1,
                        None => return,
                        _ => use_tree(toks, i, path.clone(), out),
                    }
                }
            }
            _ => {
                if !path.is_empty() {
                    out.push((path, false, line));
                }
                return;
            }
        }
        if toks.get(*i).map(|t| &t.0) == Some(&Tok::Sep) {
            *i += 1;
        } else if !matches!(toks.get(*i).map(|t| &t.0), Some(Tok::Ident(s)) if s == "as") {
            out.push((path, false, line));
            return;
        }
    }
}

/// Every path of `text`: use trees expanded, other paths (`a::b::c`) as written, paths to
/// macros (`crate::m!`) left out; and the `#[path = ".."] mod x;` declarations it makes.
pub fn paths_of(text: &str) -> (Vec<FoundPath>, Vec<(String, String)>) {
    let toks = tokens(text);
    let (mut out, mut path_mods) = (vec![], vec![]);
    let mut braces = 0usize;
    let mut inline: Vec<usize> = vec![];
    let mut i = 0;
    while i < toks.len() {
        let (t, line) = (&toks[i].0, toks[i].1);
        match t {
            Tok::Open => braces += 1,
            Tok::Close => {
                braces = braces.saturating_sub(1);
                if inline.last() == Some(&braces) {
                    inline.pop();
                }
            }
            Tok::Hash => {
                // #[path = "file.rs"] mod name;
                if let (Some(Tok::Ident(a)), Some(Tok::Str(p))) =
                    (toks.get(i + 2).map(|t| &t.0), toks.get(i + 4).map(|t| &t.0))
                    && a == "path"
                {
                    let mut j = i + 5;
                    while j < toks.len() && ident(&toks[j].0) != Some("mod") {
                        j += 1;
                    }
                    if let Some(Tok::Ident(name)) = toks.get(j + 1).map(|t| &t.0) {
                        path_mods.push((p.clone(), name.clone()));
                    }
                }
            }
            Tok::Ident(s) if s == "mod" => {
                if let (Some(Tok::Ident(_)), Some(Tok::Open)) =
                    (toks.get(i + 1).map(|t| &t.0), toks.get(i + 2).map(|t| &t.0))
                {
                    inline.push(braces);
                }
            }
            Tok::Ident(s) if s == "use" || s == "extern" => {
                let mut j = i + 1;
                if s == "extern" {
                    // extern crate self as x;
                    if ident(&toks.get(j).map(|t| t.0.clone()).unwrap_or(Tok::Other))
                        != Some("crate")
                    {
                        i += 1;
                        continue;
                    }
                    j += 1;
                    // `extern crate self as x`: a second name for the crate root.
                    if toks.get(j).and_then(|t| ident(&t.0)) == Some("self") {
                        out.push(FoundPath {
                            segments: vec!["crate".into()],
                            line,
                            inline_depth: inline.len(),
                            renamed: true,
                        });
                        i = j + 1;
                        continue;
                    }
                }
                if toks.get(j).map(|t| &t.0) == Some(&Tok::Sep) {
                    j += 1;
                }
                let mut trees = vec![];
                use_tree(&toks, &mut j, vec![], &mut trees);
                for (segments, renamed, line) in trees {
                    out.push(FoundPath {
                        segments,
                        line,
                        inline_depth: inline.len(),
                        renamed,
                    });
                }
                i = j;
                continue;
            }
            Tok::Ident(first) if toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Sep) => {
                let mut segments = vec![first.clone()];
                let mut j = i + 1;
                while toks.get(j).map(|t| &t.0) == Some(&Tok::Sep) {
                    match toks.get(j + 1).map(|t| &t.0) {
                        Some(Tok::Ident(s)) => segments.push(s.clone()),
                        _ => break,
                    }
                    j += 2;
                }
                if toks.get(j).map(|t| &t.0) != Some(&Tok::Bang) {
                    out.push(FoundPath {
                        segments,
                        line,
                        inline_depth: inline.len(),
                        renamed: false,
                    });
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    (out, path_mods)
}
