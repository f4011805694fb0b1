//! The agent's JSON-lines kernel: one line of a CRM application's JSON log, mapped by a
//! source's plan of plain paths, to the serialized `AuditEvent` that
//! `agent.parsers.jsonlines.parse` builds in Python (the reference, and the oracle of
//! tests/agent/test_native_mapping.py).
//!
//! Exactness over coverage: whatever this module would not build exactly as Python does,
//! it *declines* (`Outcome::Decline`), and the agent parses that line in Python. Declined
//! are lines that are not valid UTF-8 or not a JSON object `jsonread` reads (Python then
//! flags them), numbers whose Python text is not their literal text (exponents, `-0`,
//! `0.0x`, more than 18 digits), timestamps other than an ISO 8601 date-time with its
//! zone, non-ASCII text where Python would strip or lower-case it, and arrays or objects
//! holding non-integer numbers where Python would write them as JSON.

use std::collections::BTreeMap;

use crate::jsonread::{self, Json, Object};

use crate::event::{AuditEvent, CrmObject, FieldChange, Organization, Source, User};

/// Why a line is not built here: Python builds it.
pub struct Decline;

type Built<T> = Result<T, Decline>;

/// A mapped value that cannot fill its target: the event is flagged, the value stays in
/// `attributes` (Python's `UnusableValue` / `TimestampError`).
enum Set {
    Done,
    Unusable,
}

#[derive(Clone, Copy)]
pub enum Text {
    Action,
    UserId,
    UserName,
    UserEmail,
    EffectiveId,
    EffectiveName,
    EffectiveEmail,
    TargetId,
    TargetName,
    TargetEmail,
    OrganizationId,
    OrganizationName,
    DeviceId,
    UserAgent,
    SessionId,
    ObjectType,
    ObjectId,
    ObjectName,
    Message,
}

#[derive(Clone, Copy)]
pub enum Kind {
    Time,
    Text(Text),
    Outcome,
    Roles { target_user: bool },
    Ip,
    Port,
    Count,
    Changes,
}

impl Kind {
    /// The kind of a target of agent.parsers.mapping.targets.SETTERS, or None.
    pub fn of(target: &str) -> Option<Kind> {
        use Text::*;
        Some(match target {
            "timestamp" => Kind::Time,
            "action" => Kind::Text(Action),
            "outcome" => Kind::Outcome,
            "user.id" => Kind::Text(UserId),
            "user.name" => Kind::Text(UserName),
            "user.email" => Kind::Text(UserEmail),
            "user.roles" => Kind::Roles { target_user: false },
            "user.effective.id" => Kind::Text(EffectiveId),
            "user.effective.name" => Kind::Text(EffectiveName),
            "user.effective.email" => Kind::Text(EffectiveEmail),
            "user.target.id" => Kind::Text(TargetId),
            "user.target.name" => Kind::Text(TargetName),
            "user.target.email" => Kind::Text(TargetEmail),
            "user.target.roles" => Kind::Roles { target_user: true },
            "organization.id" => Kind::Text(OrganizationId),
            "organization.name" => Kind::Text(OrganizationName),
            "source.ip" => Kind::Ip,
            "source.port" => Kind::Port,
            "source.device_id" => Kind::Text(DeviceId),
            "source.user_agent" => Kind::Text(UserAgent),
            "session_id" => Kind::Text(SessionId),
            "object.type" => Kind::Text(ObjectType),
            "object.id" => Kind::Text(ObjectId),
            "object.name" => Kind::Text(ObjectName),
            "changes" => Kind::Changes,
            "record_count" => Kind::Count,
            "message" => Kind::Text(Message),
            _ => return None,
        })
    }
}

/// One field of a plan: a plain dotted path of one or two keys and its target.
pub struct Field {
    pub path: String,
    head: String,
    tail: Option<String>,
    pub kind: Kind,
    pub flag: String,
}

