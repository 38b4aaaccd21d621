//! The chart's DaemonSet pod template as `podman run` flags, for running the
//! collector the way a node runs it (tests/container.rs).
//!
//! [`translate`] reads the manifests `helm template` rendered and translates
//! every field of the pod template, or fails naming the field it does not
//! know: a field added to the chart cannot be silently left out of the test.
//! Each field is either given to podman (capabilities, read-only root,
//! hostPID, mounts with their propagation, env, args, limits), answered by
//! the test as the kubelet would (probes, ports), or named as scheduling-only
//! (tolerations, node selector, priority class).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// One of the container's probes, as the kubelet runs it.
#[derive(Debug, Clone)]
pub struct Probe {
    pub kind: &'static str,
    pub path: String,
    pub port: u16,
    pub period_s: u64,
    pub failure_threshold: u64,
    pub timeout_s: u64,
}

/// `podman run` of the pod template's container.
#[derive(Debug, Default)]
pub struct PodmanRun {
    /// Everything between `podman run` and the image.
    pub flags: Vec<String>,
    pub image: String,
    /// The container's arguments (after the image).
    pub args: Vec<String>,
    /// containerPort by port name.
    pub ports: BTreeMap<String, u16>,
    pub probes: Vec<Probe>,
    /// resources.limits.memory, in bytes.
    pub memory_limit: Option<u64>,
}

/// What the node provides: its name (the downward API), the pod's network
/// namespace (made by the test as a CNI plugin would), the pod's UID (its
/// cgroup parent), and a directory for ConfigMap volumes.
pub struct Node<'a> {
    pub name: &'a str,
    pub netns: &'a Path,
    pub pod_uid: &'a str,
    pub volumes_dir: &'a Path,
}

type Obj = Map<String, Value>;

/// Removes `key` from `obj`.
fn take(obj: &mut Obj, key: &str) -> Option<Value> {
    obj.remove(key)
}

fn take_obj(obj: &mut Obj, key: &str) -> Obj {
    match take(obj, key) {
        Some(Value::Object(o)) => o,
        Some(other) => panic!("{key} is not an object: {other}"),
        None => Obj::new(),
    }
}

fn take_str(obj: &mut Obj, key: &str) -> Option<String> {
    take(obj, key).map(|v| {
        v.as_str()
            .unwrap_or_else(|| panic!("{key}: {v}"))
            .to_string()
    })
}

/// Fails when `obj` still holds fields nobody translated.
fn all_taken(obj: &Obj, what: &str) -> Result<(), String> {
    if obj.is_empty() {
        Ok(())
    } else {
        let keys: Vec<&String> = obj.keys().collect();
        Err(format!("{what}: fields not translated to podman: {keys:?}"))
    }
}

/// The DaemonSet's pod template and ConfigMaps among the rendered documents.
pub fn translate(docs: &[Value], node: &Node) -> Result<PodmanRun, String> {
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .ok_or("no DaemonSet rendered")?;
    let configmaps: BTreeMap<&str, &Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .map(|d| (d["metadata"]["name"].as_str().unwrap(), d))
        .collect();
    let mut template = ds["spec"]["template"].as_object().unwrap().clone();
    let mut out = PodmanRun::default();
    let mut meta = take_obj(&mut template, "metadata");
    for (k, v) in take_obj(&mut meta, "labels") {
        out.flags
            .push(format!("--label={k}={}", v.as_str().unwrap()));
    }
    for (k, v) in take_obj(&mut meta, "annotations") {
        out.flags
            .push(format!("--annotation={k}={}", v.as_str().unwrap()));
    }
    all_taken(&meta, "template.metadata")?;
    let mut spec = take_obj(&mut template, "spec");
    all_taken(&template, "template")?;
    pod_fields(&mut spec, node, &mut out)?;
    let volumes = volumes(&mut spec, &configmaps, node)?;
    let containers = take(&mut spec, "containers").ok_or("no containers")?;
    let [container] = containers.as_array().unwrap().as_slice() else {
        return Err("the collector's pod has exactly one container".into());
    };
    container_fields(
        container.as_object().unwrap().clone(),
        &volumes,
        node,
        &mut out,
    )?;
    all_taken(&spec, "template.spec")?;
    Ok(out)
}

