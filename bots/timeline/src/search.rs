//! Search over indexed posts, behind one seam: [`posts`] matches with SQLite's full-text index
//! (FTS5, which the bundled SQLite has) when the store is SQLite, and with a case-insensitive
//! `LIKE` over the text on PostgreSQL. Everything else — what counts as a post, the order, the
//! cursor — is the same query as the feeds'.

use sqlx::AnyPool;
use trestle::{Result, store::Backend};

use crate::query::{self, Page};

/// The longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// SQLite: a full-text table beside the posts, kept in step by triggers, so every way a post
/// is written, edited or deleted (the index, a reindex, a redaction) updates it too. The
/// event id rides along unindexed; `#` is a word character, so a hashtag is one token and
/// `#rust` finds the tag, not every post saying "rust" (while "rust" finds both).
pub(crate) const SQLITE_SCHEMA: &str = "
CREATE VIRTUAL TABLE timeline_search USING fts5(
    event_id UNINDEXED,
    body,
    tokenize = \"unicode61 remove_diacritics 2 tokenchars '#'\"
);
CREATE TRIGGER timeline_search_insert AFTER INSERT ON timeline_posts BEGIN
    INSERT INTO timeline_search (event_id, body) VALUES (new.event_id, new.body);
END;
CREATE TRIGGER timeline_search_update AFTER UPDATE OF body ON timeline_posts BEGIN
    DELETE FROM timeline_search WHERE event_id = old.event_id;
    INSERT INTO timeline_search (event_id, body) VALUES (new.event_id, new.body);
END;
CREATE TRIGGER timeline_search_delete AFTER DELETE ON timeline_posts BEGIN
    DELETE FROM timeline_search WHERE event_id = old.event_id;
END;
INSERT INTO timeline_search (event_id, body) SELECT event_id, body FROM timeline_posts";

/// PostgreSQL matches with `LIKE`, which reads the posts newest first: an index on the time
/// lets it stop once a page is full.
pub(crate) const POSTGRES_SCHEMA: &str =
    "CREATE INDEX timeline_posts_ts ON timeline_posts (ts, event_id)";

/// How a query is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matcher {
    /// Every word of the query, each as a word prefix, through SQLite's FTS5.
    FullText,
    /// The query as one phrase anywhere in the text, ignoring case as far as the database's
    /// `LOWER` folds it (ASCII always; other letters as its locale says).
    Like,
}

impl Matcher {
    /// The matcher a store's dialect offers.
    pub fn of(backend: Backend) -> Matcher {
        match backend {
            Backend::Sqlite => Matcher::FullText,
            // PostgreSQL, and any dialect to come: `LIKE` is standard SQL.
            _ => Matcher::Like,
        }
    }

    /// The filter over `p` (`$2` its argument) and the argument for `query`; `None` when the
    /// query has nothing to search for.
    fn filter(self, query: &str) -> Option<(&'static str, String)> {
        match self {
            Matcher::FullText => {
                // Each word quoted (FTS5's own syntax stays inert) and a prefix: "trest"
                // finds "trestle"; a plain word finds the hashtag too, a hashtag only itself.
                let terms: Vec<String> = query
                    .split_whitespace()
                    .map(|word| {
                        let quoted = word.replace('"', "\"\"");
                        if word.starts_with('#') {
                            format!("\"{quoted}\"*")
                        } else {
                            format!("(\"{quoted}\"* OR \"#{quoted}\"*)")
                        }
                    })
                    .collect();
                (!terms.is_empty()).then(|| {
                    (
                        "p.event_id IN (SELECT event_id FROM timeline_search WHERE timeline_search MATCH $2)",
                        terms.join(" AND "),
                    )
                })
            }
            Matcher::Like => {
                let phrase = query.split_whitespace().collect::<Vec<_>>().join(" ");
                (!phrase.is_empty()).then(|| {
                    let escaped = phrase
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_");
                    (
                        // Both sides folded by the database, so they fold alike.
                        "LOWER(p.body) LIKE LOWER($2) ESCAPE '\\'",
                        format!("%{escaped}%"),
                    )
                })
            }
        }
    }
}

