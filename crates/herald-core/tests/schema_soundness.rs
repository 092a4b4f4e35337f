//! Soundness of the backward-compatibility checker, checked against the real validator:
//! whenever `check_backward_compatible(old, new)` answers `Ok`, every instance valid under
//! `old` must be valid under `new`.
//!
//! Schemas are drawn from a small vocabulary covering every keyword the checker reasons
//! about (and some it only accepts unchanged), in both drafts, with references; pairs are
//! mostly one a mutation of the other so that "compatible" answers are common. Instances mix
//! random small values with values harvested from the schemas.
//!
//! Replay: the base seed is printed; set `HERALD_SCHEMA_SEED=<n>` to rerun it, and
//! `HERALD_SCHEMA_CASES=<n>` to run more cases.

use herald_core::schema::{check_backward_compatible, CompiledSchema};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Map, Value};

const DEFAULT_SEED: u64 = 0x5eed_c0de_2024;
const DEFAULT_CASES: u32 = 3000;
const INSTANCES_PER_CASE: usize = 120;
const DEPTH_MAX: u32 = 3;

/// SplitMix64: the whole case follows from one `u64`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const TYPES: &[&str] = &[
    "null", "boolean", "integer", "number", "string", "array", "object",
];
const NAMES: &[&str] = &["a", "b", "c"];
const PATTERNS: &[&str] = &["^a", "b$", "^a|^b", "a"];
const FORMATS: &[&str] = &["email", "date", "ipv4"];
const STRINGS: &[&str] = &[
    "",
    "a",
    "b",
    "ab",
    "ba",
    "abc",
    "aa",
    "x@y.io",
    "2020-01-01",
    "2020-13-45",
    "1.2.3.4",
];

fn small_value(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(50)),
        2 | 3 => json!(rng.below(7) as i64 - 3),
        4 => json!(*rng.pick(&[-1.5, 0.5, 1.5, 2.5, 3.0, 1.0, 0.0])),
        5 | 6 => json!(*rng.pick(STRINGS)),
        7 => json!([]),
        _ => json!({"a": 1}),
    }
}

fn number(rng: &mut Rng) -> Value {
    match rng.below(3) {
        0 => json!(*rng.pick(&[-2, 0, 1, 3])),
        1 => json!(*rng.pick(&[-1.5, 0.5, 1.5])),
        _ => json!(rng.below(4)),
    }
}

fn names(rng: &mut Rng) -> Vec<Value> {
    NAMES
        .iter()
        .filter(|_| rng.chance(45))
        .map(|n| json!(n))
        .collect()
}

