//! Pattern JSON → compiled pattern tree.
//!
//! Owns: syntax checking, error paths and limit accounting.
//! Invariants of the output: every nested object and `$or` branch is non-empty, every
//! matcher list is non-empty, fields are ordered leaves first (so cheap attribute
//! checks run before `data` is parsed), and the whole tree respects [`FilterLimits`].

use serde_json::{Map, Value};

use super::error::{field_path, index_path, FilterError, FilterLimits};
use super::matcher::{fold, Matcher, NumericRange, Scalar};
use super::wildcard::Wildcard;

/// An object level of a pattern: every field must match, and so must one `$or` branch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ObjectPattern {
    pub(crate) fields: Vec<FieldPattern>,
    /// `$or` branches; `None` when the object has no `$or`.
    pub(crate) any_of: Option<Vec<ObjectPattern>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldPattern {
    pub(crate) name: Box<str>,
    pub(crate) node: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Leaf(Leaf),
    Object(ObjectPattern),
}

/// A matcher list (any-of).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Leaf {
    pub(crate) matchers: Vec<Matcher>,
    /// True when the list holds `{"exists": false}`: absence satisfies it.
    pub(crate) absent_matches: bool,
}

const OPERATORS: &str =
    "prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists";

/// Compiles a pattern; returns the tree and its matcher count.
pub(crate) fn compile(
    pattern: &Value,
    limits: &FilterLimits,
) -> Result<(ObjectPattern, usize), FilterError> {
    let mut compiler = Compiler {
        limits,
        matchers_count: 0,
        bytes: 0,
    };
    let root = compiler.object(pattern, "", 1)?;
    Ok((root, compiler.matchers_count))
}

struct Compiler<'l> {
    limits: &'l FilterLimits,
    matchers_count: usize,
    bytes: usize,
}

