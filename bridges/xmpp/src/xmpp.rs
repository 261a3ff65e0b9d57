//! XMPP alone, knowing nothing of Matrix: the component's connection (XEP-0114) and the
//! stanzas the bridge sends and reads.

pub mod component;
pub mod header;
pub mod stanzas;
