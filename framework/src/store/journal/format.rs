//! The journal's file format: records one after another, each its length, its CRC-32 and its
//! body (the record's number, times, ids and items).

use std::path::Path;

use super::Record;
use crate::{Error, Result, store::inbox::NewInboxItem};

/// Bytes before a record's body: its length and its CRC-32.
pub(super) const HEADER: usize = 8;

/// A record larger than this is damage, not a transaction (the HTTP body limit is 32 MiB).
const MAX_RECORD: usize = 1 << 30;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn encode(record: &Record) -> Vec<u8> {
    let size = 64
        + record.txn_id.len()
        + record
            .items
            .iter()
            .map(|i| 32 + i.queue_key.len() + i.payload.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&record.number.to_le_bytes());
    out.extend_from_slice(&record.received_at.to_le_bytes());
    out.extend_from_slice(&record.first_seq.to_le_bytes());
    put_str(&mut out, &record.appservice_id);
    put_str(&mut out, &record.txn_id);
    out.extend_from_slice(&(record.items.len() as u32).to_le_bytes());
    for item in &record.items {
        put_str(&mut out, &item.queue_key);
        out.extend_from_slice(&(item.index as u32).to_le_bytes());
        put_str(&mut out, item.kind);
        put_str(&mut out, &item.payload);
    }
    // After the items, so that records written before there were digests still read.
    put_str(&mut out, &record.digest);
    for item in &record.items {
        put_str(&mut out, item.event_id.as_deref().unwrap_or_default());
    }
    let body_len = (out.len() - HEADER) as u32;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[..4].copy_from_slice(&body_len.to_le_bytes());
    out[4..HEADER].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The records in a file's bytes. A last record cut short is dropped: it was being written when
/// the process stopped, so it was never answered.
pub(super) fn decode_all(bytes: &[u8], path: &Path) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let damaged = |what: &str| {
            Error::Other(format!(
                "inbox journal {}: damaged record at byte {at}: {what}. It holds transactions \
                 that were acknowledged but not yet stored; move the file aside to start \
                 without them",
                path.display()
            ))
        };
        if rest.len() < HEADER {
            tracing::warn!(path = %path.display(), at, "dropping a record cut short");
            break;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..HEADER].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return Err(damaged("impossible length"));
        }
        if rest.len() < HEADER + len {
            tracing::warn!(path = %path.display(), at, "dropping a record cut short");
            break;
        }
        let body = &rest[HEADER..HEADER + len];
        if crc32fast::hash(body) != crc {
            return Err(damaged("checksum mismatch"));
        }
        records.push(decode(body).ok_or_else(|| damaged("unreadable contents"))?);
        at += HEADER + len;
    }
    Ok(records)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.bytes(n)?).ok()
    }
}

pub(super) fn decode(body: &[u8]) -> Option<Record> {
    let mut r = Reader(body);
    let number = r.u64()?;
    let received_at = r.u64()? as i64;
    let first_seq = r.u64()? as i64;
    let appservice_id = r.str()?.to_owned();
    let txn_id = r.str()?.to_owned();
    let count = r.u32()? as usize;
    let mut items = Vec::with_capacity(count.min(body.len()));
    for _ in 0..count {
        let queue_key = r.str()?.to_owned();
        let index = r.u32()? as usize;
        let kind = match r.str()? {
            "timeline" => "timeline",
            "ephemeral" => "ephemeral",
            "to_device" => "to_device",
            "device_lists" => "device_lists",
            _ => return None,
        };
        let payload = r.str()?.to_owned();
        items.push(NewInboxItem {
            queue_key,
            index,
            kind,
            payload,
            event_id: None,
            event_ts: 0,
        });
    }
    // Records from before digests end here: their ids alone named them.
    let mut digest = String::new();
    if !r.0.is_empty() {
        digest = r.str()?.to_owned();
        for item in &mut items {
            item.event_id = Some(r.str()?.to_owned()).filter(|id| !id.is_empty());
            // Not written: read from the event as it was when it came, at a start's cost only.
            if item.event_id.is_some() {
                item.event_ts = crate::transaction::stored_origin_ts(&item.payload);
            }
        }
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(Record {
        number,
        appservice_id,
        txn_id,
        digest,
        received_at,
        first_seq,
        items,
        parsed: None,
    })
}
