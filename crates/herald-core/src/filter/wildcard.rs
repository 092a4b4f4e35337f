//! `*` globs for the `wildcard` matcher.
//!
//! Owns: parsing a wildcard pattern into literal parts and matching a string against it.
//! Syntax: `*` matches any run of characters (including none, including `.`); `\*` is
//! a literal star and `\\` a literal backslash; any other escape and two consecutive
//! unescaped stars are rejected.
//! Invariant: a compiled [`Wildcard`] has `parts.len() == stars + 1 >= 1`, so matching
//! is a prefix check, a suffix check and an in-order leftmost search for the middle
//! parts: linear in the subject for each part, no backtracking.

/// A compiled `*` glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wildcard {
    /// Literal text between stars: `a*b*c` → `["a", "b", "c"]`, `*x` → `["", "x"]`.
    parts: Vec<Box<str>>,
}

impl Wildcard {
    /// Parses `pattern`; the error message says what is wrong and where (character index).
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut previous_was_star = false;
        let mut chars = pattern.chars().enumerate();
        while let Some((index, c)) = chars.next() {
            match c {
                '*' => {
                    if previous_was_star {
                        return Err(format!(
                            "consecutive `*` at character {index}; one `*` already matches any run"
                        ));
                    }
                    parts.push(std::mem::take(&mut current).into_boxed_str());
                    previous_was_star = true;
                    continue;
                }
                '\\' => match chars.next() {
                    Some((_, escaped @ ('*' | '\\'))) => current.push(escaped),
                    _ => {
                        return Err(format!(
                            "invalid escape at character {index}; only `\\*` and `\\\\` are allowed"
                        ))
                    }
                },
                other => current.push(other),
            }
            previous_was_star = false;
        }
        parts.push(current.into_boxed_str());
        Ok(Self { parts })
    }

    /// True when `subject` matches the whole glob.
    pub(crate) fn matches(&self, subject: &str) -> bool {
        let Some((first, rest)) = self.parts.split_first() else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return subject == &**first;
        };
        let Some(after_first) = subject.strip_prefix(&**first) else {
            return false;
        };
        let Some(mut remaining) = after_first.strip_suffix(&**last) else {
            return false;
        };
        for part in middle {
            match remaining
                .find(&**part)
                .and_then(|at| remaining.get(at + part.len()..))
            {
                Some(after) => remaining = after,
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Wildcard {
        Wildcard::parse(p).expect("valid wildcard")
    }

    #[test]
    fn stars_match_any_run() {
        let w = glob("order.*.created");
        assert!(w.matches("order.eu.created"));
        assert!(w.matches("order..created"));
        assert!(w.matches("order.a.b.created"));
        assert!(!w.matches("order.created"));
        assert!(!w.matches("order.eu.created.x"));
        assert!(glob("*").matches(""));
        assert!(glob("a*").matches("a"));
        assert!(!glob("a*").matches("ba"));
        assert!(glob("*a*b*").matches("xxaxxbxx"));
        assert!(!glob("*a*b*").matches("bxxa"));
        assert!(glob("exact").matches("exact"));
        assert!(!glob("exact").matches("exactly"));
    }

    #[test]
    fn prefix_and_suffix_do_not_overlap() {
        assert!(!glob("ab*ba").matches("aba"));
        assert!(glob("ab*ba").matches("abba"));
        assert!(!glob("a*a*a").matches("aa"));
        assert!(glob("a*a*a").matches("aaa"));
    }

    #[test]
    fn escapes_are_literal() {
        let w = glob(r"a\*b");
        assert!(w.matches("a*b"));
        assert!(!w.matches("axb"));
        assert!(glob(r"a\\*").matches(r"a\anything"));
        assert!(Wildcard::parse(r"a\b").is_err());
        assert!(Wildcard::parse("a\\").is_err());
        assert!(Wildcard::parse("a**b").is_err());
    }

    #[test]
    fn multibyte_subjects() {
        assert!(glob("é*ü").matches("éxyzü"));
        assert!(glob("*ß*").matches("straße"));
    }
}
