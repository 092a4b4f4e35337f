//! Backward-compatibility rules, each with a compatible and an incompatible example.

use herald_core::schema::{check_backward_compatible, Incompatibility, IncompatibilityKind};
use serde_json::{json, Value};

#[track_caller]
fn compatible(old: Value, new: Value) {
    if let Err(findings) = check_backward_compatible(&old, &new) {
        panic!("expected compatible:\n old {old}\n new {new}\n got {findings:#?}");
    }
}

/// Asserts incompatibility with a finding at `path` whose reason contains `reason_part`.
#[track_caller]
fn incompatible(old: Value, new: Value, path: &str, reason_part: &str) -> Vec<Incompatibility> {
    match check_backward_compatible(&old, &new) {
        Ok(()) => panic!("expected incompatible:\n old {old}\n new {new}"),
        Err(findings) => {
            assert!(
                findings
                    .iter()
                    .any(|f| f.path == path && f.reason.contains(reason_part)),
                "no finding at {path:?} containing {reason_part:?}: {findings:#?}"
            );
            findings
        }
    }
}

fn object(properties: Value) -> Value {
    json!({"type": "object", "properties": properties})
}

#[test]
fn identical_and_trivial() {
    let schema = object(json!({"a": {"type": "string"}}));
    compatible(schema.clone(), schema.clone());
    compatible(json!(false), schema.clone());
    compatible(schema.clone(), json!(true));
    compatible(schema.clone(), json!({}));
    incompatible(json!({}), json!(false), "", "now nothing is");
}

#[test]
fn type_widening_and_narrowing() {
    compatible(json!({"type": "integer"}), json!({"type": "number"}));
    compatible(
        json!({"type": "string"}),
        json!({"type": ["string", "null"]}),
    );
    incompatible(
        json!({"type": "number"}),
        json!({"type": "integer"}),
        "type",
        "non-integer number accepted before, now only integer",
    );
    incompatible(
        json!({"type": ["string", "null"]}),
        json!({"type": "string"}),
        "type",
        "null accepted before",
    );
    incompatible(
        object(json!({"amount": {"type": "integer"}})),
        object(json!({"amount": {"type": "string"}})),
        "properties.amount.type",
        "integer accepted before, now only string",
    );
    incompatible(
        json!({}),
        json!({"type": "object"}),
        "type",
        "accepted before, now only object",
    );
}

#[test]
fn required() {
    compatible(
        json!({"type": "object", "required": ["a", "b"]}),
        json!({"type": "object", "required": ["a"]}),
    );
    incompatible(
        json!({"type": "object", "required": ["a"]}),
        json!({"type": "object", "required": ["a", "sku"]}),
        "required",
        "`sku` was optional before, now required",
    );
    // `required` only constrains objects.
    compatible(json!({"type": "string"}), json!({"required": ["a"]}));
}

#[test]
fn properties_present_in_both() {
    compatible(
        object(json!({"a": {"type": "string"}})),
        object(json!({"a": {"type": ["string", "null"]}})),
    );
    incompatible(
        object(json!({"a": {"type": ["string", "null"]}})),
        object(json!({"a": {"type": "string"}})),
        "properties.a.type",
        "null accepted before",
    );
}

#[test]
fn property_added_in_new() {
    // Old allowed any additional property: a restrictive new declaration breaks old data.
    incompatible(
        object(json!({"a": {"type": "string"}})),
        object(json!({"a": {"type": "string"}, "c": {"type": "integer"}})),
        "properties.c.type",
        "accepted before, now only integer",
    );
    // An unconstrained declaration is fine.
    compatible(
        object(json!({"a": {"type": "string"}})),
        object(json!({"a": {"type": "string"}, "c": {"description": "new, documented"}})),
    );
    // Old forbade it: it never occurs in old data.
    compatible(
        json!({"type": "object", "properties": {"a": {}}, "additionalProperties": false}),
        json!({"type": "object", "properties": {"a": {}, "c": {"type": "integer"}}, "additionalProperties": false}),
    );
    // Old constrained additional properties: the new declaration must accept that shape.
    compatible(
        json!({"type": "object", "additionalProperties": {"type": "string"}}),
        json!({"type": "object", "properties": {"c": {"type": ["string", "integer"]}}}),
    );
    incompatible(
        json!({"type": "object", "additionalProperties": {"type": "string"}}),
        json!({"type": "object", "properties": {"c": {"type": "string", "maxLength": 5}}}),
        "properties.c.maxLength",
        "maxLength lowered to 5",
    );
}

