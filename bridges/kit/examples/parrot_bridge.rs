//! A toy bridge on the kit: in every chat of its "network" lives a parrot that repeats
//! backwards what Matrix users say. Joining `#parrot_<chat>:<server>` makes the portal; relay
//! mode carries messages to the parrot (it has no accounts), and it answers as `@parrot_polly`.
//! `cargo run -p trestle-bridge --example parrot_bridge`, set up as the framework's examples
//! are (`framework/examples/README.md`).

use trestle_bridge::{
    Bridge, BridgeConfig, BridgeError, ChatInfo, Login, LoginHandle, LoginRequest, MatrixMessage,
    MessageContent, Network, NetworkResult, NewLogin, Protocol, RemoteMessage,
};

struct Parrot;

impl Network for Parrot {
    type ChatId = String;
    type UserId = String;
    type MessageId = String;
    type LoginData = ();
    type Connection = ();

    fn protocol(&self) -> Protocol {
        Protocol::new("parrot", "Parrot")
    }
    // Aliases and ghosts map one to one onto chats and users, each the other's inverse.
    fn chat_alias(&self, chat: &String) -> String {
        format!("parrot_{chat}")
    }
    fn chat_for_alias(&self, localpart: &str) -> Option<String> {
        localpart.strip_prefix("parrot_").map(str::to_owned)
    }
    fn ghost_localpart(&self, user: &String) -> String {
        format!("parrot_{user}")
    }
    fn user_for_ghost(&self, localpart: &str) -> Option<String> {
        localpart.strip_prefix("parrot_").map(str::to_owned)
    }
    async fn chat_info(&self, chat: &String) -> NetworkResult<ChatInfo> {
        Ok(ChatInfo::named(format!("Parrot's {chat}")))
    }
    // A network without accounts refuses logins; relay mode speaks for everyone instead.
    async fn login(&self, _: LoginRequest) -> NetworkResult<NewLogin<Self>> {
        Err(BridgeError::Forbidden("parrots have no accounts".into()))
    }
    async fn connect(&self, _: &Login<Self>, _: LoginHandle<Self>) -> NetworkResult<()> {
        Err(BridgeError::Forbidden("parrots have no accounts".into()))
    }

    async fn send_message(
        &self,
        message: MatrixMessage<'_, Self>,
    ) -> NetworkResult<Option<String>> {
        let id = message.event_id.to_string();
        let answer = RemoteMessage::new(
            message.portal.chat.clone(),
            "polly".into(),
            format!("{id}/answer"),
            MessageContent::text(message.content.body.chars().rev().collect::<String>()),
        );
        // Answered once this returns: the kit is still bridging the message it answers.
        let bridge = message.bridge.clone();
        tokio::spawn(async move { bridge.remote_message(answer).await });
        Ok(Some(id))
    }
}

#[tokio::main]
async fn main() -> trestle::Result<()> {
    // The registration `Standalone` writes on the first run holds `@parrot_.*` and
    // `#parrot_.*`: the parrot's ghost and the portals' aliases.
    let bridge = Bridge::new(Parrot, BridgeConfig::default().relay(true));
    trestle::Standalone::from_env("parrot", "parrotbot", "parrot_")?
        .run(bridge.router())
        .await
}
