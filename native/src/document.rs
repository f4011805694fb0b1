//! One stream format 2 event's bytes -> its OpenSearch document, as JSON bytes.
//!
//! The same document `collector.documents.to_document` builds and
//! `collector.formatv2.documents_v2` completes with the integrity fields: Python stays
//! the reference (verify re-derives every document with it), and
//! tests/collector/test_native.py compares the two on generated events. What
//! the kernel does not reproduce exactly it declines (`Decline`), and the collector
//! builds that event's document in Python: an address other than dotted IPv4 or IPv6
//! without a zone, or an IPv4-mapped one (see `ip_text`), a port over 65535, a number in
//! a change that is not plain decimal, a stream id that is not valid, bytes that do not
//! decode.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use prost::Message;

use crate::event::{AuditEvent, FieldChange, LogOrigin, Observer, Source, User};
use crate::json::Writer;

pub struct Decline;

pub struct Built {
    pub doc_id: String,
    pub sequence: u64,
    pub timestamp_unix_nano: i64,
    pub body: Vec<u8>,
    pub original: String,
}

const NANOS: i64 = 1_000_000_000;

// Flags the collector adds (collector.documents).
const FLAG_MISSING_TIMESTAMP: &str = "missing_timestamp";
const FLAG_MISSING_OBSERVED_TIMESTAMP: &str = "missing_observed_timestamp";
const FLAG_INVALID_TIMESTAMP: &str = "invalid_timestamp";
const FLAG_OBSERVER_MISMATCH: &str = "observer_agent_id_mismatch";

const VALUE_TYPE_NUMBER: i32 = 1;
const VALUE_TYPE_BOOLEAN: i32 = 2;

/// RFC 3339 UTC with nanoseconds, e.g. `2026-11-27T12:00:00.123456789Z` (`iso_nanos`).
/// `unix_nano` is never negative here (the callers replace negative times).
pub fn iso_nanos(unix_nano: i64) -> [u8; 30] {
    let seconds = unix_nano.div_euclid(NANOS);
    let fraction = unix_nano.rem_euclid(NANOS);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut out[0..4], year as u64);
    put_digits(&mut out[5..7], month as u64);
    put_digits(&mut out[8..10], day as u64);
    put_digits(&mut out[11..13], (of_day / 3600) as u64);
    put_digits(&mut out[14..16], (of_day % 3600 / 60) as u64);
    put_digits(&mut out[17..19], (of_day % 60) as u64);
    put_digits(&mut out[20..29], fraction as u64);
    out
}

fn put_digits(slot: &mut [u8], mut value: u64) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn valid_stream_id(stream_id: &str) -> bool {
    stream_id.len() == 16
        && stream_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Strict dotted-decimal IPv4 as Python's `ipaddress` accepts it (no whitespace, no
/// sign, 1-3 digits per octet, no leading zero); its normalized text is itself.
fn plain_ipv4(text: &str) -> bool {
    let mut octets = 0;
    for part in text.split('.') {
        octets += 1;
        let bytes = part.as_bytes();
        if bytes.is_empty() || bytes.len() > 3 || !bytes.iter().all(u8::is_ascii_digit) {
            return false;
        }
        if bytes.len() > 1 && bytes[0] == b'0' {
            return false;
        }
        if part.parse::<u16>().map_or(true, |v| v > 255) {
            return false;
        }
    }
    octets == 4
}

/// The address as Python's `str(ipaddress.ip_address(text))` writes it, for the forms
/// that text is the same on every Python the collector runs on: plain dotted IPv4 (as
/// is) and IPv6 (RFC 5952: lowercase, leading zeros dropped, the longest run of two or
/// more zero groups as `::`). None (declined) for anything else: whitespace, a zone
/// (`%eth0`), an IPv4-mapped address (Python 3.13 writes `::ffff:1.2.3.4`, 3.11
/// `::ffff:102:304`), or text that is not an address.
fn ip_text(text: &str) -> Option<Cow<'_, str>> {
    if plain_ipv4(text) {
        return Some(Cow::Borrowed(text));
    }
    if !text.contains(':')
        || !text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return None;
    }
    let address: Ipv6Addr = text.parse().ok()?;
    let groups = address.segments();
    if groups[..5] == [0; 5] && groups[5] == 0xffff {
        return None;
    }
    let mut out = String::with_capacity(39);
    write_ipv6(&mut out, &groups);
    Some(Cow::Owned(out))
}

