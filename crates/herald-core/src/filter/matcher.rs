//! Leaf matchers: one compiled element of a pattern's matcher list, tested against one
//! (already flattened) event value.
//!
//! Owns: [`Matcher`], exact scalars, numeric ranges and case folding.
//! Invariants: ignore-case operands are stored already folded (per-character
//! `char::to_lowercase`, no context rules), and [`NumericRange`] bounds are never
//! empty (the compiler rejects `[">", 5, "<", 1]`).

use super::view::Elem;
use super::wildcard::Wildcard;

/// An exact value from a pattern.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    /// Numbers compare as IEEE-754 doubles.
    Number(f64),
    String(Box<str>),
}

impl Scalar {
    pub(crate) fn equals(&self, elem: Elem<'_>) -> bool {
        match (self, elem) {
            (Scalar::Null, Elem::Null) => true,
            (Scalar::Bool(a), Elem::Bool(b)) => *a == b,
            (Scalar::Number(a), Elem::Number(b)) => *a == b,
            (Scalar::String(a), Elem::Str(b)) => **a == *b,
            _ => false,
        }
    }
}

/// One compiled matcher.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Matcher {
    Exact(Scalar),
    Prefix(Box<str>),
    /// Operand already folded.
    PrefixIgnoreCase(Box<str>),
    Suffix(Box<str>),
    /// Operand already folded.
    SuffixIgnoreCase(Box<str>),
    /// Operand already folded.
    EqualsIgnoreCase(Box<str>),
    Wildcard(Wildcard),
    Numeric(NumericRange),
    Exists(bool),
    /// Matches a scalar (a string, when `strings_only`) that none of `excluded` matches.
    AnythingBut {
        excluded: Vec<Matcher>,
        strings_only: bool,
    },
}

impl Matcher {
    /// True when this matcher accepts `elem`. `Exists(false)` accepts no value: it is
    /// satisfied by absence, which the caller decides.
    pub(crate) fn matches(&self, elem: Elem<'_>) -> bool {
        match self {
            Matcher::Exact(scalar) => scalar.equals(elem),
            Matcher::Prefix(p) => as_str(elem).is_some_and(|s| s.starts_with(&**p)),
            Matcher::PrefixIgnoreCase(p) => as_str(elem).is_some_and(|s| folded_starts_with(s, p)),
            Matcher::Suffix(p) => as_str(elem).is_some_and(|s| s.ends_with(&**p)),
            Matcher::SuffixIgnoreCase(p) => as_str(elem).is_some_and(|s| folded_ends_with(s, p)),
            Matcher::EqualsIgnoreCase(p) => as_str(elem).is_some_and(|s| folded_equals(s, p)),
            Matcher::Wildcard(w) => as_str(elem).is_some_and(|s| w.matches(s)),
            Matcher::Numeric(range) => match elem {
                Elem::Number(n) => range.contains(n),
                _ => false,
            },
            Matcher::Exists(present) => *present,
            Matcher::AnythingBut {
                excluded,
                strings_only,
            } => {
                let kind_ok = match elem {
                    Elem::Object(_) => false,
                    Elem::Str(_) => true,
                    Elem::Null | Elem::Bool(_) | Elem::Number(_) => !strings_only,
                };
                kind_ok && !excluded.iter().any(|m| m.matches(elem))
            }
        }
    }

    /// The exact value, when this matcher is a plain exact value (indexable).
    pub(crate) fn as_exact(&self) -> Option<&Scalar> {
        match self {
            Matcher::Exact(scalar) => Some(scalar),
            _ => None,
        }
    }

    /// How many matchers this counts as against [`super::FilterLimits::matchers_max`].
    pub(crate) fn weight(&self) -> usize {
        match self {
            Matcher::AnythingBut { excluded, .. } => excluded.len().max(1),
            _ => 1,
        }
    }
}

fn as_str(elem: Elem<'_>) -> Option<&str> {
    match elem {
        Elem::Str(s) => Some(s),
        _ => None,
    }
}

/// Per-character lower case, the folding every ignore-case matcher uses.
pub(crate) fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

fn folded_equals(value: &str, folded: &str) -> bool {
    value
        .chars()
        .flat_map(char::to_lowercase)
        .eq(folded.chars())
}

fn folded_starts_with(value: &str, folded_prefix: &str) -> bool {
    let mut folded_value = value.chars().flat_map(char::to_lowercase);
    folded_prefix
        .chars()
        .all(|expected| folded_value.next() == Some(expected))
}

fn folded_ends_with(value: &str, folded_suffix: &str) -> bool {
    let mut folded_value = value.chars().rev().flat_map(|c| c.to_lowercase().rev());
    folded_suffix
        .chars()
        .rev()
        .all(|expected| folded_value.next() == Some(expected))
}

/// A numeric comparison: one- or two-sided range, equality or inequality.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NumericRange {
    /// `lower`/`upper` are `(bound, inclusive)`; `["=", x]` is `[x, x]` inclusive.
    Between {
        lower: Option<(f64, bool)>,
        upper: Option<(f64, bool)>,
    },
    NotEqual(f64),
}

impl NumericRange {
    pub(crate) fn contains(&self, n: f64) -> bool {
        match self {
            NumericRange::NotEqual(x) => n != *x && !n.is_nan(),
            NumericRange::Between { lower, upper } => {
                let above = lower.is_none_or(
                    |(bound, inclusive)| {
                        if inclusive {
                            n >= bound
                        } else {
                            n > bound
                        }
                    },
                );
                let below = upper.is_none_or(
                    |(bound, inclusive)| {
                        if inclusive {
                            n <= bound
                        } else {
                            n < bound
                        }
                    },
                );
                above && below
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_is_per_character() {
        assert!(folded_equals("ÄbC", &fold("äBc")));
        assert!(folded_starts_with("EventBridge", &fold("eventb")));
        assert!(folded_ends_with("IMAGE.PNG", &fold(".png")));
        assert!(!folded_ends_with("png", &fold(".png")));
        // 'İ' folds to two characters; suffix matching must keep their order.
        assert!(folded_ends_with("xİ", &fold("İ")));
        assert!(folded_ends_with("xİ", "\u{307}"));
        assert!(folded_starts_with("İx", "i"));
    }

    #[test]
    fn ranges() {
        let r = NumericRange::Between {
            lower: Some((0.0, false)),
            upper: Some((5.0, true)),
        };
        assert!(!r.contains(0.0));
        assert!(r.contains(0.1));
        assert!(r.contains(5.0));
        assert!(!r.contains(5.1));
        assert!(NumericRange::NotEqual(1.0).contains(2.0));
        assert!(!NumericRange::NotEqual(1.0).contains(1.0));
    }

    #[test]
    fn anything_but_needs_a_scalar() {
        let m = Matcher::AnythingBut {
            excluded: vec![Matcher::Exact(Scalar::String("x".into()))],
            strings_only: false,
        };
        assert!(m.matches(Elem::Str("y")));
        assert!(m.matches(Elem::Null));
        assert!(m.matches(Elem::Number(1.0)));
        assert!(!m.matches(Elem::Str("x")));
        let map = serde_json::Map::new();
        assert!(!m.matches(Elem::Object(&map)));
    }
}