impl Field {
    /// None for a path this kernel does not look up (more than two keys, an empty key).
    pub fn new(path: &str, kind: Kind, flag: &str) -> Option<Field> {
        let mut parts = path.split('.');
        let head = parts.next()?.to_owned();
        let tail = parts.next().map(str::to_owned);
        if parts.next().is_some() || head.is_empty() || tail.as_deref() == Some("") {
            return None;
        }
        Some(Field {
            path: path.to_owned(),
            head,
            tail,
            kind,
            flag: flag.to_owned(),
        })
    }

    /// Python's lookup: the literal key first, then `head` → `tail` (MISSING: None).
    fn lookup<'r, 'a>(&self, record: &'r Object<'a>) -> Option<&'r Json<'a>> {
        if let Some(value) = record.get(&self.path) {
            return Some(value);
        }
        let tail = self.tail.as_ref()?;
        match record.get(&self.head) {
            Some(Json::Object(inner)) => inner.get(tail),
            _ => None,
        }
    }
}

/// An action as the source's vocabulary resolves it: canonical name (None: unknown),
/// ECS categories and types, audit category, implied outcome.
#[derive(Clone)]
pub struct Resolved {
    pub name: Option<String>,
    pub event_category: Vec<String>,
    pub event_type: Vec<String>,
    pub audit_category: i32,
    pub implied_outcome: i32,
}

/// What the kernel asks Python: the action vocabulary and the address check.
pub trait Oracle {
    fn resolve(&self, action: &str) -> Built<Resolved>;
    fn is_ip(&self, text: &str) -> Built<bool>;
}

/// The event a line maps to, serialized as Python serializes it (`deterministic=True`);
/// Decline where Python must build it.
pub fn map_line(line: &[u8], fields: &[Field], oracle: &dyn Oracle) -> Built<Vec<u8>> {
    Ok(canonical_bytes(map_record(line, fields, oracle)?))
}

/// What the agent's pipeline adds to a parsed event: its file's stamp (a serialized
/// event holding the observer and the log origin, which no parser sets), the time it
/// was read and the record's offset in its file.
pub struct Stamp<'a> {
    pub stamp: &'a [u8],
    pub observed_unix_nano: i64,
    pub offset: u64,
}

/// The stamped event's deterministic bytes and its effective time (event time, else
/// observed): what the spool numbers and stores, without a Python object in between.
pub fn map_stamped(
    line: &[u8],
    fields: &[Field],
    oracle: &dyn Oracle,
    stamp: &Stamp,
) -> Built<(Vec<u8>, i64)> {
    let mut event = map_record(line, fields, oracle)?;
    let origin: AuditEvent = prost::Message::decode(stamp.stamp).map_err(|_| Decline)?;
    event.observer = origin.observer;
    let mut log = origin.log.unwrap_or_default();
    log.offset = stamp.offset;
    event.log = Some(log);
    event.observed_unix_nano = stamp.observed_unix_nano;
    let time = if event.time_unix_nano != 0 {
        event.time_unix_nano
    } else {
        event.observed_unix_nano
    };
    Ok((canonical_bytes(event), time))
}