/// A random keyword (name, value) for a schema object at `depth`.
fn keyword(rng: &mut Rng, depth: u32) -> (String, Value) {
    let nested = depth < DEPTH_MAX;
    let choice = if nested { rng.below(38) } else { rng.below(20) };
    let (name, value) = match choice {
        0..=2 => {
            if rng.chance(70) {
                ("type", json!(*rng.pick(TYPES)))
            } else {
                ("type", json!([*rng.pick(TYPES), *rng.pick(TYPES)]))
            }
        }
        3 => {
            let values: Vec<Value> = (0..1 + rng.below(3)).map(|_| small_value(rng)).collect();
            ("enum", Value::Array(values))
        }
        4 => ("const", small_value(rng)),
        5 => (
            *rng.pick(&["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
            number(rng),
        ),
        6 => ("multipleOf", json!(*rng.pick(&[1.0, 2.0, 3.0, 0.5, 4.0]))),
        7 => (*rng.pick(&["minLength", "maxLength"]), json!(rng.below(4))),
        8 => ("pattern", json!(*rng.pick(PATTERNS))),
        9 => ("format", json!(*rng.pick(FORMATS))),
        10 => (*rng.pick(&["minItems", "maxItems"]), json!(rng.below(4))),
        11 => ("uniqueItems", json!(rng.chance(60))),
        12 => ("required", Value::Array(names(rng))),
        13 => (
            *rng.pick(&["minProperties", "maxProperties"]),
            json!(rng.below(4)),
        ),
        14 => ("additionalProperties", json!(rng.chance(30))),
        15 => ("dependentRequired", json!({"a": [*rng.pick(NAMES)]})),
        16 if depth > 0 && rng.chance(30) => ("$ref", json!("#")),
        16 => ("$ref", json!("#/$defs/d")),
        17 => ("dependencies", json!({"b": [*rng.pick(NAMES)]})),
        18 => ("propertyNames", json!({"maxLength": 1 + rng.below(2)})),
        19 => ("minContains", json!(rng.below(3))),
        // Nested keywords from here on.
        20..=22 => {
            let mut properties = Map::new();
            for name in NAMES {
                if rng.chance(50) {
                    properties.insert((*name).to_string(), schema(rng, depth + 1));
                }
            }
            ("properties", Value::Object(properties))
        }
        23 => ("additionalProperties", schema(rng, depth + 1)),
        24 => (
            "patternProperties",
            json!({*rng.pick(&["^a", "^x", "b"]): schema(rng, depth + 1)}),
        ),
        25 | 26 => ("items", schema(rng, depth + 1)),
        27 => {
            let items: Vec<Value> = (0..1 + rng.below(2))
                .map(|_| schema(rng, depth + 1))
                .collect();
            // Array-form `items` is draft-07 only; in 2020-12 it fails to compile (skipped).
            (*rng.pick(&["prefixItems", "items"]), Value::Array(items))
        }
        28 => ("additionalItems", schema(rng, depth + 1)),
        29..=31 => {
            let branches: Vec<Value> = (0..1 + rng.below(3))
                .map(|_| schema(rng, depth + 1))
                .collect();
            (
                *rng.pick(&["anyOf", "oneOf", "allOf"]),
                Value::Array(branches),
            )
        }
        32 => ("not", schema(rng, depth + 1)),
        33 => ("if", schema(rng, depth + 1)),
        34 => (*rng.pick(&["then", "else"]), schema(rng, depth + 1)),
        35 => ("contains", schema(rng, depth + 1)),
        36 => ("dependentSchemas", json!({"a": schema(rng, depth + 1)})),
        _ => ("unevaluatedProperties", schema(rng, depth + 1)),
    };
    (name.to_string(), value)
}

fn schema(rng: &mut Rng, depth: u32) -> Value {
    if rng.chance(6) {
        return Value::Bool(rng.chance(75));
    }
    let mut object = Map::new();
    for _ in 0..1 + rng.below(3) {
        let (name, value) = keyword(rng, depth);
        object.insert(name, value);
    }
    Value::Object(object)
}

/// A root schema: sometimes draft-07, always with `$defs/d` (and `definitions/d`) for `$ref`.
fn root_schema(rng: &mut Rng) -> Value {
    let mut root = schema(rng, 0);
    if let Value::Object(object) = &mut root {
        let mut target = schema(rng, DEPTH_MAX - 1);
        // Mostly no self reference (a loop on the same value is refused at compile time).
        if rng.chance(80) {
            if let Value::Object(target) = &mut target {
                target.remove("$ref");
            }
        }
        object.insert("$defs".to_string(), json!({ "d": target }));
        if rng.chance(25) {
            object.insert(
                "$schema".to_string(),
                json!("http://json-schema.org/draft-07/schema#"),
            );
        }
    }
    root
}

/// Small random edits: drop, add or change keywords anywhere in the schema.
fn mutate(rng: &mut Rng, value: &Value, depth: u32) -> Value {
    match value {
        Value::Bool(_) => {
            if rng.chance(50) {
                schema(rng, depth.max(1))
            } else {
                Value::Bool(rng.chance(50))
            }
        }
        Value::Object(object) => {
            let mut object = object.clone();
            let keys: Vec<String> = object.keys().cloned().collect();
            match rng.below(10) {
                0..=2 if !keys.is_empty() => {
                    let key = rng.pick(&keys).clone();
                    if key != "$defs" && key != "$schema" {
                        object.remove(&key);
                    }
                }
                3 | 4 => {
                    let (name, value) = keyword(rng, depth.max(1));
                    object.insert(name, value);
                }
                5..=8 if !keys.is_empty() => {
                    let key = rng.pick(&keys).clone();
                    let child = object.get(&key).cloned().unwrap_or(Value::Null);
                    let changed = mutate_child(rng, &child, depth);
                    object.insert(key, changed);
                }
                _ => {}
            }
            Value::Object(object)
        }
        other => other.clone(),
    }
}

/// Mutates a keyword value: subschemas recursively, numbers nudged, lists edited.
fn mutate_child(rng: &mut Rng, value: &Value, depth: u32) -> Value {
    match value {
        Value::Object(entries)
            if !entries.is_empty()
                && entries.values().all(|v| v.is_object() || v.is_boolean())
                && rng.chance(50) =>
        {
            // A map of subschemas (properties, $defs...), or a schema itself.
            let mut entries = entries.clone();
            let keys: Vec<String> = entries.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            let child = entries.get(&key).cloned().unwrap_or(Value::Bool(true));
            entries.insert(key, mutate(rng, &child, depth + 1));
            Value::Object(entries)
        }
        Value::Object(_) | Value::Bool(_) => mutate(rng, value, depth + 1),
        Value::Array(items) if !items.is_empty() => {
            let mut items = items.clone();
            let index = rng.below(items.len() as u64) as usize;
            match rng.below(3) {
                0 => {
                    items.remove(index);
                }
                1 => items.push(if items[0].is_object() || items[0].is_boolean() {
                    schema(rng, depth + 1)
                } else if items[0].is_string() && NAMES.contains(&items[0].as_str().unwrap_or("")) {
                    json!(*rng.pick(NAMES))
                } else {
                    small_value(rng)
                }),
                _ => {
                    let item = items[index].clone();
                    items[index] = if item.is_object() || item.is_boolean() {
                        mutate(rng, &item, depth + 1)
                    } else {
                        item
                    };
                }
            }
            Value::Array(items)
        }
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            let delta = *rng.pick(&[-1.0, 1.0, 0.5, -0.5]);
            let nudged = f + delta;
            if n.is_u64() || n.is_i64() {
                json!((nudged.round() as i64).max(0))
            } else {
                json!(nudged)
            }
        }
        other => other.clone(),
    }
}

/// Values occurring in the schema (enum and const members, bounds), as instance seeds.
fn harvest(value: &Value, found: &mut Vec<Value>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                match key.as_str() {
                    "enum" => found.extend(child.as_array().into_iter().flatten().cloned()),
                    "const" => found.push(child.clone()),
                    "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                        if let Some(f) = child.as_f64() {
                            found.extend([
                                json!(f),
                                json!(f + 0.5),
                                json!(f - 0.5),
                                json!(f + 1.0),
                            ]);
                        }
                        found.push(child.clone());
                    }
                    _ => harvest(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| harvest(i, found)),
        _ => {}
    }
}

