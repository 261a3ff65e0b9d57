//! A bot with commands and shared state: `!add <n>` keeps a running total, `!note <key>
//! [text]` keeps or shows a note, `!help` lists both. Run it with `cargo run -p trestle
//! --example command_bot` (see `README.md` here for the registration and the variables).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use trestle::{
    Router, Standalone,
    router::{Command, CommandSpec, Reply, State},
};

/// What the handlers share. In memory, so a restart forgets it; a bot that must remember
/// keeps its data in the store (`app.store().pool()`) instead.
#[derive(Clone, Default)]
struct Memory {
    total: Arc<AtomicI64>,
    notes: Arc<Mutex<HashMap<String, String>>>,
}

async fn add(cmd: Command, State(memory): State<Memory>, reply: Reply) -> trestle::Result<()> {
    // Arguments arrive as text: the handler gives them their types, and answers a typo
    // rather than failing in silence.
    let answer = match cmd.args.parse::<i64>() {
        Ok(n) => format!(
            "total: {}",
            memory.total.fetch_add(n, Ordering::Relaxed).wrapping_add(n)
        ),
        Err(error) => format!("{:?} is not a whole number: {error}", cmd.args),
    };
    reply.text(&answer).await?;
    Ok(())
}

async fn note(cmd: Command, State(memory): State<Memory>, reply: Reply) -> trestle::Result<()> {
    // The guard must go before `.await`: held across it, the future would not be `Send`.
    let answer = {
        let mut notes = memory
            .notes
            .lock()
            .expect("nothing panics while holding the notes, so the lock is never poisoned");
        // `argv` splits at spaces but keeps a quoted "two words" together.
        match cmd.argv().as_slice() {
            [key] => notes.get(key).cloned().unwrap_or(format!("no note {key}")),
            [key, words @ ..] => {
                notes.insert(key.clone(), words.join(" "));
                format!("noted {key}")
            }
            [] => return Ok(()), // never: the usage requires a <key>
        }
    };
    reply.text(&answer).await?;
    Ok(())
}

/// The routes, apart from `main` so that a test drives them (`framework/tests/examples.rs`).
pub fn router() -> Router {
    // The specs feed `!help`; a command given fewer `<required>` arguments than its usage
    // names is answered with the usage line instead of running.
    let add_spec = CommandSpec::new("add")
        .usage("<n>")
        .about("Adds n to the total.");
    let note_spec = CommandSpec::new("note")
        .usage("<key> [text]")
        .about("Keeps or shows a note.");
    Router::new()
        .accept_invites(true)
        .help(true)
        .command(add_spec, add)
        .command(note_spec, note)
        // Provides every handler's `State<Memory>`: forgetting it is a compile error.
        .with_state(Memory::default())
}

#[tokio::main]
async fn main() -> trestle::Result<()> {
    tracing_subscriber::fmt().init();
    let standalone = Standalone::from_env("command_bot", "counter", "counter_")?;
    standalone.run(router()).await
}
