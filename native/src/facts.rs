//! The per-event facts the seal and chain checks read, and each event's hash.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::event::AuditEvent;

pub struct Facts {
    pub sequence: u64,
    pub stream_id: String,
    pub time_unix_nano: i64,
    pub observed_unix_nano: i64,
}

/// Every event decoded in full (so bytes the Python decoder refuses are refused here
/// too, not skipped over) and hashed; None when one does not decode.
pub fn scan(datas: &[Vec<u8>], domain: &[u8]) -> Option<Vec<(Facts, [u8; 32])>> {
    let mut out = Vec::with_capacity(datas.len());
    for data in datas {
        let event = AuditEvent::decode(data.as_slice()).ok()?;
        let mut hasher = Sha256::new();
        hasher.update(domain);
        hasher.update(data);
        out.push((
            Facts {
                sequence: event.sequence,
                stream_id: event.stream_id,
                time_unix_nano: event.time_unix_nano,
                observed_unix_nano: event.observed_unix_nano,
            },
            hasher.finalize().into(),
        ));
    }
    Some(out)
}
