//! Backward-compatibility checking between two versions of a schema.
//!
//! "Backward compatible" here means: every value the old schema accepts, the new schema also
//! accepts (old ⊆ new), so nothing a producer could publish before is refused now.
//!
//! Owns: a structural proof procedure over the common keywords. It reads the new schema as a
//! conjunction of constraints (its keywords, its `allOf` branches, its `$ref` target) and proves
//! each constraint from what the old schema guarantees (its own keywords, `allOf` branches and
//! `$ref` targets, read the way the validator reads them in the old schema's draft).
//!
//! Invariants (soundness):
//! - `Ok(())` only when every constraint of the new schema was proven. A construct the checker
//!   does not understand, or a proof it cannot finish, is an
//!   [`IncompatibilityKind::Unproven`] answer, never a silent pass.
//! - Old-side facts are only ever dropped, never invented: ignoring an old keyword can only make
//!   the old schema look larger, which can only make the answer more conservative.
//! - Recursive schemas are handled by induction on the data: a (old, new) pair met again while
//!   it is being proven is assumed to hold only if the data descended in between (an item, a
//!   property value or a property name, each strictly smaller than its container).
//! - Work is bounded: [`STEPS_MAX`] proof steps and [`NESTING_MAX`] nested proofs, past which
//!   the answer is "could not be proven".

mod array;
mod combinator;
mod object;
mod scalar;
mod value;

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::{Map, Value};

use super::compiled::{validation_options, CompiledSchema, SchemaDraft};
use super::walk;
use value::Kinds;

/// Most proof steps spent on one check.
pub const STEPS_MAX: usize = 50_000;
/// Deepest nesting of proofs (schema depth plus references followed).
pub const NESTING_MAX: usize = 96;
/// Largest finite set of old values enumerated and tested one by one.
const FINITE_VALUES_MAX: usize = 256;

/// Why a new schema version is not (provably) backward compatible.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Incompatibility {
    /// Where in the new schema, dot separated: `properties.amount.type`; `$ref` marks a
    /// reference followed. Empty for the schema as a whole.
    pub path: String,
    pub kind: IncompatibilityKind,
    /// What changed, for people.
    pub reason: String,
}

/// How sure the checker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncompatibilityKind {
    /// A keyword got stricter than the old schema: data it accepted may now be refused.
    Breaking,
    /// The checker could not prove that the new schema accepts everything the old one did
    /// (a construct it cannot reason about, or a proof too large).
    Unproven,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.reason)
    }
}

/// Checks that every value valid under `old` is valid under `new`. Both must be usable
/// schemas (see [`CompiledSchema::compile`]); an unusable one is reported as unproven.
pub fn check_backward_compatible(old: &Value, new: &Value) -> Result<(), Vec<Incompatibility>> {
    if old == new {
        return Ok(());
    }
    let compile = |schema: &Value, which: &str| {
        CompiledSchema::compile(schema).map_err(|error| {
            vec![Incompatibility {
                path: String::new(),
                kind: IncompatibilityKind::Unproven,
                reason: format!("the {which} schema is not usable: {error}"),
            }]
        })
    };
    let old = compile(old, "old")?;
    let new = compile(new, "new")?;
    check_compiled(&old, &new)
}

/// [`check_backward_compatible`] for schemas already compiled.
pub(crate) fn check_compiled(
    old: &CompiledSchema,
    new: &CompiledSchema,
) -> Result<(), Vec<Incompatibility>> {
    if old.schema() == new.schema() {
        return Ok(());
    }
    let mut checker = Checker::new(
        Side::new(old.schema(), old.draft()),
        Side::new(new.schema(), new.draft()),
    );
    let old_root = Node::root(old.schema());
    let new_root = Node::root(new.schema());
    checker.prove(&[old_root], &new_root, 0);
    if checker.exhausted && checker.out.is_empty() {
        // Findings of an exhausted trial may have been discarded; the answer must stay "no".
        checker.unproven(String::new(), EXHAUSTED_REASON.to_string());
    }
    if checker.out.is_empty() {
        Ok(())
    } else {
        Err(checker.out)
    }
}

