//! A rule set that finds the matching rules for an event without evaluating them all.
//!
//! Owns: [`FilterIndex`]. Each rule is filed under the exact values of one of its
//! *necessary* exact-value leaves: a matcher list made only of exact values, reached
//! from the top of the pattern through nested objects but not through `$or` (or, for a
//! `$or`, one such leaf from every branch). A rule can then only match an event that
//! holds one of those values at that path, so matching looks up the event's values at
//! each indexed path, takes the union of the buckets found plus the rules with no such
//! leaf (the linear list), and re-checks each candidate with [`Filter::matches_view`].
//! Among a rule's possible leaves, the one whose buckets are currently smallest is
//! chosen (fixed-cardinality attributes such as `specversion` are discouraged).
//!
//! Invariants: every live rule is in exactly the buckets listed in its `entries`, or in
//! `linear` when `entries` is empty; `matching` returns exactly the rules whose filter
//! matches (checked against brute force by the property tests).
//! Costs: `insert` O(pattern); `remove` O(size of the rule's buckets); `matching`
//! O(indexed paths × event values at them + candidates × pattern).

use std::collections::HashMap;
use std::hash::Hash;

use super::compile::{Node, ObjectPattern};
use super::matcher::{Matcher, Scalar};
use super::view::{visit_path, Elem, EventView};
use super::Filter;
use crate::event::CloudEvent;

/// Extra cost that steers the choice of index leaf away from attributes that barely
/// vary between events.
const LOW_CARDINALITY_PENALTY: usize = 1_000;

/// A set of keyed filters, indexed by their exact-value leaves.
#[derive(Debug)]
pub struct FilterIndex<K> {
    slots: Vec<Option<Rule<K>>>,
    free_slots: Vec<usize>,
    slot_by_key: HashMap<K, usize>,
    paths: Vec<PathIndex>,
    path_by_segments: HashMap<Vec<Box<str>>, usize>,
    linear: Vec<usize>,
}

#[derive(Debug)]
struct Rule<K> {
    key: K,
    filter: Filter,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    path: usize,
    value: IndexValue,
}

#[derive(Debug, Clone, PartialEq)]
enum IndexValue {
    Str(Box<str>),
    Number(u64),
    Bool(bool),
    Null,
}

impl IndexValue {
    fn from_scalar(scalar: &Scalar) -> Self {
        match scalar {
            Scalar::Null => IndexValue::Null,
            Scalar::Bool(b) => IndexValue::Bool(*b),
            Scalar::Number(x) => IndexValue::Number(number_key(*x)),
            Scalar::String(s) => IndexValue::Str(s.clone()),
        }
    }
}

/// Equal f64 values get equal keys (`0.0` and `-0.0` included).
fn number_key(x: f64) -> u64 {
    if x == 0.0 {
        0.0f64.to_bits()
    } else {
        x.to_bits()
    }
}

/// The buckets of one field path (`["data", "customer", "id"]`).
#[derive(Debug, Default)]
struct PathIndex {
    segments: Vec<Box<str>>,
    strings: HashMap<Box<str>, Vec<usize>>,
    numbers: HashMap<u64, Vec<usize>>,
    trues: Vec<usize>,
    falses: Vec<usize>,
    nulls: Vec<usize>,
    entries_count: usize,
}

impl PathIndex {
    fn bucket_for(&self, value: &IndexValue) -> Option<&Vec<usize>> {
        match value {
            IndexValue::Str(s) => self.strings.get(s),
            IndexValue::Number(n) => self.numbers.get(n),
            IndexValue::Bool(true) => Some(&self.trues),
            IndexValue::Bool(false) => Some(&self.falses),
            IndexValue::Null => Some(&self.nulls),
        }
    }

    fn bucket_for_elem(&self, elem: Elem<'_>) -> Option<&Vec<usize>> {
        match elem {
            Elem::Str(s) => self.strings.get(s),
            Elem::Number(n) => self.numbers.get(&number_key(n)),
            Elem::Bool(true) => Some(&self.trues),
            Elem::Bool(false) => Some(&self.falses),
            Elem::Null => Some(&self.nulls),
            Elem::Object(_) => None,
        }
    }

    fn add(&mut self, value: &IndexValue, slot: usize) {
        let bucket = match value {
            IndexValue::Str(s) => self.strings.entry(s.clone()).or_default(),
            IndexValue::Number(n) => self.numbers.entry(*n).or_default(),
            IndexValue::Bool(true) => &mut self.trues,
            IndexValue::Bool(false) => &mut self.falses,
            IndexValue::Null => &mut self.nulls,
        };
        bucket.push(slot);
        self.entries_count += 1;
    }

