//! The configuration of the IRC bridge's tests of several `trestle run` processes.

use std::path::Path;

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
    let text = format!(
        "homeserver:\n  server_name: localhost\n  url: {homeserver}\n\
         listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{front}\n\
         data_dir: data\ndatabase: {database}\n\
         leases:\n  takeover_s: {TAKEOVER_S}\n\
         plugins:\n  echo: {{enabled: false}}\n  timeline: {{enabled: false}}\n\
         \x20 ping: {{enabled: false}}\n  moderation: {{enabled: false}}\n\
         \x20 notify: {{enabled: false}}\n  xmpp: {{enabled: false}}\n\
         \x20 irc:\n    enabled: true\n    settings:\n      delivery_status: false\n\
         \x20     networks:\n        - name: test\n          host: 127.0.0.1\n\
         \x20         port: {irc_port}\n          channels: [\"#chat\"]\n\
         \x20         auto_connect: false\n          flood_burst: 10\n          flood_rate: 10\n\
         \x20     provisioning_secret: {PROVISIONING_SECRET}\n      connection_wait: {CONNECTION_WAIT_S}\n"
    );
    std::fs::write(path, text).unwrap();
}