/// One schema document and what the checker knows about it.
struct Side<'a> {
    root: &'a Value,
    draft: SchemaDraft,
    /// References can be resolved as plain JSON pointers into `root`: no `$id` below the root.
    references_resolvable: bool,
    /// Validators for every subschema, built on first use; `None` inside when unavailable.
    validators: Option<Option<jsonschema::ValidatorMap>>,
}

impl<'a> Side<'a> {
    fn new(root: &'a Value, draft: SchemaDraft) -> Self {
        Self {
            root,
            draft,
            references_resolvable: !has_nested_id(root),
            validators: None,
        }
    }

    fn is_2020(&self) -> bool {
        self.draft == SchemaDraft::Draft202012
    }

    /// The subschema a local reference names, if the checker can resolve it.
    fn resolve(&self, reference: &str, from_path: &str) -> Option<Node<'a>> {
        if !self.references_resolvable {
            return None;
        }
        let pointer = walk::reference_pointer(reference)?;
        let value = self.root.pointer(&pointer)?;
        Some(Node {
            value,
            pointer,
            path: join(from_path, "$ref"),
        })
    }

    /// Builds the validators, once. A subschema compiled on its own means what it means in
    /// place only when references are plain pointers into this document: schemas with dynamic
    /// references, named anchors or nested `$id`s get none. (Reference loops that never
    /// descend into the data, where evaluation order would matter, are refused at compile
    /// time.)
    fn ensure_validators(&mut self) {
        if self.validators.is_some() {
            return;
        }
        let unsafe_to_split = has_keyword(self.root, "$dynamicRef")
            || has_keyword(self.root, "$dynamicAnchor")
            || has_keyword(self.root, "$recursiveRef")
            || !self.references_resolvable
            || has_anchor_reference(self.root);
        let map = if unsafe_to_split {
            None
        } else {
            validation_options(self.draft).build_map(self.root).ok()
        };
        self.validators = Some(map);
    }

    fn validator(&self, pointer: &str) -> Option<&jsonschema::Validator> {
        self.validators
            .as_ref()?
            .as_ref()?
            .get(&format!("#{pointer}"))
    }
}

/// A subschema: its value, its canonical JSON pointer in its document (identity for cycle
/// detection and validator lookup), and the path shown in messages.
#[derive(Debug, Clone)]
struct Node<'a> {
    value: &'a Value,
    pointer: String,
    path: String,
}

impl<'a> Node<'a> {
    fn root(value: &'a Value) -> Self {
        Self {
            value,
            pointer: String::new(),
            path: String::new(),
        }
    }

    /// A child at `keyword` (and `name`, for keywords holding a map or an array).
    fn child(&self, value: &'a Value, keyword: &str, name: Option<&str>) -> Node<'a> {
        let (pointer, path) = match name {
            Some(name) => (
                format!(
                    "{}/{}/{}",
                    self.pointer,
                    walk::escape(keyword),
                    walk::escape(name)
                ),
                join(&join(&self.path, keyword), name),
            ),
            None => (
                format!("{}/{}", self.pointer, walk::escape(keyword)),
                join(&self.path, keyword),
            ),
        };
        Node {
            value,
            pointer,
            path,
        }
    }

    fn object(&self) -> Option<&'a Map<String, Value>> {
        self.value.as_object()
    }

    fn get(&self, keyword: &str) -> Option<&'a Value> {
        self.object()?.get(keyword)
    }
}

/// Joins message path segments with dots.
fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_string()
    } else {
        format!("{path}.{segment}")
    }
}

struct Checker<'a> {
    old: Side<'a>,
    new: Side<'a>,
    out: Vec<Incompatibility>,
    steps: usize,
    nesting: usize,
    exhausted: bool,
    /// (old pointers, new pointer) → data depth at which its proof started.
    in_progress: HashMap<(String, String), usize>,
    /// Compiled `pattern` checks used to decide which names a `patternProperties` key covers.
    patterns: HashMap<String, Option<jsonschema::Validator>>,
}