/// Python's deterministic serialization (upb) of an event: fields in number order as
/// prost writes them, but the `attributes` map (21) written as upb writes it: every
/// entry with both its key and its value, even empty, in upb's order (bytes compared
/// over the shorter key, then the longer key first), where prost would leave empty
/// ones out and order them otherwise.
pub fn canonical_bytes(mut event: AuditEvent) -> Vec<u8> {
    let attributes = std::mem::take(&mut event.attributes);
    // Fields after 21 that a mapped event holds (22, 23 and 27 are the spool's or unset).
    let after = AuditEvent {
        effective_user: event.effective_user.take(),
        target_user: event.target_user.take(),
        organization: event.organization.take(),
        chain_hash: std::mem::take(&mut event.chain_hash),
        chain_prev: std::mem::take(&mut event.chain_prev),
        stream_id: std::mem::take(&mut event.stream_id),
        ..Default::default()
    };
    let mut out = prost::Message::encode_to_vec(&event);
    let mut entries: Vec<(&String, &String)> = attributes.iter().collect();
    entries.sort_by(|(a, _), (b, _)| {
        let common = a.len().min(b.len());
        a.as_bytes()[..common]
            .cmp(&b.as_bytes()[..common])
            .then(b.len().cmp(&a.len()))
    });
    for (key, value) in entries {
        let entry_len =
            2 + varint_len(key.len()) + key.len() + varint_len(value.len()) + value.len();
        out.extend_from_slice(&[0xAA, 0x01]); // field 21, length-delimited
        put_varint(&mut out, entry_len as u64);
        out.push(0x0A);
        put_varint(&mut out, key.len() as u64);
        out.extend_from_slice(key.as_bytes());
        out.push(0x12);
        put_varint(&mut out, value.len() as u64);
        out.extend_from_slice(value.as_bytes());
    }
    prost::Message::encode(&after, &mut out).expect("a Vec grows as needed");
    out
}

fn varint_len(value: usize) -> usize {
    prost::encoding::encoded_len_varint(value as u64)
}

fn put_varint(out: &mut Vec<u8>, value: u64) {
    prost::encoding::encode_varint(value, out);
}

/// The event a line maps to; Decline where Python must build it.
fn map_record(line: &[u8], fields: &[Field], oracle: &dyn Oracle) -> Built<AuditEvent> {
    let text = std::str::from_utf8(line).map_err(|_| Decline)?;
    let Some(Json::Object(record)) = jsonread::parse(text) else {
        return Err(Decline);
    };
    let mut event = AuditEvent {
        original: text.to_owned(),
        ..Default::default()
    };
    let mut consumed: Vec<&str> = Vec::new();
    let mut flags: Vec<String> = Vec::new();
    for field in fields {
        let Some(value) = field.lookup(&record) else {
            continue;
        };
        if value.is_null() {
            consumed.push(&field.path);
            continue;
        }
        match apply(&mut event, field.kind, value, oracle)? {
            Set::Done => consumed.push(&field.path),
            Set::Unusable => {
                if !flags.contains(&field.flag) {
                    flags.push(field.flag.clone());
                }
            }
        }
    }
    if !event.action.is_empty() {
        let resolved = oracle.resolve(&event.action)?;
        match resolved.name {
            None => flags.push("unknown_action".to_owned()),
            Some(name) => {
                event.action = name;
                event.event_category.extend(resolved.event_category);
                event.event_type.extend(resolved.event_type);
                if resolved.audit_category != 0 {
                    event.audit_category = resolved.audit_category;
                }
                if resolved.implied_outcome != 0 && event.outcome == 0 {
                    event.outcome = resolved.implied_outcome;
                }
            }
        }
    }
    keep_unconsumed(&record, fields, &consumed, &mut event.attributes)?;
    event.flags = flags;
    Ok(event)
}

