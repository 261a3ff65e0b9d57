//! Characters: escapes and classes, read as Python reads them, written so that each means the
//! same character (or set) to the `regex` crate.

use super::{Last, Problem, Translator};
use Problem::Invalid;

/// One entry of a character class.
enum ClassItem {
    Char(char),
    /// `\d`, `\w`, `\s` and their negations, written the same in both syntaxes.
    Escape(char),
}

impl Translator {
    /// After `\` outside a class.
    pub(super) fn escape(&mut self) -> Result<Last, Problem> {
        let Some(c) = self.next() else {
            return Err(Invalid("bad escape (end of pattern)".into()));
        };
        let text = match c {
            'A' | 'b' | 'B' => format!("\\{c}"),
            'Z' => "\\z".to_owned(),
            'd' | 'D' | 's' | 'S' | 'w' | 'W' => {
                self.out.push('\\');
                self.out.push(c);
                return Ok(Last::Item);
            }
            '1'..='9' => {
                // Three octal digits make a character; anything else is a group reference.
                let (d1, d2) = (self.peek(), self.chars.get(self.pos + 1).copied());
                let octal = |d: Option<char>| d.is_some_and(|d| d.is_digit(8));
                if c.is_digit(8) && octal(d1) && octal(d2) {
                    self.pos += 2;
                    let code = u32::from_str_radix(
                        &format!("{c}{}{}", d1.unwrap_or('0'), d2.unwrap_or('0')),
                        8,
                    )
                    .unwrap_or(u32::MAX);
                    push_literal(&mut self.out, octal_char(code)?);
                    return Ok(Last::Item);
                }
                let mut number = c.to_digit(10).unwrap_or(0) as usize;
                if let Some(d) = d1.and_then(|d| d.to_digit(10)) {
                    self.pos += 1;
                    number = number * 10 + d as usize;
                }
                self.backreference(number)?;
                return Ok(Last::Item);
            }
            c => {
                let c = self.char_escape(c, false)?;
                push_literal(&mut self.out, c);
                return Ok(Last::Item);
            }
        };
        self.out.push_str(&text);
        Ok(Last::Anchor)
    }

    /// The character an escape `\c` stands for, outside (`in_class` false) or inside a class;
    /// the class escapes `\d` and the like are handled by the callers.
    fn char_escape(&mut self, c: char, in_class: bool) -> Result<char, Problem> {
        let hex = |t: &mut Self, n: usize| -> Result<u32, Problem> {
            let digits: String = t.chars.iter().skip(t.pos).take(n).collect();
            if digits.len() != n || !digits.chars().all(|d| d.is_ascii_hexdigit()) {
                return Err(Invalid(format!("incomplete escape \\{c}{digits}")));
            }
            t.pos += n;
            Ok(u32::from_str_radix(&digits, 16).unwrap_or(u32::MAX))
        };
        let code = match c {
            'a' => 7,
            'b' if in_class => 8,
            'f' => 12,
            'n' => 10,
            'r' => 13,
            't' => 9,
            'v' => 11,
            'x' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => {
                let code = hex(self, 8)?;
                if code > 0x10FFFF {
                    return Err(Invalid(format!("bad escape \\U{code:08x}")));
                }
                code
            }
            'N' => {
                if !self.eat('{') {
                    return Err(Invalid("missing {".into()));
                }
                if self.name('}')?.is_empty() {
                    return Err(Invalid("missing character name".into()));
                }
                self.unsupported("named characters (`\\N{…}`)");
                return Ok(char::REPLACEMENT_CHARACTER);
            }
            '0'..='7' => {
                // Up to three octal digits; outside a class only `\0…` reaches here.
                let mut digits = c.to_string();
                while digits.len() < 3 && self.peek().is_some_and(|d| d.is_digit(8)) {
                    digits.push(self.next().unwrap_or('0'));
                }
                return octal_char(u32::from_str_radix(&digits, 8).unwrap_or(u32::MAX));
            }
            c if c.is_ascii_alphanumeric() => return Err(Invalid(format!("bad escape \\{c}"))),
            c => return Ok(c),
        };
        Ok(char::from_u32(code).unwrap_or_else(|| {
            self.unsupported(&format!(
                "the surrogate code point U+{code:04X}, which Rust strings cannot hold"
            ));
            char::REPLACEMENT_CHARACTER
        }))
    }

    /// After `[`.
    pub(super) fn class(&mut self) -> Result<(), Problem> {
        let negated = self.eat('^');
        let mut out = String::from(if negated { "[^" } else { "[" });
        let unterminated = || Invalid("unterminated character set".into());
        let mut first = true;
        loop {
            let c = self.next().ok_or_else(unterminated)?;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = self.class_item(c)?;
            if self.peek() == Some('-') {
                self.pos += 1;
                let c2 = self.next().ok_or_else(unterminated)?;
                if c2 == ']' {
                    push_class_item(&mut out, &lo);
                    push_literal(&mut out, '-');
                    break;
                }
                let hi = self.class_item(c2)?;
                let (ClassItem::Char(lo), ClassItem::Char(hi)) = (lo, hi) else {
                    return Err(Invalid("bad character range".into()));
                };
                if lo > hi {
                    return Err(Invalid(format!("bad character range {lo}-{hi}")));
                }
                push_literal(&mut out, lo);
                out.push('-');
                push_literal(&mut out, hi);
            } else {
                push_class_item(&mut out, &lo);
            }
        }
        out.push(']');
        self.out.push_str(&out);
        Ok(())
    }

    fn class_item(&mut self, c: char) -> Result<ClassItem, Problem> {
        if c != '\\' {
            return Ok(ClassItem::Char(c));
        }
        let Some(e) = self.next() else {
            return Err(Invalid("unterminated character set".into()));
        };
        match e {
            'd' | 'D' | 's' | 'S' | 'w' | 'W' => Ok(ClassItem::Escape(e)),
            '8' | '9' => Err(Invalid(format!("bad escape \\{e}"))),
            e => Ok(ClassItem::Char(self.char_escape(e, true)?)),
        }
    }
}

fn octal_char(code: u32) -> Result<char, Problem> {
    if code > 0o377 {
        return Err(Invalid(format!(
            "octal escape value \\{code:o} outside of range 0-0o377"
        )));
    }
    char::from_u32(code).ok_or_else(|| Invalid("bad octal escape".into()))
}

fn push_class_item(out: &mut String, item: &ClassItem) {
    match item {
        ClassItem::Char(c) => push_literal(out, *c),
        ClassItem::Escape(e) => {
            out.push('\\');
            out.push(*e);
        }
    }
}

/// A character that matches itself, in or out of a class: punctuation other than `_`, spaces
/// and controls are written `\x{…}`, which means the character in every context of the `regex`
/// syntax.
pub(super) fn push_literal(out: &mut String, c: char) {
    if c.is_alphanumeric() || c == '_' || (!c.is_ascii() && !c.is_control() && !c.is_whitespace()) {
        out.push(c);
    } else {
        out.push_str(&format!("\\x{{{:X}}}", c as u32));
    }
}
