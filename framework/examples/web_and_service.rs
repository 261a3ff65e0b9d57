//! A plugin with a web route and a background service: `POST /hook` posts its body into a
//! room, and a heartbeat says every hour how long the bot has been up. Run it with
//! `EXAMPLE_ROOM='!room:localhost' EXAMPLE_SECRET=s3cret cargo run -p trestle --example
//! web_and_service`, then `curl -H 'Authorization: Bearer s3cret' -d hi
//! http://127.0.0.1:29310/hook` (see `README.md` here for the registration).

use std::{sync::Arc, time::Duration};

use subtle::ConstantTimeEq;
use trestle::{
    Appservice, Error, Router, Standalone,
    axum::{self, extract::State, http::HeaderMap, http::StatusCode, routing::post},
    ruma::OwnedRoomId,
};

#[derive(Clone)]
struct Hook {
    app: Appservice,
    room: OwnedRoomId,
    secret: Arc<str>,
}

async fn hook(State(hook): State<Hook>, headers: HeaderMap, body: String) -> StatusCode {
    // Unlike the Application Service API, a plugin's routes carry no homeserver token: each
    // checks its callers itself, in constant time so the secret cannot be guessed by timing.
    let given = headers.get("authorization").map(|v| v.as_bytes());
    let expected = format!("Bearer {}", hook.secret);
    if !given.is_some_and(|given| bool::from(given.ct_eq(expected.as_bytes()))) {
        return StatusCode::UNAUTHORIZED;
    }
    // `queue` returns once the message is in the durable outbox, which sends it even if the
    // homeserver is down right now: the caller gets 202 at once, never a timeout.
    match hook.app.bot().send_text(&hook.room, &body).queue().await {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn heartbeat(app: Appservice, room: OwnedRoomId) -> trestle::Result<()> {
    let mut hours = tokio::time::interval(Duration::from_secs(3600));
    hours.tick().await; // the first tick is at once
    for up in 1.. {
        tokio::select! {
            // Returning when told lets the appservice stop without cutting the task off. An
            // error (the `?` below) or an early return instead restarts it after a back-off.
            () = app.stopping() => break,
            _ = hours.tick() => app.bot().send_text(&room, &format!("up for {up} h")).await?,
        };
    }
    Ok(())
}

fn env(name: &str) -> trestle::Result<String> {
    std::env::var(name).map_err(|_| Error::Config(format!("set {name}")))
}

#[tokio::main]
async fn main() -> trestle::Result<()> {
    tracing_subscriber::fmt().init();
    let room: OwnedRoomId = env("EXAMPLE_ROOM")?.try_into()?;
    let secret: Arc<str> = env("EXAMPLE_SECRET")?.into();
    let hook_room = room.clone();
    let router = Router::new()
        // Built once the appservice exists, so the handlers can act through it; served next
        // to the Application Service API on the same listener.
        .web(move |app| {
            let state = Hook {
                app,
                room: hook_room.clone(),
                secret: secret.clone(),
            };
            axum::Router::new()
                .route("/hook", post(hook))
                .with_state(state)
        })
        .service("heartbeat", move |app| heartbeat(app, room.clone()));
    let standalone = Standalone::from_env("web_and_service", "webhook", "webhook_")?;
    standalone.run(router).await
}