    fn remove(&mut self, value: &IndexValue, slot: usize) {
        match value {
            IndexValue::Str(s) => {
                if let Some(bucket) = self.strings.get_mut(s) {
                    bucket.retain(|&s| s != slot);
                    if bucket.is_empty() {
                        self.strings.remove(s);
                    }
                }
            }
            IndexValue::Number(n) => {
                if let Some(bucket) = self.numbers.get_mut(n) {
                    bucket.retain(|&s| s != slot);
                    if bucket.is_empty() {
                        self.numbers.remove(n);
                    }
                }
            }
            IndexValue::Bool(true) => self.trues.retain(|&s| s != slot),
            IndexValue::Bool(false) => self.falses.retain(|&s| s != slot),
            IndexValue::Null => self.nulls.retain(|&s| s != slot),
        }
        self.entries_count = self.entries_count.saturating_sub(1);
    }
}

/// Counts describing how a [`FilterIndex`] filed its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStats {
    pub rules_count: usize,
    /// Rules reachable through an exact-value bucket.
    pub indexed_count: usize,
    /// Rules checked for every event (no necessary exact-value leaf).
    pub linear_count: usize,
    /// Distinct field paths with buckets.
    pub paths_count: usize,
}

/// One necessary condition: the event must hold one of `values` at `path`.
struct Requirement<'f> {
    path: Vec<&'f str>,
    values: Vec<&'f Scalar>,
}

/// Conditions any one of which a match implies (one per `$or` branch, or a single one).
type Plan<'f> = Vec<Requirement<'f>>;

