//! OTLP log export requests (`ExportLogsServiceRequest`) made straight
//! from access events, one record per access, with the generated
//! `opentelemetry-proto` types and prost's encoding.
//!
//! No log object of the SDK in between: each event fills one generated
//! `LogRecord`, kept from event to event with its attribute list and every
//! string in it overwritten in place (no allocation per record), and prost
//! encodes it at once into the request's buffer. The request around the
//! records (`ResourceLogs`, `ScopeLogs`) is framed with prost's encoding
//! helpers when the batch is taken; the resource and the scope in it are
//! generated messages encoded once. Encoding the whole request as one
//! message instead has prost size every record again at each level it is
//! nested in: ~30% more of the encoder's CPU per record
//! (docs/performance.md, "OTLP logs at event rates").
//!
//! Attributes carry OpenTelemetry semantic-convention names where one exists
//! (`k8s.*`, `container.*`, `process.*`, `file.*`) and `config_access.*`
//! otherwise.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::Resource;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

use crate::model::event::AccessEvent;
use crate::model::pod::SourceKind;

/// `event_name` of every record.
pub const EVENT_NAME: &str = "config_access";

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

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The time of an event's RFC 3339 timestamp, in Unix nanoseconds.
fn event_nanos(timestamp: &str) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(timestamp).ok()?;
    u64::try_from(t.timestamp_nanos_opt()?).ok()
}

/// `s` made to hold `parts`, in its own allocation.
fn set_string(s: &mut String, parts: &[&str]) {
    s.clear();
    for p in parts {
        s.push_str(p);
    }
}

/// `value` made a string value holding `v`, reusing the string it holds.
fn set_str_value(value: &mut Option<AnyValue>, v: &str) {
    if let Some(AnyValue {
        value: Some(Value::StringValue(s)),
    }) = value
    {
        set_string(s, &[v]);
    } else {
        *value = Some(AnyValue {
            value: Some(Value::StringValue(v.to_string())),
        });
    }
}

/// Writes a record's attribute list in place: the `KeyValue`s (and their
/// strings) already in it are overwritten, the ones not needed this time
/// wait in `spare` for a record that needs them.
struct Attributes<'a> {
    list: &'a mut Vec<KeyValue>,
    spare: &'a mut Vec<KeyValue>,
    n: usize,
}

impl Attributes<'_> {
    fn next(&mut self) -> &mut KeyValue {
        if self.n == self.list.len() {
            self.list.push(self.spare.pop().unwrap_or_default());
        }
        self.n += 1;
        &mut self.list[self.n - 1]
    }

    fn str(&mut self, key: &[&str], v: &str) {
        let kv = self.next();
        set_string(&mut kv.key, key);
        set_str_value(&mut kv.value, v);
    }

    fn opt(&mut self, key: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(&[key], v);
        }
    }

    fn scalar(&mut self, key: &str, v: Value) {
        let kv = self.next();
        set_string(&mut kv.key, &[key]);
        match &mut kv.value {
            Some(any) => any.value = Some(v),
            none => *none = Some(AnyValue { value: Some(v) }),
        }
    }

    /// Puts what this record did not use aside.
    fn finish(self) {
        self.spare.extend(self.list.drain(self.n..));
    }
}

/// Field numbers of `ExportLogsServiceRequest.resource_logs`,
/// `ResourceLogs.resource`, `.scope_logs`, `.schema_url`, `ScopeLogs.scope`
/// and `.log_records` (logs_service.proto, logs.proto).
const REQUEST_RESOURCE_LOGS: u32 = 1;
const RESOURCE_LOGS_RESOURCE: u32 = 1;
const RESOURCE_LOGS_SCOPE_LOGS: u32 = 2;
const RESOURCE_LOGS_SCHEMA_URL: u32 = 3;
const SCOPE_LOGS_SCOPE: u32 = 1;
const SCOPE_LOGS_LOG_RECORDS: u32 = 2;

/// Size of a length-delimited field `tag` of `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Builds one export request at a time: the resource and scope of the
/// collector, and the records pushed since the last [`LogsRequest::take`].
#[derive(Debug)]
pub struct LogsRequest {
    /// `ResourceLogs.resource` and `.schema_url`, encoded with their keys.
    resource: Vec<u8>,
    schema_url: Vec<u8>,
    /// `ScopeLogs.scope`, encoded with its key.
    scope: Vec<u8>,
    /// `ScopeLogs.log_records` so far, encoded with their keys.
    records: Vec<u8>,
    count: usize,
    /// The record being made, reused for every event.
    record: LogRecord,
    /// Attributes that earlier records had and the last one did not.
    spare_attributes: Vec<KeyValue>,
}

