//! The configuration of the IRC bridge's tests of several `trestle run` processes.

use std::path::Path;

use super::processes::write_bridge_config;

/// `leases.takeover_s`: how soon a process that died is taken over.
pub const TAKEOVER_S: u64 = 4;
/// `connection_wait`: how long a provisioning login waits for the holder (and a user's
/// message for their connection).
pub const CONNECTION_WAIT_S: u64 = 5;
/// The provisioning API's secret.
pub const PROVISIONING_SECRET: &str = "provisioning-secret";

/// A configuration with the IRC bridge alone on `database`, listening on `port`, reached by
/// the homeserver through the balancer on `front`.
pub fn write_config(
    path: &Path,
    homeserver: &str,
    port: u16,
    front: u16,
    database: &str,
    irc_port: u16,
) {
    let settings = format!(
        "      delivery_status: false\n      networks:\n        - name: test\n\
         \x20         host: 127.0.0.1\n          port: {irc_port}\n          channels: [\"#chat\"]\n\
         \x20         auto_connect: false\n          flood_burst: 10\n          flood_rate: 10\n\
         \x20     provisioning_secret: {PROVISIONING_SECRET}\n      connection_wait: {CONNECTION_WAIT_S}\n"
    );
    write_bridge_config(
        path, homeserver, port, front, database, TAKEOVER_S, "irc", &settings,
    );
}
