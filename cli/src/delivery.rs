//! What `trestle check` says about how an encrypted plugin receives to-device events and
//! device lists: the choice its last start made (see `trestle_crypto::Delivery`). The check
//! cannot probe itself: the probe's event comes in a transaction, which a running `trestle`
//! takes, and which only a started appservice hands to encryption.

use std::path::Path;

use trestle_crypto::{Delivery, recorded_delivery};

/// The check's line for `plugin`, whose crypto state is in `dir`, at `now` (seconds since the
/// Unix epoch).
pub(crate) fn line(plugin: &str, dir: &Path, now: u64) -> String {
    let Some(found) = recorded_delivery(dir) else {
        return format!(
            "note  {plugin}: how end-to-end encryption receives to-device events is found out \
             when `trestle run` starts"
        );
    };
    let when = ago(now.saturating_sub(found.at));
    match (found.delivery, found.bot_syncs) {
        (Delivery::Push, _) => format!(
            "ok    {plugin}: the homeserver pushes to-device events and device lists to the \
             appservice (MSC2409, MSC3202; found at its start {when})"
        ),
        (Delivery::Sync, Some(false)) => format!(
            "FAIL  {plugin}: the homeserver neither pushes to-device events to the appservice \
             nor lets its bot /sync, the registration's sender_localpart (found at its start \
             {when}): the bot cannot decrypt. Give the bot a user of its own: set the \
             registration's sender_localpart to a new, unused localpart (the bot stays in \
             namespaces.users), reload it into the homeserver and restart trestle; or turn on \
             Synapse's experimental_features msc2409_to_device_messages_enabled and \
             msc3202_transaction_extensions"
        ),
        (Delivery::Sync, _) => format!(
            "ok    {plugin}: the homeserver does not push to-device events and device lists, so \
             each open device fetches them with /sync (found at its start {when}; Synapse's \
             experimental_features msc2409_to_device_messages_enabled and \
             msc3202_transaction_extensions would push them)"
        ),
    }
}

fn ago(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..7200 => format!("{} min ago", seconds / 60),
        _ => format!("{} h ago", seconds / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_what_the_last_start_chose() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        assert!(line("echo", dir, 0).starts_with("note  echo: how end-to-end encryption"));
        std::fs::write(
            dir.join("delivery.json"),
            r#"{"delivery":"sync","at":1000}"#,
        )
        .unwrap();
        let text = line("echo", dir, 1090);
        assert!(
            text.starts_with("ok    echo: the homeserver does not push"),
            "{text}"
        );
        assert!(text.contains("found at its start 1 min ago"), "{text}");
        std::fs::write(
            dir.join("delivery.json"),
            r#"{"delivery":"push","at":1000}"#,
        )
        .unwrap();
        let text = line("echo", dir, 1010);
        assert!(
            text.starts_with("ok    echo: the homeserver pushes"),
            "{text}"
        );
        // A bot that is the registration's sender, refused `/sync`: what to change.
        std::fs::write(
            dir.join("delivery.json"),
            r#"{"delivery":"sync","at":1000,"bot_syncs":false}"#,
        )
        .unwrap();
        let text = line("echo", dir, 1010);
        assert!(
            text.starts_with("FAIL  echo: the homeserver neither"),
            "{text}"
        );
        assert!(
            text.contains("set the registration's sender_localpart to a new"),
            "{text}"
        );
    }
}
