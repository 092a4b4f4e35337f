//! The event as a filter sees it: a JSON-like tree without copying the event.
//!
//! Owns: [`EventView`] (top-level attribute lookup, lazily parsed `data`), the borrowed
//! value types the matchers work on, and array flattening.
//! Invariants: `data` is parsed at most once per view, and only when a pattern looks at
//! it; arrays are always flattened before a matcher sees a value, so matchers only ever
//! see scalars and objects.

use std::cell::OnceCell;

use serde_json::{Map, Value};

use crate::event::{CloudEvent, Data, ExtensionValue};

/// A CloudEvent viewed as the JSON object patterns are written against: the
/// attributes `id`, `source`, `type`, `specversion`, `subject`, `time`,
/// `datacontenttype`, `dataschema`, every extension, and `data` when it is JSON.
///
/// Build one per event and reuse it for every filter: the JSON `data` is parsed on
/// first use and kept.
#[derive(Debug)]
pub struct EventView<'e> {
    event: &'e CloudEvent,
    data: OnceCell<Option<Value>>,
}

impl<'e> EventView<'e> {
    pub fn new(event: &'e CloudEvent) -> Self {
        Self {
            event,
            data: OnceCell::new(),
        }
    }

    /// The event this view shows.
    pub fn event(&self) -> &'e CloudEvent {
        self.event
    }

    /// The parsed JSON `data`; `None` when the event has none or it is binary.
    pub fn data(&self) -> Option<&Value> {
        self.data
            .get_or_init(|| match &self.event.data {
                Some(Data::Json(text)) => serde_json::from_str(text).ok(),
                Some(Data::Binary(_)) | None => None,
            })
            .as_ref()
    }

    /// A top-level field: a CloudEvents attribute, `data`, or an extension.
    pub(crate) fn attribute(&self, name: &str) -> Option<ValueRef<'_>> {
        let event = self.event;
        let text = |s: &'e Option<String>| s.as_deref().map(ValueRef::Str);
        match name {
            "id" => Some(ValueRef::Str(&event.id)),
            "source" => Some(ValueRef::Str(&event.source)),
            "type" => Some(ValueRef::Str(&event.ty)),
            "specversion" => Some(ValueRef::Str(&event.specversion)),
            "subject" => text(&event.subject),
            "time" => text(&event.time),
            "datacontenttype" => text(&event.datacontenttype),
            "dataschema" => text(&event.dataschema),
            "data" => self.data().map(ValueRef::Json),
            _ => event.extensions.get(name).map(|value| match value {
                ExtensionValue::String(s) => ValueRef::Str(s),
                ExtensionValue::Bool(b) => ValueRef::Bool(*b),
                ExtensionValue::Integer(i) => ValueRef::Int(*i),
            }),
        }
    }
}

/// A borrowed field value: JSON from `data`, or a typed attribute.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ValueRef<'a> {
    Json(&'a Value),
    Str(&'a str),
    Bool(bool),
    Int(i64),
}

/// One value after array flattening: never an array.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Elem<'a> {
    Null,
    Bool(bool),
    Number(f64),
    Str(&'a str),
    Object(&'a Map<String, Value>),
}

impl<'a> ValueRef<'a> {
    /// Calls `visit` on every element, arrays flattened depth first, until it returns
    /// true; returns whether it did. An empty array has no elements.
    pub(crate) fn any_element(self, visit: &mut dyn FnMut(Elem<'a>) -> bool) -> bool {
        match self {
            ValueRef::Json(value) => any_json_element(value, visit),
            ValueRef::Str(s) => visit(Elem::Str(s)),
            ValueRef::Bool(b) => visit(Elem::Bool(b)),
            ValueRef::Int(i) => visit(Elem::Number(i as f64)),
        }
    }

    /// The value as JSON (for explanations).
    pub(crate) fn to_json(self) -> Value {
        match self {
            ValueRef::Json(value) => value.clone(),
            ValueRef::Str(s) => Value::String(s.to_string()),
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::from(i),
        }
    }
}

fn any_json_element<'a>(value: &'a Value, visit: &mut dyn FnMut(Elem<'a>) -> bool) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| any_json_element(item, visit)),
        Value::Null => visit(Elem::Null),
        Value::Bool(b) => visit(Elem::Bool(*b)),
        // Without arbitrary precision every JSON number has an f64 form; NaN equals nothing.
        Value::Number(n) => visit(Elem::Number(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => visit(Elem::Str(s)),
        Value::Object(map) => visit(Elem::Object(map)),
    }
}

impl Elem<'_> {
    /// Compact JSON text for explanations, cut at `length_max` characters.
    pub(crate) fn describe(self, length_max: usize) -> String {
        let text = match self {
            Elem::Null => "null".to_string(),
            Elem::Bool(b) => b.to_string(),
            Elem::Number(n) => Value::from(n).to_string(),
            Elem::Str(s) => Value::String(s.to_string()).to_string(),
            Elem::Object(map) => format!("an object with {} fields", map.len()),
        };
        if text.chars().count() > length_max {
            let cut: String = text.chars().take(length_max).collect();
            format!("{cut}…")
        } else {
            text
        }
    }
}

/// Calls `visit` on every element found at `path` below `value` (arrays flattened
/// at every level, non-objects skipped on the way down).
pub(crate) fn visit_path<'a>(
    value: ValueRef<'a>,
    path: &[Box<str>],
    visit: &mut dyn FnMut(Elem<'a>),
) {
    match path.split_first() {
        None => {
            value.any_element(&mut |elem| {
                visit(elem);
                false
            });
        }
        Some((segment, rest)) => {
            value.any_element(&mut |elem| {
                if let Elem::Object(map) = elem {
                    if let Some(child) = map.get(&**segment) {
                        visit_path(ValueRef::Json(child), rest, visit);
                    }
                }
                false
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_is_parsed_lazily_and_once() {
        let event = CloudEvent::new("1", "/s", "t").with_json_data(&json!({"a": [1, [2, 3]]}));
        let view = EventView::new(&event);
        assert!(view.data.get().is_none());
        assert!(view.attribute("type").is_some());
        assert!(view.data.get().is_none());
        let mut seen = Vec::new();
        if let Some(data) = view.attribute("data") {
            visit_path(data, &["a".into()], &mut |e| {
                if let Elem::Number(n) = e {
                    seen.push(n);
                }
            });
        }
        assert_eq!(seen, vec![1.0, 2.0, 3.0]);
        assert!(view.data.get().is_some());
    }

    #[test]
    fn extensions_keep_their_types() {
        let mut event = CloudEvent::new("1", "/s", "t");
        event
            .extensions
            .insert("retries".into(), ExtensionValue::Integer(3));
        let view = EventView::new(&event);
        assert!(matches!(view.attribute("retries"), Some(ValueRef::Int(3))));
        assert!(view.attribute("missing").is_none());
        assert!(view.attribute("subject").is_none());
    }
}