#[test]
fn additional_properties() {
    incompatible(
        object(json!({"a": {}})),
        json!({"type": "object", "properties": {"a": {}}, "additionalProperties": false}),
        "additionalProperties",
        "undeclared properties were accepted before, now rejected",
    );
    compatible(
        json!({"type": "object", "properties": {"a": {}, "b": {}}, "additionalProperties": false}),
        json!({"type": "object", "properties": {"a": {}, "b": {}, "c": {}}, "additionalProperties": false}),
    );
    incompatible(
        json!({"type": "object", "properties": {"a": {}, "b": {}}, "additionalProperties": false}),
        json!({"type": "object", "properties": {"a": {}}, "additionalProperties": false}),
        "additionalProperties",
        "property `b` was accepted before and is no longer declared",
    );
    compatible(
        json!({"type": "object", "additionalProperties": {"type": "string"}}),
        json!({"type": "object", "additionalProperties": {"type": ["string", "integer"]}}),
    );
    incompatible(
        json!({"type": "object", "additionalProperties": {"type": ["string", "integer"]}}),
        json!({"type": "object", "additionalProperties": {"type": "string"}}),
        "additionalProperties.type",
        "integer accepted before",
    );
}

#[test]
fn pattern_properties() {
    let old = json!({
        "type": "object",
        "patternProperties": {"^x-": {"type": "string"}},
        "additionalProperties": false
    });
    // A name the old pattern covered, now declared with a compatible schema.
    compatible(
        old.clone(),
        json!({
            "type": "object",
            "properties": {"x-trace": {"type": "string", "description": "trace id"}},
            "patternProperties": {"^x-": {"type": "string"}},
            "additionalProperties": false
        }),
    );
    incompatible(
        old.clone(),
        json!({
            "type": "object",
            "properties": {"x-trace": {"type": "string", "minLength": 8}},
            "patternProperties": {"^x-": {"type": "string"}},
            "additionalProperties": false
        }),
        "properties.x-trace.minLength",
        "minLength raised to 8",
    );
    // A new pattern over names old left unconstrained.
    incompatible(
        json!({"type": "object"}),
        json!({"type": "object", "patternProperties": {"^n-": {"type": "number"}}}),
        "patternProperties.^n-.type",
        "accepted before, now only number",
    );
    compatible(
        json!({"type": "object", "patternProperties": {"^n-": {"type": "integer"}}, "additionalProperties": false}),
        json!({"type": "object", "patternProperties": {"^n-": {"type": "number"}}, "additionalProperties": false}),
    );
    // Dropping the pattern while closing the object breaks names it allowed.
    incompatible(
        old,
        json!({"type": "object", "additionalProperties": false}),
        "additionalProperties",
        "properties matching `^x-` were accepted before, now rejected",
    );
}

#[test]
fn enum_and_const() {
    compatible(
        json!({"enum": ["a", "b"]}),
        json!({"enum": ["a", "b", "c"]}),
    );
    incompatible(
        json!({"enum": ["a", "b", "c"]}),
        json!({"enum": ["a", "b"]}),
        "",
        "\"c\"",
    );
    compatible(json!({"const": 1}), json!({"enum": [1, 2]}));
    compatible(json!({"const": 1}), json!({"enum": [1.0]}));
    compatible(
        json!({"const": 1}),
        json!({"type": "integer", "minimum": 1}),
    );
    incompatible(
        json!({"enum": [1, 1.5]}),
        json!({"type": "integer"}),
        "",
        "1.5",
    );
    compatible(json!({"type": "boolean"}), json!({"enum": [true, false]}));
    incompatible(
        json!({"type": "boolean"}),
        json!({"const": true}),
        "",
        "false",
    );
    incompatible(
        json!({"type": "string"}),
        json!({"type": "string", "enum": ["a"]}),
        "enum",
        "values restricted to [\"a\"]",
    );
}

