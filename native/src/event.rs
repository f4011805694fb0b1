//! The `AuditEvent` of proto/v1/audit.proto, declared for prost by hand (every field the
//! collector's documents read; tags and types must match the .proto: a mismatch makes
//! the documents of tests/collector/test_native.py, which sets every field,
//! differ from the Python reference). Unknown fields are skipped, as the Python decoder
//! keeps but never reads them.

use std::collections::BTreeMap;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FieldChange {
    #[prost(string, tag = "1")]
    pub field: String,
    #[prost(string, optional, tag = "2")]
    pub old_value: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub new_value: Option<String>,
    #[prost(int32, tag = "4")]
    pub old_type: i32,
    #[prost(int32, tag = "5")]
    pub new_type: i32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct User {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub email: String,
    #[prost(string, repeated, tag = "4")]
    pub roles: Vec<String>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Organization {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Source {
    #[prost(string, tag = "1")]
    pub ip: String,
    #[prost(uint32, tag = "2")]
    pub port: u32,
    #[prost(string, tag = "3")]
    pub device_id: String,
    #[prost(string, tag = "4")]
    pub user_agent: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CrmObject {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub id: String,
    #[prost(string, tag = "3")]
    pub name: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct LogOrigin {
    #[prost(string, tag = "1")]
    pub file_path: String,
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    #[prost(string, tag = "3")]
    pub source_name: String,
    #[prost(string, tag = "4")]
    pub format: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Observer {
    #[prost(string, tag = "1")]
    pub agent_id: String,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub agent_version: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AuditEvent {
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
    #[prost(message, optional, tag = "2")]
    pub observer: Option<Observer>,
    #[prost(int64, tag = "3")]
    pub time_unix_nano: i64,
    #[prost(int64, tag = "4")]
    pub observed_unix_nano: i64,
    #[prost(string, repeated, tag = "5")]
    pub event_category: Vec<String>,
    #[prost(string, repeated, tag = "6")]
    pub event_type: Vec<String>,
    #[prost(string, tag = "7")]
    pub action: String,
    #[prost(int32, tag = "8")]
    pub outcome: i32,
    #[prost(int32, tag = "9")]
    pub audit_category: i32,
    #[prost(message, optional, tag = "10")]
    pub user: Option<User>,
    #[prost(message, optional, tag = "11")]
    pub source: Option<Source>,
    #[prost(string, tag = "12")]
    pub session_id: String,
    #[prost(message, optional, tag = "13")]
    pub object: Option<CrmObject>,
    #[prost(message, repeated, tag = "14")]
    pub changes: Vec<FieldChange>,
    #[prost(uint64, optional, tag = "15")]
    pub record_count: Option<u64>,
    #[prost(string, tag = "16")]
    pub message: String,
    #[prost(string, tag = "17")]
    pub original: String,
    #[prost(message, optional, tag = "18")]
    pub log: Option<LogOrigin>,
    #[prost(string, repeated, tag = "19")]
    pub flags: Vec<String>,
    #[prost(string, tag = "20")]
    pub parse_error: String,
    #[prost(btree_map = "string, string", tag = "21")]
    pub attributes: BTreeMap<String, String>,
    #[prost(bytes = "vec", tag = "22")]
    pub chain_hash: Vec<u8>,
    #[prost(bytes = "vec", tag = "23")]
    pub chain_prev: Vec<u8>,
    #[prost(message, optional, tag = "24")]
    pub effective_user: Option<User>,
    #[prost(message, optional, tag = "25")]
    pub target_user: Option<User>,
    #[prost(message, optional, tag = "26")]
    pub organization: Option<Organization>,
    #[prost(string, tag = "27")]
    pub stream_id: String,
}
