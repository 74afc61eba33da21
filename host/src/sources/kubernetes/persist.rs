//! The stored form of ledger entries: pure encoding and decoding, no I/O.
//!
//! The queue keeps one record per pod or PVC under its source's prefix in the `ledger` tree
//! (see [`crate::queue`]); this module defines the part after the prefix.
//!
//! ## Key (relative to the source)
//!
//! `kind: u8` (`b'p'` pod, `b'c'` PVC) followed by the UID (UTF-8).
//!
//! ## Value, format 1
//!
//! All integers big-endian. `str`/`bytes` = `len: u32` + bytes; `opt_i64` = `0` or `1` +
//! `i64`; `opt_str` = `0` or `1` + `str`; `opt_deletion` = `0`, or `1` + `at: i64` +
//! `estimated: u8` (0/1).
//!
//! | field | pod | PVC |
//! |---|---|---|
//! | format | `u8` = 1 | `u8` = 1 |
//! | selectors of the stream it came from ([`Scope::selectors`](super::config::Scope::selectors)) | `str` | `str` |
//! | | `terminal_observed_at: opt_i64` | `pv_bound_at: opt_i64`, `pv_created_at: opt_i64`, `pv_storage_class: opt_str`, `bound_observed_at: opt_i64` |
//! | | `deleted: opt_deletion` | `deleted: opt_deletion` |
//! | object | deflated pod JSON: `bytes` | PVC JSON: `bytes` |
//!
//! ## Resume points
//!
//! One record per pod or PVC stream: key `b'v'`, the kind byte (`b'p'` pods, `b'c'` PVCs),
//! then the stream's namespace (UTF-8; empty for a cluster-wide stream); value `format: u8` = 1,
//! `selectors: str`, `resource_version: str`: the version the stream's watch resumes after on
//! the next start. It is written only with a commit that holds every pending entry change, so
//! the entries stored are never older than the version (a replay from an older version only
//! re-applies changes already held, which the ledger absorbs).
//!
//! The namespace is not stored: it is read from the object when the entry is restored, and the
//! stream is the one of the current scope that watches that namespace with the same selectors.
//! A value whose format byte is not known, or that is truncated or malformed, is a
//! [`PersistError`]: the caller logs it with its key, skips it and counts it.

use super::ledger::{EntryKind, EntryRef, StoredEntry};
use crate::accounting::pvc::PvcFacts;
use crate::accounting::{Deletion, Observations};

/// The format byte written by this version.
pub const FORMAT_V1: u8 = 1;

const POD: u8 = b'p';
const PVC: u8 = b'c';
const RESUME: u8 = b'v';

/// A stream's stored resume point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    pub kind: EntryKind,
    /// The stream's namespace; empty for a cluster-wide stream.
    pub namespace: String,
    pub selectors: String,
    pub resource_version: String,
}

/// Whether `key` is a resume point's (not an entry's).
pub fn is_resume_key(key: &[u8]) -> bool {
    key.first() == Some(&RESUME)
}

/// The key and value of a resume point.
pub fn encode_resume(point: &ResumePoint) -> (Vec<u8>, Vec<u8>) {
    let mut k = Vec::with_capacity(2 + point.namespace.len());
    k.push(RESUME);
    k.push(match point.kind {
        EntryKind::Pod => POD,
        EntryKind::Pvc => PVC,
    });
    k.extend_from_slice(point.namespace.as_bytes());
    let mut v = vec![FORMAT_V1];
    put_bytes(&mut v, point.selectors.as_bytes());
    put_bytes(&mut v, point.resource_version.as_bytes());
    (k, v)
}

/// Reads a resume point back.
pub fn decode_resume(key: &[u8], value: &[u8]) -> Result<ResumePoint, PersistError> {
    let err = |reason| PersistError::Key {
        key: show_key(key),
        reason,
    };
    let kind = match key {
        [RESUME, POD, ..] => EntryKind::Pod,
        [RESUME, PVC, ..] => EntryKind::Pvc,
        _ => return Err(err("not a resume point")),
    };
    let namespace = std::str::from_utf8(&key[2..])
        .map_err(|_| err("the namespace is not UTF-8"))?
        .to_owned();
    let mut r = Reader::v1(key, value)?;
    let selectors = r.string()?;
    let resource_version = r.string()?;
    if resource_version.is_empty() {
        return Err(r.error("empty resourceVersion"));
    }
    Ok(ResumePoint {
        kind,
        namespace,
        selectors,
        resource_version,
    })
}

/// Why a stored ledger record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("failed to decode the ledger key {key}: {reason}")]
    Key { key: String, reason: &'static str },
    #[error("failed to decode the ledger entry {key}: unknown format {format}")]
    Format { key: String, format: u8 },
    #[error("failed to decode the ledger entry {key}: {reason}")]
    Value { key: String, reason: &'static str },
}

/// A decoded record: the entry and the selectors of the stream it was listed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub entry: StoredEntry,
    pub selectors: String,
}

/// A key for printing (non-UTF-8 bytes escaped).
pub fn show_key(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

/// The key of an entry (relative to the source).
pub fn key(kind: EntryKind, uid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + uid.len());
    k.push(match kind {
        EntryKind::Pod => POD,
        EntryKind::Pvc => PVC,
    });
    k.extend_from_slice(uid.as_bytes());
    k
}

