//! `anyOf`, `oneOf`, `not` and `if`/`then`/`else`, and the disjointness test they rely on.
//!
//! - `anyOf`: some branch accepts everything old accepted; or old is itself a union
//!   (`anyOf`/`oneOf`) and each of its branches fits some new branch.
//! - `oneOf`: as `anyOf`, and every other branch is disjoint from the old schema.
//! - `not`: the negated schema is disjoint from the old schema.
//! - `if`: both `then` and `else` hold, or the condition is decided for all old data.
//! - Any of them unchanged from an old conjunct (same draft, no references inside) holds.
//!
//! Disjointness is proven from kinds, from finite value sets (tested with the real validators
//! when available), or from a required discriminator member whose allowed values differ.

use serde_json::{Map, Value};

use super::value::{possibly_equal, Kinds};
use super::{finite_values, kinds_of, Checker, Context, Incompatibility, Node};

impl<'a> Checker<'a> {
    pub(super) fn prove_any_of(&mut self, ctx: &Context<'a, '_>, value: &'a Value) {
        let Value::Array(branches) = value else {
            return;
        };
        if self.unchanged_in_old(ctx, &["anyOf"]) {
            return;
        }
        let news = branch_nodes(ctx.new, "anyOf", branches);
        let mut closest = None;
        if self.some_branch_proves(ctx.olds, &news, ctx.depth, &mut closest) {
            return;
        }
        if self.split_proves(ctx, |checker, evidence| {
            checker.some_branch_proves(evidence, &news, ctx.depth, &mut None)
        }) {
            return;
        }
        self.unproven(
            ctx.path("anyOf"),
            format!(
                "could not be proven: a value accepted before may match none of the new `anyOf` \
                 branches{}",
                closest_suffix(closest)
            ),
        );
    }

    pub(super) fn prove_one_of(&mut self, ctx: &Context<'a, '_>, value: &'a Value) {
        let Value::Array(branches) = value else {
            return;
        };
        if self.unchanged_in_old(ctx, &["oneOf"]) {
            return;
        }
        let news = branch_nodes(ctx.new, "oneOf", branches);
        if self.exactly_one_branch_proves(ctx.olds, &news, ctx.depth) {
            return;
        }
        if self.split_proves(ctx, |checker, evidence| {
            checker.exactly_one_branch_proves(evidence, &news, ctx.depth)
        }) {
            return;
        }
        self.unproven(
            ctx.path("oneOf"),
            "could not be proven: a value accepted before may match none, or more than one, of \
             the new `oneOf` branches"
                .to_string(),
        );
    }

    pub(super) fn prove_not(&mut self, ctx: &Context<'a, '_>, value: &'a Value) {
        if self.unchanged_in_old(ctx, &["not"]) {
            return;
        }
        let negated = ctx.new.child(value, "not", None);
        if !self.disjoint(ctx.olds, &negated) {
            self.unproven(
                ctx.path("not"),
                "could not be proven: the new `not` may exclude values accepted before".to_string(),
            );
        }
    }

