//! The IRC bridge: IRC channels as Matrix rooms, IRC users as Matrix ghosts, and Matrix users
//! on IRC through their own connections or relayed by the bot.

pub mod irc;
