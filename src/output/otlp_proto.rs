//! OTLP log export requests (`ExportLogsServiceRequest`) encoded straight
//! from access events, one record per access.
//!
//! Each record is written once, in protobuf wire format, into a buffer that
//! is reused from batch to batch: no per-record log object, no allocation
//! per attribute, no generated message per record. Only the resource and the
//! instrumentation scope, the same in every request, go through the
//! generated `opentelemetry-proto` types (once, when the encoder is made).
//! Field numbers are those of OTLP's `logs.proto` and `common.proto`; the
//! tests decode what this writes with the generated types.
//!
//! Attributes carry OpenTelemetry semantic-convention names where one exists
//! (`k8s.*`, `container.*`, `process.*`, `file.*`) and `config_access.*`
//! otherwise.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::Resource;
use prost::Message as _;

use crate::model::event::AccessEvent;
use crate::model::pod::SourceKind;

/// `event_name` of every record.
pub const EVENT_NAME: &str = "config_access";

/// OTLP `SeverityNumber`s used here.
const SEVERITY_INFO: u64 = 9;
const SEVERITY_WARN: u64 = 13;

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

/// `k8s.<kind>.name` attribute of a workload kind, when the conventions name one.
fn workload_key(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" => "k8s.deployment.name",
        "StatefulSet" => "k8s.statefulset.name",
        "DaemonSet" => "k8s.daemonset.name",
        "ReplicaSet" => "k8s.replicaset.name",
        "Job" => "k8s.job.name",
        "CronJob" => "k8s.cronjob.name",
        _ => return None,
    })
}

fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Secret => "Secret",
        SourceKind::ConfigMap => "ConfigMap",
        SourceKind::ServiceAccountToken => "ServiceAccountToken",
        SourceKind::DownwardApi => "DownwardAPI",
        SourceKind::ClusterTrustBundle => "ClusterTrustBundle",
    }
}

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from(field << 3 | wire));
}

/// A length-delimited field (string, bytes or an encoded message).
fn len_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(buf, field, LEN);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

/// Size of a length-delimited field of `len` bytes with a one-byte tag.
fn len_field_size(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// `LogRecord` fields (logs.proto).
mod record {
    pub const TIME_UNIX_NANO: u32 = 1;
    pub const SEVERITY_NUMBER: u32 = 2;
    pub const SEVERITY_TEXT: u32 = 3;
    pub const BODY: u32 = 5;
    pub const ATTRIBUTES: u32 = 6;
    pub const OBSERVED_TIME_UNIX_NANO: u32 = 11;
    pub const EVENT_NAME: u32 = 12;
}

/// `AnyValue` (common.proto): the value of an attribute or of the body.
enum Any<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
}

impl Any<'_> {
    fn size(&self) -> usize {
        match self {
            Any::Str(s) => len_field_size(s.len()),
            Any::Bool(_) => 2,
            Any::Int(i) => 1 + varint_len(*i as u64),
        }
    }

    fn write(&self, buf: &mut Vec<u8>) {
        match self {
            Any::Str(s) => len_field(buf, 1, s.as_bytes()),
            Any::Bool(b) => {
                tag(buf, 2, VARINT);
                buf.push(u8::from(*b));
            }
            Any::Int(i) => {
                tag(buf, 3, VARINT);
                varint(buf, *i as u64);
            }
        }
    }
}

/// One `KeyValue` attribute of a record whose key is `prefix` followed by `rest`.
fn attribute(buf: &mut Vec<u8>, prefix: &str, rest: &str, value: Any<'_>) {
    let key = prefix.len() + rest.len();
    let any = value.size();
    tag(buf, record::ATTRIBUTES, LEN);
    varint(buf, (len_field_size(key) + len_field_size(any)) as u64);
    tag(buf, 1, LEN);
    varint(buf, key as u64);
    buf.extend_from_slice(prefix.as_bytes());
    buf.extend_from_slice(rest.as_bytes());
    tag(buf, 2, LEN);
    varint(buf, any as u64);
    value.write(buf);
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The time of an event's RFC 3339 timestamp, in Unix nanoseconds.
fn event_nanos(timestamp: &str) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(timestamp).ok()?;
    u64::try_from(t.timestamp_nanos_opt()?).ok()
}

