//! Pure key and value encoding (see the layout table in the module docs).

/// Tree names.
pub(crate) const EVENTS: &str = "events";
pub(crate) const WATERMARKS: &str = "watermarks";
pub(crate) const DEAD: &str = "dead";
pub(crate) const LEDGER: &str = "ledger";
pub(crate) const META: &str = "meta";

/// `meta` key of the publication mark: events with a lower `seq` are committed.
pub(crate) const PUBLISHED: &[u8] = b"published";

/// The prefix of `source`'s records in the `ledger` tree: its name and a NUL byte.
pub(crate) fn ledger_prefix(source: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(source.len() + 1);
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k
}

/// The full `ledger` key of a record of `source` (`key` relative to the source).
pub(crate) fn ledger_key(source: &str, key: &[u8]) -> Vec<u8> {
    let mut k = ledger_prefix(source);
    k.extend_from_slice(key);
    k
}

/// `seq` as an 8-byte big-endian key.
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Reads an 8-byte big-endian key; `None` for any other length.
pub(crate) fn parse_seq(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// A watermark value (Unix seconds, big-endian i64).
pub(crate) fn watermark_value(seconds: i64) -> [u8; 8] {
    seconds.to_be_bytes()
}

/// Reads a watermark value; `None` for any other length.
pub(crate) fn parse_watermark(value: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(value).ok().map(i64::from_be_bytes)
}

/// The OpenMeter batch body for events stored as JSON: a JSON array of them, byte for byte.
pub fn batch_body<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = Vec::with_capacity(1024);
    body.push(b'[');
    for (i, json) in events.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(json);
    }
    body.push(b']');
    body
}
