//! Object keywords: `required`, `properties` / `patternProperties` / `additionalProperties`
//! (read together, as the validator does), `propertyNames`, `dependentRequired`,
//! `dependentSchemas` and `dependencies`.
//!
//! A property value is proven one data level down from everything the old schema says about
//! that name: its `properties` entry, every `patternProperties` entry whose pattern matches it
//! (decided by the validator's own regex engine), or else its `additionalProperties`. Where a
//! pattern cannot be evaluated, nothing is assumed about the name.

use serde_json::{Map, Value};

use super::value::Kinds;
use super::{Checker, Context, Incompatibility, Node};

/// One old conjunct's view of object members.
struct ObjectShape<'a> {
    node: Node<'a>,
    properties: Option<&'a Map<String, Value>>,
    pattern_properties: Option<&'a Map<String, Value>>,
    additional: Option<&'a Value>,
}

impl<'a> ObjectShape<'a> {
    fn of(node: &Node<'a>) -> Option<ObjectShape<'a>> {
        let object = node.object()?;
        Some(ObjectShape {
            node: node.clone(),
            properties: object.get("properties").and_then(Value::as_object),
            pattern_properties: object.get("patternProperties").and_then(Value::as_object),
            additional: object.get("additionalProperties"),
        })
    }

    fn property(&self, name: &str) -> Option<Node<'a>> {
        let schema = self.properties?.get(name)?;
        Some(self.node.child(schema, "properties", Some(name)))
    }

    fn patterns(&self) -> impl Iterator<Item = (&'a String, Node<'a>)> + '_ {
        self.pattern_properties
            .into_iter()
            .flatten()
            .map(|(pattern, schema)| {
                (
                    pattern,
                    self.node.child(schema, "patternProperties", Some(pattern)),
                )
            })
    }

    fn additional_node(&self) -> Option<Node<'a>> {
        self.additional
            .map(|schema| self.node.child(schema, "additionalProperties", None))
    }

    fn forbids_additional(&self) -> bool {
        self.additional == Some(&Value::Bool(false))
    }
}

impl<'a> Checker<'a> {
    pub(super) fn prove_required(&mut self, ctx: &Context<'a, '_>, value: &Value) {
        let Value::Array(names) = value else {
            return;
        };
        if !ctx.old_kinds.intersects(Kinds::OBJECT) {
            return;
        }
        for name in names.iter().filter_map(Value::as_str) {
            let required_before = ctx
                .old_values("required")
                .filter_map(Value::as_array)
                .any(|old| old.iter().any(|n| n.as_str() == Some(name)));
            if !required_before {
                self.breaking(
                    ctx.path("required"),
                    format!("`{name}` was optional before, now required"),
                );
            }
        }
    }