fn apply(event: &mut AuditEvent, kind: Kind, value: &Json, oracle: &dyn Oracle) -> Built<Set> {
    match kind {
        Kind::Text(target) => Ok(match scalar_text(value)? {
            Some(text) => {
                *text_slot(event, target) = text;
                Set::Done
            }
            None => Set::Unusable,
        }),
        Kind::Time => {
            let Json::String(text) = value else {
                return Err(Decline);
            };
            event.time_unix_nano = iso8601_nanos(text).ok_or(Decline)?;
            Ok(Set::Done)
        }
        Kind::Outcome => {
            let Some(text) = scalar_text(value)? else {
                return Ok(Set::Unusable);
            };
            let outcome = match python_strip(&text)?.to_ascii_lowercase().as_str() {
                "success" | "succeeded" => 1,
                "failure" | "failed" => 2,
                _ => return Ok(Set::Unusable),
            };
            event.outcome = outcome;
            Ok(Set::Done)
        }
        Kind::Roles { target_user } => {
            let items: &[Json] = match value {
                Json::Array(items) => items,
                single => std::slice::from_ref(single),
            };
            let mut roles = Vec::with_capacity(items.len());
            for item in items.iter().filter(|item| !item.is_null()) {
                match scalar_text(item)? {
                    Some(text) => roles.push(text),
                    None => return Ok(Set::Unusable),
                }
            }
            // Python's `extend` marks the user present even for no roles.
            let user = if target_user {
                &mut event.target_user
            } else {
                &mut event.user
            };
            user.get_or_insert_with(User::default).roles.extend(roles);
            Ok(Set::Done)
        }
        Kind::Ip => {
            // A number's or boolean's text is never an address to `ipaddress` either.
            let Json::String(raw) = value else {
                return Ok(Set::Unusable);
            };
            let text = python_strip(raw)?;
            if !(is_dotted_ipv4(text) || oracle.is_ip(text)?) {
                return Ok(Set::Unusable);
            }
            source(event).ip = text.to_owned();
            Ok(Set::Done)
        }
        Kind::Port => Ok(match unsigned(value, 65_535)? {
            Some(port) => {
                source(event).port = port as u32;
                Set::Done
            }
            None => Set::Unusable,
        }),
        Kind::Count => Ok(match unsigned(value, u64::MAX)? {
            Some(count) => {
                event.record_count = Some(count);
                Set::Done
            }
            None => Set::Unusable,
        }),
        Kind::Changes => {
            let Json::Array(items) = value else {
                return Ok(Set::Unusable);
            };
            let mut changes = Vec::with_capacity(items.len());
            for item in items {
                let Json::Object(item) = item else {
                    return Ok(Set::Unusable);
                };
                let field = match item.get("field") {
                    None | Some(Json::Null) => return Ok(Set::Unusable),
                    Some(field) => match scalar_text(field)? {
                        Some(text) => text,
                        None => return Ok(Set::Unusable),
                    },
                };
                let mut change = FieldChange {
                    field,
                    ..Default::default()
                };
                if let Some(old) = item.get("old").filter(|old| !old.is_null()) {
                    let (text, kind) = typed_text(old)?;
                    change.old_value = Some(text);
                    change.old_type = kind;
                }
                if let Some(new) = item.get("new").filter(|new| !new.is_null()) {
                    let (text, kind) = typed_text(new)?;
                    change.new_value = Some(text);
                    change.new_type = kind;
                }
                changes.push(change);
            }
            event.changes.extend(changes);
            Ok(Set::Done)
        }
    }
}

fn text_slot(event: &mut AuditEvent, target: Text) -> &mut String {
    fn user(slot: &mut Option<User>) -> &mut User {
        slot.get_or_insert_with(User::default)
    }
    fn object(event: &mut AuditEvent) -> &mut CrmObject {
        event.object.get_or_insert_with(CrmObject::default)
    }
    fn organization(event: &mut AuditEvent) -> &mut Organization {
        event.organization.get_or_insert_with(Organization::default)
    }
    match target {
        Text::Action => &mut event.action,
        Text::UserId => &mut user(&mut event.user).id,
        Text::UserName => &mut user(&mut event.user).name,
        Text::UserEmail => &mut user(&mut event.user).email,
        Text::EffectiveId => &mut user(&mut event.effective_user).id,
        Text::EffectiveName => &mut user(&mut event.effective_user).name,
        Text::EffectiveEmail => &mut user(&mut event.effective_user).email,
        Text::TargetId => &mut user(&mut event.target_user).id,
        Text::TargetName => &mut user(&mut event.target_user).name,
        Text::TargetEmail => &mut user(&mut event.target_user).email,
        Text::OrganizationId => &mut organization(event).id,
        Text::OrganizationName => &mut organization(event).name,
        Text::DeviceId => &mut source(event).device_id,
        Text::UserAgent => &mut source(event).user_agent,
        Text::SessionId => &mut event.session_id,
        Text::ObjectType => &mut object(event).r#type,
        Text::ObjectId => &mut object(event).id,
        Text::ObjectName => &mut object(event).name,
        Text::Message => &mut event.message,
    }
}