impl LogsRequest {
    /// An encoder of requests from `resource` and the scope `scope`, version `version`.
    pub fn new(resource: &Resource, scope: &str, version: &str) -> Self {
        let attrs = ResourceAttributesWithSchema::from(resource);
        let res = ProtoResource {
            attributes: attrs.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        };
        let mut resource = Vec::new();
        prost::encoding::message::encode(RESOURCE_LOGS_RESOURCE, &res, &mut resource);
        let mut schema_url = Vec::new();
        if let Some(url) = attrs.schema_url.filter(|u| !u.is_empty()) {
            prost::encoding::string::encode(RESOURCE_LOGS_SCHEMA_URL, &url, &mut schema_url);
        }
        let scope = InstrumentationScope {
            name: scope.to_string(),
            version: version.to_string(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
        };
        let mut scope_field = Vec::new();
        prost::encoding::message::encode(SCOPE_LOGS_SCOPE, &scope, &mut scope_field);
        Self {
            resource,
            schema_url,
            scope: scope_field,
            records: Vec::new(),
            count: 0,
            record: LogRecord::default(),
            spare_attributes: Vec::new(),
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
        let resource_logs = self.resource.len()
            + field_len(RESOURCE_LOGS_SCOPE_LOGS, scope_logs)
            + self.schema_url.len();
        let mut out = Vec::with_capacity(field_len(REQUEST_RESOURCE_LOGS, resource_logs));
        encode_key(REQUEST_RESOURCE_LOGS, WireType::LengthDelimited, &mut out);
        encode_varint(resource_logs as u64, &mut out);
        out.extend_from_slice(&self.resource);
        encode_key(
            RESOURCE_LOGS_SCOPE_LOGS,
            WireType::LengthDelimited,
            &mut out,
        );
        encode_varint(scope_logs as u64, &mut out);
        out.extend_from_slice(&self.scope);
        out.extend_from_slice(&self.records);
        out.extend_from_slice(&self.schema_url);
        self.clear();
        out
    }

    /// Adds the record of `ev`: timestamps, severity (WARN for a denied
    /// open), a one-line body, the event name and the attributes.
    pub fn push(&mut self, ev: &AccessEvent) {
        let r = &mut self.record;
        let now = unix_nanos(SystemTime::now());
        r.time_unix_nano = event_nanos(&ev.timestamp).unwrap_or(now);
        r.observed_time_unix_nano = now;
        let denied = matches!(ev.result.as_str(), "EACCES" | "EPERM");
        let (severity, text) = if denied {
            (SeverityNumber::Warn, "WARN")
        } else {
            (SeverityNumber::Info, "INFO")
        };
        r.severity_number = severity as i32;
        set_string(&mut r.severity_text, &[text]);
        write_body(&mut r.body, ev);
        let mut attrs = Attributes {
            list: &mut r.attributes,
            spare: &mut self.spare_attributes,
            n: 0,
        };
        text_attributes(&mut attrs, ev);
        numeric_attributes(&mut attrs, ev);
        attrs.finish();
        set_string(&mut r.event_name, &[EVENT_NAME]);
        prost::encoding::message::encode(SCOPE_LOGS_LOG_RECORDS, r, &mut self.records);
        self.count += 1;
    }
}

/// `<command> (pid <pid>) <access> <object> <namespace>/<name> key <key>: <result>`.
fn write_body(body: &mut Option<AnyValue>, ev: &AccessEvent) {
    let object = ev
        .source
        .as_ref()
        .map(|s| kind_name(s.kind))
        .or(ev.volume_type.as_deref())
        .unwrap_or("volume");
    set_str_value(body, "");
    let Some(AnyValue {
        value: Some(Value::StringValue(s)),
    }) = body
    else {
        unreachable!("set to a string value above")
    };
    let _ = write!(
        s,
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

/// The attributes that are text, under their semantic-convention names.
fn text_attributes(a: &mut Attributes<'_>, ev: &AccessEvent) {
    a.opt("config_access.event_type", Some(&ev.event_type));
    a.opt("k8s.namespace.name", ev.namespace.as_deref());
    a.opt("k8s.pod.name", ev.pod_name.as_deref());
    a.opt("k8s.pod.uid", ev.pod_uid.as_deref());
    a.opt("k8s.volume.name", ev.volume_name.as_deref());
    a.opt("k8s.volume.type", ev.volume_type.as_deref());
    a.opt("file.name", ev.key.as_deref());
    a.opt("file.path", ev.path.as_deref());
    a.opt("config_access.revision", ev.revision.as_deref());
    a.opt("config_access.session", ev.session.as_deref());
    if let Some(f) = &ev.foreign_read {
        a.opt("config_access.foreign_read.reader", Some(&f.reader));
        a.opt("config_access.foreign_read.pod_uid", f.pod_uid.as_deref());
    }
    a.opt("config_access.mount_path", ev.mount_path.as_deref());
    a.opt("config_access.config_name", ev.config_name.as_deref());
    a.opt("config_access.access", Some(&ev.access));
    a.opt("config_access.result", Some(&ev.result));
    a.opt("config_access.syscall", Some(&ev.syscall));
    a.opt("config_access.reader_pod_uid", ev.reader_pod_uid.as_deref());
    a.opt(
        "config_access.service_account",
        ev.service_account.as_deref(),
    );
    a.opt("process.executable.name", Some(&ev.process.command));
    a.opt(
        "config_access.cgroup_path",
        ev.process.cgroup_path.as_deref(),
    );
    if ev.result != "ok" {
        a.opt("error.type", Some(&ev.result));
    }
    if let Some(c) = &ev.container {
        a.opt("container.id", Some(&c.id));
        a.opt("k8s.container.name", c.name.as_deref());
        a.opt("container.image.name", c.image.as_deref());
    }
    if let Some(src) = &ev.source {
        a.opt("config_access.object.kind", Some(kind_name(src.kind)));
        a.opt("config_access.object.name", src.name.as_deref());
        a.opt("config_access.object.key", src.key.as_deref());
    }
    if let Some(w) = &ev.workload {
        a.opt("config_access.workload.kind", Some(&w.kind));
        a.opt("config_access.workload.name", Some(&w.name));
        if let Some(key) = workload_key(&w.kind) {
            a.opt(key, Some(&w.name));
        }
    }
    for (k, v) in &ev.labels {
        a.str(&["k8s.pod.label.", k], v);
    }
}

/// Process ids and numbers, and the token flag.
fn numeric_attributes(a: &mut Attributes<'_>, ev: &AccessEvent) {
    let p = &ev.process;
    for (k, v) in [
        ("process.pid", i64::from(p.pid)),
        ("thread.id", i64::from(p.tid)),
        ("process.user.id", i64::from(p.uid)),
        ("process.group.id", i64::from(p.gid)),
        ("config_access.cgroup_id", p.cgroup_id as i64),
        ("config_access.mnt_ns", i64::from(p.mnt_ns)),
    ] {
        a.scalar(k, Value::IntValue(v));
    }
    a.scalar(
        "config_access.service_account_token",
        Value::BoolValue(ev.service_account_token),
    );
    if let Some(r) = &ev.repeats {
        a.scalar(
            "config_access.repeats.count",
            Value::IntValue(i64::try_from(r.count).unwrap_or(i64::MAX)),
        );
        a.opt("config_access.repeats.since", Some(&r.since));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message as _;
    use std::collections::BTreeMap;

    fn event() -> AccessEvent {
        serde_json::from_str(
            r#"{"event_type":"secret_access","timestamp":"2026-11-21T17:04:01.179182086Z",
            "pod_uid":"u1","namespace":"payments","pod_name":"payments-api-0","config_name":"db",
            "volume_name":"db-creds","volume_type":"secret","key":"password","revision":"..2026_11_21_17_00_00.1",
            "path":"/etc/db/password","mount_path":"/m","access":"read","result":"EACCES","syscall":"openat",
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
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
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
            ("config_access.revision", "..2026_11_21_17_00_00.1"),
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
        assert_eq!(a.len(), 37, "{a:#?}");

        let r = &sl.log_records[1];
        assert_eq!(r.severity_number, SeverityNumber::Info as i32);
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
    fn records_reused_across_requests_hold_only_their_own_fields() {
        let attributes = |bytes: Vec<u8>| -> Vec<BTreeMap<String, String>> {
            let decoded = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
            decoded.resource_logs[0].scope_logs[0]
                .log_records
                .iter()
                .map(|r| {
                    r.attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value(&kv.value)))
                        .collect()
                })
                .collect()
        };
        let mut req = LogsRequest::new(&Resource::builder_empty().build(), "s", "");
        let full = event();
        let mut small = event();
        small.result = "ok".into();
        small.labels.clear();
        small.container = None;
        small.process.pid = 7;
        req.push(&full);
        req.push(&full);
        assert_eq!(
            attributes(req.take())
                .iter()
                .map(BTreeMap::len)
                .collect::<Vec<_>>(),
            [37, 37]
        );
        req.push(&small);
        let a = attributes(req.take());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].len(), 31, "{:#?}", a[0]);
        assert!(!a[0].contains_key("error.type"));
        assert_eq!(a[0]["process.pid"], "7");
        req.push(&full);
        req.push(&small);
        req.push(&full);
        let a = attributes(req.take());
        assert_eq!(
            a.iter().map(BTreeMap::len).collect::<Vec<_>>(),
            [37, 31, 37]
        );
        assert_eq!(a[2]["k8s.pod.label.tier"], "api");
        assert_eq!(a[2]["process.pid"], "4242");
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
