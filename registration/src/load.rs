//! A registration made from the YAML tree with the checks Synapse makes when it loads one
//! (`synapse/config/appservice.py`, `_load_appservice`, and `ApplicationService.__init__`,
//! Synapse 1.163): what Synapse refuses is refused with the field named, and every value is
//! read as Synapse reads it.

use std::collections::BTreeMap;

use crate::{
    Error, Registration, Result,
    namespace::{Namespace, NamespaceKind, Namespaces},
    yaml::Value,
};

/// The one scope MSC4502 defines, and the only one Synapse grants.
const SCOPES: [&str; 1] = ["urn:matrix:client:io.element.msc4502:rooms:is_joined"];

/// MSC4512 proxy prefixes Synapse lets an appservice claim, with what lies under them.
const PROXY_PREFIXES: [&str; 1] = ["rtc/livekit"];

/// Keys read into [`Registration`]'s own fields; the rest are kept in `other`.
const TYPED: [&str; 12] = [
    "id",
    "url",
    "as_token",
    "hs_token",
    "sender_localpart",
    "namespaces",
    "rate_limited",
    "protocols",
    "receive_ephemeral",
    "de.sorunome.msc2409.push_ephemeral",
    "org.matrix.msc3202",
    "io.element.msc4190",
];

pub(crate) fn registration(root: &Value, origin: &str) -> Result<Registration> {
    let invalid = |field: &str, problem: String| Error::Invalid {
        origin: origin.to_owned(),
        field: field.to_owned(),
        problem,
    };
    let Value::Map(entries) = root else {
        return Err(Error::Syntax {
            origin: origin.to_owned(),
            message: format!(
                "a registration is a mapping of keys to values, not {}",
                root.type_name()
            ),
        });
    };
    let string = |field: &str| match root.get(field) {
        Some(Value::Str(s)) => Ok(s.clone()),
        None => Err(invalid(field, "required: a string".to_owned())),
        Some(other) => Err(invalid(
            field,
            format!("must be a string, not {}", other.type_name()),
        )),
    };
    let id = string("id")?;
    let as_token = string("as_token")?;
    let hs_token = string("hs_token")?;
    let sender_localpart = string("sender_localpart")?;
    let url = match root.get("url") {
        Some(Value::Str(url)) => Some(url.clone()),
        Some(Value::Null) => None,
        None => {
            return Err(invalid(
                "url",
                "required: a URL, or an explicit `null` for an appservice that receives nothing"
                    .to_owned(),
            ));
        }
        Some(other) => {
            return Err(invalid(
                "url",
                format!("must be a string or null, not {}", other.type_name()),
            ));
        }
    };
    // Synapse takes any value but a boolean as "rate limited" (its default).
    let rate_limited = match root.get("rate_limited") {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    };
    let namespaces = namespaces(root.get("namespaces"), &invalid)?;
    let protocols = match root.get("protocols") {
        Some(Value::Seq(items)) if !items.is_empty() => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Str(s) => Ok(s.clone()),
                    other => Err(invalid(
                        &format!("protocols[{i}]"),
                        format!("must be a string, not {}", other.type_name()),
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(Value::Seq(_)) => Some(Vec::new()),
        Some(other) if other.truthy() => {
            return Err(invalid(
                "protocols",
                format!("must be a list of strings, not {}", other.type_name()),
            ));
        }
        _ => None,
    };
    if let Some(whitelist) = root.get("ip_range_whitelist")
        && whitelist.truthy()
    {
        ip_ranges(whitelist).map_err(|problem| invalid("ip_range_whitelist", problem))?;
    }
    // Synapse tests these two for truth, the Python way: `"no"` in quotes is true.
    let receive_ephemeral = root.get("receive_ephemeral").map(Value::truthy);
    let push_ephemeral_unstable = root
        .get("de.sorunome.msc2409.push_ephemeral")
        .map(Value::truthy);
    let flag = |field: &str| match root.get(field) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(
            field,
            format!("must be true or false, not {}", other.type_name()),
        )),
    };
    let msc3202 = flag("org.matrix.msc3202")?;
    let msc4190 = flag("io.element.msc4190")?;
    scopes(root.get("io.element.msc4502.scopes"), &invalid)?;
    proxy(root, &invalid)?;
    if id.contains('|') {
        return Err(invalid("id", "must not contain `|`".to_owned()));
    }
    let other: BTreeMap<String, serde_json::Value> = entries
        .iter()
        .filter_map(|(key, value)| match key {
            Value::Str(key) if !TYPED.contains(&key.as_str()) => {
                Some((key.clone(), value.to_json()))
            }
            _ => None,
        })
        .collect();
    Ok(Registration {
        id,
        url,
        as_token,
        hs_token,
        sender_localpart,
        namespaces,
        rate_limited,
        protocols,
        receive_ephemeral,
        push_ephemeral_unstable,
        msc3202,
        msc4190,
        other,
    })
}

type Invalid<'a> = dyn Fn(&str, String) -> Error + 'a;