fn source(event: &mut AuditEvent) -> &mut Source {
    event.source.get_or_insert_with(Source::default)
}

/// Python's `scalar_text`: Some(text) of a string, boolean or number; None (unusable)
/// for an array or object.
fn scalar_text(value: &Json) -> Built<Option<String>> {
    Ok(Some(match value {
        Json::String(text) => text.as_ref().to_owned(),
        Json::Bool(flag) => if *flag { "true" } else { "false" }.to_owned(),
        Json::Number(literal) => number_text(literal)?.to_owned(),
        Json::Null | Json::Array(_) | Json::Object(_) => return Ok(None),
    }))
}

/// Python's `typed_text`: a change side's text and FieldChange.ValueType.
fn typed_text(value: &Json) -> Built<(String, i32)> {
    Ok(match value {
        Json::String(text) => (text.as_ref().to_owned(), 0),
        Json::Number(literal) => (number_text(literal)?.to_owned(), 1),
        Json::Bool(flag) => (if *flag { "true" } else { "false" }.to_owned(), 2),
        Json::Array(_) | Json::Object(_) => {
            let mut out = String::new();
            python_json(value, &mut out)?;
            (out, 3)
        }
        Json::Null => return Err(Decline),
    })
}

/// A JSON number's literal where Python writes the same text for it (`str(int)`,
/// `str(Decimal)`): plain integers of up to 18 digits but `-0`, and plain decimals
/// whose first digit is not zero (`12.50`, `0.5`). Anything else declines.
fn number_text(literal: &str) -> Built<&str> {
    let digits = literal.strip_prefix('-').unwrap_or(literal);
    if digits.bytes().any(|b| b == b'e' || b == b'E') {
        return Err(Decline);
    }
    match digits.split_once('.') {
        None => {
            if digits.len() > 18 || literal == "-0" {
                return Err(Decline);
            }
        }
        Some((whole, fraction)) => {
            let leading = if whole == "0" { fraction } else { whole };
            if !leading.starts_with(|c: char| ('1'..='9').contains(&c)) {
                return Err(Decline);
            }
        }
    }
    Ok(literal)
}

fn is_integer_literal(literal: &str) -> bool {
    !literal.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// Python's `unsigned`: an integer (or a string of ASCII digits) in 0..=maximum; None
/// (unusable) for anything else that Python refuses too.
fn unsigned(value: &Json, maximum: u64) -> Built<Option<u64>> {
    let digits = match value {
        Json::Bool(_) | Json::Array(_) | Json::Object(_) | Json::Null => return Ok(None),
        Json::String(text) => {
            let stripped = python_strip(text)?;
            if stripped.is_empty() || !stripped.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(None);
            }
            stripped
        }
        Json::Number(literal) => {
            if !is_integer_literal(literal) || *literal == "-0" {
                return Err(Decline);
            }
            if literal.starts_with('-') {
                return Ok(None);
            }
            literal
        }
    };
    let significant = digits.trim_start_matches('0');
    if significant.len() > 20 {
        // Python's int() refuses over 4300 digits with an error of its own.
        return if digits.len() > 4000 {
            Err(Decline)
        } else {
            Ok(None)
        };
    }
    match significant.parse::<u128>() {
        Ok(number) if number <= maximum as u128 => Ok(Some(number as u64)),
        Ok(_) => Ok(None),
        Err(_) if significant.is_empty() => Ok(Some(0)),
        Err(_) => Err(Decline),
    }
}

/// Python's `str.strip()` of ASCII text (its whitespace includes \x1c-\x1f); non-ASCII
/// text declines, as Unicode whitespace is not stripped here.
fn python_strip(text: &str) -> Built<&str> {
    if !text.is_ascii() {
        return Err(Decline);
    }
    Ok(text.trim_matches(|c: char| matches!(c, ' ' | '\t'..='\r' | '\x1c'..='\x1f')))
}

