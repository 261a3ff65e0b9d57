//! What `safe_load` makes of a scalar, sequence or mapping: YAML 1.1's implicit types for plain
//! scalars (<https://yaml.org/type/>), and the tags its `SafeConstructor` knows.

use std::sync::OnceLock;

use granit_parser::Tag;
use regex::Regex;

use super::Value;

const CORE: &str = "tag:yaml.org,2002:";

/// The suffix of a `tag:yaml.org,2002:` tag (`!!str` is `str`), however it was written.
pub(super) fn core_suffix(tag: &Tag) -> Option<String> {
    format!("{}{}", tag.handle(), tag.suffix())
        .strip_prefix(CORE)
        .map(str::to_owned)
}

/// The non-specific tag `!`, which makes a scalar a string.
fn non_specific(tag: &Tag) -> bool {
    format!("{}{}", tag.handle(), tag.suffix()) == "!"
}

fn describe(tag: &Tag) -> String {
    format!("{}{}", tag.handle(), tag.suffix())
}

fn unknown(tag: &Tag, node: &str) -> String {
    format!(
        "the tag `{}` on a {node} is not one that Synapse's YAML loader (safe_load) constructs",
        describe(tag)
    )
}

struct Patterns {
    bool_: Regex,
    int: Regex,
    float: Regex,
    null: Regex,
    timestamp: Regex,
}

fn patterns() -> &'static Patterns {
    static PATTERNS: OnceLock<Patterns> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let re = |s: &str| Regex::new(s).expect("a fixed pattern compiles");
        Patterns {
            bool_: re("^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"),
            int: re(concat!(
                "^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+",
                "|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"
            )),
            float: re(concat!(
                r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?",
                r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
            )),
            null: re("^(?:~|null|Null|NULL|)$"),
            timestamp: re(concat!(
                "^(?:[0-9]{4}-[0-9]{2}-[0-9]{2}",
                "|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]*)?",
                "(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?)$"
            )),
        }
    })
}

/// A scalar: a plain one without a tag, or any with the non-specific tag `!`, takes its type
/// from its text; any other without a tag is a string; a tagged one is constructed as its tag
/// says.
pub(super) fn scalar(text: &str, plain: bool, tag: Option<&Tag>) -> Result<Value, String> {
    let kind = match tag {
        None if plain => implicit(text),
        None => "str",
        // PyYAML types a scalar tagged `!` by its text, quoted or not.
        Some(tag) if non_specific(tag) => implicit(text),
        Some(tag) => match core_suffix(tag) {
            Some(suffix) => match suffix.as_str() {
                "str" | "null" | "bool" | "int" | "float" | "timestamp" | "binary" => {
                    return explicit(text, &suffix);
                }
                _ => return Err(unknown(tag, "scalar")),
            },
            None => return Err(unknown(tag, "scalar")),
        },
    };
    explicit(text, kind)
}

/// The implicit type of a plain scalar.
fn implicit(text: &str) -> &'static str {
    let p = patterns();
    if p.bool_.is_match(text) {
        "bool"
    } else if p.float.is_match(text) {
        "float"
    } else if p.int.is_match(text) {
        "int"
    } else if p.null.is_match(text) {
        "null"
    } else if p.timestamp.is_match(text) {
        "timestamp"
    } else {
        "str"
    }
}

/// A scalar constructed as the type `kind`, failing where `safe_load` fails.
fn explicit(text: &str, kind: &str) -> Result<Value, String> {
    Ok(match kind {
        "null" => Value::Null,
        "bool" => match text.to_lowercase().as_str() {
            "yes" | "true" | "on" => Value::Bool(true),
            "no" | "false" | "off" => Value::Bool(false),
            _ => return Err(format!("`{text}` is not a boolean")),
        },
        "int" => Value::Int(int(text).ok_or_else(|| format!("`{text}` is not an integer"))?),
        "float" => Value::Float(float(text).ok_or_else(|| format!("`{text}` is not a float"))?),
        "timestamp" => {
            timestamp(text)?;
            Value::Other {
                kind: "timestamp",
                text: text.to_owned(),
            }
        }
        "binary" => Value::Other {
            kind: "bytes",
            text: text.to_owned(),
        },
        _ => Value::Str(text.to_owned()),
    })
}