fn instance(rng: &mut Rng, depth: u32, seeds: &[Value]) -> Value {
    if !seeds.is_empty() && rng.chance(20) {
        return rng.pick(seeds).clone();
    }
    let nested = depth < 3;
    match if nested { rng.below(10) } else { rng.below(7) } {
        0..=6 => small_value(rng),
        7 | 8 => {
            let mut object = Map::new();
            for key in ["a", "b", "c", "x", "ab"] {
                if rng.chance(45) {
                    object.insert(key.to_string(), instance(rng, depth + 1, seeds));
                }
            }
            Value::Object(object)
        }
        _ => Value::Array(
            (0..rng.below(4))
                .map(|_| instance(rng, depth + 1, seeds))
                .collect(),
        ),
    }
}

/// Outcome of one case, for the statistics.
#[derive(PartialEq)]
enum Outcome {
    Skipped,
    Compatible,
    Incompatible,
}

fn run_case(case_seed: u64) -> Result<Outcome, String> {
    let mut rng = Rng(case_seed);
    let base = root_schema(&mut rng);
    let (old, new) = match rng.below(10) {
        0..=3 => {
            let mut new = base.clone();
            for _ in 0..1 + rng.below(3) {
                new = mutate(&mut rng, &new, 0);
            }
            (base, new)
        }
        4..=7 => {
            let mut old = base.clone();
            for _ in 0..1 + rng.below(3) {
                old = mutate(&mut rng, &old, 0);
            }
            (old, base)
        }
        _ => (base, root_schema(&mut rng)),
    };
    let (Ok(old_compiled), Ok(new_compiled)) =
        (CompiledSchema::compile(&old), CompiledSchema::compile(&new))
    else {
        return Ok(Outcome::Skipped);
    };
    if check_backward_compatible(&old, &new).is_err() {
        return Ok(Outcome::Incompatible);
    }
    let mut seeds = Vec::new();
    harvest(&old, &mut seeds);
    harvest(&new, &mut seeds);
    for _ in 0..INSTANCES_PER_CASE {
        let data = instance(&mut rng, 0, &seeds);
        if old_compiled.is_valid(&data) && !new_compiled.is_valid(&data) {
            let (old, new) = shrink(old, new, &data);
            return Err(format!(
                "case seed {case_seed}: judged compatible, but (shrunk)\n  old  {old}\n  new  {new}\n  data {data}\n  accepted by old, rejected by new"
            ));
        }
    }
    Ok(Outcome::Compatible)
}