#[test]
fn numeric_bounds() {
    compatible(json!({"minimum": 5}), json!({"minimum": 0}));
    incompatible(
        json!({"minimum": 0}),
        json!({"minimum": 5}),
        "minimum",
        "minimum 5 added or tightened (before: minimum 0)",
    );
    compatible(json!({"exclusiveMinimum": 0}), json!({"minimum": 0}));
    incompatible(
        json!({"minimum": 0}),
        json!({"exclusiveMinimum": 0}),
        "exclusiveMinimum",
        "before: minimum 0",
    );
    compatible(json!({"maximum": 10}), json!({"maximum": 20}));
    incompatible(
        json!({"maximum": 20}),
        json!({"maximum": 10}),
        "maximum",
        "maximum 10",
    );
    compatible(
        json!({"exclusiveMaximum": 10}),
        json!({"exclusiveMaximum": 10.5}),
    );
    incompatible(
        json!({"type": "number"}),
        json!({"type": "number", "maximum": 1e9}),
        "maximum",
        "no bound",
    );
    // Bounds only constrain numbers.
    compatible(
        json!({"type": "string"}),
        json!({"type": "string", "minimum": 3}),
    );
}

#[test]
fn multiple_of() {
    compatible(json!({"multipleOf": 4}), json!({"multipleOf": 2}));
    compatible(json!({"multipleOf": 0.5}), json!({"multipleOf": 0.5}));
    incompatible(
        json!({"multipleOf": 2}),
        json!({"multipleOf": 4}),
        "multipleOf",
        "multipleOf 4",
    );
    incompatible(
        json!({"type": "integer"}),
        json!({"type": "integer", "multipleOf": 2}),
        "multipleOf",
        "before: none",
    );
    compatible(
        json!({"type": "string"}),
        json!({"type": "string", "multipleOf": 2}),
    );
}

#[test]
fn string_lengths_pattern_format() {
    compatible(
        json!({"type": "string", "minLength": 3}),
        json!({"type": "string", "minLength": 1}),
    );
    incompatible(
        json!({"type": "string", "minLength": 1}),
        json!({"type": "string", "minLength": 3}),
        "minLength",
        "raised to 3 (before: 1)",
    );
    compatible(
        json!({"type": "string", "maxLength": 5}),
        json!({"type": "string", "maxLength": 10}),
    );
    incompatible(
        json!({"type": "string", "maxLength": 10}),
        json!({"type": "string", "maxLength": 5}),
        "maxLength",
        "lowered to 5 (before: 10)",
    );
    compatible(
        json!({"type": "string", "pattern": "^a"}),
        json!({"type": "string", "pattern": "^a"}),
    );
    incompatible(
        json!({"type": "string"}),
        json!({"type": "string", "pattern": "^a"}),
        "pattern",
        "pattern \"^a\" added",
    );
    incompatible(
        json!({"type": "string", "pattern": "^a"}),
        json!({"type": "string", "pattern": "^a|^b"}),
        "pattern",
        "changed from \"^a\" to \"^a|^b\"",
    );
    compatible(
        json!({"type": "string", "format": "email", "description": "x"}),
        json!({"type": "string", "format": "email"}),
    );
    incompatible(
        json!({"type": "string"}),
        json!({"type": "string", "format": "email"}),
        "format",
        "format \"email\" added",
    );
    incompatible(
        json!({"type": "string", "format": "email"}),
        json!({"type": "string", "format": "date"}),
        "format",
        "changed",
    );
}