/// RFC 5952 text of eight groups, as Python's `ipaddress` compresses them (written here
/// rather than by `Ipv6Addr`'s Display, whose treatment of embedded IPv4 differs).
fn write_ipv6(out: &mut String, groups: &[u16; 8]) {
    use std::fmt::Write;
    // The longest run of zero groups, the first of equal ones; only a run of two or more.
    let (mut best_start, mut best_len) = (0, 0);
    let mut i = 0;
    while i < 8 {
        if groups[i] == 0 {
            let start = i;
            while i < 8 && groups[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                (best_start, best_len) = (start, i - start);
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best_len = 0;
    }
    let mut i = 0;
    while i < 8 {
        if best_len > 0 && i == best_start {
            out.push_str("::");
            i += best_len;
            continue;
        }
        if i > 0 && !(best_len > 0 && i == best_start + best_len) {
            out.push(':');
        }
        let _ = write!(out, "{:x}", groups[i]);
        i += 1;
    }
}

enum Typed<'a> {
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// `typed_change_value` for the shapes it types the same way in both languages: plain
/// decimal integers that fit 64 bits, plain decimal fractions; anything else a number
/// field holds is declined.
fn typed<'a>(text: &'a str, value_type: i32) -> Result<Typed<'a>, Decline> {
    if value_type == VALUE_TYPE_NUMBER {
        let digits = text.strip_prefix('-').unwrap_or(text);
        let (whole, fraction) = match digits.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (digits, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) {
            return Err(Decline);
        }
        return match fraction {
            None if whole.len() <= 18 => text.parse::<i64>().map(Typed::Int).map_err(|_| Decline),
            None => Err(Decline),
            Some(f) if all_digits(f) => match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Typed::Float(v)),
                _ => Err(Decline),
            },
            Some(_) => Err(Decline),
        };
    }
    if value_type == VALUE_TYPE_BOOLEAN && (text == "true" || text == "false") {
        return Ok(Typed::Bool(text == "true"));
    }
    Ok(Typed::Text(text))
}

fn write_typed(w: &mut Writer, value: &Typed<'_>) {
    match value {
        Typed::Text(t) => w.string(t),
        Typed::Int(v) => w.int(*v),
        Typed::Float(v) => w.float(*v),
        Typed::Bool(v) => w.boolean(*v),
    }
}

fn user_has_fields(user: &User) -> bool {
    !user.id.is_empty() || !user.name.is_empty() || !user.email.is_empty() || !user.roles.is_empty()
}

fn write_user_fields(w: &mut Writer, user: &User) {
    if !user.id.is_empty() {
        w.key("id");
        w.string(&user.id);
    }
    if !user.name.is_empty() {
        w.key("name");
        w.string(&user.name);
    }
    if !user.email.is_empty() {
        w.key("email");
        w.string(&user.email);
    }
    if !user.roles.is_empty() {
        w.key("roles");
        write_strings(w, &user.roles);
    }
}

fn write_strings(w: &mut Writer, values: &[String]) {
    w.open_array();
    for value in values {
        w.string(value);
    }
    w.close_array();
}

fn add_flag(flags: &mut Vec<String>, name: &str) {
    if !flags.iter().any(|f| f == name) {
        flags.push(name.to_owned());
    }
}

/// `_raw_key`: a source attribute may already use the name; both values are kept.
fn raw_key(attributes: &std::collections::BTreeMap<String, String>, name: &str) -> String {
    if attributes.contains_key(name) {
        format!("{name}.collector")
    } else {
        name.to_owned()
    }
}