    /// Everything the old schema says about the value of member `name`.
    fn member_evidence(&mut self, shapes: &[ObjectShape<'a>], name: &str) -> Vec<Node<'a>> {
        let mut evidence = Vec::new();
        for shape in shapes {
            let declared = shape.property(name);
            let mut all_patterns_miss = true;
            for (pattern, schema) in shape.patterns() {
                match self.pattern_matches(pattern, name) {
                    Some(true) => {
                        all_patterns_miss = false;
                        evidence.push(schema);
                    }
                    Some(false) => {}
                    None => all_patterns_miss = false,
                }
            }
            match declared {
                Some(node) => evidence.push(node),
                None if all_patterns_miss => evidence.extend(shape.additional_node()),
                None => {}
            }
        }
        evidence
    }

    pub(super) fn prove_object_shape(&mut self, ctx: &Context<'a, '_>) {
        if !ctx.old_kinds.intersects(Kinds::OBJECT) {
            return;
        }
        let Some(new) = ObjectShape::of(ctx.new) else {
            return;
        };
        let shapes: Vec<ObjectShape<'a>> = ctx.olds.iter().filter_map(ObjectShape::of).collect();
        for (name, _) in new.properties.into_iter().flatten() {
            let Some(new_member) = new.property(name) else {
                continue;
            };
            let evidence = self.member_evidence(&shapes, name);
            self.prove(&evidence, &new_member, ctx.depth + 1);
        }
        for (pattern, new_member) in new.patterns().collect::<Vec<_>>() {
            self.prove_by_some_conjunct(&shapes, |checker, shape| {
                checker.prove_pattern_routes(shape, pattern, &new_member, ctx.depth + 1);
            });
        }
        if let Some(additional) = new.additional_node() {
            if additional.value != &Value::Bool(true) {
                self.prove_by_some_conjunct(&shapes, |checker, shape| {
                    checker.prove_additional_routes(shape, &new, &additional, ctx.depth + 1);
                });
            }
        }
    }

    /// Runs `proof` with each old conjunct in turn (or with none, if there is none); proven
    /// when any one succeeds, otherwise the first one's findings are reported.
    fn prove_by_some_conjunct(
        &mut self,
        shapes: &[ObjectShape<'a>],
        mut proof: impl FnMut(&mut Self, Option<&ObjectShape<'a>>),
    ) {
        if shapes.is_empty() {
            proof(self, None);
            return;
        }
        let mut first_findings: Option<Vec<Incompatibility>> = None;
        for shape in shapes {
            let findings = self.trial(|checker| proof(checker, Some(shape)));
            if findings.is_empty() {
                return;
            }
            first_findings.get_or_insert(findings);
        }
        self.out.extend(first_findings.into_iter().flatten());
    }

    /// Members whose names match `pattern`: every way the old conjunct lets such a member in
    /// must fit `new_member`.
    fn prove_pattern_routes(
        &mut self,
        shape: Option<&ObjectShape<'a>>,
        pattern: &str,
        new_member: &Node<'a>,
        depth: usize,
    ) {
        let Some(shape) = shape else {
            self.prove(&[], new_member, depth);
            return;
        };
        if let Some((_, same)) = shape.patterns().find(|(p, _)| p.as_str() == pattern) {
            self.prove(&[same], new_member, depth);
            return;
        }
        for (name, _) in shape.properties.into_iter().flatten() {
            if self.pattern_matches(pattern, name) == Some(false) {
                continue;
            }
            let evidence = self.member_evidence(std::slice::from_ref(shape), name);
            self.prove(&evidence, new_member, depth);
        }
        for (_, old_member) in shape.patterns().collect::<Vec<_>>() {
            self.prove(&[old_member], new_member, depth);
        }
        if !shape.forbids_additional() {
            let evidence: Vec<Node<'a>> = shape.additional_node().into_iter().collect();
            self.prove(&evidence, new_member, depth);
        }
    }

    /// Members the new conjunct leaves to `additionalProperties`: every way the old conjunct
    /// lets such a member in must fit `additional`.
    fn prove_additional_routes(
        &mut self,
        shape: Option<&ObjectShape<'a>>,
        new: &ObjectShape<'a>,
        additional: &Node<'a>,
        depth: usize,
    ) {
        let closing = additional.value == &Value::Bool(false);
        let Some(shape) = shape else {
            if closing {
                self.breaking(
                    additional.path.clone(),
                    "undeclared properties were accepted before, now rejected".to_string(),
                );
            } else {
                self.prove(&[], additional, depth);
            }
            return;
        };
        for (name, _) in shape.properties.into_iter().flatten() {
            if new.properties.is_some_and(|p| p.contains_key(name)) {
                continue;
            }
            let new_patterns: Vec<&String> = new.patterns().map(|(p, _)| p).collect();
            if new_patterns
                .into_iter()
                .any(|p| self.pattern_matches(p, name) == Some(true))
            {
                continue;
            }
            let evidence = self.member_evidence(std::slice::from_ref(shape), name);
            self.prove_route(&evidence, additional, depth, || {
                format!("property `{name}` was accepted before and is no longer declared")
            });
        }
        for (pattern, old_member) in shape.patterns().collect::<Vec<_>>() {
            if new.patterns().any(|(p, _)| p == pattern) {
                continue;
            }
            self.prove_route(&[old_member], additional, depth, || {
                format!("properties matching `{pattern}` were accepted before, now rejected")
            });
        }
        if !shape.forbids_additional() {
            let evidence: Vec<Node<'a>> = shape.additional_node().into_iter().collect();
            self.prove_route(&evidence, additional, depth, || {
                "undeclared properties were accepted before, now rejected".to_string()
            });
        }
    }

    /// Proves one route into `additionalProperties`; a closed (`false`) one gets a message
    /// naming the route instead of a generic one.
    fn prove_route(
        &mut self,
        evidence: &[Node<'a>],
        additional: &Node<'a>,
        depth: usize,
        closed_reason: impl FnOnce() -> String,
    ) {
        if additional.value != &Value::Bool(false) {
            self.prove(evidence, additional, depth);
            return;
        }
        let flat = self.flatten_old(evidence);
        let accepts_nothing = flat.iter().any(|n| n.value == &Value::Bool(false))
            || super::kinds_of(&flat).is_empty();
        if !accepts_nothing {
            self.breaking(additional.path.clone(), closed_reason());
        }
    }

    pub(super) fn prove_property_names(&mut self, ctx: &Context<'a, '_>, value: &'a Value) {
        if !ctx.old_kinds.intersects(Kinds::OBJECT) {
            return;
        }
        let new_names = ctx.new.child(value, "propertyNames", None);
        let evidence: Vec<Node<'a>> = ctx
            .olds
            .iter()
            .filter_map(|o| {
                o.get("propertyNames")
                    .map(|v| o.child(v, "propertyNames", None))
            })
            .collect();
        self.prove(&evidence, &new_names, ctx.depth + 1);
    }

    /// `dependentRequired`, `dependentSchemas`, and `dependencies` (either form).
    pub(super) fn prove_dependencies(
        &mut self,
        ctx: &Context<'a, '_>,
        keyword: &str,
        value: &'a Value,
    ) {
        let Value::Object(entries) = value else {
            return;
        };
        if !ctx.old_kinds.intersects(Kinds::OBJECT) {
            return;
        }
        for (trigger, dependency) in entries {
            match dependency {
                Value::Array(names) => {
                    for needed in names.iter().filter_map(Value::as_str) {
                        if !self.old_requires_with(ctx, trigger, needed) {
                            self.breaking(
                                super::join(&ctx.path(keyword), trigger),
                                format!("`{needed}` now required whenever `{trigger}` is present"),
                            );
                        }
                    }
                }
                Value::Object(_) | Value::Bool(_) => {
                    let new_dependent = ctx.new.child(dependency, keyword, Some(trigger));
                    let mut evidence: Vec<Node<'a>> = ctx.olds.to_vec();
                    evidence.extend(self.old_dependent_schemas(ctx, trigger));
                    self.prove(&evidence, &new_dependent, ctx.depth);
                }
                _ => {}
            }
        }
    }

    /// Whether old data with member `trigger` always has member `needed`.
    fn old_requires_with(&self, ctx: &Context<'a, '_>, trigger: &str, needed: &str) -> bool {
        if trigger == needed {
            return true;
        }
        let lists_name = |list: &Value| {
            list.as_array()
                .is_some_and(|names| names.iter().any(|n| n.as_str() == Some(needed)))
        };
        let required = ctx.old_values("required").any(lists_name);
        let is_2020 = self.old.is_2020();
        let dependent = ctx.old_objects().any(|o| {
            let in_dependent_required = is_2020
                && o.get("dependentRequired")
                    .and_then(|d| d.get(trigger))
                    .is_some_and(lists_name);
            let in_dependencies = o
                .get("dependencies")
                .and_then(|d| d.get(trigger))
                .is_some_and(lists_name);
            in_dependent_required || in_dependencies
        });
        required || dependent
    }

    /// The old schemas that apply to data having member `trigger`.
    fn old_dependent_schemas(&self, ctx: &Context<'a, '_>, trigger: &str) -> Vec<Node<'a>> {
        let mut found = Vec::new();
        for old in ctx.olds {
            let mut keywords = vec!["dependencies"];
            if self.old.is_2020() {
                keywords.push("dependentSchemas");
            }
            for keyword in keywords {
                if let Some(schema) = old.get(keyword).and_then(|d| d.get(trigger)) {
                    if schema.is_object() || schema.is_boolean() {
                        found.push(old.child(schema, keyword, Some(trigger)));
                    }
                }
            }
        }
        found
    }
}
