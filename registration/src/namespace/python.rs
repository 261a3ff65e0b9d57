//! Namespace regexes are Python's: Synapse compiles them with `re.compile` and applies them with
//! `re.match`. This turns Python's syntax into the `regex` crate's with the same meaning, refuses
//! what Python refuses, and says so where Python accepts a feature the `regex` crate lacks
//! (look-around, backreferences, conditionals, atomic groups, possessive quantifiers, the `a`
//! flag, `\N{…}`, surrogates).
//!
//! Reference: <https://docs.python.org/3/library/re.html#regular-expression-syntax>

mod chars;

use Problem::{Invalid, Unsupported};
use chars::push_literal;

/// Why a pattern cannot be used.
#[derive(Debug, PartialEq)]
pub(crate) enum Problem {
    /// Python refuses it, so Synapse refuses the registration.
    Invalid(String),
    /// Python accepts it, but it needs a feature Trestle's regex engine does not have.
    Unsupported(String),
}

/// The pattern in the `regex` crate's syntax, unanchored.
pub(crate) fn translate(pattern: &str) -> Result<String, Problem> {
    let mut t = Translator {
        chars: pattern.chars().collect(),
        pos: 0,
        out: String::new(),
        groups: Vec::new(),
        captures: 0,
        closed: Vec::new(),
        names: Vec::new(),
        flags: Flags::default(),
        last: Last::Start,
        at_start: true,
        unsupported: None,
    };
    t.run()?;
    match t.unsupported {
        Some(why) => Err(Unsupported(why)),
        None => Ok(t.out),
    }
}

/// What the previous element of the current branch was, which decides whether a quantifier
/// may follow.
#[derive(Clone, Copy, PartialEq)]
enum Last {
    /// Nothing yet in this branch.
    Start,
    /// `^`, `$`, `\A`, `\Z`, `\b`, `\B`: Python has "nothing to repeat" there.
    Anchor,
    Item,
    /// A quantifier: another one is a "multiple repeat".
    Repeated,
}

/// The flags the translation itself applies.
#[derive(Clone, Copy, Default)]
struct Flags {
    /// `x`: whitespace and `#` comments are not part of the pattern.
    verbose: bool,
    /// `m`: `$` matches before every newline.
    multiline: bool,
}

struct Translator {
    chars: Vec<char>,
    pos: usize,
    out: String,
    /// The open groups, innermost last.
    groups: Vec<Group>,
    /// Capturing groups opened so far, and which of them are closed.
    captures: usize,
    closed: Vec<usize>,
    names: Vec<(String, usize)>,
    flags: Flags,
    last: Last,
    /// Still at the very start of the pattern, where Python allows global flags.
    at_start: bool,
    /// The first feature met that the `regex` crate lacks. Reading goes on, so that a pattern
    /// Python refuses is called invalid, whatever it uses.
    unsupported: Option<String>,
}

struct Group {
    /// The flags outside the group, restored when it closes.
    outer: Flags,
    /// Its number, if it captures.
    capture: Option<usize>,
    /// For a conditional group, how many `|` it has had (Python allows one).
    conditional: Option<usize>,
}

impl Translator {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A name up to `end`, which is consumed.
    fn name(&mut self, end: char) -> Result<String, Problem> {
        let mut name = String::new();
        loop {
            match self.next() {
                Some(c) if c == end => return Ok(name),
                Some(c) => name.push(c),
                None => return Err(Invalid(format!("missing {end}, unterminated name"))),
            }
        }
    }

    fn unsupported(&mut self, why: &str) {
        self.unsupported
            .get_or_insert_with(|| format!("it uses {why}"));
    }

    fn item(&mut self, last: Last) {
        self.last = last;
        self.at_start = false;
    }