/// The document of one event: `data` its bytes as received, `head` the stream head after
/// it (None when the batch had no verified chain), `event_hash` its hash. `inline_bytes`:
/// the bytes are stored in the document (`integrity.canonical`); otherwise the caller
/// stores them once per batch (`collector.batchbytes`).
pub fn build(
    data: &[u8],
    head: Option<&[u8]>,
    event_hash: &[u8],
    agent_id: &str,
    received_unix_nano: i64,
    inline_bytes: bool,
) -> Result<Built, Decline> {
    let mut event = AuditEvent::decode(data).map_err(|_| Decline)?;
    let stream_id = event.stream_id.as_str();
    if !valid_stream_id(stream_id) {
        return Err(Decline);
    }
    // Everything that declines is checked before anything is written.
    let no_source = Source::default();
    let source = event.source.as_ref().unwrap_or(&no_source);
    let ip = if source.ip.is_empty() {
        None
    } else {
        Some(ip_text(&source.ip).ok_or(Decline)?)
    };
    if source.port > 65_535 {
        return Err(Decline);
    }
    let mut changes: Vec<(&FieldChange, Option<Typed<'_>>, Option<Typed<'_>>)> =
        Vec::with_capacity(event.changes.len());
    for change in &event.changes {
        let old = match &change.old_value {
            Some(v) => Some(typed(v, change.old_type)?),
            None => None,
        };
        let new = match &change.new_value {
            Some(v) => Some(typed(v, change.new_type)?),
            None => None,
        };
        changes.push((change, old, new));
    }

    // Moved out of the event: nothing below reads them from it.
    let mut flags = std::mem::take(&mut event.flags);
    let mut attributes = std::mem::take(&mut event.attributes);
    let mut observed = event.observed_unix_nano;
    if observed < 0 {
        attributes.insert(
            raw_key(&attributes, "observed_unix_nano_raw"),
            observed.to_string(),
        );
        add_flag(&mut flags, FLAG_INVALID_TIMESTAMP);
        observed = 0;
    }
    let mut timestamp = event.time_unix_nano;
    if timestamp <= 0 {
        if timestamp < 0 {
            attributes.insert(
                raw_key(&attributes, "time_unix_nano_raw"),
                timestamp.to_string(),
            );
            add_flag(&mut flags, FLAG_INVALID_TIMESTAMP);
        }
        add_flag(&mut flags, FLAG_MISSING_TIMESTAMP);
        timestamp = observed;
        if timestamp == 0 {
            add_flag(&mut flags, FLAG_MISSING_OBSERVED_TIMESTAMP);
            timestamp = received_unix_nano;
        }
    }
    let no_observer = Observer::default();
    let observer = event.observer.as_ref().unwrap_or(&no_observer);
    if !observer.agent_id.is_empty() && observer.agent_id != agent_id {
        let key = raw_key(&attributes, "observer_agent_id_raw");
        attributes.insert(key, observer.agent_id.clone());
        add_flag(&mut flags, FLAG_OBSERVER_MISMATCH);
    }

    let mut w = Writer::with_capacity(data.len() * 3 + 512);
    w.open_object();
    w.key("@timestamp");
    w.ascii(&iso_nanos(timestamp));

    w.key("event");
    w.open_object();
    if observed != 0 {
        w.key("created");
        w.ascii(&iso_nanos(observed));
    }
    w.key("ingested");
    w.ascii(&iso_nanos(received_unix_nano));
    if !event.event_category.is_empty() {
        w.key("category");
        write_strings(&mut w, &event.event_category);
    }
    if !event.event_type.is_empty() {
        w.key("type");
        write_strings(&mut w, &event.event_type);
    }
    if !event.action.is_empty() {
        w.key("action");
        w.string(&event.action);
    }
    w.key("outcome");
    w.ascii(match event.outcome {
        1 => b"success",
        2 => b"failure",
        _ => b"unknown",
    });
    w.key("sequence");
    w.uint(event.sequence);
    // The raw line once: only on a record with a problem (its line is in the stored
    // bytes otherwise); every event here names a stream.
    if !event.original.is_empty() && (!flags.is_empty() || !event.parse_error.is_empty()) {
        w.key("original");
        w.string(&event.original);
    }
    w.close_object();

    let user = event.user.as_ref();
    let effective = event.effective_user.as_ref().filter(|u| user_has_fields(u));
    let target = event.target_user.as_ref().filter(|u| user_has_fields(u));
    if user.is_some_and(user_has_fields) || effective.is_some() || target.is_some() {
        w.key("user");
        w.open_object();
        if let Some(u) = user {
            write_user_fields(&mut w, u);
        }
        if let Some(u) = effective {
            w.key("effective");
            w.open_object();
            write_user_fields(&mut w, u);
            w.close_object();
        }
        if let Some(u) = target {
            w.key("target");
            w.open_object();
            write_user_fields(&mut w, u);
            w.close_object();
        }
        w.close_object();
    }
    if let Some(org) = &event.organization {
        if !org.id.is_empty() || !org.name.is_empty() {
            w.key("organization");
            w.open_object();
            if !org.id.is_empty() {
                w.key("id");
                w.string(&org.id);
            }
            if !org.name.is_empty() {
                w.key("name");
                w.string(&org.name);
            }
            w.close_object();
        }
    }
    if !source.ip.is_empty() || source.port != 0 {
        w.key("source");
        w.open_object();
        if let Some(ip) = &ip {
            w.key("ip");
            w.string(ip);
        }
        if source.port != 0 {
            w.key("port");
            w.uint(u64::from(source.port));
        }
        w.close_object();
    }
    if !source.user_agent.is_empty() {
        w.key("user_agent");
        w.open_object();
        w.key("original");
        w.string(&source.user_agent);
        w.close_object();
    }

    let object = event
        .object
        .as_ref()
        .filter(|o| !o.r#type.is_empty() || !o.id.is_empty() || !o.name.is_empty());
    let no_log = LogOrigin::default();
    let log = event.log.as_ref().unwrap_or(&no_log);
    let has_crm = !source.device_id.is_empty()
        || !event.session_id.is_empty()
        || object.is_some()
        || !changes.is_empty()
        || event.record_count.is_some()
        || !log.source_name.is_empty()
        || !log.format.is_empty()
        || !attributes.is_empty();
    if has_crm {
        w.key("crm");
        w.open_object();
        if !source.device_id.is_empty() {
            w.key("device");
            w.open_object();
            w.key("id");
            w.string(&source.device_id);
            w.close_object();
        }
        if !event.session_id.is_empty() {
            w.key("session");
            w.open_object();
            w.key("id");
            w.string(&event.session_id);
            w.close_object();
        }
        if let Some(o) = object {
            w.key("object");
            w.open_object();
            if !o.r#type.is_empty() {
                w.key("type");
                w.string(&o.r#type);
            }
            if !o.id.is_empty() {
                w.key("id");
                w.string(&o.id);
            }
            if !o.name.is_empty() {
                w.key("name");
                w.string(&o.name);
            }
            w.close_object();
        }
        if !changes.is_empty() {
            w.key("changes");
            w.open_array();
            for (change, old, new) in &changes {
                w.open_object();
                w.key("field");
                w.string(&change.field);
                if let Some(v) = old {
                    w.key("old");
                    write_typed(&mut w, v);
                }
                if let Some(v) = new {
                    w.key("new");
                    write_typed(&mut w, v);
                }
                w.close_object();
            }
            w.close_array();
        }
        if let Some(count) = event.record_count {
            w.key("record_count");
            w.uint(count);
        }
        if !log.source_name.is_empty() || !log.format.is_empty() {
            w.key("source");
            w.open_object();
            if !log.source_name.is_empty() {
                w.key("name");
                w.string(&log.source_name);
            }
            if !log.format.is_empty() {
                w.key("format");
                w.string(&log.format);
            }
            w.close_object();
        }
        if !attributes.is_empty() {
            w.key("attributes");
            w.open_object();
            for (key, value) in &attributes {
                w.key(key);
                w.string(value);
            }
            w.close_object();
        }
        w.close_object();
    }

    w.key("audit");
    w.open_object();
    w.key("category");
    w.ascii(match event.audit_category {
        1 => b"system_admin",
        2 => b"data_operation",
        3 => b"security",
        _ => b"unknown",
    });
    w.close_object();

    // agent.id is the certificate identity; agent.stream the (valid) stream id.
    w.key("agent");
    w.open_object();
    if !agent_id.is_empty() {
        w.key("id");
        w.string(agent_id);
    }
    w.key("stream");
    w.string(stream_id);
    if !observer.agent_version.is_empty() {
        w.key("version");
        w.string(&observer.agent_version);
    }
    w.close_object();
    if !observer.hostname.is_empty() {
        w.key("host");
        w.open_object();
        w.key("hostname");
        w.string(&observer.hostname);
        w.close_object();
    }
    if !log.file_path.is_empty() || log.offset != 0 {
        w.key("log");
        w.open_object();
        if !log.file_path.is_empty() {
            w.key("file");
            w.open_object();
            w.key("path");
            w.string(&log.file_path);
            w.close_object();
        }
        w.key("offset");
        w.uint(log.offset);
        w.close_object();
    }
    if !event.message.is_empty() {
        w.key("message");
        w.string(&event.message);
    }
    if !event.parse_error.is_empty() {
        w.key("error");
        w.open_object();
        w.key("message");
        w.string(&event.parse_error);
        w.close_object();
    }

    w.key("integrity");
    w.open_object();
    if !flags.is_empty() {
        w.key("flags");
        write_strings(&mut w, &flags);
    }
    if inline_bytes {
        w.key("canonical");
        w.base64(data);
    }
    if let Some(head) = head.filter(|h| !h.is_empty()) {
        w.key("chain_hash");
        w.hex(head);
    }
    if !event_hash.is_empty() {
        w.key("event_hash");
        w.hex(event_hash);
    }
    w.close_object();
    w.close_object();

    let sequence = event.sequence;
    Ok(Built {
        doc_id: format!("{agent_id}:{stream_id}:{sequence}"),
        sequence,
        timestamp_unix_nano: timestamp,
        body: w.out,
        original: event.original,
    })
}

#[cfg(test)]
mod tests {
    use super::{ip_text, iso_nanos, plain_ipv4};

    #[test]
    fn formats_times_like_iso_nanos() {
        assert_eq!(&iso_nanos(0), b"1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            &iso_nanos(1_764_244_800_123_456_789),
            b"2025-11-27T12:00:00.123456789Z"
        );
        assert_eq!(
            &iso_nanos(951_782_400_000_000_000),
            b"2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(&iso_nanos(i64::MAX), b"2262-04-11T23:47:16.854775807Z");
    }

    #[test]
    fn writes_ipv6_as_python_does() {
        for (text, expected) in [
            ("2001:DB8:0:0:0:0:0:1", Some("2001:db8::1")),
            ("2001:db8:0:0:1:0:0:1", Some("2001:db8::1:0:0:1")),
            ("2001:db8:0:1:1:1:1:1", Some("2001:db8:0:1:1:1:1:1")),
            ("::", Some("::")),
            ("::1", Some("::1")),
            ("1::", Some("1::")),
            ("::1.2.3.4", Some("::102:304")),
            ("64:ff9b::1.2.3.4", Some("64:ff9b::102:304")),
            ("::ffff:1.2.3.4", None),
            ("fe80::1%eth0", None),
            (" ::1", None),
            ("1:2:3:4:5:6:7:8:9", None),
        ] {
            assert_eq!(ip_text(text).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn accepts_only_plain_ipv4() {
        assert!(plain_ipv4("10.0.0.1"));
        assert!(plain_ipv4("255.255.255.255"));
        for bad in [
            "010.0.0.1",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            " 1.2.3.4",
            "::1",
            "1.2.3.+4",
            "",
        ] {
            assert!(!plain_ipv4(bad), "{bad}");
        }
    }
}