/// Pod-level fields.
fn pod_fields(spec: &mut Obj, node: &Node, out: &mut PodmanRun) -> Result<(), String> {
    if take(spec, "hostPID") == Some(Value::Bool(true)) {
        out.flags.push("--pid=host".into());
    }
    out.flags
        .push(format!("--network=ns:{}", node.netns.display()));
    // The kubelet's cgroupfs naming; requests below limits make it Burstable.
    out.flags.push(format!(
        "--cgroup-parent=/kubepods/burstable/pod{}",
        node.pod_uid
    ));
    if let Some(s) = take(spec, "terminationGracePeriodSeconds") {
        out.flags.push(format!("--stop-timeout={s}"));
    }
    // The agent reaches the (test's) API server by URL, without the token
    // the kubelet would mount for this service account.
    take(spec, "serviceAccountName");
    // Scheduling only: which nodes run the pod, not how it runs there.
    for key in [
        "tolerations",
        "nodeSelector",
        "affinity",
        "priorityClassName",
    ] {
        take(spec, key);
    }
    match take(spec, "imagePullSecrets") {
        None => Ok(()),
        Some(s) => Err(format!("imagePullSecrets {s}: the image is local")),
    }
}

/// A pod volume, ready to mount: its host path (hostPath, or a ConfigMap's
/// files written out as the kubelet would).
fn volumes(
    spec: &mut Obj,
    configmaps: &BTreeMap<&str, &Value>,
    node: &Node,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let list = take(spec, "volumes").unwrap_or(Value::Array(Vec::new()));
    for v in list.as_array().unwrap() {
        let mut v = v.as_object().unwrap().clone();
        let name = take_str(&mut v, "name").unwrap();
        let path = if let Some(Value::Object(mut hp)) = take(&mut v, "hostPath") {
            let path = PathBuf::from(take_str(&mut hp, "path").unwrap());
            match take_str(&mut hp, "type").as_deref() {
                Some("Directory") if !path.is_dir() => {
                    return Err(format!("hostPath {} is not a directory", path.display()))
                }
                Some("Directory") => {}
                Some("DirectoryOrCreate") => fs::create_dir_all(&path).unwrap(),
                other => return Err(format!("hostPath type {other:?} of volume {name}")),
            }
            all_taken(&hp, &format!("volume {name} hostPath"))?;
            path
        } else if let Some(Value::Object(mut cm)) = take(&mut v, "configMap") {
            let cm_name = take_str(&mut cm, "name").unwrap();
            all_taken(&cm, &format!("volume {name} configMap"))?;
            let source = configmaps
                .get(cm_name.as_str())
                .ok_or(format!("ConfigMap {cm_name} is not rendered"))?;
            let dir = node.volumes_dir.join(&name);
            fs::create_dir_all(&dir).unwrap();
            for (key, value) in source["data"].as_object().unwrap() {
                fs::write(dir.join(key), value.as_str().unwrap()).unwrap();
            }
            dir
        } else {
            return Err(format!(
                "volume {name}: only hostPath and configMap are translated"
            ));
        };
        all_taken(&v, &format!("volume {name}"))?;
        out.insert(name, path);
    }
    Ok(out)
}

