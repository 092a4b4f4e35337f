//! Array items: `items`, `prefixItems` (2020-12), and draft-07's array-form `items` with
//! `additionalItems`, all read as "a schema per leading position, then one for the rest".
//!
//! Each position the new schema constrains is proven from every old conjunct's schema for the
//! same position, one data level down. Positions no old array can reach (past an old
//! `maxItems`) need no proof.

use serde_json::Value;

use super::value::{as_exact_integer, Kinds};
use super::{Checker, Context, Node};

/// What one schema says about array items.
struct ItemShape<'a> {
    /// Schemas for positions 0, 1, ...
    prefix: Vec<Node<'a>>,
    /// Schema for every later position (`None`: anything).
    rest: Option<Node<'a>>,
}

impl<'a> ItemShape<'a> {
    /// Reads `node` as the validator does in its draft.
    fn of(node: &Node<'a>, is_2020: bool) -> ItemShape<'a> {
        let Some(object) = node.object() else {
            return ItemShape {
                prefix: Vec::new(),
                rest: None,
            };
        };
        let positional = |keyword: &str| -> Vec<Node<'a>> {
            match object.get(keyword) {
                Some(Value::Array(schemas)) => schemas
                    .iter()
                    .enumerate()
                    .map(|(i, s)| node.child(s, keyword, Some(&i.to_string())))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let single = |keyword: &str| -> Option<Node<'a>> {
            object
                .get(keyword)
                .filter(|v| v.is_object() || v.is_boolean())
                .map(|s| node.child(s, keyword, None))
        };
        if is_2020 {
            ItemShape {
                prefix: positional("prefixItems"),
                rest: single("items"),
            }
        } else if matches!(object.get("items"), Some(Value::Array(_))) {
            ItemShape {
                prefix: positional("items"),
                rest: single("additionalItems"),
            }
        } else {
            ItemShape {
                prefix: Vec::new(),
                rest: single("items"),
            }
        }
    }

    /// The schema for `position`, if constrained.
    fn at(&self, position: usize) -> Option<&Node<'a>> {
        self.prefix.get(position).or(self.rest.as_ref())
    }
}

impl<'a> Checker<'a> {
    pub(super) fn prove_items(&mut self, ctx: &Context<'a, '_>) {
        if !ctx.old_kinds.intersects(Kinds::ARRAY) {
            return;
        }
        let new_shape = ItemShape::of(ctx.new, self.new.is_2020());
        let old_shapes: Vec<ItemShape<'a>> = ctx
            .olds
            .iter()
            .map(|o| ItemShape::of(o, self.old.is_2020()))
            .collect();
        // Positions no old array reaches: at or past the smallest old `maxItems`.
        let reachable = ctx
            .old_values("maxItems")
            .filter_map(|v| v.as_number().and_then(as_exact_integer))
            .filter_map(|n| usize::try_from(n).ok())
            .min()
            .unwrap_or(usize::MAX);
        let leading = old_shapes
            .iter()
            .map(|s| s.prefix.len())
            .chain([new_shape.prefix.len()])
            .max()
            .unwrap_or(0);
        // Positions 0..leading one by one, then `leading` standing for every later position
        // (from there on every shape answers with its `rest`).
        for position in 0..=leading {
            if position >= reachable {
                break;
            }
            let Some(new_item) = new_shape.at(position) else {
                continue;
            };
            let evidence: Vec<Node<'a>> = old_shapes
                .iter()
                .filter_map(|s| s.at(position).cloned())
                .collect();
            self.prove(&evidence, new_item, ctx.depth + 1);
        }
    }
}