/// YAML 1.1 integers: `0b…`, `0x…`, octal `0…`, base 60 `1:30`, decimal; `_` ignored. The outer
/// `None` is "not an integer", the inner "too large for an i128".
fn int(text: &str) -> Option<Option<i128>> {
    let digits = text.replace('_', "");
    let (negative, digits) = match digits.as_bytes().first()? {
        b'-' => (true, &digits[1..]),
        b'+' => (false, &digits[1..]),
        _ => (false, &digits[..]),
    };
    let parse = |s: &str, radix: u32| -> Option<Option<i128>> {
        if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        Some(i128::from_str_radix(s, radix).ok())
    };
    let magnitude = if digits == "0" {
        Some(Some(0))
    } else if let Some(rest) = digits.strip_prefix("0b") {
        parse(rest, 2)
    } else if let Some(rest) = digits.strip_prefix("0x") {
        parse(rest, 16)
    } else if digits.starts_with('0') {
        parse(digits, 8)
    } else if digits.contains(':') {
        let mut total = Some(0i128);
        for part in digits.split(':') {
            let part = parse(part, 10)?;
            total = total
                .zip(part)
                .and_then(|(t, p)| t.checked_mul(60)?.checked_add(p));
        }
        Some(total)
    } else {
        parse(digits, 10)
    }?;
    Some(magnitude.map(|m| if negative { -m } else { m }))
}

/// YAML 1.1 floats: `.inf`, `.nan`, base 60 `1:30.5`, decimal; `_` ignored.
fn float(text: &str) -> Option<f64> {
    let lower = text.replace('_', "").to_lowercase();
    let (sign, rest) = match lower.as_bytes().first()? {
        b'-' => (-1.0, &lower[1..]),
        b'+' => (1.0, &lower[1..]),
        _ => (1.0, &lower[..]),
    };
    let magnitude = match rest {
        ".inf" => f64::INFINITY,
        ".nan" => return Some(f64::NAN),
        _ if rest.contains(':') => {
            let mut total = 0.0;
            for part in rest.split(':') {
                total = total * 60.0 + part.parse::<f64>().ok()?;
            }
            total
        }
        _ => rest.parse::<f64>().ok()?,
    };
    Some(sign * magnitude)
}

/// A YAML 1.1 timestamp that Python's `datetime` accepts: a real date, a time of day, and an
/// offset under a day.
fn timestamp(text: &str) -> Result<(), String> {
    static PARTS: OnceLock<Regex> = OnceLock::new();
    let parts = PARTS.get_or_init(|| {
        Regex::new(concat!(
            r"^([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})",
            r"(?:(?:[Tt]|[ \t]+)([0-9]{1,2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]*)?",
            r"(?:[ \t]*(?:Z|([-+])([0-9]{1,2})(?::([0-9]{2}))?))?)?$"
        ))
        .expect("a fixed pattern compiles")
    });
    let bad = || format!("`{text}` is not a valid date or time");
    let caps = parts.captures(text).ok_or_else(bad)?;
    let num = |i: usize| -> u32 {
        caps.get(i)
            .map_or(0, |m| m.as_str().parse().unwrap_or(u32::MAX))
    };
    let (year, month, day) = (num(1), num(2), num(3));
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    let offset_minutes = num(8) * 60 + num(9);
    if year == 0
        || day == 0
        || day > days
        || num(4) > 23
        || num(5) > 59
        || num(6) > 59
        || offset_minutes >= 24 * 60
    {
        return Err(bad());
    }
    Ok(())
}

/// A sequence: a list, or for `!!omap` and `!!pairs` a list of pairs.
pub(super) fn sequence(items: Vec<Value>, tag: Option<&Tag>) -> Result<Value, String> {
    let Some(tag) = tag.filter(|t| !non_specific(t)) else {
        return Ok(Value::Seq(items));
    };
    match core_suffix(tag).as_deref() {
        Some("seq") => Ok(Value::Seq(items)),
        Some(suffix @ ("omap" | "pairs")) => items
            .into_iter()
            .map(|item| match item {
                Value::Map(entries) if entries.len() == 1 => Ok(Value::Other {
                    kind: "pair",
                    text: Value::Map(entries).to_json().to_string(),
                }),
                other => Err(format!(
                    "`!!{suffix}` takes mappings of one key each, not {}",
                    other.type_name()
                )),
            })
            .collect::<Result<_, _>>()
            .map(Value::Seq),
        _ => Err(unknown(tag, "sequence")),
    }
}

/// A mapping, or for `!!set` the set of its keys.
pub(super) fn mapping(entries: Vec<(Value, Value)>, tag: Option<&Tag>) -> Result<Value, String> {
    let Some(tag) = tag.filter(|t| !non_specific(t)) else {
        return Ok(Value::Map(entries));
    };
    match core_suffix(tag).as_deref() {
        Some("map") => Ok(Value::Map(entries)),
        Some("set") => Ok(Value::Set(entries.into_iter().map(|(k, _)| k).collect())),
        _ => Err(unknown(tag, "mapping")),
    }
}
