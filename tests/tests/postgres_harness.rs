//! The PostgreSQL harness itself: every `fresh_database()` is a new, empty, working database of
//! its own on the test process's throwaway server.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use trestle_tests::postgres::fresh_database;

/// Every database URL handed out in this process, to check that none repeats.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Gets a fresh database, checks it is new and empty, and makes a `notes` table in it holding one
/// row, `body`. Returns the URL.
async fn database_with_note(body: &str) -> String {
    let url = fresh_database().await;
    {
        let mut seen = SEEN.lock().unwrap();
        assert!(!seen.contains(&url), "{url} was handed out twice");
        seen.push(url.clone());
    }

    let mut conn = PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(
        url.ends_with(&format!("/{db}")),
        "{url} is connected to {db}"
    );
    assert_eq!(table_count(&mut conn).await, 0, "{url} is not empty");

    sqlx::query("CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes (body) VALUES ($1)")
        .bind(body)
        .execute(&mut conn)
        .await
        .unwrap();
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(bodies, [body]);
    conn.close().await.unwrap();
    url
}

async fn table_count(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_fresh_database_holds_what_is_written() {
    database_with_note("first").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_databases_are_distinct() {
    let one = database_with_note("one").await;
    let two = database_with_note("two").await;
    assert_ne!(one, two);

    // The first database still holds its own row only.
    let mut conn = PgConnection::connect(&one).await.unwrap();
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(bodies, ["one"]);
}

/// The server gets its parent-death signal when the *thread* that spawned it ends, so it must not
/// be spawned by whichever (short-lived) thread asks first. Run alone, this test makes a thread
/// with its own runtime start the server, ends both, and uses the server afterwards.
#[test]
fn the_server_outlives_the_thread_that_started_it() {
    let url = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(database_with_note("early"))
    })
    .join()
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut conn = PgConnection::connect(&url).await.unwrap_or_else(|e| {
                panic!("the server is gone once its starter thread ended: {e}")
            });
            let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
                .fetch_all(&mut conn)
                .await
                .unwrap();
            assert_eq!(bodies, ["early"]);
            database_with_note("late").await;
        });
}
