//! YAML read the way Synapse reads a registration file: PyYAML's `safe_load`, whose scalars
//! follow YAML 1.1 (`yes`, `on` and `off` are booleans, `0755` is octal, `1e5` is a string,
//! `2024-01-01` is a date, `=` cannot be constructed), with merge keys (`<<`) and the last of
//! two equal keys winning.
//!
//! Synapse then checks Python types (`isinstance(x, str)`, `isinstance(x, bool)`) and Python
//! truthiness, so the tree keeps what those need. The grammar itself is YAML 1.2's (the
//! parser's); where the two grammars differ on a well-formed registration is noted in
//! `docs/registration.md`.

mod resolve;

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// A node as `safe_load` constructs it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    /// An integer; `None` when it does not fit in an `i128` (Python's are unbounded).
    Int(Option<i128>),
    Float(f64),
    Str(String),
    Seq(Vec<Value>),
    /// Keys in first-seen order, each once.
    Map(Vec<(Value, Value)>),
    /// `!!set`: a Python set, which is iterable but not a list.
    Set(Vec<Value>),
    /// A date or time, bytes (`!!binary`) or a pair of `!!omap`/`!!pairs`: none of them a
    /// string, list or mapping. `text` is what the file says.
    Other {
        kind: &'static str,
        text: String,
    },
}

impl Value {
    /// Python's `bool(value)`.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != Some(0),
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Seq(v) | Value::Set(v) => !v.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Other { kind, text } => *kind != "bytes" || !text.trim().is_empty(),
        }
    }

    /// The value under a string key of a mapping, as Python's `dict.get`.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The Python type name, for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Set(_) => "a set",
            Value::Other { kind, .. } => match *kind {
                "timestamp" => "a date",
                "bytes" => "binary data",
                _ => "a pair",
            },
        }
    }

    /// The value as JSON, for keys kept verbatim. Dates, bytes and non-finite floats become
    /// their text; non-string keys their JSON text.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(Some(i)) => i64::try_from(*i)
                .map(J::from)
                .unwrap_or_else(|_| J::String(i.to_string())),
            Value::Int(None) => J::String("<integer too large>".to_owned()),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or_else(|| J::String(f.to_string())),
            Value::Str(s) | Value::Other { text: s, .. } => J::String(s.clone()),
            Value::Seq(v) | Value::Set(v) => J::Array(v.iter().map(Value::to_json).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Value::Str(s) => s.clone(),
                            other => other.to_json().to_string(),
                        };
                        (key, v.to_json())
                    })
                    .collect(),
            ),
        }
    }

    /// Python's `==` between two hashable keys: `1`, `1.0` and `true` are one key.
    fn same_key(&self, other: &Value) -> bool {
        fn number(v: &Value) -> Option<f64> {
            match v {
                Value::Bool(b) => Some(f64::from(u8::from(*b))),
                Value::Int(Some(i)) => Some(*i as f64),
                Value::Float(f) => Some(*f),
                _ => None,
            }
        }
        match (number(self), number(other)) {
            (Some(a), Some(b)) => a == b,
            _ => self == other,
        }
    }
}

/// The most nodes one file may make, aliases counted each time they are used: a registration
/// has a few dozen, and a file of nested aliases could otherwise make billions.
const MAX_NODES: usize = 100_000;

/// Reads one YAML document as `safe_load` does. The error says where and what.
pub(crate) fn load(text: &str) -> Result<Value, String> {
    let mut composer = Composer {
        anchors: HashMap::new(),
        nodes: 0,
    };
    let mut events = Parser::new_from_str(text);
    let mut next = move || match events.find(|e| !matches!(e, Ok((Event::Comment(..), _)))) {
        Some(Ok(event)) => Ok(event),
        Some(Err(e)) => Err(format!(
            "line {} column {}: {}",
            e.marker().line(),
            e.marker().col() + 1,
            e.info()
        )),
        None => Err("unexpected end of input".to_owned()),
    };
    let mut value = Value::Null;
    let mut documents = 0;
    loop {
        let (event, span) = next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => break,
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(format!(
                        "{}: expected a single document, but found another",
                        at(&span)
                    ));
                }
                let (first, first_span) = next()?;
                value = composer.node(first, first_span, &mut next)?;
            }
            _ => return Err(format!("{}: unexpected {event:?}", at(&span))),
        }
    }
    Ok(value)
}

fn at(span: &Span) -> String {
    format!("line {} column {}", span.start.line(), span.start.col() + 1)
}

/// What a mapping key turned out to be.
enum Key {
    /// `<<`: merge the value's entries in.
    Merge,
    Value(Value),
}

struct Composer {
    /// Constructed anchored nodes, and how many nodes each holds.
    anchors: HashMap<usize, (Value, usize)>,
    nodes: usize,
}

type Next<'a> = dyn FnMut() -> Result<(Event<'a>, Span), String> + 'a;

impl Composer {
    fn count(&mut self, nodes: usize, span: &Span) -> Result<(), String> {
        self.nodes += nodes;
        if self.nodes > MAX_NODES {
            return Err(format!(
                "{}: more than {MAX_NODES} nodes (aliases counted each time they are used)",
                at(span)
            ));
        }
        Ok(())
    }