/// The container's fields.
fn container_fields(
    mut c: Obj,
    volumes: &BTreeMap<String, PathBuf>,
    node: &Node,
    out: &mut PodmanRun,
) -> Result<(), String> {
    let name = take_str(&mut c, "name").unwrap();
    out.flags.push(format!("--name=cac-{name}"));
    out.image = take_str(&mut c, "image").ok_or("no image")?;
    let pull = match take_str(&mut c, "imagePullPolicy").as_deref() {
        Some("Always") => "always",
        Some("Never") => "never",
        _ => "missing",
    };
    out.flags.push(format!("--pull={pull}"));
    if let Some(cmd) = take(&mut c, "command") {
        out.flags.push(format!("--entrypoint={cmd}"));
    }
    if let Some(Value::Array(args)) = take(&mut c, "args") {
        out.args = args
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
    }
    env(&mut c, node, out)?;
    for p in take(&mut c, "ports")
        .unwrap_or(Value::Array(Vec::new()))
        .as_array()
        .unwrap()
    {
        let mut p = p.as_object().unwrap().clone();
        let port = take(&mut p, "containerPort")
            .and_then(|v| v.as_u64())
            .unwrap() as u16;
        out.ports.insert(take_str(&mut p, "name").unwrap(), port);
        assert_eq!(take_str(&mut p, "protocol").as_deref(), Some("TCP"));
        all_taken(&p, "port")?;
    }
    for (key, kind) in [
        ("startupProbe", "startup"),
        ("livenessProbe", "liveness"),
        ("readinessProbe", "readiness"),
    ] {
        if let Some(Value::Object(p)) = take(&mut c, key) {
            out.probes.push(probe(p, kind, &out.ports)?);
        }
    }
    resources(take_obj(&mut c, "resources"), out)?;
    security(take_obj(&mut c, "securityContext"), out)?;
    mounts(&mut c, volumes, out)?;
    all_taken(&c, &format!("container {name}"))
}

fn env(c: &mut Obj, node: &Node, out: &mut PodmanRun) -> Result<(), String> {
    for e in take(c, "env")
        .unwrap_or(Value::Array(Vec::new()))
        .as_array()
        .unwrap()
    {
        let mut e = e.as_object().unwrap().clone();
        let name = take_str(&mut e, "name").unwrap();
        let value = if let Some(v) = take_str(&mut e, "value") {
            v
        } else {
            let mut from = take_obj(&mut e, "valueFrom");
            let mut field = take_obj(&mut from, "fieldRef");
            all_taken(&from, &format!("env {name} valueFrom"))?;
            match take_str(&mut field, "fieldPath").as_deref() {
                Some("spec.nodeName") => node.name.to_string(),
                other => return Err(format!("env {name}: fieldRef {other:?}")),
            }
        };
        all_taken(&e, &format!("env {name}"))?;
        out.flags.push(format!("--env={name}={value}"));
    }
    Ok(())
}

fn probe(mut p: Obj, kind: &'static str, ports: &BTreeMap<String, u16>) -> Result<Probe, String> {
    let mut get = take_obj(&mut p, "httpGet");
    let path = take_str(&mut get, "path").ok_or("probe without httpGet.path")?;
    let port = match take(&mut get, "port") {
        Some(Value::String(name)) => *ports.get(&name).ok_or(format!("no port {name}"))?,
        Some(Value::Number(n)) => n.as_u64().unwrap() as u16,
        other => return Err(format!("probe port {other:?}")),
    };
    all_taken(&get, "httpGet")?;
    let mut num =
        |k: &str, default: u64| take(&mut p, k).and_then(|v| v.as_u64()).unwrap_or(default);
    let probe = Probe {
        kind,
        path,
        port,
        period_s: num("periodSeconds", 10),
        failure_threshold: num("failureThreshold", 3),
        timeout_s: num("timeoutSeconds", 1),
    };
    all_taken(&p, kind)?;
    Ok(probe)
}

/// Kubernetes quantities as bytes (Mi, Gi, Ki or plain).
fn bytes(q: &str) -> u64 {
    for (suffix, unit) in [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * unit;
        }
    }
    q.parse().unwrap()
}

/// CPU quantities as millicores.
fn millis(q: &str) -> u64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => q.parse::<u64>().unwrap() * 1000,
    }
}

fn resources(mut r: Obj, out: &mut PodmanRun) -> Result<(), String> {
    let mut limits = take_obj(&mut r, "limits");
    let mut requests = take_obj(&mut r, "requests");
    if let Some(m) = take_str(&mut limits, "memory") {
        let b = bytes(&m);
        out.memory_limit = Some(b);
        out.flags.push(format!("--memory={b}b"));
    }
    if let Some(cpu) = take_str(&mut limits, "cpu") {
        out.flags
            .push(format!("--cpus={}", millis(&cpu) as f64 / 1000.0));
    }
    // The kubelet turns the CPU request into cpu.shares (1024 per core).
    if let Some(cpu) = take_str(&mut requests, "cpu") {
        out.flags.push(format!(
            "--cpu-shares={}",
            (millis(&cpu) * 1024 / 1000).max(2)
        ));
    }
    // A memory request only schedules.
    take(&mut requests, "memory");
    all_taken(&limits, "resources.limits")?;
    all_taken(&requests, "resources.requests")?;
    all_taken(&r, "resources")
}