/// Builds one export request at a time: the resource and scope of the
/// collector, and the records pushed since the last [`LogsRequest::take`].
#[derive(Debug)]
pub struct LogsRequest {
    /// `ResourceLogs.resource` with its tag and length.
    resource: Vec<u8>,
    /// `ResourceLogs.schema_url` with its tag and length, or nothing.
    schema_url: Vec<u8>,
    /// `ScopeLogs.scope` with its tag and length.
    scope: Vec<u8>,
    /// `ScopeLogs.log_records` so far, each with its tag and length.
    records: Vec<u8>,
    count: usize,
    /// One record's fields while it is written.
    scratch: Vec<u8>,
    /// One record's body while it is written.
    body: String,
}

impl LogsRequest {
    /// An encoder of requests from `resource` and the scope `scope`, version `version`.
    pub fn new(resource: &Resource, scope: &str, version: &str) -> Self {
        let attrs = ResourceAttributesWithSchema::from(resource);
        let mut resource = Vec::new();
        let res = ProtoResource {
            attributes: attrs.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        };
        len_field(&mut resource, 1, &res.encode_to_vec());
        let mut schema_url = Vec::new();
        if let Some(url) = attrs.schema_url.filter(|u| !u.is_empty()) {
            len_field(&mut schema_url, 3, url.as_bytes());
        }
        let scope = InstrumentationScope {
            name: scope.to_string(),
            version: version.to_string(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
        };
        let mut scope_field = Vec::new();
        len_field(&mut scope_field, 1, &scope.encode_to_vec());
        Self {
            resource,
            schema_url,
            scope: scope_field,
            records: Vec::new(),
            count: 0,
            scratch: Vec::new(),
            body: String::new(),
        }
    }

    /// Records pushed since the last [`LogsRequest::take`].
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Drops the records pushed since the last [`LogsRequest::take`].
    pub fn clear(&mut self) {
        self.records.clear();
        self.count = 0;
    }

    /// The request with every record pushed so far, encoded; starts the next one.
    pub fn take(&mut self) -> Vec<u8> {
        let scope_logs = self.scope.len() + self.records.len();
        let resource_logs =
            self.resource.len() + len_field_size(scope_logs) + self.schema_url.len();
        let mut out = Vec::with_capacity(len_field_size(resource_logs));
        tag(&mut out, 1, LEN);
        varint(&mut out, resource_logs as u64);
        out.extend_from_slice(&self.resource);
        tag(&mut out, 2, LEN);
        varint(&mut out, scope_logs as u64);
        out.extend_from_slice(&self.scope);
        out.extend_from_slice(&self.records);
        out.extend_from_slice(&self.schema_url);
        self.clear();
        out
    }

    /// Adds the record of `ev`: timestamps, severity (WARN for a denied
    /// open), a one-line body, the event name and the attributes.
    pub fn push(&mut self, ev: &AccessEvent) {
        let now = unix_nanos(SystemTime::now());
        let mut b = std::mem::take(&mut self.scratch);
        b.clear();
        tag(&mut b, record::TIME_UNIX_NANO, FIXED64);
        b.extend_from_slice(&event_nanos(&ev.timestamp).unwrap_or(now).to_le_bytes());
        let denied = matches!(ev.result.as_str(), "EACCES" | "EPERM");
        let (severity, text) = if denied {
            (SEVERITY_WARN, "WARN")
        } else {
            (SEVERITY_INFO, "INFO")
        };
        tag(&mut b, record::SEVERITY_NUMBER, VARINT);
        varint(&mut b, severity);
        len_field(&mut b, record::SEVERITY_TEXT, text.as_bytes());
        self.write_body(ev);
        let body = Any::Str(&self.body);
        tag(&mut b, record::BODY, LEN);
        varint(&mut b, body.size() as u64);
        body.write(&mut b);
        text_attributes(&mut b, ev);
        numeric_attributes(&mut b, ev);
        tag(&mut b, record::OBSERVED_TIME_UNIX_NANO, FIXED64);
        b.extend_from_slice(&now.to_le_bytes());
        len_field(&mut b, record::EVENT_NAME, EVENT_NAME.as_bytes());
        len_field(&mut self.records, 2, &b);
        self.scratch = b;
        self.count += 1;
    }

    /// `<command> (pid <pid>) <access> <object> <namespace>/<name> key <key>: <result>`.
    fn write_body(&mut self, ev: &AccessEvent) {
        let object = ev
            .source
            .as_ref()
            .map(|s| kind_name(s.kind))
            .or(ev.volume_type.as_deref())
            .unwrap_or("volume");
        self.body.clear();
        let _ = write!(
            self.body,
            "{} (pid {}) {} {} {}/{} key {}: {}",
            ev.process.command,
            ev.process.pid,
            ev.access,
            object,
            ev.namespace.as_deref().unwrap_or("?"),
            ev.config_name.as_deref().unwrap_or("?"),
            ev.key.as_deref().unwrap_or("?"),
            ev.result
        );
    }
}

/// The attributes that are text, under their semantic-convention names.
fn text_attributes(b: &mut Vec<u8>, ev: &AccessEvent) {
    let mut s = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            attribute(b, k, "", Any::Str(v));
        }
    };
    s("config_access.event_type", Some(&ev.event_type));
    s("k8s.namespace.name", ev.namespace.as_deref());
    s("k8s.pod.name", ev.pod_name.as_deref());
    s("k8s.pod.uid", ev.pod_uid.as_deref());
    s("k8s.volume.name", ev.volume_name.as_deref());
    s("k8s.volume.type", ev.volume_type.as_deref());
    s("file.name", ev.key.as_deref());
    s("file.path", ev.path.as_deref());
    s("config_access.mount_path", ev.mount_path.as_deref());
    s("config_access.config_name", ev.config_name.as_deref());
    s("config_access.access", Some(&ev.access));
    s("config_access.result", Some(&ev.result));
    s("config_access.syscall", Some(&ev.syscall));
    s("config_access.reader_pod_uid", ev.reader_pod_uid.as_deref());
    s(
        "config_access.service_account",
        ev.service_account.as_deref(),
    );
    s("process.executable.name", Some(&ev.process.command));
    s(
        "config_access.cgroup_path",
        ev.process.cgroup_path.as_deref(),
    );
    if ev.result != "ok" {
        s("error.type", Some(&ev.result));
    }
    if let Some(c) = &ev.container {
        s("container.id", Some(&c.id));
        s("k8s.container.name", c.name.as_deref());
        s("container.image.name", c.image.as_deref());
    }
    if let Some(src) = &ev.source {
        s("config_access.object.kind", Some(kind_name(src.kind)));
        s("config_access.object.name", src.name.as_deref());
        s("config_access.object.key", src.key.as_deref());
    }
    if let Some(w) = &ev.workload {
        s("config_access.workload.kind", Some(&w.kind));
        s("config_access.workload.name", Some(&w.name));
        if let Some(key) = workload_key(&w.kind) {
            s(key, Some(&w.name));
        }
    }
    for (k, v) in &ev.labels {
        attribute(b, "k8s.pod.label.", k, Any::Str(v));
    }
}

