//! The test network's settings, shared by the end-to-end tests.

use trestle_irc::NetworkSettings;

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