fn security(mut s: Obj, out: &mut PodmanRun) -> Result<(), String> {
    if take(&mut s, "privileged") == Some(Value::Bool(true)) {
        out.flags.push("--privileged".into());
    }
    if take(&mut s, "allowPrivilegeEscalation") == Some(Value::Bool(false)) {
        out.flags.push("--security-opt=no-new-privileges".into());
    }
    let mut caps = take_obj(&mut s, "capabilities");
    for (key, flag) in [("drop", "--cap-drop"), ("add", "--cap-add")] {
        for cap in take(&mut caps, key)
            .unwrap_or(Value::Array(Vec::new()))
            .as_array()
            .unwrap()
        {
            out.flags.push(format!("{flag}={}", cap.as_str().unwrap()));
        }
    }
    all_taken(&caps, "capabilities")?;
    if take(&mut s, "readOnlyRootFilesystem") == Some(Value::Bool(true)) {
        // Kubernetes adds no tmpfs over a read-only root.
        out.flags.push("--read-only".into());
        out.flags.push("--read-only-tmpfs=false".into());
    }
    let user = take(&mut s, "runAsUser").and_then(|v| v.as_u64());
    let group = take(&mut s, "runAsGroup").and_then(|v| v.as_u64());
    if let Some(u) = user {
        out.flags.push(format!("--user={u}:{}", group.unwrap_or(0)));
    }
    // runAsNonRoot: false checks nothing.
    if take(&mut s, "runAsNonRoot") == Some(Value::Bool(true)) {
        assert_ne!(user, Some(0), "runAsNonRoot with uid 0 would not start");
    }
    for (key, opt) in [
        ("seccompProfile", "seccomp"),
        ("appArmorProfile", "apparmor"),
    ] {
        let mut p = take_obj(&mut s, key);
        match take_str(&mut p, "type").as_deref() {
            None | Some("RuntimeDefault") => {}
            Some("Unconfined") => out.flags.push(format!("--security-opt={opt}=unconfined")),
            Some(other) => return Err(format!("{key} {other} is not translated")),
        }
        // localhostProfile is read only with type Localhost, refused above.
        take(&mut p, "localhostProfile");
        all_taken(&p, key)?;
    }
    all_taken(&s, "securityContext")
}

fn mounts(
    c: &mut Obj,
    volumes: &BTreeMap<String, PathBuf>,
    out: &mut PodmanRun,
) -> Result<(), String> {
    for m in take(c, "volumeMounts")
        .unwrap_or(Value::Array(Vec::new()))
        .as_array()
        .unwrap()
    {
        let mut m = m.as_object().unwrap().clone();
        let name = take_str(&mut m, "name").unwrap();
        let src = volumes.get(&name).ok_or(format!("no volume {name}"))?;
        let dst = take_str(&mut m, "mountPath").unwrap();
        let mut opts = format!("type=bind,source={},destination={dst}", src.display());
        if take(&mut m, "readOnly") == Some(Value::Bool(true)) {
            opts.push_str(",ro=true");
        }
        let propagation = match take_str(&mut m, "mountPropagation").as_deref() {
            None | Some("None") => "rprivate",
            Some("HostToContainer") => "rslave",
            Some("Bidirectional") => "rshared",
            Some(other) => return Err(format!("mountPropagation {other}")),
        };
        opts.push_str(&format!(",bind-propagation={propagation}"));
        // IfPossible: recursive read-only where the runtime can; runc 1.1
        // cannot (it came with runc 1.2), so the mount is read-only at its top.
        match take_str(&mut m, "recursiveReadOnly").as_deref() {
            None | Some("Disabled") | Some("IfPossible") => {}
            Some(other) => return Err(format!("recursiveReadOnly {other} on runc 1.1")),
        }
        all_taken(&m, &format!("volumeMount {name}"))?;
        out.flags.push(format!("--mount={opts}"));
    }
    Ok(())
}
