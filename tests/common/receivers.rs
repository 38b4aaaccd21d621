//! Real telemetry peers for the tests: an OTLP receiver (`tests/otlp_receiver.py`,
//! official opentelemetry-proto over grpcio and HTTP) and Prometheus from apt.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A tool the test needs: present, or a skip with a reason off CI (a failure on CI).
pub fn tool(test: &str, path: PathBuf, how: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{test}: {} is missing under CI=true ({how})",
            path.display()
        );
    }
    eprintln!("SKIPPED {test}: {} is missing ({how})", path.display());
    None
}

/// The Python of the test venv made by `scripts/dev.sh test`.
pub fn python(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("CAC_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python"));
    tool(test, p, "run `bash scripts/dev.sh test` to create the venv")
}

/// The Prometheus server binary.
pub fn prometheus(test: &str) -> Option<PathBuf> {
    tool(
        test,
        PathBuf::from("/usr/bin/prometheus"),
        "apt-get install prometheus",
    )
}

/// An HTTP client for plain-http peers (reqwest needs a TLS provider installed even then).
pub fn http() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::new()
}

/// A running `tests/otlp_receiver.py`.
pub struct OtlpReceiver {
    child: Child,
    pub grpc_port: u16,
    pub http_port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl OtlpReceiver {
    pub fn start(python: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the OTLP receiver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(&lines.next().expect("receiver ports").unwrap())
            .expect("ports line");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&requests);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).expect("receiver JSON line");
                sink.lock().unwrap().push(v);
            }
        });
        Self {
            child,
            grpc_port: first["grpc_port"].as_u64().unwrap() as u16,
            http_port: first["http_port"].as_u64().unwrap() as u16,
            requests,
        }
    }

    /// Requests received so far for `signal`, with their transport.
    pub fn requests(&self, signal: &str) -> Vec<(String, Value)> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["signal"] == signal)
            .map(|r| {
                (
                    r["transport"].as_str().unwrap().to_string(),
                    r["request"].clone(),
                )
            })
            .collect()
    }

    /// Every log record received, with its resource attributes.
    pub fn log_records(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for (_, req) in self.requests("logs") {
            for rl in req["resource_logs"].as_array().into_iter().flatten() {
                for sl in rl["scope_logs"].as_array().into_iter().flatten() {
                    out.extend(sl["log_records"].as_array().into_iter().flatten().cloned());
                }
            }
        }
        out
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OTLP attributes (`[{key, value: {string_value|int_value|bool_value}}]`) as strings.
pub fn attrs(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            let v = &kv["value"];
            let s = v["string_value"]
                .as_str()
                .map(str::to_string)
                .or_else(|| v["int_value"].as_str().map(str::to_string))
                .or_else(|| v["bool_value"].as_bool().map(|b| b.to_string()))
                .unwrap_or_default();
            (kv["key"].as_str().unwrap().to_string(), s)
        })
        .collect()
}

/// A metric data point: its attributes, and its value (sums and gauges) or count (histograms).
#[derive(Debug, Clone)]
pub struct Point {
    pub attrs: BTreeMap<String, String>,
    pub value: f64,
    pub monotonic: Option<bool>,
}

/// The data points of metric `name` in one metrics export request.
pub fn points(req: &Value, name: &str) -> Vec<Point> {
    let mut out = Vec::new();
    for rm in req["resource_metrics"].as_array().into_iter().flatten() {
        for sm in rm["scope_metrics"].as_array().into_iter().flatten() {
            for m in sm["metrics"].as_array().into_iter().flatten() {
                if m["name"] != name {
                    continue;
                }
                for kind in ["sum", "gauge", "histogram"] {
                    for dp in m[kind]["data_points"].as_array().into_iter().flatten() {
                        let num = |v: &Value| {
                            v.as_str()
                                .and_then(|s| s.parse().ok())
                                .or_else(|| v.as_f64())
                        };
                        let value = if kind == "histogram" {
                            num(&dp["count"])
                        } else {
                            num(&dp["as_int"]).or_else(|| num(&dp["as_double"]))
                        };
                        out.push(Point {
                            attrs: attrs(&dp["attributes"]),
                            value: value.unwrap_or(0.0),
                            monotonic: m[kind]["is_monotonic"].as_bool(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The value of the point of `name` whose attributes include `want`, in `req`.
pub fn value(req: &Value, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    points(req, name)
        .into_iter()
        .find(|p| {
            want.iter()
                .all(|(k, v)| p.attrs.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|p| p.value)
}

/// A Prometheus server scraping `target` every second.
pub struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    pub fn start(bin: &Path, target: SocketAddr) -> Self {
        Self::start_scraping(bin, &[target])
    }

    /// A Prometheus scraping every one of `targets` (each one "node").
    pub fn start_scraping(bin: &Path, targets: &[SocketAddr]) -> Self {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let target = targets.join(", ");
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: config-access-collector\n    \
                 static_configs:\n      - targets: [{target}]\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Self {
            child,
            _dir: dir,
            addr,
        }
    }

    /// Runs an instant PromQL query; the `data.result` array.
    pub fn query(&self, promql: &str) -> Option<Vec<Value>> {
        let url = reqwest::Url::parse_with_params(
            &format!("http://{}/api/v1/query", self.addr),
            &[("query", promql)],
        )
        .ok()?;
        let resp = http()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .ok()?;
        let v: Value = serde_json::from_str(&resp.text().ok()?).ok()?;
        v["data"]["result"].as_array().cloned()
    }

    /// Waits up to `limit` for `promql` to return one series whose value is `want`.
    pub fn wait_for_value(&self, promql: &str, want: f64, limit: Duration) -> Result<(), String> {
        let end = Instant::now() + limit;
        let mut last = None;
        while Instant::now() < end {
            if let Some(r) = self.query(promql) {
                let got: Vec<f64> = r
                    .iter()
                    .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                    .collect();
                if got == [want] {
                    return Ok(());
                }
                last = Some(got);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!("{promql}: last result {last:?}, want [{want}]"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fetches `http://addr/metrics`.
pub fn scrape(addr: SocketAddr) -> String {
    http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .expect("GET /metrics")
        .text()
        .unwrap()
}

/// The sample of `name` in Prometheus text whose labels include every `want` pair.
pub fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, "}"));
            (n == name).then_some((labels, v))
        })
        .find(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.parse().ok())
}