/// Top-level posts matching `query`, newest first, a page at a time. An empty query finds
/// nothing.
pub async fn posts(
    db: &AnyPool,
    matcher: Matcher,
    viewer: &str,
    query: &str,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Page> {
    let Some((filter, argument)) = matcher.filter(query) else {
        return Ok(Page {
            posts: Vec::new(),
            next: None,
        });
    };
    query::page(db, viewer, filter, &argument, before, limit).await
}

#[cfg(test)]
mod tests {
    // A failed unwrap in a test is the test failing.
    #![allow(clippy::unwrap_used)]

    use serde_json::json;
    use trestle::Appservice;

    use super::*;
    use crate::{content, index};

    async fn texts(app: &Appservice, matcher: Matcher, query: &str) -> Vec<String> {
        posts(app.store().pool(), matcher, "", query, None, 10)
            .await
            .unwrap()
            .posts
            .into_iter()
            .map(|p| p.text)
            .collect()
    }

    #[tokio::test]
    async fn both_matchers_find_words_tags_and_nothing_for_markup() {
        let app = index::tests::empty_app().await;
        let event = |id: &str, ts: i64, kind: &str, content| {
            json!({ "event_id": id, "type": kind, "room_id": "!bob", "sender": "@bob:localhost",
                "origin_server_ts": ts, "content": content })
        };
        let post = |id: &str, ts: i64, text: &str| {
            event(
                id,
                ts,
                content::POST_TYPE,
                json!({ content::TEXT_KEY: text, "body": text }),
            )
        };
        for e in [
            event(
                "$c",
                1,
                "m.room.create",
                json!({ "type": content::ROOM_TYPE }),
            ),
            post("$1", 2, "Building a #Trestle today"),
            post("$2", 3, "trestles are bridges"),
            post("$3", 4, "100% done_now"),
            post("$4", 5, "nothing here"),
        ] {
            index::apply(&app, &e).await.unwrap();
        }
        let full = Matcher::FullText;
        assert_eq!(
            texts(&app, full, "#trestle").await,
            ["Building a #Trestle today"]
        );
        assert_eq!(
            texts(&app, full, "trestle").await,
            ["trestles are bridges", "Building a #Trestle today"]
        );
        assert!(texts(&app, full, "#bridges").await.is_empty());
        assert_eq!(
            texts(&app, full, "BUILDING today").await,
            ["Building a #Trestle today"]
        );
        // FTS5's syntax in a query is just text.
        assert!(texts(&app, full, "\"a\" OR NEAR(").await.is_empty());
        assert!(texts(&app, full, "   ").await.is_empty());
        let like = Matcher::Like;
        assert_eq!(
            texts(&app, like, "#trestle").await,
            ["Building a #Trestle today"]
        );
        assert_eq!(
            texts(&app, like, "trestle").await,
            ["trestles are bridges", "Building a #Trestle today"]
        );
        // `%` and `_` are the characters, not wildcards.
        assert_eq!(texts(&app, like, "100%").await, ["100% done_now"]);
        assert!(texts(&app, like, "o_e").await.is_empty());
        // An edit is searched as edited, a redacted post not at all.
        let edit = event(
            "$e",
            6,
            content::POST_TYPE,
            json!({ "m.new_content": { content::TEXT_KEY: "renamed entirely" },
                    "m.relates_to": { "rel_type": "m.replace", "event_id": "$2" } }),
        );
        index::apply(&app, &edit).await.unwrap();
        let redaction = event("$r", 7, "m.room.redaction", json!({ "redacts": "$1" }));
        index::apply(&app, &redaction).await.unwrap();
        assert!(texts(&app, full, "trestle").await.is_empty());
        assert!(texts(&app, full, "#trestle").await.is_empty());
        assert_eq!(texts(&app, full, "renamed").await, ["renamed entirely"]);
    }
}