impl<'a> Checker<'a> {
    fn new(old: Side<'a>, new: Side<'a>) -> Self {
        Self {
            old,
            new,
            out: Vec::new(),
            steps: 0,
            nesting: 0,
            exhausted: false,
            in_progress: HashMap::new(),
            patterns: HashMap::new(),
        }
    }

    fn breaking(&mut self, path: String, reason: String) {
        self.out.push(Incompatibility {
            path,
            kind: IncompatibilityKind::Breaking,
            reason,
        });
    }

    fn unproven(&mut self, path: String, reason: String) {
        self.out.push(Incompatibility {
            path,
            kind: IncompatibilityKind::Unproven,
            reason,
        });
    }

    /// Runs `attempt` without committing its findings: returns them instead (empty = proven).
    fn trial(&mut self, attempt: impl FnOnce(&mut Self)) -> Vec<Incompatibility> {
        let saved = std::mem::take(&mut self.out);
        attempt(self);
        std::mem::replace(&mut self.out, saved)
    }

    /// Proves old ⊆ `new`, where the old schema is the conjunction of `olds` (an empty list
    /// means "anything"), for data `depth` levels down.
    fn prove(&mut self, olds: &[Node<'a>], new: &Node<'a>, depth: usize) {
        if self.exhausted {
            return;
        }
        self.steps += 1;
        if self.steps > STEPS_MAX || self.nesting > NESTING_MAX {
            self.exhausted = true;
            self.unproven(
                new.path.clone(),
                format!("{EXHAUSTED_REASON} ({STEPS_MAX} steps, {NESTING_MAX} levels)"),
            );
            return;
        }
        if new.value == &Value::Bool(true) {
            return;
        }
        let olds = self.flatten_old(olds);
        if olds.iter().any(|o| o.value == &Value::Bool(false)) {
            return;
        }
        if self.identical_to_some(&olds, new) {
            return;
        }
        let mut old_pointers: Vec<&str> = olds.iter().map(|o| o.pointer.as_str()).collect();
        old_pointers.sort_unstable();
        let key = (old_pointers.join("\n"), new.pointer.clone());
        if let Some(&started_depth) = self.in_progress.get(&key) {
            if depth <= started_depth {
                self.unproven(
                    new.path.clone(),
                    "could not be proven: a recursive reference loops without descending into \
                     the data"
                        .to_string(),
                );
            }
            // Deeper data: the pair holds by induction on the data's size.
            return;
        }
        self.in_progress.insert(key.clone(), depth);
        self.nesting += 1;
        self.prove_node(&olds, new, depth);
        self.nesting -= 1;
        self.in_progress.remove(&key);
    }

    fn prove_node(&mut self, olds: &[Node<'a>], new: &Node<'a>, depth: usize) {
        let old_kinds = kinds_of(olds);
        if old_kinds.is_empty() {
            return; // the old schema accepts nothing here
        }
        match self.finite_shortcut(olds, new) {
            Some(Ok(())) => return,
            Some(Err(counterexample)) => {
                self.breaking(
                    new.path.clone(),
                    format!(
                        "value {} was accepted before and is rejected now",
                        value::render(&counterexample)
                    ),
                );
                return;
            }
            None => {}
        }
        for conjunct in self.flatten_new(new) {
            self.prove_conjunct(olds, &conjunct, old_kinds, depth);
        }
    }

    fn prove_conjunct(
        &mut self,
        olds: &[Node<'a>],
        new: &Node<'a>,
        old_kinds: Kinds,
        depth: usize,
    ) {
        let Some(object) = new.object() else {
            if new.value == &Value::Bool(false) {
                self.breaking(
                    new.path.clone(),
                    format!(
                        "{} accepted before, now nothing is (schema `false`)",
                        old_kinds.describe()
                    ),
                );
            }
            return;
        };
        if self.identical_to_some(olds, new) {
            return;
        }
        let ctx = Context {
            olds,
            new,
            old_kinds,
            depth,
        };
        for (keyword, value) in object {
            self.prove_keyword(&ctx, keyword, value);
        }
        if ["items", "prefixItems", "additionalItems"]
            .iter()
            .any(|k| object.contains_key(*k))
        {
            self.prove_items(&ctx);
        }
        if ["properties", "patternProperties", "additionalProperties"]
            .iter()
            .any(|k| object.contains_key(*k))
        {
            self.prove_object_shape(&ctx);
        }
    }

    fn prove_keyword(&mut self, ctx: &Context<'a, '_>, keyword: &str, value: &'a Value) {
        let is_2020 = self.new.is_2020();
        match keyword {
            "type" => self.prove_type(ctx, value),
            "enum" | "const" => self.prove_enum(ctx, keyword, value),
            "minimum" | "exclusiveMinimum" | "maximum" | "exclusiveMaximum" => {
                self.prove_bound(ctx, keyword, value);
            }
            "multipleOf" => self.prove_multiple_of(ctx, value),
            "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties"
            | "maxProperties" => self.prove_count(ctx, keyword, value),
            "pattern" | "format" => self.prove_string_rule(ctx, keyword, value),
            "contentEncoding" | "contentMediaType" if !is_2020 => {
                self.prove_same_keywords(ctx, Kinds::STRING, &[keyword]);
            }
            "uniqueItems" => self.prove_unique_items(ctx, value),
            "contains" => {
                self.prove_same_keywords(
                    ctx,
                    Kinds::ARRAY,
                    &["contains", "minContains", "maxContains"],
                );
            }
            "required" => self.prove_required(ctx, value),
            "propertyNames" => self.prove_property_names(ctx, value),
            "dependencies" => self.prove_dependencies(ctx, keyword, value),
            "dependentRequired" | "dependentSchemas" if is_2020 => {
                self.prove_dependencies(ctx, keyword, value);
            }
            "anyOf" => self.prove_any_of(ctx, value),
            "oneOf" => self.prove_one_of(ctx, value),
            "not" => self.prove_not(ctx, value),
            "if" => self.prove_if(ctx, value),
            "unevaluatedProperties" | "unevaluatedItems"
                if is_2020 && value != &Value::Bool(true) =>
            {
                self.unproven(
                    join(&ctx.new.path, keyword),
                    format!("could not be proven: `{keyword}` changed, and the checker cannot reason about it"),
                );
            }
            "$dynamicRef" => self.unproven(
                join(&ctx.new.path, keyword),
                "could not be proven: `$dynamicRef` is not followed by the checker".to_string(),
            ),
            // Handled with their group or by flattening, or without effect on validity
            // (annotations, and keywords the validator ignores in this draft).
            _ => {}
        }
    }

    /// Whether some old conjunct is the very same subschema as `new`, so nothing needs proving:
    /// equal JSON in the same draft, and either no reference inside or the same place in the
    /// same document.
    fn identical_to_some(&self, olds: &[Node<'a>], new: &Node<'a>) -> bool {
        if self.old.draft != self.new.draft {
            return false;
        }
        olds.iter().any(|old| {
            old.value == new.value
                && (!walk::has_reference(new.value)
                    || (self.old.root == self.new.root && old.pointer == new.pointer))
        })
    }

    /// If the old conjuncts allow only a few values, tests each against the real validators:
    /// `Some(Ok)` when the new schema accepts every one the old accepts, `Some(Err(v))` with a
    /// counterexample, `None` when this shortcut does not apply.
    fn finite_shortcut(&mut self, olds: &[Node<'a>], new: &Node<'a>) -> Option<Result<(), Value>> {
        let candidates = finite_values(olds)?;
        self.old.ensure_validators();
        self.new.ensure_validators();
        let new_validator = self.new.validator(&new.pointer)?;
        let old_validators: Option<Vec<&jsonschema::Validator>> = olds
            .iter()
            .map(|o| self.old.validator(&o.pointer))
            .collect();
        let old_validators = old_validators?;
        for candidate in candidates {
            let accepted_before = old_validators.iter().all(|v| v.is_valid(&candidate));
            if accepted_before && !new_validator.is_valid(&candidate) {
                return Some(Err(candidate));
            }
        }
        Some(Ok(()))
    }

    /// The old schema's conjuncts: each node, its `allOf` branches and `$ref` targets, read as
    /// the validator reads them in the old draft. A reference that cannot be followed is a
    /// constraint dropped, which is sound on this side.
    fn flatten_old(&self, olds: &[Node<'a>]) -> Vec<Node<'a>> {
        flatten(&self.old, olds, &mut Vec::new())
    }

    /// The new schema's conjuncts, each of which must be proven. A reference that cannot be
    /// followed is reported: its constraint cannot be proven.
    fn flatten_new(&mut self, new: &Node<'a>) -> Vec<Node<'a>> {
        let mut unresolved = Vec::new();
        let flat = flatten(&self.new, std::slice::from_ref(new), &mut unresolved);
        for (path, reference) in unresolved {
            self.unproven(
                path,
                format!("could not be proven: the checker cannot follow reference {reference:?}"),
            );
        }
        flat
    }

    /// The new schema's conjuncts where dropping one is sound (over-approximating what a new
    /// subschema accepts, for disjointness).
    fn flatten_quiet_new(&self, new: &Node<'a>) -> Vec<Node<'a>> {
        flatten(&self.new, std::slice::from_ref(new), &mut Vec::new())
    }

    /// Whether the `pattern` regular expression matches `name`, as the validator decides it.
    /// `None` when the pattern cannot be evaluated.
    fn pattern_matches(&mut self, pattern: &str, name: &str) -> Option<bool> {
        let validator = self
            .patterns
            .entry(pattern.to_string())
            .or_insert_with(|| {
                validation_options(SchemaDraft::Draft202012)
                    .build(&serde_json::json!({ "pattern": pattern }))
                    .ok()
            })
            .as_ref()?;
        Some(validator.is_valid(&Value::String(name.to_string())))
    }
}

const EXHAUSTED_REASON: &str = "could not be proven: the schemas are too complex to compare";

/// What a keyword check needs to know.
struct Context<'a, 'o> {
    /// The old schema's conjuncts, flattened.
    olds: &'o [Node<'a>],
    /// The new conjunct being proven.
    new: &'o Node<'a>,
    /// Kinds the old schema can accept (over-approximation).
    old_kinds: Kinds,
    /// Data depth.
    depth: usize,
}

impl<'a> Context<'a, '_> {
    /// The old conjuncts that are objects.
    fn old_objects(&self) -> impl Iterator<Item = &'a Map<String, Value>> + '_ {
        self.olds.iter().filter_map(Node::object)
    }

    /// Values of `keyword` across the old conjuncts.
    fn old_values<'s>(&'s self, keyword: &'s str) -> impl Iterator<Item = &'a Value> + 's {
        self.old_objects().filter_map(move |o| o.get(keyword))
    }

    fn path(&self, keyword: &str) -> String {
        join(&self.new.path, keyword)
    }
}

/// Kinds the conjunction of `olds` can accept (from `type`, `enum` and `const`).
fn kinds_of(olds: &[Node<'_>]) -> Kinds {
    olds.iter().fold(Kinds::ALL, |kinds, node| {
        kinds.intersection(conjunct_kinds(node.value))
    })
}

/// Kinds one schema can accept, from its own `type`, `enum` and `const` (over-approximation).
fn conjunct_kinds(schema: &Value) -> Kinds {
    let Some(object) = schema.as_object() else {
        return if schema == &Value::Bool(false) {
            Kinds::NONE
        } else {
            Kinds::ALL
        };
    };
    let mut kinds = object
        .get("type")
        .and_then(Kinds::of_type_keyword)
        .unwrap_or(Kinds::ALL);
    if let Some(values) = own_finite_values(object) {
        let of_values = values
            .iter()
            .fold(Kinds::NONE, |k, v| k.union(Kinds::of_value(v)));
        kinds = kinds.intersection(of_values);
    }
    kinds
}

/// The values a schema object's own `const` or `enum` allows (`const` wins when both).
fn own_finite_values(object: &Map<String, Value>) -> Option<Vec<Value>> {
    if let Some(value) = object.get("const") {
        return Some(vec![value.clone()]);
    }
    match object.get("enum") {
        Some(Value::Array(values)) => Some(values.clone()),
        _ => None,
    }
}

/// A finite superset of the values the conjunction of `olds` accepts, if one is known and
/// small: the smallest `enum`/`const` among them, or `null`/`true`/`false` when the kinds allow
/// nothing else.
fn finite_values(olds: &[Node<'_>]) -> Option<Vec<Value>> {
    let from_keywords = olds
        .iter()
        .filter_map(|o| o.object().and_then(own_finite_values))
        .min_by_key(Vec::len);
    let values = match from_keywords {
        Some(values) => values,
        None => {
            let kinds = kinds_of(olds);
            if kinds.without(Kinds::NULL.union(Kinds::BOOLEAN)).is_empty() {
                [Value::Null, Value::Bool(true), Value::Bool(false)]
                    .into_iter()
                    .filter(|v| kinds.intersects(Kinds::of_value(v)))
                    .collect()
            } else {
                return None;
            }
        }
    };
    (values.len() <= FINITE_VALUES_MAX).then_some(values)
}

/// Conjuncts of `nodes` in `side`: each node, its `allOf` branches and its `$ref` target
/// (draft-07: the target only, siblings of `$ref` are ignored). References that cannot be
/// followed are listed in `unresolved` as (path, reference).
fn flatten<'a>(
    side: &Side<'a>,
    nodes: &[Node<'a>],
    unresolved: &mut Vec<(String, String)>,
) -> Vec<Node<'a>> {
    let mut seen = HashSet::new();
    let mut flat = Vec::new();
    let mut stack: Vec<Node<'a>> = nodes.iter().rev().cloned().collect();
    while let Some(node) = stack.pop() {
        if !seen.insert(node.pointer.clone()) {
            continue;
        }
        let Some(object) = node.object() else {
            flat.push(node);
            continue;
        };
        if let Some(Value::String(reference)) = object.get("$ref") {
            match side.resolve(reference, &node.path) {
                Some(target) => stack.push(target),
                None => unresolved.push((join(&node.path, "$ref"), reference.clone())),
            }
            if !side.is_2020() {
                continue;
            }
        }
        if let Some(Value::Array(branches)) = object.get("allOf") {
            for (index, branch) in branches.iter().enumerate().rev() {
                stack.push(node.child(branch, "allOf", Some(&index.to_string())));
            }
        }
        flat.push(node);
    }
    flat
}

/// Whether any subschema below the root declares `$id` (which would change how references
/// inside it resolve).
fn has_nested_id(root: &Value) -> bool {
    let Some(object) = root.as_object() else {
        return false;
    };
    let mut stack: Vec<&Value> = walk::subschemas(object)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    while let Some(current) = stack.pop() {
        if let Value::Object(object) = current {
            if object.contains_key("$id") || object.contains_key("id") {
                return true;
            }
            stack.extend(walk::subschemas(object).into_iter().map(|(_, v)| v));
        }
    }
    false
}

/// Whether some `$ref` in `root` is not a plain JSON pointer (a named anchor).
fn has_anchor_reference(root: &Value) -> bool {
    let mut stack = vec![root];
    while let Some(current) = stack.pop() {
        if let Value::Object(object) = current {
            if let Some(Value::String(reference)) = object.get("$ref") {
                if walk::reference_pointer(reference).is_none() {
                    return true;
                }
            }
            stack.extend(walk::subschemas(object).into_iter().map(|(_, v)| v));
        }
    }
    false
}

/// Whether `keyword` appears in any subschema of `root`.
fn has_keyword(root: &Value, keyword: &str) -> bool {
    let mut stack = vec![root];
    while let Some(current) = stack.pop() {
        if let Value::Object(object) = current {
            if object.contains_key(keyword) {
                return true;
            }
            stack.extend(walk::subschemas(object).into_iter().map(|(_, v)| v));
        }
    }
    false
}