/// Reads a key back.
pub fn parse_key(key: &[u8]) -> Result<(EntryKind, &str), PersistError> {
    let err = |reason| PersistError::Key {
        key: show_key(key),
        reason,
    };
    let (&tag, uid) = key.split_first().ok_or_else(|| err("empty key"))?;
    let kind = match tag {
        POD => EntryKind::Pod,
        PVC => EntryKind::Pvc,
        _ => return Err(err("unknown kind byte")),
    };
    let uid = std::str::from_utf8(uid).map_err(|_| err("the UID is not UTF-8"))?;
    if uid.is_empty() {
        return Err(err("empty UID"));
    }
    Ok((kind, uid))
}

/// The key and value of an entry listed under streams with `selectors`.
pub fn encode(entry: &EntryRef<'_>, selectors: &str) -> (Vec<u8>, Vec<u8>) {
    let mut v = Vec::new();
    v.push(FORMAT_V1);
    put_bytes(&mut v, selectors.as_bytes());
    match entry {
        EntryRef::Pod {
            uid,
            packed,
            observations,
            ..
        } => {
            put_opt_i64(&mut v, observations.terminal_observed_at);
            put_deletion(&mut v, observations.deleted);
            put_bytes(&mut v, packed);
            (key(EntryKind::Pod, uid), v)
        }
        EntryRef::Pvc {
            uid, object, facts, ..
        } => {
            put_opt_i64(&mut v, facts.pv_bound_at);
            put_opt_i64(&mut v, facts.pv_created_at);
            match &facts.pv_storage_class {
                None => v.push(0),
                Some(c) => {
                    v.push(1);
                    put_bytes(&mut v, c.as_bytes());
                }
            }
            put_opt_i64(&mut v, facts.bound_observed_at);
            put_deletion(&mut v, facts.deleted);
            put_bytes(&mut v, object.raw.to_string().as_bytes());
            (key(EntryKind::Pvc, uid), v)
        }
    }
}

/// Decodes a record (key relative to the source).
pub fn decode(key: &[u8], value: &[u8]) -> Result<Decoded, PersistError> {
    let (kind, uid) = parse_key(key)?;
    let mut r = Reader::v1(key, value)?;
    let selectors = r.string()?;
    let entry = match kind {
        EntryKind::Pod => {
            let terminal_observed_at = r.opt_i64()?;
            let deleted = r.deletion()?;
            let packed = r.bytes()?.to_vec();
            StoredEntry::Pod {
                uid: uid.to_owned(),
                packed,
                observations: Observations {
                    terminal_observed_at,
                    deleted,
                },
            }
        }
        EntryKind::Pvc => {
            let pv_bound_at = r.opt_i64()?;
            let pv_created_at = r.opt_i64()?;
            let pv_storage_class = match r.u8()? {
                0 => None,
                1 => Some(r.string()?),
                _ => return Err(r.error("bad option tag")),
            };
            let bound_observed_at = r.opt_i64()?;
            let deleted = r.deletion()?;
            let json = r.string()?;
            StoredEntry::Pvc {
                uid: uid.to_owned(),
                json,
                facts: PvcFacts {
                    pv_bound_at,
                    pv_created_at,
                    pv_storage_class,
                    bound_observed_at,
                    deleted,
                },
            }
        }
    };
    if !r.rest.is_empty() {
        return Err(r.error("trailing bytes"));
    }
    Ok(Decoded { entry, selectors })
}

fn put_bytes(v: &mut Vec<u8>, b: &[u8]) {
    // A pod is bounded far below 4 GiB (the ledger inflates at most 16 MiB).
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(b);
}

fn put_opt_i64(v: &mut Vec<u8>, x: Option<i64>) {
    match x {
        None => v.push(0),
        Some(x) => {
            v.push(1);
            v.extend_from_slice(&x.to_be_bytes());
        }
    }
}

fn put_deletion(v: &mut Vec<u8>, d: Option<Deletion>) {
    match d {
        None => v.push(0),
        Some(d) => {
            v.push(1);
            v.extend_from_slice(&d.at.to_be_bytes());
            v.push(u8::from(d.estimated));
        }
    }
}

struct Reader<'a> {
    rest: &'a [u8],
    key: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader after the format byte, which must be [`FORMAT_V1`].
    fn v1(key: &'a [u8], value: &'a [u8]) -> Result<Self, PersistError> {
        let mut r = Reader { rest: value, key };
        match r.u8()? {
            FORMAT_V1 => Ok(r),
            format => Err(PersistError::Format {
                key: show_key(key),
                format,
            }),
        }
    }

    fn error(&self, reason: &'static str) -> PersistError {
        PersistError::Value {
            key: show_key(self.key),
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PersistError> {
        if self.rest.len() < n {
            return Err(self.error("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, PersistError> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, PersistError> {
        let b = self.take(8)?;
        <[u8; 8]>::try_from(b)
            .map(i64::from_be_bytes)
            .map_err(|_| self.error("truncated"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], PersistError> {
        let b = self.take(4)?;
        let len = <[u8; 4]>::try_from(b)
            .map(u32::from_be_bytes)
            .map_err(|_| self.error("truncated"))?;
        let len = usize::try_from(len).map_err(|_| self.error("length too large"))?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, PersistError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.error("a string is not UTF-8"))
    }

    fn opt_i64(&mut self) -> Result<Option<i64>, PersistError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.i64()?)),
            _ => Err(self.error("bad option tag")),
        }
    }

    fn deletion(&mut self) -> Result<Option<Deletion>, PersistError> {
        match self.u8()? {
            0 => Ok(None),
            1 => {
                let at = self.i64()?;
                let estimated = match self.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(self.error("bad boolean")),
                };
                Ok(Some(Deletion { at, estimated }))
            }
            _ => Err(self.error("bad option tag")),
        }
    }
}