    pub(super) fn prove_if(&mut self, ctx: &Context<'a, '_>, value: &'a Value) {
        if self.unchanged_in_old(ctx, &["if", "then", "else"]) {
            return;
        }
        let condition = ctx.new.child(value, "if", None);
        let then_node = ctx.new.get("then").map(|v| ctx.new.child(v, "then", None));
        let else_node = ctx.new.get("else").map(|v| ctx.new.child(v, "else", None));
        let holds = |checker: &mut Self, node: Option<&Node<'a>>| {
            node.is_none_or(|n| {
                checker
                    .trial(|c| c.prove(ctx.olds, n, ctx.depth))
                    .is_empty()
            })
        };
        let then_holds = holds(self, then_node.as_ref());
        let else_holds = holds(self, else_node.as_ref());
        if then_holds && else_holds {
            return;
        }
        if then_holds && holds(self, Some(&condition)) {
            return; // every old value takes the `then` branch
        }
        if else_holds && self.disjoint(ctx.olds, &condition) {
            return; // every old value takes the `else` branch
        }
        self.unproven(
            ctx.path("if"),
            "could not be proven: the new `if`/`then`/`else` may reject values accepted before"
                .to_string(),
        );
    }

    /// Whether some old conjunct has exactly these keywords' values, in the same draft, with
    /// no reference inside them.
    pub(super) fn unchanged_in_old(&self, ctx: &Context<'a, '_>, keywords: &[&str]) -> bool {
        let Some(new) = ctx.new.object() else {
            return false;
        };
        if self.old.draft != self.new.draft {
            return false;
        }
        // Checked as `{keyword: value}`, so arrays and maps of subschemas are walked too.
        let no_references = keywords.iter().all(|k| {
            new.get(*k).is_none_or(|v| {
                let single = Map::from_iter([((*k).to_string(), v.clone())]);
                !crate::schema::walk::has_reference(&Value::Object(single))
            })
        });
        no_references
            && ctx
                .old_objects()
                .any(|old| keywords.iter().all(|k| old.get(*k) == new.get(*k)))
    }

    /// Whether one of `news` accepts everything `olds` accepts. Keeps the findings of the
    /// closest failed attempt in `closest`.
    fn some_branch_proves(
        &mut self,
        olds: &[Node<'a>],
        news: &[Node<'a>],
        depth: usize,
        closest: &mut Option<Vec<Incompatibility>>,
    ) -> bool {
        for new in news {
            let findings = self.trial(|c| c.prove(olds, new, depth));
            if findings.is_empty() {
                return true;
            }
            if closest.as_ref().is_none_or(|c| findings.len() < c.len()) {
                *closest = Some(findings);
            }
        }
        false
    }

    /// Whether one of `news` accepts everything `olds` accepts and every other one is disjoint
    /// from `olds`.
    fn exactly_one_branch_proves(
        &mut self,
        olds: &[Node<'a>],
        news: &[Node<'a>],
        depth: usize,
    ) -> bool {
        for (index, new) in news.iter().enumerate() {
            if !self.trial(|c| c.prove(olds, new, depth)).is_empty() {
                continue;
            }
            let others_disjoint = news
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != index)
                .all(|(_, other)| self.disjoint(olds, other));
            if others_disjoint {
                return true;
            }
        }
        false
    }

    /// Splits the old schema along a union it contains (`anyOf` or `oneOf` of an old conjunct):
    /// true when `proof` holds for the old schema narrowed to each of its branches.
    fn split_proves(
        &mut self,
        ctx: &Context<'a, '_>,
        mut proof: impl FnMut(&mut Self, &[Node<'a>]) -> bool,
    ) -> bool {
        for old in ctx.olds {
            for keyword in ["anyOf", "oneOf"] {
                let Some(Value::Array(branches)) = old.get(keyword) else {
                    continue;
                };
                let all_branches_hold =
                    branch_nodes(old, keyword, branches)
                        .into_iter()
                        .all(|branch| {
                            let mut evidence = ctx.olds.to_vec();
                            evidence.push(branch);
                            proof(self, &evidence)
                        });
                if all_branches_hold {
                    return true;
                }
            }
        }
        false
    }

    /// Whether no value is accepted both by the old conjuncts `olds` and by the new subschema
    /// `other`. Errs towards "no".
    pub(super) fn disjoint(&mut self, olds: &[Node<'a>], other: &Node<'a>) -> bool {
        let olds = self.flatten_old(olds);
        let others = self.flatten_quiet_new(other);
        let is_false = |n: &Node<'_>| n.value == &Value::Bool(false);
        if olds.iter().any(is_false) || others.iter().any(is_false) {
            return true;
        }
        let common = kinds_of(&olds).intersection(kinds_of(&others));
        if common.is_empty() {
            return true;
        }
        if self.finite_sets_disjoint(&olds, &others, other) {
            return true;
        }
        common.without(Kinds::OBJECT).is_empty() && self.discriminated(&olds, &others)
    }

    /// Disjointness from a finite side: no candidate value passes both sides' validators (or,
    /// without validators, the two finite sets share no value).
    fn finite_sets_disjoint(
        &mut self,
        olds: &[Node<'a>],
        others: &[Node<'a>],
        other: &Node<'a>,
    ) -> bool {
        let old_values = finite_values(olds);
        let other_values = finite_values(others);
        if let (Some(a), Some(b)) = (&old_values, &other_values) {
            if !a.iter().any(|x| b.iter().any(|y| possibly_equal(x, y))) {
                return true;
            }
        }
        let Some(candidates) = old_values.or(other_values) else {
            return false;
        };
        self.old.ensure_validators();
        self.new.ensure_validators();
        let Some(other_validator) = self.new.validator(&other.pointer) else {
            return false;
        };
        let old_validators: Option<Vec<&jsonschema::Validator>> = olds
            .iter()
            .map(|o| self.old.validator(&o.pointer))
            .collect();
        let Some(old_validators) = old_validators else {
            return false;
        };
        !candidates
            .iter()
            .any(|v| other_validator.is_valid(v) && old_validators.iter().all(|o| o.is_valid(v)))
    }

    /// Objects told apart by a member both sides constrain to disjoint finite sets, where at
    /// least one side requires the member (so it is present in every common object).
    fn discriminated(&mut self, olds: &[Node<'a>], others: &[Node<'a>]) -> bool {
        let required: Vec<&'a str> = olds
            .iter()
            .chain(others)
            .filter_map(|n| n.get("required").and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        required.into_iter().any(|name| {
            let old_member = self.member_values(olds, name, false);
            let other_member = self.member_values(others, name, true);
            match (old_member, other_member) {
                (Some(a), Some(b)) => !a.iter().any(|x| b.iter().any(|y| possibly_equal(x, y))),
                _ => false,
            }
        })
    }

    /// A finite set holding every value the conjuncts allow for member `name`, from their
    /// `properties` entries.
    fn member_values(
        &mut self,
        conjuncts: &[Node<'a>],
        name: &str,
        is_new: bool,
    ) -> Option<Vec<Value>> {
        conjuncts
            .iter()
            .filter_map(|n| {
                let schema = n.get("properties")?.get(name)?;
                let member = n.child(schema, "properties", Some(name));
                let flat = if is_new {
                    self.flatten_quiet_new(&member)
                } else {
                    self.flatten_old(std::slice::from_ref(&member))
                };
                finite_values(&flat)
            })
            .min_by_key(Vec::len)
    }
}

fn branch_nodes<'a>(parent: &Node<'a>, keyword: &str, branches: &'a [Value]) -> Vec<Node<'a>> {
    branches
        .iter()
        .enumerate()
        .map(|(index, branch)| parent.child(branch, keyword, Some(&index.to_string())))
        .collect()
}

fn closest_suffix(closest: Option<Vec<Incompatibility>>) -> String {
    match closest.as_deref().and_then(<[Incompatibility]>::first) {
        Some(finding) => format!(" (closest branch: {finding})"),
        None => String::new(),
    }
}
