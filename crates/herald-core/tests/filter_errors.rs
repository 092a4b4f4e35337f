//! Invalid patterns are rejected with the JSON path of the bad part; limits hold.

use herald_core::filter::{Filter, FilterError, FilterLimits};
use serde_json::{json, Value};

fn error(pattern: Value) -> FilterError {
    Filter::compile(&pattern).expect_err("pattern should be rejected")
}

#[track_caller]
fn rejects(pattern: Value, path: &str, needle: &str) {
    let err = error(pattern);
    assert_eq!(err.path(), path, "{err}");
    assert!(err.to_string().contains(needle), "{err:?} lacks {needle:?}");
    assert_eq!(err.code(), "filter_invalid");
}

#[test]
fn numeric_errors_name_index_and_path() {
    let err = error(json!({"data": {"amount": [{"numeric": [">", 0, 5]}]}}));
    assert_eq!(
        err.to_string(),
        "data.amount[0].numeric: expected an operator like \">\" at index 2"
    );
    rejects(
        json!({"a": [{"numeric": []}]}),
        "a[0].numeric",
        "operator like \">\" at index 0",
    );
    rejects(
        json!({"a": [{"numeric": ["~", 1]}]}),
        "a[0].numeric",
        "at index 0",
    );
    rejects(
        json!({"a": [{"numeric": [">"]}]}),
        "a[0].numeric",
        "number at index 1",
    );
    rejects(
        json!({"a": [{"numeric": [">", "1"]}]}),
        "a[0].numeric",
        "number at index 1",
    );
    rejects(
        json!({"a": [{"numeric": [">", 1, "<"]}]}),
        "a[0].numeric",
        "number at index 3",
    );
    rejects(
        json!({"a": [{"numeric": [">", 1, "<", 2, ">", 3]}]}),
        "a[0].numeric",
        "at most two",
    );
    rejects(
        json!({"a": [{"numeric": [">", 1, ">", 2]}]}),
        "a[0].numeric",
        "lower bound",
    );
    rejects(
        json!({"a": [{"numeric": ["<", 1, "<=", 2]}]}),
        "a[0].numeric",
        "lower bound",
    );
    rejects(
        json!({"a": [{"numeric": [">", 5, "<", 1]}]}),
        "a[0].numeric",
        "empty",
    );
    rejects(
        json!({"a": [{"numeric": [">", 1, "<", 1]}]}),
        "a[0].numeric",
        "empty",
    );
    rejects(
        json!({"a": [{"numeric": ["=", 1, "<", 2]}]}),
        "a[0].numeric",
        "cannot be combined",
    );
    rejects(
        json!({"a": [{"numeric": ">"}]}),
        "a[0].numeric",
        "expected an array",
    );
    assert!(Filter::compile(&json!({"a": [{"numeric": [">=", 1, "<=", 1]}]})).is_ok());
}

#[test]
fn structural_errors() {
    rejects(json!([]), "", "expected a pattern object");
    rejects(
        json!({"type": "order.created"}),
        "type",
        "expected an array of matchers",
    );
    rejects(json!({"type": []}), "type", "at least one matcher");
    rejects(json!({"data": {}}), "data", "must not be empty");
    rejects(json!({"type": [["a"]]}), "type[0]", "cannot be an array");
    rejects(
        json!({"type": ["a", {}]}),
        "type[1]",
        "exactly one operator",
    );
    rejects(
        json!({"type": [{"prefix": "a", "suffix": "b"}]}),
        "type[0]",
        "exactly one operator",
    );
    rejects(
        json!({"type": [{"contains": "a"}]}),
        "type[0].contains",
        "unknown operator `contains`",
    );
    rejects(
        json!({"data": {"a.b": [{"cidr": "10.0.0.0/8"}]}}),
        "data[\"a.b\"][0].cidr",
        "unknown operator",
    );
}