#[test]
fn arrays() {
    compatible(
        json!({"type": "array", "items": {"type": "integer"}}),
        json!({"type": "array", "items": {"type": "number"}}),
    );
    incompatible(
        json!({"type": "array", "items": {"type": "number"}}),
        json!({"type": "array", "items": {"type": "integer"}}),
        "items.type",
        "non-integer number",
    );
    compatible(
        json!({"type": "array", "minItems": 2}),
        json!({"type": "array", "minItems": 1}),
    );
    incompatible(
        json!({"type": "array", "minItems": 1}),
        json!({"type": "array", "minItems": 2}),
        "minItems",
        "raised to 2",
    );
    compatible(
        json!({"type": "array", "maxItems": 2}),
        json!({"type": "array", "maxItems": 3}),
    );
    incompatible(
        json!({"type": "array", "maxItems": 3}),
        json!({"type": "array", "maxItems": 2}),
        "maxItems",
        "lowered to 2",
    );
    compatible(
        json!({"type": "array", "maxItems": 1}),
        json!({"type": "array", "uniqueItems": true}),
    );
    compatible(
        json!({"type": "array", "uniqueItems": true}),
        json!({"type": "array", "uniqueItems": false}),
    );
    incompatible(
        json!({"type": "array"}),
        json!({"type": "array", "uniqueItems": true}),
        "uniqueItems",
        "must now be unique",
    );
}

#[test]
fn tuples_in_both_drafts() {
    // 2020-12: prefixItems + items.
    compatible(
        json!({"type": "array", "prefixItems": [{"type": "string"}], "items": false}),
        json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}),
    );
    incompatible(
        json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}),
        json!({"type": "array", "prefixItems": [{"type": "string"}], "items": false}),
        "items",
        "now nothing is",
    );
    // Draft-07 array-form items with additionalItems.
    let draft7 = "http://json-schema.org/draft-07/schema#";
    compatible(
        json!({"$schema": draft7, "type": "array", "items": [{"type": "string"}], "additionalItems": false}),
        json!({"$schema": draft7, "type": "array", "items": [{"type": "string"}], "additionalItems": {"type": "integer"}}),
    );
    // Across drafts: the same tuple written both ways.
    compatible(
        json!({"$schema": draft7, "type": "array", "items": [{"type": "string"}], "additionalItems": false}),
        json!({"type": "array", "prefixItems": [{"type": "string"}], "items": false}),
    );
    // Draft-07 ignores prefixItems: old accepted anything there.
    incompatible(
        json!({"$schema": draft7, "type": "array", "prefixItems": [{"type": "string"}]}),
        json!({"type": "array", "prefixItems": [{"type": "string"}]}),
        "prefixItems.0.type",
        "accepted before, now only string",
    );
}