impl Compiler<'_> {
    fn charge(&mut self, bytes: usize, path: &str) -> Result<(), FilterError> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.limits.pattern_bytes_max {
            return Err(FilterError::LimitExceeded {
                path: path.to_string(),
                limit: "pattern_bytes_max",
                max: self.limits.pattern_bytes_max,
            });
        }
        Ok(())
    }

    fn count_matchers(&mut self, count: usize, path: &str) -> Result<(), FilterError> {
        self.matchers_count = self.matchers_count.saturating_add(count);
        if self.matchers_count > self.limits.matchers_max {
            return Err(FilterError::LimitExceeded {
                path: path.to_string(),
                limit: "matchers_max",
                max: self.limits.matchers_max,
            });
        }
        Ok(())
    }

    fn object(
        &mut self,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<ObjectPattern, FilterError> {
        if depth > self.limits.depth_max {
            return Err(FilterError::LimitExceeded {
                path: path.to_string(),
                limit: "depth_max",
                max: self.limits.depth_max,
            });
        }
        let Value::Object(map) = value else {
            return Err(FilterError::invalid(
                path,
                format!("expected a pattern object, got {}", kind(value)),
            ));
        };
        if map.is_empty() && depth > 1 {
            return Err(FilterError::invalid(
                path,
                "a nested pattern object must not be empty",
            ));
        }
        self.charge(2, path)?;
        let mut fields = Vec::with_capacity(map.len());
        let mut any_of = None;
        for (name, child) in map {
            let child_path = field_path(path, name);
            self.charge(name.len() + 4, &child_path)?;
            if name == "$or" {
                any_of = Some(self.any_of(child, &child_path, depth)?);
                continue;
            }
            let node = match child {
                Value::Array(items) => Node::Leaf(self.leaf(items, &child_path)?),
                Value::Object(_) => Node::Object(self.object(child, &child_path, depth + 1)?),
                other => {
                    return Err(FilterError::invalid(
                        &child_path,
                        format!(
                            "expected an array of matchers (e.g. [{other}]) or a nested pattern object, got {}",
                            kind(other)
                        ),
                    ))
                }
            };
            fields.push(FieldPattern {
                name: name.as_str().into(),
                node,
            });
        }
        fields.sort_by(|a, b| {
            let nested = |f: &FieldPattern| matches!(f.node, Node::Object(_));
            nested(a).cmp(&nested(b)).then_with(|| a.name.cmp(&b.name))
        });
        Ok(ObjectPattern { fields, any_of })
    }

    fn any_of(
        &mut self,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Vec<ObjectPattern>, FilterError> {
        let Value::Array(branches) = value else {
            return Err(FilterError::invalid(
                path,
                format!(
                    "`$or` takes an array of pattern objects, got {}",
                    kind(value)
                ),
            ));
        };
        if branches.is_empty() {
            return Err(FilterError::invalid(
                path,
                "`$or` needs at least one pattern object",
            ));
        }
        self.charge(2, path)?;
        branches
            .iter()
            .enumerate()
            .map(|(i, branch)| self.object(branch, &index_path(path, i), depth + 1))
            .collect()
    }

    fn leaf(&mut self, items: &[Value], path: &str) -> Result<Leaf, FilterError> {
        if items.is_empty() {
            return Err(FilterError::invalid(
                path,
                "a matcher list must hold at least one matcher",
            ));
        }
        self.charge(2, path)?;
        let mut matchers = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = index_path(path, i);
            let matcher = self.matcher(item, &item_path)?;
            self.count_matchers(matcher.weight(), &item_path)?;
            matchers.push(matcher);
        }
        let absent_matches = matchers.contains(&Matcher::Exists(false));
        Ok(Leaf {
            matchers,
            absent_matches,
        })
    }

    fn matcher(&mut self, item: &Value, path: &str) -> Result<Matcher, FilterError> {
        match item {
            Value::Object(map) => self.operator(map, path),
            Value::Array(_) => Err(FilterError::invalid(
                path,
                "a matcher cannot be an array; list the values directly in the enclosing array",
            )),
            scalar => self.scalar(scalar, path).map(Matcher::Exact),
        }
    }

    /// A matcher object: `{"prefix": ...}`, `{"numeric": [...]}`, ...
    fn operator(&mut self, map: &Map<String, Value>, path: &str) -> Result<Matcher, FilterError> {
        let (operator, operand) = single_entry(map, path)?;
        let op_path = field_path(path, operator);
        self.charge(operator.len() + 4, &op_path)?;
        match operator {
            "prefix" | "suffix" => self.affix(operator, operand, &op_path),
            "equals-ignore-case" => {
                let text = self.string(operand, &op_path)?;
                Ok(Matcher::EqualsIgnoreCase(fold(text).into()))
            }
            "wildcard" => self.wildcard(operand, &op_path),
            "numeric" => self.numeric(operand, &op_path),
            "exists" => match operand {
                Value::Bool(b) => Ok(Matcher::Exists(*b)),
                other => Err(FilterError::invalid(
                    &op_path,
                    format!("expected true or false, got {}", kind(other)),
                )),
            },
            "anything-but" => self.anything_but(operand, &op_path),
            unknown => Err(FilterError::invalid(
                &op_path,
                format!("unknown operator `{unknown}`; expected one of {OPERATORS}"),
            )),
        }
    }

    /// An exact value: a string, number, boolean or null.
    fn scalar(&mut self, value: &Value, path: &str) -> Result<Scalar, FilterError> {
        let scalar = match value {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => match n.as_f64() {
                Some(x) if x.is_finite() => Scalar::Number(x),
                _ => {
                    return Err(FilterError::invalid(
                        path,
                        format!("number {n} is out of range"),
                    ))
                }
            },
            Value::String(s) => {
                self.charge(s.len() + 2, path)?;
                Scalar::String(s.as_str().into())
            }
            Value::Array(_) | Value::Object(_) => {
                return Err(FilterError::invalid(
                    path,
                    format!(
                        "expected a string, number, boolean or null, got {}",
                        kind(value)
                    ),
                ))
            }
        };
        self.charge(6, path)?;
        Ok(scalar)
    }

    fn string<'v>(&mut self, value: &'v Value, path: &str) -> Result<&'v str, FilterError> {
        match value {
            Value::String(s) => {
                self.charge(s.len() + 2, path)?;
                Ok(s)
            }
            other => Err(FilterError::invalid(
                path,
                format!("expected a string, got {}", kind(other)),
            )),
        }
    }

    /// `"text"` or `{"equals-ignore-case": "text"}`; returns the text and whether case is ignored.
    fn string_or_ignore_case(
        &mut self,
        value: &Value,
        path: &str,
    ) -> Result<(String, bool), FilterError> {
        match value {
            Value::String(_) => Ok((self.string(value, path)?.to_string(), false)),
            Value::Object(map) => {
                let (key, inner) = single_entry(map, path)?;
                let inner_path = field_path(path, key);
                if key != "equals-ignore-case" {
                    return Err(FilterError::invalid(
                        &inner_path,
                        format!(
                            "unknown modifier `{key}`; only `equals-ignore-case` is allowed here"
                        ),
                    ));
                }
                Ok((self.string(inner, &inner_path)?.to_string(), true))
            }
            other => Err(FilterError::invalid(
                path,
                format!(
                    "expected a string or {{\"equals-ignore-case\": \"...\"}}, got {}",
                    kind(other)
                ),
            )),
        }
    }

    /// `{"prefix": ...}` or `{"suffix": ...}`, optionally ignoring case.
    fn affix(
        &mut self,
        operator: &str,
        operand: &Value,
        path: &str,
    ) -> Result<Matcher, FilterError> {
        let (text, ignore_case) = self.string_or_ignore_case(operand, path)?;
        Ok(match (operator == "prefix", ignore_case) {
            (true, false) => Matcher::Prefix(text.into()),
            (true, true) => Matcher::PrefixIgnoreCase(fold(&text).into()),
            (false, false) => Matcher::Suffix(text.into()),
            (false, true) => Matcher::SuffixIgnoreCase(fold(&text).into()),
        })
    }

    fn wildcard(&mut self, value: &Value, path: &str) -> Result<Matcher, FilterError> {
        let text = self.string(value, path)?;
        Wildcard::parse(text)
            .map(Matcher::Wildcard)
            .map_err(|message| FilterError::invalid(path, message))
    }

    fn numeric(&mut self, value: &Value, path: &str) -> Result<Matcher, FilterError> {
        let Value::Array(items) = value else {
            return Err(FilterError::invalid(
                path,
                format!(
                    "expected an array like [\">\", 0, \"<=\", 5], got {}",
                    kind(value)
                ),
            ));
        };
        self.charge(2 + items.len() * 8, path)?;
        if items.len() > 4 {
            return Err(FilterError::invalid(
                path,
                "at most two comparisons (a lower and an upper bound) are allowed",
            ));
        }
        let mut comparisons: Vec<(&str, f64)> = Vec::with_capacity(2);
        for pair_start in (0..items.len().max(1)).step_by(2) {
            let operator = match items.get(pair_start) {
                Some(Value::String(op))
                    if matches!(op.as_str(), "=" | "!=" | "<" | "<=" | ">" | ">=") =>
                {
                    op.as_str()
                }
                _ => {
                    return Err(FilterError::invalid(
                        path,
                        format!("expected an operator like \">\" at index {pair_start}"),
                    ))
                }
            };
            let number_index = pair_start + 1;
            let number = match items.get(number_index) {
                Some(Value::Number(n)) => n.as_f64().filter(|x| x.is_finite()),
                _ => None,
            };
            let Some(number) = number else {
                return Err(FilterError::invalid(
                    path,
                    format!("expected a number at index {number_index}"),
                ));
            };
            comparisons.push((operator, number));
        }
        numeric_range(&comparisons)
            .map(Matcher::Numeric)
            .map_err(|message| FilterError::invalid(path, message))
    }

    fn anything_but(&mut self, value: &Value, path: &str) -> Result<Matcher, FilterError> {
        match value {
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(FilterError::invalid(
                        path,
                        "`anything-but` needs at least one value",
                    ));
                }
                let excluded = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.scalar(item, &index_path(path, i)).map(Matcher::Exact))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Matcher::AnythingBut {
                    excluded,
                    strings_only: false,
                })
            }
            Value::Object(map) => {
                let (operator, operand) = single_entry(map, path)?;
                let op_path = field_path(path, operator);
                let excluded = match operator {
                    "prefix" | "suffix" => vec![self.affix(operator, operand, &op_path)?],
                    "equals-ignore-case" => self.strings(operand, &op_path, |text| {
                        Ok(Matcher::EqualsIgnoreCase(fold(text).into()))
                    })?,
                    "wildcard" => self.strings(operand, &op_path, |text| {
                        Wildcard::parse(text).map(Matcher::Wildcard)
                    })?,
                    other => {
                        return Err(FilterError::invalid(
                            &op_path,
                            format!(
                                "`anything-but` takes a value, a list of values, or one of prefix, suffix, equals-ignore-case, wildcard; got `{other}`"
                            ),
                        ))
                    }
                };
                Ok(Matcher::AnythingBut {
                    excluded,
                    strings_only: true,
                })
            }
            scalar => Ok(Matcher::AnythingBut {
                excluded: vec![Matcher::Exact(self.scalar(scalar, path)?)],
                strings_only: false,
            }),
        }
    }

    /// A string or a non-empty list of strings, each turned into a matcher.
    fn strings(
        &mut self,
        value: &Value,
        path: &str,
        make: impl Fn(&str) -> Result<Matcher, String>,
    ) -> Result<Vec<Matcher>, FilterError> {
        let one = |compiler: &mut Self, item: &Value, item_path: &str| {
            let text = compiler.string(item, item_path)?;
            make(text).map_err(|message| FilterError::invalid(item_path, message))
        };
        match value {
            Value::Array(items) if items.is_empty() => Err(FilterError::invalid(
                path,
                "expected a string or a non-empty list of strings",
            )),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| one(self, item, &index_path(path, i)))
                .collect(),
            _ => Ok(vec![one(self, value, path)?]),
        }
    }
}