#[test]
fn operator_operand_errors() {
    rejects(
        json!({"t": [{"prefix": 5}]}),
        "t[0].prefix",
        "expected a string",
    );
    rejects(
        json!({"t": [{"prefix": {"ignore-case": "x"}}]}),
        "t[0].prefix.ignore-case",
        "unknown modifier",
    );
    rejects(
        json!({"t": [{"suffix": ["a"]}]}),
        "t[0].suffix",
        "expected a string or",
    );
    rejects(
        json!({"t": [{"equals-ignore-case": 1}]}),
        "t[0].equals-ignore-case",
        "expected a string",
    );
    rejects(
        json!({"t": [{"exists": "yes"}]}),
        "t[0].exists",
        "true or false",
    );
    rejects(
        json!({"t": [{"wildcard": "a**b"}]}),
        "t[0].wildcard",
        "consecutive",
    );
    rejects(
        json!({"t": [{"wildcard": "a\\b"}]}),
        "t[0].wildcard",
        "invalid escape",
    );
    rejects(
        json!({"t": [{"anything-but": []}]}),
        "t[0].anything-but",
        "at least one value",
    );
    rejects(
        json!({"t": [{"anything-but": ["a", {"prefix": "b"}]}]}),
        "t[0].anything-but[1]",
        "expected a string, number",
    );
    rejects(
        json!({"t": [{"anything-but": {"numeric": [">", 1]}}]}),
        "t[0].anything-but.numeric",
        "anything-but",
    );
    rejects(
        json!({"t": [{"anything-but": {"prefix": 1}}]}),
        "t[0].anything-but.prefix",
        "expected a string",
    );
    rejects(
        json!({"t": [{"anything-but": {"wildcard": ["a", 1]}}]}),
        "t[0].anything-but.wildcard[1]",
        "expected a string",
    );
    rejects(
        json!({"t": [{"anything-but": {"wildcard": "a**"}}]}),
        "t[0].anything-but.wildcard",
        "consecutive",
    );
    rejects(
        json!({"t": [{"anything-but": {"equals-ignore-case": []}}]}),
        "t[0].anything-but.equals-ignore-case",
        "non-empty list",
    );
}

#[test]
fn or_errors() {
    rejects(
        json!({"$or": {"a": ["x"]}}),
        "$or",
        "array of pattern objects",
    );
    rejects(json!({"$or": []}), "$or", "at least one");
    rejects(
        json!({"$or": [{"a": ["x"]}, {}]}),
        "$or[1]",
        "must not be empty",
    );
    rejects(
        json!({"$or": [{"a": ["x"]}, "b"]}),
        "$or[1]",
        "expected a pattern object",
    );
    rejects(
        json!({"data": {"$or": [{"a": [{"numeric": [1]}]}]}}),
        "data.$or[0].a[0].numeric",
        "at index 0",
    );
}

#[test]
fn limits_stop_hostile_patterns() {
    // Depth.
    let mut deep = json!({"leaf": ["x"]});
    for _ in 0..FilterLimits::DEPTH_MAX {
        deep = json!({"n": deep});
    }
    let err = error(deep);
    assert_eq!(err.code(), "filter_too_large");
    assert!(err.to_string().contains("depth_max"), "{err}");
    // Matcher count.
    let many: Vec<Value> = (0..=FilterLimits::MATCHERS_MAX).map(Value::from).collect();
    let err = error(json!({"a": many}));
    assert!(
        matches!(
            err,
            FilterError::LimitExceeded {
                limit: "matchers_max",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.path(), format!("a[{}]", FilterLimits::MATCHERS_MAX));
    let excluded: Vec<Value> = (0..=FilterLimits::MATCHERS_MAX).map(Value::from).collect();
    let err = error(json!({"a": [{"anything-but": excluded}]}));
    assert!(
        matches!(
            err,
            FilterError::LimitExceeded {
                limit: "matchers_max",
                ..
            }
        ),
        "{err}"
    );
    // Size.
    let huge = "x".repeat(FilterLimits::PATTERN_BYTES_MAX);
    let err = error(json!({"a": [huge]}));
    assert!(
        matches!(
            err,
            FilterError::LimitExceeded {
                limit: "pattern_bytes_max",
                ..
            }
        ),
        "{err}"
    );
    let wide: serde_json::Map<String, Value> = (0..5_000)
        .map(|i| (format!("field{i}"), json!([{"exists": true}])))
        .collect();
    let err = error(Value::Object(wide));
    assert!(matches!(err, FilterError::LimitExceeded { .. }), "{err}");
    // Custom limits.
    let tight = FilterLimits {
        depth_max: 2,
        matchers_max: 2,
        pattern_bytes_max: 1_000,
    };
    assert!(Filter::compile_with_limits(&json!({"a": {"b": [1, 2]}}), &tight).is_ok());
    assert!(Filter::compile_with_limits(&json!({"a": {"b": [1, 2, 3]}}), &tight).is_err());
    assert!(Filter::compile_with_limits(&json!({"a": {"b": {"c": [1]}}}), &tight).is_err());
    assert!(Filter::compile_with_limits(&json!({"$or": [{"a": {"b": [1]}}]}), &tight).is_err());
}