/// Process ids and numbers, and the token flag.
fn numeric_attributes(b: &mut Vec<u8>, ev: &AccessEvent) {
    let p = &ev.process;
    for (k, v) in [
        ("process.pid", i64::from(p.pid)),
        ("thread.id", i64::from(p.tid)),
        ("process.user.id", i64::from(p.uid)),
        ("process.group.id", i64::from(p.gid)),
        ("config_access.cgroup_id", p.cgroup_id as i64),
        ("config_access.mnt_ns", i64::from(p.mnt_ns)),
    ] {
        attribute(b, k, "", Any::Int(v));
    }
    attribute(
        b,
        "config_access.service_account_token",
        "",
        Any::Bool(ev.service_account_token),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use std::collections::BTreeMap;

    fn event() -> AccessEvent {
        serde_json::from_str(
            r#"{"event_type":"secret_access","timestamp":"2026-11-21T17:04:01.179182086Z",
            "pod_uid":"u1","namespace":"payments","pod_name":"payments-api-0","config_name":"db",
            "volume_name":"db-creds","volume_type":"secret","key":"password","path":"/etc/db/password",
            "mount_path":"/m","access":"read","result":"EACCES","syscall":"openat",
            "process":{"pid":4242,"tid":4243,"command":"cat","uid":65534,"gid":65534,
            "cgroup_id":18446744073709551615,"cgroup_v1_id":0,"mnt_ns":4026531840,"cgroup_path":"/kubepods/x"},
            "container":{"id":"c0ffee","name":"app","image":"img:1"},"reader_pod_uid":"u1",
            "workload":{"kind":"StatefulSet","name":"payments-api"},"service_account":"default",
            "labels":{"app":"payments","tier":"api"},
            "source":{"kind":"Secret","name":"db-credentials","key":"password"},
            "service_account_token":true}"#,
        )
        .unwrap()
    }

    fn value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
        match v.as_ref().and_then(|a| a.value.as_ref()) {
            Some(Value::StringValue(s)) => s.clone(),
            Some(Value::IntValue(i)) => i.to_string(),
            Some(Value::BoolValue(b)) => b.to_string(),
            other => panic!("unexpected value {other:?}"),
        }
    }

    #[test]
    fn varint_sizes_match_the_encoding() {
        for v in [0, 1, 127, 128, 16383, 16384, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn requests_decode_with_the_official_definitions() {
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "config-access-collector"),
                KeyValue::new("k8s.node.name", "node-a"),
            ])
            .build();
        let mut req = LogsRequest::new(&resource, "config-access-collector", "9.9.9");
        let mut ev = event();
        req.push(&ev);
        ev.result = "ok".into();
        ev.timestamp = "not a time".into();
        ev.service_account_token = false;
        // Longer than 127 bytes: multi-byte lengths at every level.
        ev.path = Some("/x".repeat(300));
        req.push(&ev);
        assert_eq!(req.len(), 2);
        let bytes = req.take();
        assert!(req.is_empty());
        let decoded = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();

        assert_eq!(decoded.resource_logs.len(), 1);
        let rl = &decoded.resource_logs[0];
        let res: BTreeMap<_, _> = rl
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), value(&kv.value)))
            .collect();
        assert_eq!(res["k8s.node.name"], "node-a");
        assert_eq!(rl.scope_logs.len(), 1);
        let sl = &rl.scope_logs[0];
        let scope = sl.scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("config-access-collector", "9.9.9")
        );
        assert_eq!(sl.log_records.len(), 2);

        let r = &sl.log_records[0];
        assert_eq!(r.time_unix_nano, 1_795_280_641_179_182_086);
        assert!(r.observed_time_unix_nano > 0);
        assert_eq!(r.severity_number, SEVERITY_WARN as i32);
        assert_eq!(r.severity_text, "WARN");
        assert_eq!(r.event_name, EVENT_NAME);
        assert_eq!(
            value(&r.body),
            "cat (pid 4242) read Secret payments/db key password: EACCES"
        );
        let a: BTreeMap<_, _> = r
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), value(&kv.value)))
            .collect();
        for (k, v) in [
            ("config_access.event_type", "secret_access"),
            ("k8s.namespace.name", "payments"),
            ("k8s.pod.name", "payments-api-0"),
            ("k8s.pod.uid", "u1"),
            ("k8s.volume.name", "db-creds"),
            ("k8s.volume.type", "secret"),
            ("file.name", "password"),
            ("file.path", "/etc/db/password"),
            ("config_access.mount_path", "/m"),
            ("config_access.config_name", "db"),
            ("config_access.access", "read"),
            ("config_access.result", "EACCES"),
            ("config_access.syscall", "openat"),
            ("config_access.reader_pod_uid", "u1"),
            ("config_access.service_account", "default"),
            ("process.executable.name", "cat"),
            ("config_access.cgroup_path", "/kubepods/x"),
            ("error.type", "EACCES"),
            ("container.id", "c0ffee"),
            ("k8s.container.name", "app"),
            ("container.image.name", "img:1"),
            ("config_access.object.kind", "Secret"),
            ("config_access.object.name", "db-credentials"),
            ("config_access.object.key", "password"),
            ("config_access.workload.kind", "StatefulSet"),
            ("config_access.workload.name", "payments-api"),
            ("k8s.statefulset.name", "payments-api"),
            ("k8s.pod.label.app", "payments"),
            ("k8s.pod.label.tier", "api"),
            ("process.pid", "4242"),
            ("thread.id", "4243"),
            ("process.user.id", "65534"),
            ("process.group.id", "65534"),
            ("config_access.cgroup_id", "-1"),
            ("config_access.mnt_ns", "4026531840"),
            ("config_access.service_account_token", "true"),
        ] {
            assert_eq!(a.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(a.len(), 36, "{a:#?}");

        let r = &sl.log_records[1];
        assert_eq!(r.severity_number, SEVERITY_INFO as i32);
        assert_eq!(r.severity_text, "INFO");
        assert_eq!(
            r.time_unix_nano, r.observed_time_unix_nano,
            "unparsable: the time it was seen"
        );
        let a: BTreeMap<_, _> = r
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), value(&kv.value)))
            .collect();
        assert!(!a.contains_key("error.type"));
        assert_eq!(a["file.path"], "/x".repeat(300));
        assert_eq!(a["config_access.service_account_token"], "false");
    }

    #[test]
    fn an_empty_request_is_valid() {
        let mut req = LogsRequest::new(&Resource::builder_empty().build(), "s", "");
        let decoded = ExportLogsServiceRequest::decode(req.take().as_slice()).unwrap();
        assert!(decoded.resource_logs[0].scope_logs[0]
            .log_records
            .is_empty());
    }
}
