//! End-to-end encryption keeps its state per process (its crypto store), so on a shared
//! PostgreSQL store a second live process with encryption on is refused at start, with a
//! message naming the setting; once the first stops, another may start.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use futures_util::future::BoxFuture;
use trestle::{
    Appservice, Registration, Result, Router, Store,
    encryption::{Decrypted, Encryption, Outgoing},
    ruma::{RoomId, UserId},
    transaction::{Incoming, TimelineEvent},
};

/// Encryption that does nothing: what matters here is that it is installed.
struct Installed;

impl Encryption for Installed {
    fn receive<'a>(&'a self, _: &'a Appservice, _: &'a Incoming) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn timeline<'a>(
        &'a self,
        _: &'a Appservice,
        _: &'a TimelineEvent,
    ) -> BoxFuture<'a, Option<Decrypted>> {
        Box::pin(async { None })
    }

    fn encrypt<'a>(
        &'a self,
        _: &'a Appservice,
        _: &'a UserId,
        _: &'a RoomId,
        _: &'a Outgoing,
    ) -> BoxFuture<'a, Result<Option<Outgoing>>> {
        Box::pin(async { Ok(None) })
    }
}

async fn build(reg: &Registration, database: &str, encrypted: bool) -> Result<Appservice> {
    let mut router = Router::new();
    if encrypted {
        router = router.encryption(Arc::new(Installed));
    }
    Appservice::builder(reg.clone(), "http://127.0.0.1:9", "localhost")
        .router(router)
        .store(Store::connect(database).await.unwrap())
        .build()
        .await
}

#[tokio::test]
async fn a_second_process_with_encryption_on_is_refused_while_the_first_lives() {
    let database = trestle_tests::postgres::fresh_database().await;
    let reg = Registration::generate("crypt", None, "cryptbot", "crypt_", "localhost");
    let first = build(&reg, &database, true).await.unwrap();
    let running = first.start();

    let error = build(&reg, &database, true).await.unwrap_err().to_string();
    assert!(
        error.contains("`encryption`") && error.contains("another process already runs it"),
        "{error}"
    );
    // Without encryption, more processes are welcome.
    build(&reg, &database, false).await.unwrap();

    // A clean stop removes the first from the list: another may take its place.
    first.stop(running).await;
    build(&reg, &database, true).await.unwrap();
}
