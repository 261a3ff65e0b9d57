//! Numeric replies: the three-digit commands servers answer with, named as in RFC 2812 and
//! <https://modern.ircdocs.horse/#numerics> (SASL's from <https://ircv3.net/specs/extensions/sasl-3.1>).

use std::fmt;

/// A numeric reply. The named ones are associated constants (`Numeric::RPL_WELCOME`), so a
/// `match` reads like the spec; any other three-digit code is kept as it came.
///
/// Held as its three ASCII digits rather than a number so that the command reads back as
/// text ([`Numeric::as_str`]) without a table or an allocation; [`Numeric::code`] gives the
/// number. The digits are private: every value is three ASCII digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Numeric([u8; 3]);

/// Declares the named numerics and the table [`Numeric::name`] reads, from one list, so that
/// a constant and its name cannot drift apart.
macro_rules! numerics {
    ($($(#[$doc:meta])* $name:ident = $digits:literal;)*) => {
        impl Numeric {
            $($(#[$doc])* pub const $name: Numeric = Numeric(*$digits);)*
        }
        const NAMES: &[(Numeric, &str)] = &[$((Numeric::$name, stringify!($name))),*];
    };
}

numerics! {
    /// 001: registration is complete; the first parameter is the nick the server gave us.
    RPL_WELCOME = b"001";
    /// 002: the server's name and version.
    RPL_YOURHOST = b"002";
    /// 003: when the server was started.
    RPL_CREATED = b"003";
    /// 004: the server's name, version and modes.
    RPL_MYINFO = b"004";
    /// 005: what the server supports (`PREFIX=(ov)@+`, `CHANTYPES=#`, …).
    RPL_ISUPPORT = b"005";
    /// 331: a channel has no topic.
    RPL_NOTOPIC = b"331";
    /// 332: a channel's topic, sent on join.
    RPL_TOPIC = b"332";
    /// 333: who set a channel's topic, and when.
    RPL_TOPICWHOTIME = b"333";
    /// 353: some of a channel's members, with their prefixes.
    RPL_NAMREPLY = b"353";
    /// 366: the end of a channel's `RPL_NAMREPLY` lines.
    RPL_ENDOFNAMES = b"366";
    /// 372: a line of the message of the day.
    RPL_MOTD = b"372";
    /// 375: the message of the day starts.
    RPL_MOTDSTART = b"375";
    /// 376: the message of the day ends.
    RPL_ENDOFMOTD = b"376";
    /// 401: no such nick or channel.
    ERR_NOSUCHNICK = b"401";
    /// 403: no such channel.
    ERR_NOSUCHCHANNEL = b"403";
    /// 404: a message could not be sent to a channel (moderated, banned, not joined).
    ERR_CANNOTSENDTOCHAN = b"404";
    /// 421: the server does not know a command.
    ERR_UNKNOWNCOMMAND = b"421";
    /// 422: there is no message of the day.
    ERR_NOMOTD = b"422";
    /// 431: a `NICK` without a nick.
    ERR_NONICKNAMEGIVEN = b"431";
    /// 432: a nick with characters the server refuses, or too long.
    ERR_ERRONEUSNICKNAME = b"432";
    /// 433: a nick someone else has.
    ERR_NICKNAMEINUSE = b"433";
    /// 436: a nick another server has (a collision).
    ERR_NICKCOLLISION = b"436";
    /// 437: a nick held back for now (after a split, or by services).
    ERR_UNAVAILRESOURCE = b"437";
    /// 441: the user to act on is not in the channel.
    ERR_USERNOTINCHANNEL = b"441";
    /// 442: we are not in the channel.
    ERR_NOTONCHANNEL = b"442";
    /// 451: a command before registration.
    ERR_NOTREGISTERED = b"451";
    /// 461: a command without enough parameters.
    ERR_NEEDMOREPARAMS = b"461";
    /// 464: a wrong server password.
    ERR_PASSWDMISMATCH = b"464";
    /// 471: a channel is full (`+l`).
    ERR_CHANNELISFULL = b"471";
    /// 473: a channel is invite-only (`+i`).
    ERR_INVITEONLYCHAN = b"473";
    /// 474: we are banned from a channel (`+b`).
    ERR_BANNEDFROMCHAN = b"474";
    /// 475: a channel's key is wrong (`+k`).
    ERR_BADCHANNELKEY = b"475";
    /// 482: we are not a channel operator there.
    ERR_CHANOPRIVSNEEDED = b"482";
    /// 900: logged in to an account.
    RPL_LOGGEDIN = b"900";
    /// 901: logged out of an account.
    RPL_LOGGEDOUT = b"901";
    /// 902: SASL refused because the account is locked.
    ERR_NICKLOCKED = b"902";
    /// 903: SASL succeeded.
    RPL_SASLSUCCESS = b"903";
    /// 904: SASL failed (wrong credentials).
    ERR_SASLFAIL = b"904";
    /// 905: the SASL message was too long.
    ERR_SASLTOOLONG = b"905";
    /// 906: SASL was aborted.
    ERR_SASLABORTED = b"906";
    /// 907: already logged in through SASL.
    ERR_SASLALREADY = b"907";
    /// 908: the SASL mechanisms the server offers.
    RPL_SASLMECHS = b"908";
}

impl Numeric {
    /// The numeric for a three-digit command word (`"433"`), or `None` for anything else.
    pub fn parse(word: &str) -> Option<Numeric> {
        let digits: [u8; 3] = word.as_bytes().try_into().ok()?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then_some(Numeric(digits))
    }

    /// The numeric with a code from 0 to 999.
    pub fn from_code(code: u16) -> Option<Numeric> {
        let digit = |n: u16| b'0' + (n % 10) as u8;
        (code < 1000).then(|| Numeric([digit(code / 100), digit(code / 10), digit(code)]))
    }

    /// The number (`433`).
    pub fn code(self) -> u16 {
        self.0
            .iter()
            .fold(0, |code, digit| code * 10 + u16::from(digit - b'0'))
    }

    /// The three digits as written on the wire (`"001"`).
    pub fn as_str(&self) -> &str {
        // Only digits are ever stored, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or("000")
    }

    /// The spec's name (`"ERR_NICKNAMEINUSE"`), for the numerics named here.
    pub fn name(self) -> Option<&'static str> {
        NAMES
            .iter()
            .find(|(n, _)| *n == self)
            .map(|(_, name)| *name)
    }
}

impl fmt::Debug for Numeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}({})", name, self.as_str()),
            None => write!(f, "Numeric({})", self.as_str()),
        }
    }
}