/// Four decimal parts of 0..=255 without leading zeros: the form `ipaddress` accepts.
fn is_dotted_ipv4(text: &str) -> bool {
    let mut parts = 0;
    for part in text.split('.') {
        parts += 1;
        let valid = !part.is_empty()
            && part.len() <= 3
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part.len() == 1 || !part.starts_with('0'))
            && part.parse::<u16>().is_ok_and(|n| n <= 255);
        if !valid || parts > 4 {
            return false;
        }
    }
    parts == 4
}

/// Unix nanoseconds of `YYYY-MM-DD[Tt ]hh:mm:ss[.,f{1,9}][ws](Z|z|±hh[:]mm)` when Python's
/// `parse_timestamp` takes it exactly (the whole text, ASCII digits, a valid date, an
/// offset under 24 h, years 1678-2262); None otherwise (Python then decides).
fn iso8601_nanos(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |from: usize, count: usize| -> Option<i64> {
        let slice = b.get(from..from + count)?;
        slice.iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + (d - b'0') as i64)
        })
    };
    let year = digits(0, 4)?;
    let month = digits(5, 2)?;
    let day = digits(8, 2)?;
    let hour = digits(11, 2)?;
    let minute = digits(14, 2)?;
    let second = digits(17, 2)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if matches!(b.get(at), Some(b'.' | b',')) {
        let start = at + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let count = end - start;
        if count == 0 || count > 9 {
            return None;
        }
        nanos = digits(start, count)? * 10i64.pow((9 - count) as u32);
        at = end;
    }
    // Python's \s also matches Unicode spaces; this kernel reads only ASCII ones.
    while matches!(b.get(at), Some(b' ' | b'\t'..=b'\r' | b'\x1c'..=b'\x1f')) {
        at += 1;
    }
    let offset_minutes = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let hours = digits(at + 1, 2)?;
            let minutes_at = if b.get(at + 3) == Some(&b':') {
                at + 4
            } else {
                at + 3
            };
            let minutes = digits(minutes_at, 2)?;
            if minutes_at + 2 != b.len() || hours * 60 + minutes >= 24 * 60 {
                return None;
            }
            let total = hours * 60 + minutes;
            if sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return None,
    };
    if !(1..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // A leap second 60 is folded into the next second, as Python does.
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
        - offset_minutes * 60;
    let total = (seconds as i128) * 1_000_000_000 + nanos as i128;
    if total.abs() > i64::MAX as i128 {
        return None;
    }
    Some(total as i64)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Python's `json.dumps(value, ensure_ascii=False, separators=(",", ":"))` for arrays
/// and objects of strings, integers, booleans and nulls; other numbers decline (Python
/// writes them as floats).
fn python_json(value: &Json, out: &mut String) -> Built<()> {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        // Python writes a Decimal in an array as a float: integers only.
        Json::Number(literal) if is_integer_literal(literal) => out.push_str(number_text(literal)?),
        Json::Number(_) => return Err(Decline),
        Json::String(text) => python_json_string(text, out),
        Json::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                python_json(item, out)?;
            }
            out.push(']');
        }
        Json::Object(map) => {
            out.push('{');
            for (position, (key, item)) in map.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                python_json_string(key, out);
                out.push(':');
                python_json(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn python_json_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `json_text`: a scalar's text, an array's or empty object's JSON.
fn json_text(value: &Json) -> Built<String> {
    match value {
        Json::Array(_) | Json::Object(_) | Json::Null => {
            let mut out = String::new();
            python_json(value, &mut out)?;
            Ok(out)
        }
        scalar => Ok(scalar_text(scalar)?.unwrap_or_default()),
    }
}

/// The record's keys no field consumed, into `attributes` under their dotted paths
/// (codegen's tail: `_copy` for a key no field can touch, `_copy_unconsumed` for one
/// that holds a consumed path).
fn keep_unconsumed(
    record: &Object,
    fields: &[Field],
    consumed: &[&str],
    attributes: &mut BTreeMap<String, String>,
) -> Built<()> {
    for (key, item) in record.iter() {
        if item.is_null() {
            continue;
        }
        let touched = fields.iter().any(|field| {
            let root = field.path.as_str();
            root == key || is_below(key, root) || is_below(root, key)
        });
        if !touched {
            copy_all(attributes, key.to_owned(), item)?;
        } else if !is_consumed(key, consumed) {
            copy_unconsumed(attributes, key.to_owned(), item, consumed)?;
        }
    }
    Ok(())
}

/// Whether `path` starts with `root` + ".".
fn is_below(path: &str, root: &str) -> bool {
    path.len() > root.len() && path.as_bytes()[root.len()] == b'.' && path.starts_with(root)
}

fn is_consumed(path: &str, consumed: &[&str]) -> bool {
    consumed
        .iter()
        .any(|done| path == *done || is_below(path, done))
}

fn copy_all(attributes: &mut BTreeMap<String, String>, path: String, value: &Json) -> Built<()> {
    match value {
        Json::Object(map) if !map.is_empty() => {
            for (key, item) in map.iter() {
                if !item.is_null() {
                    copy_all(attributes, format!("{path}.{key}"), item)?;
                }
            }
        }
        _ => {
            attributes.insert(path, json_text(value)?);
        }
    }
    Ok(())
}

fn copy_unconsumed(
    attributes: &mut BTreeMap<String, String>,
    path: String,
    value: &Json,
    consumed: &[&str],
) -> Built<()> {
    match value {
        Json::Object(map) if !map.is_empty() => {
            for (key, item) in map.iter() {
                let child = format!("{path}.{key}");
                if !item.is_null() && !is_consumed(&child, consumed) {
                    copy_unconsumed(attributes, child, item, consumed)?;
                }
            }
        }
        _ => {
            attributes.insert(path, json_text(value)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_reads_zones_fractions_and_leap_seconds() {
        assert_eq!(iso8601_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            iso8601_nanos("1970-01-01T01:00:00.5+01:00"),
            Some(500_000_000)
        );
        assert_eq!(
            iso8601_nanos("1970-01-01 00:00:01,000000001 -0000"),
            Some(1_000_000_001)
        );
        assert_eq!(
            iso8601_nanos("2016-12-31T23:59:60Z"),
            Some(1_483_228_800_000_000_000)
        );
        assert_eq!(iso8601_nanos("2026-02-29T00:00:00Z"), None);
        assert_eq!(iso8601_nanos("2026-01-05T08:00:00"), None);
        assert_eq!(iso8601_nanos("2026-01-05T08:00:00+24:00"), None);
        assert_eq!(iso8601_nanos("2300-01-01T00:00:00Z"), None);
    }

    #[test]
    fn numbers_keep_their_literal_only_where_python_does() {
        let text = |literal: &str| number_text(literal).ok().map(str::to_owned);
        assert_eq!(text("12.50").as_deref(), Some("12.50"));
        assert_eq!(text("0.5").as_deref(), Some("0.5"));
        assert_eq!(text("-7").as_deref(), Some("-7"));
        assert_eq!(text("0.05"), None);
        assert_eq!(text("1e5"), None);
        assert_eq!(text("-0"), None);
    }

    #[test]
    fn dotted_ipv4_is_what_ipaddress_accepts() {
        assert!(is_dotted_ipv4("10.20.2.20"));
        assert!(is_dotted_ipv4("0.0.0.0"));
        assert!(!is_dotted_ipv4("10.020.2.20"));
        assert!(!is_dotted_ipv4("256.1.1.1"));
        assert!(!is_dotted_ipv4("1.2.3"));
        assert!(!is_dotted_ipv4("1.2.3.4.5"));
    }
}
