//! Matrix users' own XMPP accounts: a user who logs in with one (`login <jid> <password>` in
//! their management room) has a client connection kept for it by the bridge, with message
//! carbons on ([XEP-0280](https://xmpp.org/extensions/xep-0280.html)), so that what they send
//! from their own XMPP clients reaches the bridge and shows in Matrix as their own account
//! (the kit's double puppeting). The connection is the login's; the component's JID of the
//! user still sends what they say in Matrix.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_xmpp::{
    Client, Event, Stanza,
    connect::DnsConfig,
    jid::{BareJid, Jid},
    parsers::{carbons, iq::Iq, message::Message},
    xmlstream::Timeouts,
};
use trestle::ruma::OwnedUserId;
use trestle_bridge::{BridgeError, ConnectionState, LoginHandle, NetworkResult};

use crate::hub::{Account, Hub, OwnMessage};

/// The id of a login with the user's own XMPP account (beside [`crate::users::LOGIN_ID`], their
/// JID on the component).
pub const ACCOUNT_LOGIN_ID: &str = "account";

/// How long logging in waits for the server to take the account's password: a wrong one is
/// not told apart from a server that does not answer (the client library retries both).
const LOGIN_WAIT: Duration = Duration::from_secs(15);

/// The request that turns carbons on for the connection.
fn enable_carbons() -> Iq {
    Iq::from_set("carbons", carbons::Enable)
}

/// The message inside a sent carbon, if `stanza` is one from the account itself (anyone else
/// could send a stanza that looks like one: XEP-0280 §11).
fn sent_carbon(stanza: Stanza, account: &BareJid) -> Option<Message> {
    let Stanza::Message(message) = stanza else {
        return None;
    };
    if message.from.as_ref() != Some(&Jid::from(account.clone())) {
        return None;
    }
    let sent = message
        .payloads
        .into_iter()
        .find(|p| p.is("sent", "urn:xmpp:carbons:2"))?;
    carbons::Sent::try_from(sent)
        .ok()
        .map(|sent| sent.forwarded.message)
}

/// Connects the account `jid` of `user` with `password` and turns carbons on; what the user
/// sends from elsewhere is handed to the hub ([`Hub::own_messages`]). Refused when the bridge
/// has no client address, or the server does not log the account in within 15 seconds.
pub async fn connect(
    hub: &Hub,
    handle: LoginHandle<Hub>,
    user: OwnedUserId,
    jid: BareJid,
    password: &str,
) -> NetworkResult<Account> {
    let Some(address) = hub.cfg.settings.client_server.clone() else {
        return Err(BridgeError::Forbidden(
            "this bridge takes no logins with XMPP accounts (it has no `client_server`)".into(),
        ));
    };
    let mut client = Client::new_plaintext(
        jid.clone(),
        password.to_owned(),
        DnsConfig::addr(&address),
        Timeouts::default(),
    );
    let online = tokio::time::timeout(LOGIN_WAIT, async {
        while let Some(event) = client.next().await {
            if let Event::Online { .. } = event {
                return true;
            }
        }
        false
    })
    .await;
    if online != Ok(true) {
        return Err(BridgeError::BadRequest(format!(
            "{jid} could not log in at {address} within {} s: a wrong password, or the server \
             does not answer",
            LOGIN_WAIT.as_secs()
        )));
    }
    client
        .send_stanza(enable_carbons().into())
        .await
        .map_err(|e| BridgeError::Retriable(format!("{jid}: {e}")))?;
    let own = hub.own_messages();
    let account = jid.clone();
    let task = tokio::spawn(async move {
        // Sent carbons go on; the library reconnects by itself, and each new stream needs
        // carbons turned on again.
        while let Some(event) = client.next().await {
            match event {
                Event::Online { .. } => {
                    if let Err(error) = client.send_stanza(enable_carbons().into()).await {
                        tracing::warn!(%account, %error, "carbons could not be turned on again");
                    }
                    if let Err(error) = handle.set_state(ConnectionState::Connected).await {
                        tracing::warn!(%account, %error, "could not report an account connected");
                    }
                }
                Event::Disconnected(error) => {
                    let state = ConnectionState::TransientDisconnect(error.to_string());
                    if let Err(error) = handle.set_state(state).await {
                        tracing::warn!(%account, %error, "could not report an account lost");
                    }
                }
                Event::Stanza(stanza) => {
                    if let Some(message) = sent_carbon(stanza, &account) {
                        let own_message = OwnMessage {
                            user: user.clone(),
                            account: account.clone(),
                            message,
                        };
                        if own.send(own_message).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(Account::new(jid, task))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use tokio_xmpp::minidom::Element;

    use super::*;

    fn carbon(from: &str) -> Stanza {
        let xml = format!(
            "<message xmlns='jabber:client' from='{from}' to='bob@example.org/bridge' type='chat'>\
             <sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client' from='bob@example.org/phone' \
             to='alice@example.org' type='chat' id='m1'><body>hi</body></message>\
             </forwarded></sent></message>"
        );
        let element = Element::from_str(&xml).unwrap();
        Stanza::Message(Message::try_from(element).unwrap())
    }

    #[test]
    fn sent_carbons_count_only_from_the_account_itself() {
        let bob = BareJid::new("bob@example.org").unwrap();
        let message = sent_carbon(carbon("bob@example.org"), &bob).unwrap();
        assert_eq!(message.id.map(|id| id.0).as_deref(), Some("m1"));
        assert_eq!(
            message.to.map(|to| to.to_string()).as_deref(),
            Some("alice@example.org")
        );
        assert!(sent_carbon(carbon("mallory@example.org"), &bob).is_none());
    }
}
