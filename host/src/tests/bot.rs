//! Which user is a plugin's bot: the plugin's name beside a hidden sender in what the host
//! generates, the sender in older registrations, or the section's `bot`, checked against the
//! registration.

use trestle::Registration;

use super::{QUIET, start};
use crate::{Host, config::Config};

/// The bot and the sender of the host's one plugin.
fn bot_and_sender(host: &Host) -> (String, String) {
    let app = host.apps().next().unwrap().1;
    (
        app.bot_user_id().to_string(),
        app.sender_user_id().to_string(),
    )
}

fn write_registration(dir: &std::path::Path, registration: &Registration) {
    let registrations = dir.join("data").join("registrations");
    std::fs::create_dir_all(&registrations).unwrap();
    registration
        .write_file(registrations.join("quiet.yaml"))
        .unwrap();
}

#[tokio::test]
async fn a_new_registration_has_a_hidden_sender_and_the_plugin_names_the_bot() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "").await;
    let (bot, sender) = bot_and_sender(&host);
    assert_eq!(bot, "@quiet:x");
    assert!(sender.starts_with("@quiet-sender-"), "{sender}");
    let written = dir.path().join("data/registrations/quiet.yaml");
    let registration = Registration::from_file(written).unwrap();
    assert_eq!(format!("@{}:x", registration.sender_localpart), sender);
    // The next start reads the same shape back.
    let host = start(dir.path(), "").await;
    assert_eq!(bot_and_sender(&host), (bot, sender));
}

#[tokio::test]
async fn an_older_registration_keeps_its_sender_as_the_bot() {
    // What Trestle wrote before: bot and sender one user.
    let dir = tempfile::tempdir().unwrap();
    write_registration(
        dir.path(),
        &Registration::generate("quiet", None, "quiet", "quiet_", "x"),
    );
    let host = start(dir.path(), "").await;
    assert_eq!(
        bot_and_sender(&host),
        ("@quiet:x".to_owned(), "@quiet:x".to_owned())
    );
    // Written by hand, with another sender and the plugin's name outside the namespace.
    let dir = tempfile::tempdir().unwrap();
    write_registration(
        dir.path(),
        &Registration::generate("quiet", None, "quietbot", "quiet_", "x"),
    );
    let host = start(dir.path(), "").await;
    assert_eq!(
        bot_and_sender(&host),
        ("@quietbot:x".to_owned(), "@quietbot:x".to_owned())
    );
}

#[tokio::test]
async fn the_section_names_the_bot_which_the_registration_must_allow() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "plugins:\n  quiet:\n    bot: quiet_helper\n").await;
    let (bot, sender) = bot_and_sender(&host);
    assert_eq!(bot, "@quiet_helper:x");
    assert_ne!(sender, bot);

    let path = dir.path().join("trestle.yaml");
    let yaml = "homeserver:\n  server_name: x\n  url: http://127.0.0.1:9\n\
                plugins:\n  quiet:\n    bot: stranger\n";
    std::fs::write(&path, yaml).unwrap();
    let error = Host::new(&Config::load(&path).unwrap(), &[QUIET])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("trestle.yaml: line 6: field `plugins.quiet.bot`"),
        "{error}"
    );
    assert!(error.contains("@stranger:x"), "{error}");
    assert!(error.contains("exclusive user namespace"), "{error}");

    let yaml = yaml.replace("stranger", "\"no way\"");
    std::fs::write(&path, yaml).unwrap();
    let error = Host::new(&Config::load(&path).unwrap(), &[QUIET])
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("field `plugins.quiet.bot`"), "{error}");
}
