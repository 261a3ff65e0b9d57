//! Reading a feed (RSS 0.9x/1.0/2.0, Atom, JSON Feed, through `feed-rs`) into entries with
//! stable keys.
//!
//! An entry's key is what the feed says identifies it (`guid`, Atom `id`, JSON Feed `id`),
//! else its link, else its title and summary — never its position, date or text that an
//! edit changes, so a reordered, edited or briefly dropped entry is still recognised.

use crate::{Error, Result, db::digest};

/// A feed as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Feed {
    /// The feed's title (or its URL, when it has none).
    pub title: String,
    /// The entries, oldest first.
    pub entries: Vec<Entry>,
}

/// One entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// A fixed-size key that identifies the entry in its feed.
    pub key: String,
    /// The title (or a start of the summary, when untitled).
    pub title: String,
    /// The link to the entry, if any.
    pub link: Option<String>,
    /// When it was published or last updated, in ms since the epoch.
    pub date: Option<i64>,
}

/// Parses `bytes` fetched from `url`.
pub fn parse(bytes: &[u8], url: &str) -> Result<Feed> {
    // Entries without an id get an empty one here (feed-rs would make a random one, which
    // would make the entry new on every poll); `key_source` then falls back to other fields.
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(url))
        .id_generator(|_, _, _| String::new())
        .build();
    let feed = parser
        .parse(bytes)
        .map_err(|e| Error::Feed(e.to_string()))?;
    let title = feed
        .title
        .as_ref()
        .map(|t| t.content.trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| url.to_owned());
    let mut entries: Vec<Entry> = feed
        .entries
        .iter()
        .map(|entry| {
            let link = entry
                .links
                .iter()
                .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
                .or_else(|| entry.links.first())
                .map(|l| l.href.clone());
            let summary = entry
                .summary
                .as_ref()
                .map(|s| s.content.clone())
                .unwrap_or_default();
            let raw_title = entry
                .title
                .as_ref()
                .map(|t| t.content.trim().to_owned())
                .unwrap_or_default();
            let key_source = if !entry.id.trim().is_empty() {
                format!("id:{}", entry.id.trim())
            } else if let Some(link) = &link {
                format!("link:{link}")
            } else {
                format!("text:{raw_title}\n{summary}")
            };
            let title = if raw_title.is_empty() {
                let short: String = crate::render::strip_tags(&summary)
                    .chars()
                    .take(120)
                    .collect();
                if short.is_empty() {
                    "(untitled)".to_owned()
                } else {
                    short
                }
            } else {
                raw_title
            };
            Entry {
                key: digest(&key_source),
                title,
                link,
                date: entry
                    .published
                    .or(entry.updated)
                    .map(|d| d.timestamp_millis()),
            }
        })
        .collect();
    // Feeds list newest first; dated entries are put in date order.
    entries.reverse();
    if entries.iter().all(|e| e.date.is_some()) {
        entries.sort_by_key(|e| e.date);
    }
    // A feed that repeats an entry gets it once.
    let mut seen = std::collections::HashSet::new();
    entries.retain(|e| seen.insert(e.key.clone()));
    Ok(Feed { title, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS: &str = r#"<?xml version="1.0"?>
<rss version="2.0"><channel><title>News</title><link>https://n.example/</link>
<item><title>Second</title><link>https://n.example/2</link><guid>n-2</guid>
  <pubDate>Tue, 02 Jan 2024 10:00:00 GMT</pubDate></item>
<item><title>First</title><link>https://n.example/1</link><guid>n-1</guid>
  <pubDate>Mon, 01 Jan 2024 10:00:00 GMT</pubDate></item>
<item><title>No guid</title><link>https://n.example/3</link></item>
<item><description>Only a &lt;b&gt;summary&lt;/b&gt; here</description></item>
</channel></rss>"#;

    const ATOM: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Blog</title><id>urn:blog</id>
<updated>2024-01-02T00:00:00Z</updated>
<entry><title>B</title><id>urn:b</id><updated>2024-01-02T00:00:00Z</updated>
  <link href="https://b.example/b"/></entry>
<entry><title>A</title><id>urn:a</id><updated>2024-01-01T00:00:00Z</updated>
  <link rel="alternate" href="https://b.example/a"/></entry>
</feed>"#;

    const JSON_FEED: &str = r#"{"version": "https://jsonfeed.org/version/1.1", "title": "J",
      "items": [{"id": "j1", "title": "Jay", "url": "https://j.example/1"}]}"#;

    #[test]
    fn rss_entries_are_keyed_by_guid_then_link_then_text() {
        let feed = parse(RSS.as_bytes(), "https://n.example/rss").unwrap();
        assert_eq!(feed.title, "News");
        let titles: Vec<&str> = feed.entries.iter().map(|e| e.title.as_str()).collect();
        // Not all dated: document order reversed, oldest first.
        assert_eq!(
            titles,
            vec!["Only a summary here", "No guid", "First", "Second"]
        );
        assert_eq!(feed.entries[3].key, digest("id:n-2"));
        assert_eq!(feed.entries[1].key, digest("link:https://n.example/3"));
        assert_eq!(feed.entries[2].link.as_deref(), Some("https://n.example/1"));
        // Parsing again gives the same keys: nothing random.
        let again = parse(RSS.as_bytes(), "https://n.example/rss").unwrap();
        assert_eq!(feed, again);
    }

    #[test]
    fn atom_entries_are_in_date_order() {
        let feed = parse(ATOM.as_bytes(), "https://b.example/atom").unwrap();
        assert_eq!(feed.title, "Blog");
        assert_eq!(feed.entries[0].title, "A");
        assert_eq!(feed.entries[0].link.as_deref(), Some("https://b.example/a"));
        assert_eq!(feed.entries[1].key, digest("id:urn:b"));
    }

    #[test]
    fn json_feeds_and_edits_keep_keys() {
        let feed = parse(JSON_FEED.as_bytes(), "https://j.example/feed.json").unwrap();
        assert_eq!(feed.entries[0].key, digest("id:j1"));
        let edited = RSS.replace("<title>Second</title>", "<title>Second (updated)</title>");
        let edited = parse(edited.as_bytes(), "https://n.example/rss").unwrap();
        assert_eq!(edited.entries[3].key, digest("id:n-2"));
        assert_eq!(edited.entries[3].title, "Second (updated)");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"<html><body>nope</body></html>", "https://x.example").is_err());
        assert!(parse(b"", "https://x.example").is_err());
    }
}