impl fmt::Display for Numeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_numerics_have_their_codes_and_names() {
        assert_eq!(Numeric::RPL_WELCOME.code(), 1);
        assert_eq!(Numeric::RPL_WELCOME.as_str(), "001");
        assert_eq!(Numeric::RPL_TOPIC.code(), 332);
        assert_eq!(Numeric::RPL_NAMREPLY.code(), 353);
        assert_eq!(Numeric::ERR_NICKNAMEINUSE.code(), 433);
        assert_eq!(Numeric::parse("433"), Some(Numeric::ERR_NICKNAMEINUSE));
        assert_eq!(Numeric::ERR_NICKNAMEINUSE.name(), Some("ERR_NICKNAMEINUSE"));
        assert_eq!(
            format!("{:?}", Numeric::RPL_ENDOFNAMES),
            "RPL_ENDOFNAMES(366)"
        );
        // No code is named twice.
        for (i, (numeric, name)) in NAMES.iter().enumerate() {
            for (other, other_name) in &NAMES[i + 1..] {
                assert_ne!(numeric, other, "{name} and {other_name}");
            }
        }
    }

    #[test]
    fn unknown_numerics_are_kept() {
        let odd = Numeric::parse("999").expect("three digits");
        assert_eq!((odd.code(), odd.as_str(), odd.name()), (999, "999", None));
        assert_eq!(format!("{odd:?}"), "Numeric(999)");
        assert_eq!(
            Numeric::from_code(7).map(|n| n.to_string()).as_deref(),
            Some("007")
        );
        assert_eq!(Numeric::from_code(1000), None);
    }

    #[test]
    fn only_three_digits_are_numerics() {
        for word in ["", "1", "01", "0001", "4a3", "PRIVMSG", "٣٣٣"] {
            assert_eq!(Numeric::parse(word), None, "{word:?}");
        }
    }
}
