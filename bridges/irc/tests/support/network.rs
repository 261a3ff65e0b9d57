//! The test network's settings, shared by the end-to-end tests.

use trestle_irc::{NetworkSettings, Settings};

/// The network `test` on the local ngircd at `port`, its bot in `#chat`, flood control loose
/// enough for tests.
pub fn test_network(port: u16) -> NetworkSettings {
    NetworkSettings {
        channels: vec!["#chat".into()],
        flood_burst: 10,
        flood_rate: 10.0,
        ..NetworkSettings::new("test", "127.0.0.1", port)
    }
}

/// The bridge on the test network without automatic connections: Matrix users are relayed
/// (relay is on by default) until they `login`.
pub fn settings_without_auto_connect(port: u16) -> Settings {
    Settings {
        networks: vec![NetworkSettings {
            auto_connect: false,
            ..test_network(port)
        }],
        ..Settings::default()
    }
}