#[test]
fn any_of() {
    compatible(
        json!({"type": "string"}),
        json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
    );
    compatible(
        json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        json!({"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]}),
    );
    let findings = incompatible(
        json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        json!({"anyOf": [{"type": "string"}]}),
        "anyOf",
        "could not be proven",
    );
    assert!(findings
        .iter()
        .all(|f| f.kind == IncompatibilityKind::Unproven));
}

#[test]
fn one_of() {
    compatible(
        json!({"type": "string"}),
        json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
    );
    incompatible(
        json!({"type": "string"}),
        json!({"oneOf": [{"type": "string"}, {"minLength": 1}]}),
        "oneOf",
        "could not be proven",
    );
    // A discriminated union gaining a branch.
    let branch = |kind: &str, field: &str| {
        json!({
            "type": "object",
            "required": ["kind", field],
            "properties": {"kind": {"const": kind}, field: {"type": "string"}}
        })
    };
    compatible(
        json!({"oneOf": [branch("card", "pan"), branch("bank", "iban")]}),
        json!({"oneOf": [branch("card", "pan"), branch("bank", "iban"), branch("cash", "till")]}),
    );
    incompatible(
        json!({"oneOf": [branch("card", "pan"), branch("bank", "iban")]}),
        json!({"oneOf": [branch("card", "pan"), branch("bank", "bic")]}),
        "oneOf",
        "could not be proven",
    );
}

#[test]
fn all_of() {
    compatible(
        json!({"type": "object", "required": ["a"]}),
        json!({"allOf": [{"type": "object"}, {"required": ["a"]}]}),
    );
    incompatible(
        json!({"type": "object", "required": ["a"]}),
        json!({"allOf": [{"type": "object"}, {"required": ["a", "b"]}]}),
        "allOf.1.required",
        "`b` was optional before",
    );
    // Old facts spread over allOf branches count too.
    compatible(
        json!({"allOf": [{"type": "object"}, {"required": ["a"]}]}),
        json!({"type": "object", "required": ["a"]}),
    );
}

#[test]
fn not_and_if() {
    compatible(
        json!({"type": "string"}),
        json!({"not": {"type": "integer"}}),
    );
    incompatible(
        json!({}),
        json!({"not": {"type": "integer"}}),
        "not",
        "could not be proven",
    );
    compatible(
        json!({"type": "object"}),
        json!({"type": "object", "if": {"required": ["a"]}, "then": {"description": "x"}}),
    );
    incompatible(
        json!({"type": "object"}),
        json!({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}),
        "if",
        "could not be proven",
    );
    // Every old value takes the `then` branch, which holds.
    compatible(
        json!({"type": "object", "required": ["a", "b"]}),
        json!({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}, "else": false}),
    );
    // No old value takes the `then` branch.
    compatible(
        json!({"type": "string"}),
        json!({"if": {"type": "integer"}, "then": false}),
    );
}

#[test]
fn references() {
    let with_price = |price: Value| {
        json!({
            "$defs": {"price": price},
            "type": "object",
            "properties": {"amount": {"$ref": "#/$defs/price"}}
        })
    };
    compatible(
        with_price(json!({"type": "integer"})),
        with_price(json!({"type": "number"})),
    );
    incompatible(
        with_price(json!({"type": "number"})),
        with_price(json!({"type": "integer"})),
        "properties.amount.$ref.type",
        "non-integer number accepted before",
    );
}

#[test]
fn recursive_references() {
    let tree = |value_type: &str| {
        json!({
            "$defs": {"node": {
                "type": "object",
                "properties": {
                    "value": {"type": value_type},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                }
            }},
            "$ref": "#/$defs/node"
        })
    };
    compatible(tree("integer"), tree("number"));
    incompatible(
        tree("number"),
        tree("integer"),
        "$ref.properties.value.type",
        "non-integer number",
    );
    // A reference loop that never descends into the data is refused outright.
    incompatible(
        json!({"type": "string"}),
        json!({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}),
        "",
        "a reference loop passes through here",
    );
}

#[test]
fn draft_07_ignores_siblings_of_ref() {
    let draft7 = "http://json-schema.org/draft-07/schema#";
    // Old: `maxLength` beside `$ref` is ignored in draft-07, so long strings were accepted.
    incompatible(
        json!({"$schema": draft7, "definitions": {"s": {"type": "string"}}, "$ref": "#/definitions/s", "maxLength": 3}),
        json!({"type": "string", "maxLength": 3}),
        "maxLength",
        "lowered to 3",
    );
    compatible(
        json!({"$schema": draft7, "definitions": {"s": {"type": "string"}}, "$ref": "#/definitions/s"}),
        json!({"$schema": draft7, "definitions": {"s": {"type": "string"}}, "$ref": "#/definitions/s", "maxLength": 3}),
    );
}

#[test]
fn dependencies() {
    compatible(
        json!({"type": "object", "dependentRequired": {"card": ["cvv", "expiry"]}}),
        json!({"type": "object", "dependentRequired": {"card": ["cvv"]}}),
    );
    incompatible(
        json!({"type": "object"}),
        json!({"type": "object", "dependentRequired": {"card": ["cvv"]}}),
        "dependentRequired.card",
        "`cvv` now required whenever `card` is present",
    );
    compatible(
        json!({"type": "object", "required": ["cvv"]}),
        json!({"type": "object", "dependentSchemas": {"card": {"required": ["cvv"]}}}),
    );
}

#[test]
fn constructs_beyond_the_checker_are_unproven() {
    let findings = incompatible(
        json!({"type": "object"}),
        json!({"type": "object", "unevaluatedProperties": false}),
        "unevaluatedProperties",
        "could not be proven",
    );
    assert_eq!(findings[0].kind, IncompatibilityKind::Unproven);
    incompatible(
        json!({"type": "array"}),
        json!({"type": "array", "contains": {"type": "integer"}}),
        "contains",
        "could not be proven",
    );
    compatible(
        json!({"type": "array", "contains": {"type": "integer"}, "maxItems": 3}),
        json!({"type": "array", "contains": {"type": "integer"}}),
    );
}

#[test]
fn unusable_schemas_are_reported() {
    incompatible(
        json!({}),
        json!({"type": "strin"}),
        "",
        "the new schema is not usable",
    );
    incompatible(
        json!({}),
        json!({"$ref": "https://example.com/s.json"}),
        "",
        "not local",
    );
}

#[test]
fn display_names_path_and_reason() {
    let Err(findings) = check_backward_compatible(
        &object(json!({"amount": {"type": "integer"}})),
        &object(json!({"amount": {"type": "string"}})),
    ) else {
        panic!("expected incompatible");
    };
    assert_eq!(
        findings[0].to_string(),
        "properties.amount.type: integer accepted before, now only string"
    );
}

#[test]
fn unchanged_combinator_over_a_changed_reference_is_not_trusted() {
    // Found by the soundness property: equal `anyOf` text, but `$defs/d` got stricter.
    incompatible(
        json!({"$defs": {"d": {}}, "anyOf": [{"properties": {"a": {"type": "object"}}}, {"$ref": "#/$defs/d"}]}),
        json!({"$defs": {"d": {"type": "boolean"}}, "anyOf": [{"properties": {"a": {"type": "object"}}}, {"$ref": "#/$defs/d"}]}),
        "anyOf",
        "could not be proven",
    );
}

#[test]
fn reference_loops_without_descent_are_refused() {
    // Found by the soundness property: the validator's answer for such a loop depends on
    // where evaluation starts.
    incompatible(
        json!({"$defs": {"d": {"const": "2020-01-01", "oneOf": [{"type": "null"}, {"$ref": "#/$defs/d"}, true]}}, "$ref": "#/$defs/d"}),
        json!({"pattern": "^a"}),
        "",
        "the old schema is not usable",
    );
}

#[test]
fn deep_nesting_stays_within_the_stack() {
    // 60 levels of arrays: near the depth limit, checked on a test thread's small stack.
    let nest = |leaf: &str| {
        let mut schema = json!({"type": leaf});
        for _ in 0..60 {
            schema = json!({"type": "array", "items": schema});
        }
        schema
    };
    compatible(nest("integer"), nest("number"));
    incompatible(
        nest("number"),
        nest("integer"),
        &format!("{}type", "items.".repeat(60)),
        "non-integer",
    );
}

#[test]
fn large_schemas_are_checked_quickly() {
    let wide = |last: &str| {
        let mut properties = serde_json::Map::new();
        for i in 0..400 {
            let mut inner = serde_json::Map::new();
            for j in 0..12 {
                inner.insert(format!("f{j}"), json!({"type": "string", "maxLength": 64}));
            }
            properties.insert(
                format!("p{i}"),
                json!({"type": "object", "properties": inner, "required": ["f0"]}),
            );
        }
        properties.insert("last".to_string(), json!({"type": last}));
        json!({"type": "object", "properties": properties, "additionalProperties": false})
    };
    let started = std::time::Instant::now();
    compatible(wide("integer"), wide("number"));
    incompatible(
        wide("number"),
        wide("integer"),
        "properties.last.type",
        "non-integer",
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(5),
        "took {elapsed:?}"
    );
    println!("large schema pair checked twice in {elapsed:?}");
}