/// `namespaces` must be a mapping; each of `users`, `aliases` and `rooms` it has, a list of
/// `{exclusive: <bool>, regex: <str>}` (other keys ignored, as are other kinds).
fn namespaces(value: Option<&Value>, invalid: &Invalid) -> Result<Namespaces> {
    let value = match value {
        Some(value @ Value::Map(_)) => value,
        None => {
            return Err(invalid(
                "namespaces",
                "required: a mapping (it may be empty, `{}`)".to_owned(),
            ));
        }
        Some(other) => {
            return Err(invalid(
                "namespaces",
                format!("must be a mapping, not {}", other.type_name()),
            ));
        }
    };
    let mut namespaces = Namespaces::default();
    for kind in NamespaceKind::ALL {
        let Some(list) = value.get(kind.field()) else {
            continue;
        };
        let field = format!("namespaces.{}", kind.field());
        let Value::Seq(items) = list else {
            return Err(invalid(
                &field,
                format!("must be a list, not {}", list.type_name()),
            ));
        };
        let target = match kind {
            NamespaceKind::Users => &mut namespaces.users,
            NamespaceKind::Aliases => &mut namespaces.aliases,
            NamespaceKind::Rooms => &mut namespaces.rooms,
        };
        for (i, item) in items.iter().enumerate() {
            let field = format!("{field}[{i}]");
            if !matches!(item, Value::Map(_)) {
                return Err(invalid(
                    &field,
                    format!(
                        "must be a mapping with `regex` and `exclusive`, not {}",
                        item.type_name()
                    ),
                ));
            }
            let regex = match item.get("regex") {
                Some(Value::Str(regex)) => regex.clone(),
                None => return Err(invalid(&format!("{field}.regex"), "required".to_owned())),
                Some(other) => {
                    return Err(invalid(
                        &format!("{field}.regex"),
                        format!("must be a string, not {}", other.type_name()),
                    ));
                }
            };
            let exclusive = match item.get("exclusive") {
                Some(Value::Bool(b)) => *b,
                None => {
                    return Err(invalid(
                        &format!("{field}.exclusive"),
                        "required: true or false".to_owned(),
                    ));
                }
                Some(other) => {
                    return Err(invalid(
                        &format!("{field}.exclusive"),
                        format!("must be true or false, not {}", other.type_name()),
                    ));
                }
            };
            target.push(Namespace::new(exclusive, regex));
        }
    }
    Ok(namespaces)
}

/// MSC4502: a list of scopes Synapse knows.
fn scopes(value: Option<&Value>, invalid: &Invalid) -> Result<()> {
    const FIELD: &str = "io.element.msc4502.scopes";
    let Some(value) = value else {
        return Ok(());
    };
    let Value::Seq(items) = value else {
        return Err(invalid(
            FIELD,
            format!("must be a list of strings, not {}", value.type_name()),
        ));
    };
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Str(s) if SCOPES.contains(&s.as_str()) => {}
            Value::Str(s) => {
                return Err(invalid(
                    &format!("{FIELD}[{i}]"),
                    format!("`{s}` is not a scope Synapse knows ({})", SCOPES.join(", ")),
                ));
            }
            other => {
                return Err(invalid(
                    &format!("{FIELD}[{i}]"),
                    format!("must be a string, not {}", other.type_name()),
                ));
            }
        }
    }
    Ok(())
}

/// MSC4512: a proxy prefix and URL, both or neither, the prefix one Synapse allows.
fn proxy(root: &Value, invalid: &Invalid) -> Result<()> {
    const PREFIX: &str = "io.element.msc4512.proxy_prefix";
    const URL: &str = "io.element.msc4512.proxy_url";
    let text = |field: &str| match root.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(other) => Err(invalid(
            field,
            format!("must be a non-empty string, not {}", other.type_name()),
        )),
    };
    let (prefix, url) = (text(PREFIX)?, text(URL)?);
    match (prefix, url) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(invalid(URL, format!("required with `{PREFIX}`"))),
        (None, Some(_)) => Err(invalid(PREFIX, format!("required with `{URL}`"))),
        (Some(prefix), Some(url)) => {
            if url.trim_end_matches('/').is_empty() {
                return Err(invalid(URL, "must be a URL, not only slashes".to_owned()));
            }
            let allowed = PROXY_PREFIXES
                .iter()
                .any(|a| prefix == *a || prefix.starts_with(&format!("{a}/")));
            if !allowed {
                return Err(invalid(
                    PREFIX,
                    format!(
                        "`{prefix}` is not a prefix Synapse lets an appservice claim ({})",
                        PROXY_PREFIXES.join(", ")
                    ),
                ));
            }
            Ok(())
        }
    }
}

/// `ip_range_whitelist`, as netaddr's `IPSet` takes it: a list (or set, or a mapping's keys) of
/// addresses and networks (`10.0.0.0/8`, `::1`, `10.0.0.0/255.0.0.0`), or integers.
fn ip_ranges(value: &Value) -> Result<(), String> {
    let items: Vec<&Value> = match value {
        Value::Seq(items) | Value::Set(items) => items.iter().collect(),
        Value::Map(entries) => entries.iter().map(|(k, _)| k).collect(),
        Value::Str(_) => {
            return Err("must be a list of addresses or networks, not a single string".to_owned());
        }
        other => {
            return Err(format!(
                "must be a list of addresses or networks, not {}",
                other.type_name()
            ));
        }
    };
    for item in items {
        let ok = match item {
            Value::Bool(_) => true,
            Value::Int(Some(i)) => *i >= 0,
            Value::Str(s) => ip_network(s),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{} is not an IP address or network",
                item.to_json()
            ));
        }
    }
    Ok(())
}

fn ip_network(text: &str) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return false;
    };
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    match prefix {
        None => true,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u32>().is_ok_and(|p| p <= bits)
        }
        // An IPv4 netmask in place of a prefix length, as netaddr takes it.
        Some(p) => {
            addr.is_ipv4()
                && p.parse::<Ipv4Addr>().is_ok_and(|mask| {
                    let m = u32::from(mask);
                    m.leading_ones() + m.trailing_zeros() == 32
                })
        }
    }
}
