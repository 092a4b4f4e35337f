//! Keywords on single values: `type`, `enum`/`const`, numeric bounds, `multipleOf`, size
//! limits (`minLength`...`maxProperties`), `pattern`, `format`, `uniqueItems`, and the keywords
//! only accepted unchanged.
//!
//! Each check proves one keyword of the new conjunct from the old conjuncts; a keyword that
//! only applies to some kinds holds at once when the old schema accepts none of them.

use std::cmp::Ordering;

use serde_json::Value;

use super::value::{
    self, as_exact_integer, compare_numbers, definitely_equal, possibly_equal, Kinds,
};
use super::{finite_values, own_finite_values, Checker, Context};

/// Which side of the number line a bound limits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Lower,
    Upper,
}

impl Checker<'_> {
    pub(super) fn prove_type(&mut self, ctx: &Context<'_, '_>, value: &Value) {
        let Some(allowed) = Kinds::of_type_keyword(value) else {
            return; // refused by the meta-schema at compile time
        };
        let missing = ctx.old_kinds.without(allowed);
        if !missing.is_empty() {
            self.breaking(
                ctx.path("type"),
                format!(
                    "{} accepted before, now only {}",
                    missing.describe(),
                    allowed.describe()
                ),
            );
        }
    }

    pub(super) fn prove_enum(&mut self, ctx: &Context<'_, '_>, keyword: &str, value: &Value) {
        let allowed: Vec<&Value> = match (keyword, value) {
            ("const", v) => vec![v],
            (_, Value::Array(values)) => values.iter().collect(),
            _ => return,
        };
        let Some(candidates) = finite_values(ctx.olds) else {
            self.breaking(
                ctx.path(keyword),
                format!(
                    "values restricted to {} (before: any {} value)",
                    value::render(value),
                    ctx.old_kinds.describe()
                ),
            );
            return;
        };
        // Keep the candidates every old conjunct may accept.
        let old_sets: Vec<Vec<Value>> = ctx.old_objects().filter_map(own_finite_values).collect();
        let missing: Vec<Value> = candidates
            .into_iter()
            .filter(|c| ctx.old_kinds.intersects(Kinds::of_value(c)))
            .filter(|c| {
                old_sets
                    .iter()
                    .all(|set| set.iter().any(|v| possibly_equal(v, c)))
            })
            .filter(|c| !allowed.iter().any(|a| definitely_equal(a, c)))
            .collect();
        if !missing.is_empty() {
            self.breaking(
                ctx.path(keyword),
                format!(
                    "{} accepted before, no longer allowed",
                    value::render(&Value::Array(missing))
                ),
            );
        }
    }

    pub(super) fn prove_bound(&mut self, ctx: &Context<'_, '_>, keyword: &str, value: &Value) {
        let Value::Number(limit) = value else {
            return;
        };
        if !ctx.old_kinds.intersects(Kinds::NUMBER) {
            return;
        }
        let (side, exclusive) = match keyword {
            "minimum" => (Side::Lower, false),
            "exclusiveMinimum" => (Side::Lower, true),
            "maximum" => (Side::Upper, false),
            _ => (Side::Upper, true),
        };
        let (inclusive_keyword, exclusive_keyword) = match side {
            Side::Lower => ("minimum", "exclusiveMinimum"),
            Side::Upper => ("maximum", "exclusiveMaximum"),
        };
        // "At least as tight": towards the inside of the range.
        let inward = match side {
            Side::Lower => Ordering::Greater,
            Side::Upper => Ordering::Less,
        };
        let mut before = Vec::new();
        for old in ctx.old_objects() {
            for (old_keyword, old_exclusive) in
                [(inclusive_keyword, false), (exclusive_keyword, true)]
            {
                let Some(Value::Number(old_limit)) = old.get(old_keyword) else {
                    continue;
                };
                before.push(format!("{old_keyword} {old_limit}"));
                let Some(order) = compare_numbers(old_limit, limit) else {
                    continue;
                };
                // An old bound proves the new one when it lies inside it, or on it unless the
                // old one includes the limit and the new one excludes it.
                let proven =
                    order == inward || (order == Ordering::Equal && (old_exclusive || !exclusive));
                if proven {
                    return;
                }
            }
        }
        let before = if before.is_empty() {
            "no bound".to_string()
        } else {
            before.join(", ")
        };
        self.breaking(
            ctx.path(keyword),
            format!("{keyword} {limit} added or tightened (before: {before})"),
        );
    }

    pub(super) fn prove_multiple_of(&mut self, ctx: &Context<'_, '_>, value: &Value) {
        let Value::Number(divisor) = value else {
            return;
        };
        if !ctx.old_kinds.intersects(Kinds::NUMBER) {
            return;
        }
        let mut before = Vec::new();
        for old_value in ctx.old_values("multipleOf") {
            let Value::Number(old_divisor) = old_value else {
                continue;
            };
            before.push(old_divisor.to_string());
            if compare_numbers(old_divisor, divisor) == Some(Ordering::Equal) {
                return;
            }
            // A multiple of k·n is a multiple of n (the validator divides exactly).
            if let (Some(m), Some(n)) = (as_exact_integer(old_divisor), as_exact_integer(divisor)) {
                if n != 0 && m % n == 0 {
                    return;
                }
            }
        }
        let before = if before.is_empty() {
            "none".to_string()
        } else {
            before.join(", ")
        };
        self.breaking(
            ctx.path("multipleOf"),
            format!("multipleOf {divisor} added or changed (before: {before})"),
        );
    }

    /// `minLength`, `maxLength`, `minItems`, `maxItems`, `minProperties`, `maxProperties`.
    pub(super) fn prove_count(&mut self, ctx: &Context<'_, '_>, keyword: &str, value: &Value) {
        let Some(limit) = value.as_number().and_then(as_exact_integer) else {
            return;
        };
        let applies_to = match keyword {
            "minLength" | "maxLength" => Kinds::STRING,
            "minItems" | "maxItems" => Kinds::ARRAY,
            _ => Kinds::OBJECT,
        };
        if !ctx.old_kinds.intersects(applies_to) {
            return;
        }
        let is_minimum = keyword.starts_with("min");
        if is_minimum && limit <= 0 {
            return;
        }
        let old_limits: Vec<i64> = ctx
            .old_values(keyword)
            .filter_map(|v| v.as_number().and_then(as_exact_integer))
            .collect();
        let proven = if is_minimum {
            old_limits.iter().any(|&old| old >= limit)
                || (keyword == "minProperties" && old_required_count(ctx) >= limit)
        } else {
            old_limits.iter().any(|&old| old <= limit)
                || (keyword == "maxProperties"
                    && old_closed_property_count(ctx).is_some_and(|n| n <= limit))
        };
        if !proven {
            let before = old_limits
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let before = if before.is_empty() { "none" } else { &before };
            let direction = if is_minimum { "raised" } else { "lowered" };
            self.breaking(
                ctx.path(keyword),
                format!("{keyword} {direction} to {limit} (before: {before})"),
            );
        }
    }

    /// `pattern` and `format`: only proven by the same value in the old schema.
    pub(super) fn prove_string_rule(
        &mut self,
        ctx: &Context<'_, '_>,
        keyword: &str,
        value: &Value,
    ) {
        if !ctx.old_kinds.intersects(Kinds::STRING) {
            return;
        }
        // Which formats are known differs by draft, so a format only carries over within one.
        if keyword == "format" && self.old.draft != self.new.draft {
            self.breaking(
                ctx.path(keyword),
                format!(
                    "format {} in a different draft than before",
                    value::render(value)
                ),
            );
            return;
        }
        let before: Vec<&Value> = ctx.old_values(keyword).collect();
        if before.contains(&value) {
            return;
        }
        let reason = match before.first() {
            None => format!("{keyword} {} added", value::render(value)),
            Some(old) => format!(
                "{keyword} changed from {} to {}",
                value::render(old),
                value::render(value)
            ),
        };
        self.breaking(ctx.path(keyword), reason);
    }

    pub(super) fn prove_unique_items(&mut self, ctx: &Context<'_, '_>, value: &Value) {
        if value != &Value::Bool(true) || !ctx.old_kinds.intersects(Kinds::ARRAY) {
            return;
        }
        let unique_before = ctx
            .old_values("uniqueItems")
            .any(|v| v == &Value::Bool(true));
        let short_before = ctx
            .old_values("maxItems")
            .filter_map(|v| v.as_number().and_then(as_exact_integer))
            .any(|n| n <= 1);
        if !(unique_before || short_before) {
            self.breaking(
                ctx.path("uniqueItems"),
                "items must now be unique (before: duplicates were accepted)".to_string(),
            );
        }
    }

    /// Keywords the checker only accepts unchanged (`contains` with `minContains` and
    /// `maxContains`; draft-07 `contentEncoding` and `contentMediaType`).
    pub(super) fn prove_same_keywords(
        &mut self,
        ctx: &Context<'_, '_>,
        applies_to: Kinds,
        keywords: &[&str],
    ) {
        if !ctx.old_kinds.intersects(applies_to) || self.unchanged_in_old(ctx, keywords) {
            return;
        }
        let first = keywords.first().copied().unwrap_or_default();
        self.unproven(
            ctx.path(first),
            format!(
                "could not be proven: `{}` added or changed, and the checker only accepts it unchanged",
                keywords.join("`/`")
            ),
        );
    }
}

/// The most names some old conjunct requires (distinct names).
fn old_required_count(ctx: &Context<'_, '_>) -> i64 {
    ctx.old_values("required")
        .filter_map(Value::as_array)
        .map(|names| {
            let mut names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
            names.sort_unstable();
            names.dedup();
            i64::try_from(names.len()).unwrap_or(i64::MAX)
        })
        .max()
        .unwrap_or(0)
}

/// If some old conjunct allows only its declared properties, how many it declares (the fewest).
fn old_closed_property_count(ctx: &Context<'_, '_>) -> Option<i64> {
    ctx.old_objects()
        .filter(|o| o.get("additionalProperties") == Some(&Value::Bool(false)))
        .filter(|o| !o.contains_key("patternProperties"))
        .map(|o| {
            let count = o
                .get("properties")
                .and_then(Value::as_object)
                .map_or(0, serde_json::Map::len);
            i64::try_from(count).unwrap_or(i64::MAX)
        })
        .min()
}
