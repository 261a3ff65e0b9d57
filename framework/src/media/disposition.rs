//! The file name in a `Content-Disposition` header ([RFC 6266]).
//!
//! Synapse writes `filename=<token>` when the name is a plain token and `filename*=utf-8''<%-encoded>`
//! otherwise; other servers quote. All three are read; `filename*` wins when both are present, as
//! RFC 6266 §4.3 asks.
//!
//! [RFC 6266]: https://www.rfc-editor.org/rfc/rfc6266

/// The file name, if the header names one.
pub(crate) fn filename(header: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for (name, value) in params(header) {
        match name.to_ascii_lowercase().as_str() {
            "filename*" => extended = extended.or_else(|| ext_value(&value)),
            "filename" => plain = plain.or(Some(value)),
            _ => {}
        }
    }
    extended.or(plain).filter(|name| !name.is_empty())
}

/// The `name=value` parameters after the disposition type, with quoted strings unquoted.
fn params(header: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = header.chars().peekable();
    // Skip the disposition type (`inline`, `attachment`).
    for c in chars.by_ref() {
        if c == ';' {
            break;
        }
    }
    loop {
        let name: String = chars
            .by_ref()
            .take_while(|&c| c != '=')
            .collect::<String>()
            .trim()
            .trim_start_matches(';')
            .trim()
            .to_owned();
        if name.is_empty() {
            return out;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            // Drop anything between the closing quote and the next parameter.
            for c in chars.by_ref() {
                if c == ';' {
                    break;
                }
            }
        } else {
            value = chars
                .by_ref()
                .take_while(|&c| c != ';')
                .collect::<String>()
                .trim()
                .to_owned();
        }
        out.push((name, value));
    }
}

/// An RFC 8187 `ext-value`: `charset'language'%-encoded`.
fn ext_value(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '\'');
    let charset = parts.next()?.to_ascii_lowercase();
    let _language = parts.next()?;
    let bytes = percent_decode(parts.next()?)?;
    match charset.as_str() {
        "utf-8" => String::from_utf8(bytes).ok(),
        // Latin-1 maps each byte to the code point of the same number.
        "iso-8859-1" => Some(bytes.into_iter().map(char::from).collect()),
        _ => None,
    }
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::filename;

    #[test]
    fn synapse_token_form() {
        assert_eq!(
            filename("inline; filename=cat.png").as_deref(),
            Some("cat.png")
        );
    }

    #[test]
    fn synapse_extended_form() {
        assert_eq!(
            filename("attachment; filename*=utf-8''caf%C3%A9%20menu.pdf").as_deref(),
            Some("café menu.pdf")
        );
        assert_eq!(
            filename("attachment; filename*=ISO-8859-1'en'caf%E9").as_deref(),
            Some("café")
        );
    }

    #[test]
    fn quoted_and_both_forms() {
        assert_eq!(
            filename(r#"attachment; filename="a \"b\"; c.txt"; size=3"#).as_deref(),
            Some(r#"a "b"; c.txt"#)
        );
        assert_eq!(
            filename("attachment; filename=\"plain.txt\"; filename*=UTF-8''fancy%E2%9C%93.txt")
                .as_deref(),
            Some("fancy✓.txt")
        );
    }

    #[test]
    fn nothing_to_find() {
        assert_eq!(filename("inline"), None);
        assert_eq!(filename("attachment; size=3"), None);
        assert_eq!(filename("attachment; filename="), None);
        // A broken extended value falls back to the plain one.
        assert_eq!(
            filename("attachment; filename*=utf-8''%ZZ; filename=ok.bin").as_deref(),
            Some("ok.bin")
        );
    }
}