fn single_entry<'m>(
    map: &'m Map<String, Value>,
    path: &str,
) -> Result<(&'m str, &'m Value), FilterError> {
    let mut entries = map.iter();
    match (entries.next(), entries.next()) {
        (Some((key, value)), None) => Ok((key.as_str(), value)),
        _ => Err(FilterError::invalid(
            path,
            format!(
                "a matcher object must have exactly one operator key ({OPERATORS}), got {}",
                map.len()
            ),
        )),
    }
}

/// Turns one or two `(operator, number)` comparisons into a range.
fn numeric_range(comparisons: &[(&str, f64)]) -> Result<NumericRange, String> {
    let bound = |op: &str, x: f64| match op {
        ">" => (Some((x, false)), None),
        ">=" => (Some((x, true)), None),
        "<" => (None, Some((x, false))),
        "<=" => (None, Some((x, true))),
        _ => (Some((x, true)), Some((x, true))),
    };
    match comparisons {
        [("!=", x)] => Ok(NumericRange::NotEqual(*x)),
        [(op, x)] => {
            let (lower, upper) = bound(op, *x);
            Ok(NumericRange::Between { lower, upper })
        }
        [(op_a, a), (op_b, b)] => {
            if ["=", "!="].contains(op_a) || ["=", "!="].contains(op_b) {
                return Err("`=` and `!=` cannot be combined with another comparison".into());
            }
            let (lower_a, upper_a) = bound(op_a, *a);
            let (lower_b, upper_b) = bound(op_b, *b);
            let (Some(lower), Some(upper)) = (lower_a.or(lower_b), upper_a.or(upper_b)) else {
                return Err(
                    "a two-sided range needs one lower bound (> or >=) and one upper bound (< or <=)"
                        .into(),
                );
            };
            let empty = lower.0 > upper.0 || (lower.0 == upper.0 && !(lower.1 && upper.1));
            if empty {
                return Err(format!(
                    "the range is empty: no number is {} {} and {} {}",
                    if lower.1 { ">=" } else { ">" },
                    lower.0,
                    if upper.1 { "<=" } else { "<" },
                    upper.0
                ));
            }
            Ok(NumericRange::Between {
                lower: Some(lower),
                upper: Some(upper),
            })
        }
        _ => Err("expected one or two comparisons".into()),
    }
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