    fn anchor(&mut self, anchor: usize, value: &Value, nodes: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (value.clone(), nodes));
        }
    }

    fn node<'a>(
        &mut self,
        event: Event<'a>,
        span: Span,
        next: &mut Next<'a>,
    ) -> Result<Value, String> {
        Ok(self.sized_node(event, span, next)?.0)
    }

    /// A node and how many nodes it holds.
    fn sized_node<'a>(
        &mut self,
        event: Event<'a>,
        span: Span,
        next: &mut Next<'a>,
    ) -> Result<(Value, usize), String> {
        match event {
            Event::Alias(id) => {
                let Some((value, nodes)) = self.anchors.get(&id).cloned() else {
                    return Err(format!("{}: alias to an unfinished anchor", at(&span)));
                };
                self.count(nodes, &span)?;
                Ok((value, nodes))
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, &span)?;
                if let Some(what) = key_only(&text, style, tag.as_deref()) {
                    return Err(format!("{}: {what} can only be a mapping key", at(&span)));
                }
                let value = resolve::scalar(&text, style == ScalarStyle::Plain, tag.as_deref())
                    .map_err(|e| format!("{}: {e}", at(&span)))?;
                self.anchor(anchor, &value, 1);
                Ok((value, 1))
            }
            Event::SequenceStart(_, anchor, tag) => {
                self.count(1, &span)?;
                let (mut items, mut nodes) = (Vec::new(), 1);
                loop {
                    let (event, item_span) = next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let (item, size) = self.sized_node(event, item_span, next)?;
                    items.push(item);
                    nodes += size;
                }
                let value = resolve::sequence(items, tag.as_deref())
                    .map_err(|e| format!("{}: {e}", at(&span)))?;
                self.anchor(anchor, &value, nodes);
                Ok((value, nodes))
            }
            Event::MappingStart(_, anchor, tag) => {
                self.count(1, &span)?;
                let (mut entries, mut nodes) = (Vec::new(), 1);
                loop {
                    let (event, key_span) = next()?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let special = match &event {
                        Event::Scalar(text, style, _, tag) => {
                            key_only(text, *style, tag.as_deref())
                        }
                        _ => None,
                    };
                    let (merge, value_key) = (special == Some(MERGE), special == Some(VALUE));
                    let (key, key_size) = if merge || value_key {
                        self.count(1, &key_span)?;
                        (Value::Str(String::new()), 1)
                    } else {
                        self.sized_node(event, key_span, next)?
                    };
                    if matches!(key, Value::Seq(_) | Value::Map(_) | Value::Set(_)) {
                        return Err(format!(
                            "{}: a {} cannot be a mapping key",
                            at(&key_span),
                            key.type_name()
                        ));
                    }
                    let (event, value_span) = next()?;
                    let (value, value_size) = self.sized_node(event, value_span, next)?;
                    nodes += key_size + value_size;
                    let key = if merge {
                        Key::Merge
                    } else if value_key {
                        // PyYAML reads a `=` key as the string "=".
                        Key::Value(Value::Str("=".to_owned()))
                    } else {
                        Key::Value(key)
                    };
                    entries.push((key, value, value_span));
                }
                let value = resolve::mapping(merged(entries)?, tag.as_deref())
                    .map_err(|e| format!("{}: {e}", at(&span)))?;
                self.anchor(anchor, &value, nodes);
                Ok((value, nodes))
            }
            other => Err(format!("{}: unexpected {other:?}", at(&span))),
        }
    }
}

const MERGE: &str = "`<<`";
const VALUE: &str = "`=`";

/// A plain `<<` (YAML 1.1's `!!merge`) or `=` (`!!value`): `safe_load` constructs them only as
/// mapping keys, the first merging a mapping in, the second read as the string "=".
fn key_only(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Option<&'static str> {
    let plain = style == ScalarStyle::Plain && tag.is_none();
    let core = tag.and_then(resolve::core_suffix);
    if (plain && text == "<<") || core.as_deref() == Some("merge") {
        Some(MERGE)
    } else if (plain && text == "=") || core.as_deref() == Some("value") {
        Some(VALUE)
    } else {
        None
    }
}

/// A mapping's entries as `safe_load` makes them: merged entries first, in order, then the
/// mapping's own; of equal keys the last value wins, in the place the key first took. (Of two
/// merged mappings with one key, PyYAML 6.0.4 keeps the later; older versions kept the
/// earlier, and 6.0.4 too for one-character keys, through an identity check of Python strings.)
fn merged(entries: Vec<(Key, Value, Span)>) -> Result<Vec<(Value, Value)>, String> {
    let mut merge = Vec::new();
    let mut own = Vec::new();
    for (key, value, span) in entries {
        match key {
            Key::Value(key) => own.push((key, value)),
            Key::Merge => match value {
                Value::Map(entries) => merge.extend(entries),
                Value::Seq(maps) => {
                    let mut each = Vec::new();
                    for map in maps {
                        let Value::Map(entries) = map else {
                            return Err(format!(
                                "{}: a merge key takes mappings, not {}",
                                at(&span),
                                map.type_name()
                            ));
                        };
                        each.push(entries);
                    }
                    for entries in each {
                        merge.extend(entries);
                    }
                }
                other => {
                    return Err(format!(
                        "{}: a merge key takes a mapping or a list of them, not {}",
                        at(&span),
                        other.type_name()
                    ));
                }
            },
        }
    }
    let mut out: Vec<(Value, Value)> = Vec::new();
    for (key, value) in merge.into_iter().chain(own) {
        match out.iter_mut().find(|(k, _)| k.same_key(&key)) {
            Some(slot) => slot.1 = value,
            None => out.push((key, value)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