/// Whether (old, new, data) still shows the checker wrong.
fn still_fails(old: &Value, new: &Value, data: &Value) -> bool {
    let (Ok(o), Ok(n)) = (CompiledSchema::compile(old), CompiledSchema::compile(new)) else {
        return false;
    };
    o.is_valid(data) && !n.is_valid(data) && check_backward_compatible(old, new).is_ok()
}

/// Every JSON pointer to an object member in `value`.
fn member_pointers(value: &Value, prefix: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                let pointer = format!("{prefix}/{}", key.replace('~', "~0").replace('/', "~1"));
                found.push(pointer.clone());
                member_pointers(child, &pointer, found);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                member_pointers(child, &format!("{prefix}/{index}"), found);
            }
        }
        _ => {}
    }
}

fn without(value: &Value, pointer: &str) -> Option<Value> {
    let (parent, key) = pointer.rsplit_once('/')?;
    let key = key.replace("~1", "/").replace("~0", "~");
    let mut copy = value.clone();
    copy.pointer_mut(parent)?.as_object_mut()?.remove(&key)?;
    Some(copy)
}

/// Greedily drops members (from old, new, or both at the same place) while the failure stays.
fn shrink(mut old: Value, mut new: Value, data: &Value) -> (Value, Value) {
    loop {
        let mut progress = false;
        let mut pointers = Vec::new();
        member_pointers(&old, "", &mut pointers);
        member_pointers(&new, "", &mut pointers);
        pointers.sort();
        pointers.dedup();
        for pointer in pointers {
            let both = (without(&old, &pointer), without(&new, &pointer));
            let tries = [
                (both.0.clone(), both.1.clone()),
                (both.0, Some(new.clone())),
                (Some(old.clone()), both.1),
            ];
            for (o, n) in tries {
                if let (Some(o), Some(n)) = (o, n) {
                    if (o != old || n != new) && still_fails(&o, &n, data) {
                        old = o;
                        new = n;
                        progress = true;
                        break;
                    }
                }
            }
        }
        if !progress {
            return (old, new);
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn compatible_verdicts_are_sound() {
    let base_seed = env_u64("HERALD_SCHEMA_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("HERALD_SCHEMA_CASES").map_or(DEFAULT_CASES, |n| n as u32);
    println!("schema soundness: base seed {base_seed} (HERALD_SCHEMA_SEED), {cases} cases");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&base_seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let stats = std::cell::RefCell::new([0usize; 3]);
    let result = runner.run(&proptest::prelude::any::<u64>(), |case_seed| {
        let outcome = run_case(case_seed).map_err(TestCaseError::fail)?;
        let index = match outcome {
            Outcome::Skipped => 0,
            Outcome::Compatible => 1,
            Outcome::Incompatible => 2,
        };
        stats.borrow_mut()[index] += 1;
        Ok(())
    });
    let [skipped, compatible, incompatible] = *stats.borrow();
    println!("schema soundness: {compatible} compatible, {incompatible} incompatible, {skipped} skipped (invalid schemas)");
    if let Err(error) = result {
        panic!("{error}");
    }
    // The property is only meaningful if "compatible" answers are common enough.
    assert!(
        compatible * 5 >= compatible + incompatible,
        "too few compatible verdicts: {compatible} of {}",
        compatible + incompatible
    );
}