    fn run(&mut self) -> Result<(), Problem> {
        while let Some(c) = self.next() {
            if self.flags.verbose && matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c') {
                continue;
            }
            if self.flags.verbose && c == '#' {
                self.skip_comment('\n', false)?;
                continue;
            }
            match c {
                '|' => {
                    if let Some(bars) = self.groups.last_mut().and_then(|g| g.conditional.as_mut())
                    {
                        *bars += 1;
                        if *bars > 1 {
                            return Err(Invalid(
                                "conditional backref with more than two branches".into(),
                            ));
                        }
                    }
                    self.out.push('|');
                    self.item(Last::Start);
                }
                '(' => self.group()?,
                ')' => {
                    let Some(group) = self.groups.pop() else {
                        return Err(Invalid("unbalanced parenthesis".into()));
                    };
                    self.flags = group.outer;
                    self.closed.extend(group.capture);
                    self.out.push(')');
                    self.item(Last::Item);
                }
                '[' => {
                    self.class()?;
                    self.item(Last::Item);
                }
                '\\' => {
                    let last = self.escape()?;
                    self.item(last);
                }
                '^' => {
                    self.out.push('^');
                    self.item(Last::Anchor);
                }
                // Python's `$` also matches before a newline that ends the string. Ending a
                // branch, it can take that newline; before more pattern, only the very end is
                // read (the two differ only on a string that ends with a newline).
                '$' if !self.flags.multiline => {
                    let ends_branch = self.rest_of_branch_is_empty();
                    self.out
                        .push_str(if ends_branch { "(?:\\n?\\z)" } else { "\\z" });
                    self.item(Last::Anchor);
                }
                '$' => {
                    self.out.push('$');
                    self.item(Last::Anchor);
                }
                '.' => {
                    self.out.push('.');
                    self.item(Last::Item);
                }
                '*' | '+' | '?' => self.repeat(c.to_string())?,
                '{' => match self.braces()? {
                    Some(quantifier) => self.repeat(quantifier)?,
                    None => {
                        push_literal(&mut self.out, '{');
                        self.item(Last::Item);
                    }
                },
                c => {
                    push_literal(&mut self.out, c);
                    self.item(Last::Item);
                }
            }
        }
        if !self.groups.is_empty() {
            return Err(Invalid("missing ), unterminated subpattern".into()));
        }
        Ok(())
    }

    /// Skips a comment up to `end`, reading an escape as one token as Python does: `\)` does
    /// not end `(?#…)`, and a `\` at the very end is an error even there.
    fn skip_comment(&mut self, end: char, required: bool) -> Result<(), Problem> {
        while let Some(c) = self.next() {
            if c == end {
                return Ok(());
            }
            if c == '\\' && self.next().is_none() {
                return Err(Invalid("bad escape (end of pattern)".into()));
            }
        }
        if required {
            return Err(Invalid("missing ), unterminated comment".into()));
        }
        Ok(())
    }

    /// Whether only the end of the pattern, a `|` or a `)` follows (comments and, in verbose
    /// mode, spaces aside).
    fn rest_of_branch_is_empty(&self) -> bool {
        let mut rest = self.chars[self.pos..].iter();
        while let Some(c) = rest.next() {
            match c {
                '|' | ')' => return true,
                ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' if self.flags.verbose => {}
                '#' if self.flags.verbose => while rest.next().is_some_and(|c| *c != '\n') {},
                _ => return false,
            }
        }
        true
    }

    fn repeat(&mut self, quantifier: String) -> Result<(), Problem> {
        match self.last {
            Last::Start | Last::Anchor => return Err(Invalid("nothing to repeat".into())),
            Last::Repeated => return Err(Invalid("multiple repeat".into())),
            Last::Item => {}
        }
        self.out.push_str(&quantifier);
        if self.eat('?') {
            self.out.push('?');
        } else if self.eat('+') {
            self.unsupported("possessive quantifiers (`*+`, `++`, `?+`, `{m,n}+`)");
        }
        self.item(Last::Repeated);
        Ok(())
    }

    /// After `{`: a quantifier `{m}`, `{m,}`, `{,n}`, `{m,n}` (returned in the `regex` crate's
    /// form), or `None` when Python reads the `{` as a literal.
    fn braces(&mut self) -> Result<Option<String>, Problem> {
        let start = self.pos;
        let digits = |t: &mut Self| {
            let mut s = String::new();
            while let Some(c) = t.peek().filter(char::is_ascii_digit) {
                s.push(c);
                t.pos += 1;
            }
            s
        };
        if self.peek() == Some('}') {
            return Ok(None);
        }
        let lo = digits(self);
        let hi = if self.eat(',') {
            Some(digits(self))
        } else {
            None
        };
        if !self.eat('}') {
            self.pos = start;
            return Ok(None);
        }
        let number = |s: &str| -> Result<Option<u64>, Problem> {
            if s.is_empty() {
                return Ok(None);
            }
            match s.parse::<u64>() {
                Ok(n) if n < 4_294_967_295 => Ok(Some(n)),
                _ => Err(Invalid("the repetition number is too large".into())),
            }
        };
        let min = number(&lo)?.unwrap_or(0);
        Ok(Some(match hi {
            None => format!("{{{min}}}"),
            Some(hi) => match number(&hi)? {
                None => format!("{{{min},}}"),
                Some(max) if max < min => {
                    return Err(Invalid("min repeat greater than max repeat".into()));
                }
                Some(max) => format!("{{{min},{max}}}"),
            },
        }))
    }

    /// After `(`.
    fn group(&mut self) -> Result<(), Problem> {
        if !self.eat('?') {
            self.captures += 1;
            return self.open("(?:", self.flags, Some(self.captures));
        }
        let plain = |t: &mut Self| t.open("(?:", t.flags, None);
        let Some(c) = self.next() else {
            return Err(Invalid("unexpected end of pattern".into()));
        };
        match c {
            ':' => plain(self),
            'P' => match self.next() {
                Some('<') => {
                    let name = self.name('>')?;
                    let mut chars = name.chars();
                    let identifier = chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
                        && chars.all(|c| c == '_' || c.is_alphanumeric());
                    if !identifier {
                        return Err(Invalid(format!("bad character in group name '{name}'")));
                    }
                    if self.names.iter().any(|(n, _)| *n == name) {
                        return Err(Invalid(format!("redefinition of group name '{name}'")));
                    }
                    self.captures += 1;
                    self.names.push((name, self.captures));
                    // Names do not change what matches; the `regex` crate's rules for them
                    // are narrower, so the group is written without one.
                    self.open("(?:", self.flags, Some(self.captures))
                }
                Some('=') => {
                    let mut name = String::new();
                    while let Some(c) = self.next().filter(|c| *c != ')') {
                        name.push(c);
                    }
                    let Some(&(_, number)) = self.names.iter().find(|(n, _)| *n == name) else {
                        return Err(Invalid(format!("unknown group name '{name}'")));
                    };
                    self.backreference(number)?;
                    self.item(Last::Item);
                    Ok(())
                }
                _ => Err(Invalid("unknown extension ?P".into())),
            },
            '=' | '!' => {
                self.unsupported("look-ahead assertions (`(?=…)`, `(?!…)`)");
                plain(self)
            }
            '<' if matches!(self.peek(), Some('=' | '!')) => {
                self.pos += 1;
                self.unsupported("look-behind assertions (`(?<=…)`, `(?<!…)`)");
                plain(self)
            }
            '#' => self.skip_comment(')', true),
            '(' => self.conditional(),
            '>' => {
                self.unsupported("atomic groups (`(?>…)`)");
                plain(self)
            }
            'a' | 'i' | 'L' | 'm' | 's' | 'u' | 'x' | '-' => {
                self.pos -= 1;
                self.flags()
            }
            c => Err(Invalid(format!("unknown extension ?{c}"))),
        }
    }

    /// After `(?(`: a group that matches one branch or the other as group `id` matched.
    fn conditional(&mut self) -> Result<(), Problem> {
        let id = self.name(')')?;
        let known = match id.parse::<usize>() {
            Ok(0) => return Err(Invalid("bad group number".into())),
            Ok(n) if id.bytes().all(|b| b.is_ascii_digit()) => n <= self.captures,
            _ => self.names.iter().any(|(n, _)| *n == id),
        };
        if !known {
            return Err(Invalid(format!("invalid group reference {id}")));
        }
        self.unsupported("conditional groups (`(?(1)…|…)`)");
        self.open("(?:", self.flags, None)?;
        if let Some(group) = self.groups.last_mut() {
            group.conditional = Some(0);
        }
        Ok(())
    }

    fn open(&mut self, text: &str, flags: Flags, capture: Option<usize>) -> Result<(), Problem> {
        self.groups.push(Group {
            outer: self.flags,
            capture,
            conditional: None,
        });
        self.flags = flags;
        self.out.push_str(text);
        self.item(Last::Start);
        Ok(())
    }

    /// `(?flags)` for the whole pattern, or `(?flags-flags:…)` for a group.
    fn flags(&mut self) -> Result<(), Problem> {
        let read = |t: &mut Self, allowed: &str| {
            let mut s = String::new();
            while let Some(c) = t.peek().filter(|c| allowed.contains(*c)) {
                s.push(c);
                t.pos += 1;
            }
            s
        };
        let on = read(self, "aiLmsux");
        let off = if self.eat('-') {
            let off = read(self, "aiLmsux");
            if off.is_empty() {
                return Err(Invalid("missing flag".into()));
            }
            Some(off)
        } else {
            None
        };
        let all = format!("{on}{}", off.as_deref().unwrap_or_default());
        if all.contains('L') {
            return Err(Invalid(
                "bad inline flags: cannot use 'L' flag with a str pattern".into(),
            ));
        }
        if off.as_deref().is_some_and(|o| o.contains(['a', 'u'])) {
            return Err(Invalid(
                "bad inline flags: cannot turn off flags 'a', 'u' and 'L'".into(),
            ));
        }
        if on.contains('a') && on.contains('u') {
            return Err(Invalid(
                "bad inline flags: flags 'a', 'u' and 'L' are incompatible".into(),
            ));
        }
        if let Some(off) = &off
            && on.chars().any(|c| off.contains(c))
        {
            return Err(Invalid("bad inline flags: flag turned on and off".into()));
        }
        let global = match self.next() {
            Some(')') if off.is_none() => true,
            Some(':') => false,
            None => return Err(Invalid("missing -, : or )".into())),
            Some(_) => return Err(Invalid("unknown flag".into())),
        };
        if on.contains('a') {
            self.unsupported("the ASCII-only flag `a`");
        }
        let keep = |s: &str| s.chars().filter(|c| "ims".contains(*c)).collect::<String>();
        if global {
            if !self.at_start || !self.groups.is_empty() {
                return Err(Invalid(
                    "global flags not at the start of the expression".into(),
                ));
            }
            self.flags.verbose |= on.contains('x');
            self.flags.multiline |= on.contains('m');
            let flags = keep(&on);
            if !flags.is_empty() {
                self.out.push_str(&format!("(?{flags})"));
            }
            // Flags are not an element: a quantifier after them still has nothing to repeat.
            return Ok(());
        }
        let off = off.unwrap_or_default();
        let inner = Flags {
            verbose: (self.flags.verbose || on.contains('x')) && !off.contains('x'),
            multiline: (self.flags.multiline || on.contains('m')) && !off.contains('m'),
        };
        let (on, off) = (keep(&on), keep(&off));
        let text = match (on.is_empty(), off.is_empty()) {
            (true, true) => "(?:".to_owned(),
            (_, true) => format!("(?{on}:"),
            _ => format!("(?{on}-{off}:"),
        };
        self.open(&text, inner, None)
    }

    /// A reference to group `number`: Python requires a closed group; the `regex` crate has no
    /// backreferences at all.
    fn backreference(&mut self, number: usize) -> Result<(), Problem> {
        if number > self.captures {
            return Err(Invalid(format!("invalid group reference {number}")));
        }
        if !self.closed.contains(&number) {
            return Err(Invalid("cannot refer to an open group".into()));
        }
        self.unsupported("backreferences (`\\1`, `(?P=name)`)");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