impl<K> Default for FilterIndex<K> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free_slots: Vec::new(),
            slot_by_key: HashMap::new(),
            paths: Vec::new(),
            path_by_segments: HashMap::new(),
            linear: Vec::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> FilterIndex<K> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.slot_by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot_by_key.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&Filter> {
        let slot = *self.slot_by_key.get(key)?;
        self.rule(slot).map(|rule| &rule.filter)
    }

    /// Every rule, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Filter)> {
        self.slots
            .iter()
            .flatten()
            .map(|rule| (&rule.key, &rule.filter))
    }

    /// Adds a rule; replaces (and returns) the filter already under `key`.
    pub fn insert(&mut self, key: K, filter: Filter) -> Option<Filter> {
        let previous = self.remove(&key);
        let chosen = self.choose_plan(filter.root());
        let owned: Vec<(Vec<Box<str>>, Vec<IndexValue>)> = chosen
            .into_iter()
            .flatten()
            .map(|requirement| {
                (
                    requirement.path.iter().map(|s| Box::from(*s)).collect(),
                    requirement
                        .values
                        .iter()
                        .map(|v| IndexValue::from_scalar(v))
                        .collect(),
                )
            })
            .collect();
        let slot = self.free_slots.pop().unwrap_or(self.slots.len());
        let mut entries = Vec::new();
        for (segments, values) in owned {
            let path = self.path_id(segments);
            for value in values {
                if let Some(path_index) = self.paths.get_mut(path) {
                    path_index.add(&value, slot);
                }
                entries.push(Entry { path, value });
            }
        }
        if entries.is_empty() {
            self.linear.push(slot);
        }
        let rule = Rule {
            key: key.clone(),
            filter,
            entries,
        };
        match self.slots.get_mut(slot) {
            Some(place) => *place = Some(rule),
            None => self.slots.push(Some(rule)),
        }
        self.slot_by_key.insert(key, slot);
        previous
    }

    /// Removes a rule; returns its filter.
    pub fn remove(&mut self, key: &K) -> Option<Filter> {
        let slot = self.slot_by_key.remove(key)?;
        let rule = self.slots.get_mut(slot)?.take()?;
        if rule.entries.is_empty() {
            self.linear.retain(|&s| s != slot);
        }
        for entry in &rule.entries {
            if let Some(path_index) = self.paths.get_mut(entry.path) {
                path_index.remove(&entry.value, slot);
            }
        }
        self.free_slots.push(slot);
        Some(rule.filter)
    }

    /// The keys of every rule matching `event`, in slot order (deterministic for a
    /// given insert/remove history). Parses the event's JSON data at most once.
    pub fn matching(&self, event: &CloudEvent) -> Vec<K> {
        self.matching_view(&EventView::new(event))
    }

    /// Like [`FilterIndex::matching`], on a view the caller may share.
    pub fn matching_view(&self, view: &EventView<'_>) -> Vec<K> {
        self.candidates(view)
            .into_iter()
            .filter_map(|slot| self.rule(slot))
            .filter(|rule| rule.filter.matches_view(view))
            .map(|rule| rule.key.clone())
            .collect()
    }

    /// How many rules [`FilterIndex::matching`] would evaluate for this event.
    pub fn candidates_count(&self, view: &EventView<'_>) -> usize {
        self.candidates(view).len()
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            rules_count: self.len(),
            indexed_count: self.len().saturating_sub(self.linear.len()),
            linear_count: self.linear.len(),
            paths_count: self.paths.iter().filter(|p| p.entries_count > 0).count(),
        }
    }

    fn rule(&self, slot: usize) -> Option<&Rule<K>> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// Distinct slots of the rules that may match: bucket hits plus the linear list.
    fn candidates(&self, view: &EventView<'_>) -> Vec<usize> {
        let mut candidates = self.linear.clone();
        for path_index in &self.paths {
            if path_index.entries_count == 0 {
                continue;
            }
            let Some((first, rest)) = path_index.segments.split_first() else {
                continue;
            };
            let Some(root) = view.attribute(first) else {
                continue;
            };
            visit_path(root, rest, &mut |elem| {
                if let Some(bucket) = path_index.bucket_for_elem(elem) {
                    candidates.extend_from_slice(bucket);
                }
            });
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates
    }

    fn path_id(&mut self, segments: Vec<Box<str>>) -> usize {
        if let Some(&id) = self.path_by_segments.get(&segments) {
            return id;
        }
        let id = self.paths.len();
        self.paths.push(PathIndex {
            segments: segments.clone(),
            ..PathIndex::default()
        });
        self.path_by_segments.insert(segments, id);
        id
    }

    /// The cheapest plan for a pattern, or `None` when it has no necessary exact leaf.
    fn choose_plan<'f>(&self, root: &'f ObjectPattern) -> Option<Plan<'f>> {
        let cost = |requirement: &Requirement<'_>| self.requirement_cost(requirement);
        cheapest(plans(root, &[], &cost), &cost)
    }

    /// Rules already in the buckets this requirement would join (+1 per value).
    fn requirement_cost(&self, requirement: &Requirement<'_>) -> usize {
        let penalty = match requirement.path.as_slice() {
            ["specversion" | "datacontenttype" | "dataschema"] => LOW_CARDINALITY_PENALTY,
            _ => 0,
        };
        let segments: Vec<Box<str>> = requirement.path.iter().map(|s| Box::from(*s)).collect();
        let path_index = self
            .path_by_segments
            .get(&segments)
            .and_then(|&id| self.paths.get(id));
        let filed: usize = requirement
            .values
            .iter()
            .map(|value| {
                path_index
                    .and_then(|p| p.bucket_for(&IndexValue::from_scalar(value)))
                    .map_or(0, Vec::len)
                    + 1
            })
            .sum();
        filed.saturating_add(penalty)
    }
}

/// Every plan this pattern level offers: one per exact-only leaf (through nested
/// objects), plus one combining the best plan of every `$or` branch.
fn plans<'f>(
    pattern: &'f ObjectPattern,
    prefix: &[&'f str],
    cost: &dyn Fn(&Requirement<'_>) -> usize,
) -> Vec<Plan<'f>> {
    let mut out = Vec::new();
    for field in &pattern.fields {
        let mut path = prefix.to_vec();
        path.push(&field.name);
        match &field.node {
            Node::Leaf(leaf) => {
                let values: Option<Vec<&Scalar>> =
                    leaf.matchers.iter().map(Matcher::as_exact).collect();
                if let Some(values) = values {
                    out.push(vec![Requirement { path, values }]);
                }
            }
            Node::Object(nested) => out.extend(plans(nested, &path, cost)),
        }
    }
    if let Some(branches) = &pattern.any_of {
        let combined: Option<Vec<Plan<'f>>> = branches
            .iter()
            .map(|branch| cheapest(plans(branch, prefix, cost), cost))
            .collect();
        if let Some(combined) = combined {
            out.push(combined.into_iter().flatten().collect());
        }
    }
    out
}

fn cheapest<'f>(
    plans: Vec<Plan<'f>>,
    cost: &dyn Fn(&Requirement<'_>) -> usize,
) -> Option<Plan<'f>> {
    plans
        .into_iter()
        .min_by_key(|plan| plan.iter().map(cost).sum::<usize>())
}
