//! JSON value facts the checker reasons with: kinds (the `type` lattice), exact number
//! comparison and value equality as the validator sees it (`1` equals `1.0`).
//!
//! Invariant: every answer here errs on the side of "unknown" (`None`, "possibly equal"),
//! never on a wrong "yes".

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// A set of JSON kinds. `integer` and `fractional` split `number`: a number with a zero
/// fractional part (`1`, `1.0`) is an integer, as the validator counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Kinds(u8);

impl Kinds {
    pub(super) const NONE: Kinds = Kinds(0);
    pub(super) const NULL: Kinds = Kinds(1);
    pub(super) const BOOLEAN: Kinds = Kinds(2);
    pub(super) const OBJECT: Kinds = Kinds(4);
    pub(super) const ARRAY: Kinds = Kinds(8);
    pub(super) const STRING: Kinds = Kinds(16);
    pub(super) const INTEGER: Kinds = Kinds(32);
    pub(super) const FRACTIONAL: Kinds = Kinds(64);
    pub(super) const NUMBER: Kinds = Kinds(32 | 64);
    pub(super) const ALL: Kinds = Kinds(127);

    pub(super) fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    pub(super) fn intersection(self, other: Kinds) -> Kinds {
        Kinds(self.0 & other.0)
    }

    pub(super) fn without(self, other: Kinds) -> Kinds {
        Kinds(self.0 & !other.0)
    }

    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(super) fn intersects(self, other: Kinds) -> bool {
        !self.intersection(other).is_empty()
    }

    /// The kinds a `type` keyword value allows (`None` if the value is malformed).
    pub(super) fn of_type_keyword(value: &Value) -> Option<Kinds> {
        match value {
            Value::String(name) => Kinds::of_type_name(name),
            Value::Array(names) => names.iter().try_fold(Kinds::NONE, |kinds, name| {
                Some(kinds.union(Kinds::of_type_name(name.as_str()?)?))
            }),
            _ => None,
        }
    }

    fn of_type_name(name: &str) -> Option<Kinds> {
        Some(match name {
            "null" => Kinds::NULL,
            "boolean" => Kinds::BOOLEAN,
            "object" => Kinds::OBJECT,
            "array" => Kinds::ARRAY,
            "string" => Kinds::STRING,
            "integer" => Kinds::INTEGER,
            "number" => Kinds::NUMBER,
            _ => return None,
        })
    }

    /// The kind of one value.
    pub(super) fn of_value(value: &Value) -> Kinds {
        match value {
            Value::Null => Kinds::NULL,
            Value::Bool(_) => Kinds::BOOLEAN,
            Value::Object(_) => Kinds::OBJECT,
            Value::Array(_) => Kinds::ARRAY,
            Value::String(_) => Kinds::STRING,
            Value::Number(n) => {
                let integral =
                    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0);
                if integral {
                    Kinds::INTEGER
                } else {
                    Kinds::FRACTIONAL
                }
            }
        }
    }

    /// Names for messages: `integer, string`; both number halves read `number`.
    pub(super) fn describe(self) -> String {
        if self == Kinds::ALL {
            return "any type".to_string();
        }
        if self.is_empty() {
            return "nothing".to_string();
        }
        let mut names = Vec::new();
        for (kind, name) in [
            (Kinds::NULL, "null"),
            (Kinds::BOOLEAN, "boolean"),
            (Kinds::OBJECT, "object"),
            (Kinds::ARRAY, "array"),
            (Kinds::STRING, "string"),
        ] {
            if self.intersects(kind) {
                names.push(name);
            }
        }
        match (
            self.intersects(Kinds::INTEGER),
            self.intersects(Kinds::FRACTIONAL),
        ) {
            (true, true) => names.push("number"),
            (true, false) => names.push("integer"),
            (false, true) => names.push("non-integer number"),
            (false, false) => {}
        }
        names.join(", ")
    }
}

/// Largest integer every f64 holds exactly.
const SAFE_INTEGER_MAX: f64 = 9_007_199_254_740_992.0;

/// Exact order of two JSON numbers, or `None` when f64 rounding makes it uncertain.
pub(super) fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (as_i128(a), as_i128(b)) {
        return Some(x.cmp(&y));
    }
    let (x, y) = (a.as_f64()?, b.as_f64()?);
    let order = x.partial_cmp(&y)?;
    // Rounding an integer to f64 is monotonic, so only an "equal" answer can be wrong, and
    // only when an integer operand is beyond the exactly representable range.
    let exact = |n: &Number, f: f64| as_i128(n).is_none() || f.abs() < SAFE_INTEGER_MAX;
    if order == Ordering::Equal && !(exact(a, x) && exact(b, y)) {
        return None;
    }
    Some(order)
}

fn as_i128(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// `n` as an exact integer, if it is one within the range f64 and i64 both hold exactly.
pub(super) fn as_exact_integer(n: &Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    if f.fract() == 0.0 && f.abs() <= SAFE_INTEGER_MAX {
        #[allow(clippy::cast_possible_truncation)]
        return Some(f as i64);
    }
    None
}

/// Whether two values are certainly equal as the validator compares them (`enum`, `const`).
pub(super) fn definitely_equal(a: &Value, b: &Value) -> bool {
    equal(a, b, false)
}

/// Whether two values might be equal as the validator compares them.
pub(super) fn possibly_equal(a: &Value, b: &Value) -> bool {
    equal(a, b, true)
}

fn equal(a: &Value, b: &Value, when_unsure: bool) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match compare_numbers(x, y) {
            Some(order) => order == Ordering::Equal,
            None => when_unsure,
        },
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| equal(x, y, when_unsure))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| equal(x, y, when_unsure)))
        }
        _ => a == b,
    }
}

/// A short rendering of a value for messages.
pub(super) fn render(value: &Value) -> String {
    const RENDER_BYTES_MAX: usize = 80;
    let mut text = value.to_string();
    if text.len() > RENDER_BYTES_MAX {
        let mut end = RENDER_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_compare_exactly_beyond_f64_precision() {
        let a = Number::from(9_007_199_254_740_993_u64);
        let b = Number::from(9_007_199_254_740_992_u64);
        assert_eq!(compare_numbers(&a, &b), Some(Ordering::Greater));
        let f = Number::from_f64(9_007_199_254_740_992.0).expect("finite");
        assert_eq!(compare_numbers(&a, &f), None);
        assert_eq!(
            compare_numbers(&Number::from(1), &Number::from_f64(1.5).expect("finite")),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn one_equals_one_point_zero() {
        assert!(definitely_equal(&json!(1), &json!(1.0)));
        assert!(definitely_equal(&json!({"a": [1]}), &json!({"a": [1.0]})));
        assert!(!definitely_equal(&json!("1"), &json!(1)));
    }

    #[test]
    fn kinds_of_type_keyword() {
        assert_eq!(
            Kinds::of_type_keyword(&json!(["integer", "string"])),
            Some(Kinds::INTEGER.union(Kinds::STRING))
        );
        assert_eq!(Kinds::of_type_keyword(&json!("nope")), None);
        assert_eq!(Kinds::of_value(&json!(2.0)), Kinds::INTEGER);
        assert_eq!(Kinds::NUMBER.describe(), "number");
        assert_eq!(Kinds::FRACTIONAL.describe(), "non-integer number");
    }
}
