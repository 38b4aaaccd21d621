//! Real OCI containers for the deployment tests (tests/container.rs): a
//! Debian 12 base bootstrapped here with mmdebstrap (no container registry is
//! reachable), the collector's image built from the Dockerfile by podman on
//! that base and the release binary, and workloads that runc starts from OCI
//! bundles the way containerd starts a pod's containers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

/// The local stand-in for `debian:bookworm-slim`: minbase without the
/// documentation and locales, as the slim images are made.
pub const BASE_IMAGE: &str = "localhost/cac-bookworm-slim:test";
/// The collector's image, built by [`image`].
pub const IMAGE_REPOSITORY: &str = "localhost/config-access-collector";
pub const IMAGE_TAG: &str = "test";

/// The capabilities containerd gives a container that asks for none (its
/// default set; a non-root process gets them only in its bounding set).
const CONTAINERD_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The path of a tool from the host, or a failure naming the package. The
/// deployment tests run only with these tools; CI installs them
/// (scripts/dev.sh), so a missing one fails instead of skipping.
pub fn need(tool: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is missing: install Debian's {package} (scripts/dev.sh test does)");
}

/// Runs a command; panics with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn work_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oci");
    fs::create_dir_all(&d).unwrap();
    d
}

/// The local base: imported into podman as [`BASE_IMAGE`] and unpacked as a
/// root filesystem for runc bundles. Bootstrapped once per machine.
pub struct Base {
    pub rootfs: PathBuf,
}

pub fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let podman = need("podman", "podman");
        let dir = work_dir();
        let tar = dir.join("bookworm-slim.tar");
        if !tar.exists() {
            let part = dir.join("bookworm-slim.tar.part");
            run(Command::new(need("mmdebstrap", "mmdebstrap"))
                .args(["--quiet", "--variant=minbase", "--format=tar"])
                .args(SLIM_DPKG_OPTS.iter().map(|o| format!("--dpkgopt={o}")))
                .arg(format!(
                    "--customize-hook=printf '%s\\n' {} > \"$1/etc/apt/apt.conf.d/docker-clean\" && rm -f \"$1\"/var/cache/apt/*.bin",
                    DOCKER_CLEAN
                        .iter()
                        .map(|l| format!("'{l}'"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ))
                .arg("bookworm")
                .arg(&part));
            fs::rename(&part, &tar).unwrap();
        }
        let exists = Command::new(&podman)
            .args(["image", "exists", BASE_IMAGE])
            .status()
            .unwrap();
        if !exists.success() {
            run(Command::new(&podman)
                .args(["import", "--quiet"])
                .arg(&tar)
                .arg(BASE_IMAGE));
        }
        let rootfs = dir.join("rootfs");
        if !rootfs.join("bin/sh").exists() {
            let _ = fs::remove_dir_all(&rootfs);
            fs::create_dir_all(&rootfs).unwrap();
            run(Command::new("tar")
                .arg("-xf")
                .arg(&tar)
                .arg("-C")
                .arg(&rootfs));
        }
        Base { rootfs }
    })
}

/// What the slim Debian images leave out (dpkg path filters).
const SLIM_DPKG_OPTS: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
];

/// The apt settings of Debian's container images: no package caches.
const DOCKER_CLEAN: &[&str] = &[
    r#"DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };"#,
    r#"APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };"#,
    r#"Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";"#,
];

/// The collector's image, built once per test run.
pub struct Image {
    /// `repository:tag`.
    pub name: String,
    /// Its size as `podman image inspect` reports it, in bytes.
    pub size: u64,
}

/// Builds the image from the Dockerfile: its runtime stage, on [`BASE_IMAGE`],
/// with the release binary the test suite built (`BINARY=prebuilt`).
pub fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        base();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bin = root.join("target/release/config-access-collector");
        assert!(
            bin.exists(),
            "{} is missing: `cargo build --release --locked` first (scripts/dev.sh test does)",
            bin.display()
        );
        let name = format!("{IMAGE_REPOSITORY}:{IMAGE_TAG}");
        let podman = need("podman", "podman");
        // The runtime stage's apt-get reaches Debian's mirror through the host's network.
        run(Command::new(&podman)
            .current_dir(root)
            .args(["build", "--quiet", "--network=host", "--pull=never"])
            .args(["--build-arg", "BINARY=prebuilt"])
            .args(["--build-arg", &format!("RUNTIME_IMAGE={BASE_IMAGE}")])
            .args(["--tag", &name, "."]));
        let out =
            run(Command::new(&podman).args(["image", "inspect", "--format", "{{.Size}}", &name]));
        let size = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        Image { name, size }
    })
}

/// A container id as containerd makes them: 64 hex digits.
pub fn container_id(seed: &str) -> String {
    blake3::hash(seed.as_bytes()).to_hex().to_string()
}

/// A workload container: an OCI bundle run by runc, placed and mounted the
/// way containerd and the kubelet (cgroupfs driver) do it.
pub struct Workload {
    pub id: String,
    root: PathBuf,
    bundle: PathBuf,
    running: bool,
}

/// A container of a test pod.
pub struct Spec<'a> {
    pub pod_uid: &'a str,
    pub id: String,
    /// The process's argv.
    pub args: &'a [&'a str],
    pub uid: u32,
    /// (host path, container path) pairs, mounted read-only as containerd
    /// mounts a pod's volumes (rbind, ro, rprivate).
    pub volumes: &'a [(PathBuf, &'a str)],
}

impl Workload {
    /// Writes the bundle (`runc spec`, then the kubelet's settings).
    pub fn new(dir: &Path, spec: &Spec) -> Self {
        let bundle = dir.join(&spec.id[..12]);
        fs::create_dir_all(&bundle).unwrap();
        let runc = need("runc", "runc");
        // A container id may run again once its last run was deleted.
        let _ = fs::remove_file(bundle.join("config.json"));
        run(Command::new(&runc).arg("spec").arg("--bundle").arg(&bundle));
        let path = bundle.join("config.json");
        let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        kubelet_settings(&mut config, spec, &base().rootfs);
        fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let root = dir.join("runc-state");
        fs::create_dir_all(&root).unwrap();
        Self {
            id: spec.id.clone(),
            root,
            bundle,
            running: false,
        }
    }

    fn runc(&self) -> Command {
        let mut c = Command::new(need("runc", "runc"));
        c.arg("--root").arg(&self.root);
        c
    }

    /// Starts the container and waits for its process to exit (a Job's
    /// container); returns runc's output.
    pub fn run_to_exit(&mut self) -> Output {
        let out = self
            .runc()
            .args(["run", "--bundle"])
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let _ = self.runc().args(["delete", "--force", &self.id]).output();
        out
    }

    /// Starts the container detached (a long-running pod container).
    pub fn start(&mut self) {
        run(self
            .runc()
            .args(["run", "--detach", "--bundle"])
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()));
        self.running = true;
    }

    /// `runc exec` into the running container, as `kubectl exec` ends up doing.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.runc()
            .args(["exec", "--user", "0:0", &self.id])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The host pid of the container's first process.
    pub fn pid(&self) -> u32 {
        let out = run(self.runc().args(["state", &self.id]));
        let state: Value = serde_json::from_slice(&out.stdout).unwrap();
        state["pid"].as_u64().unwrap() as u32
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if self.running {
            let _ = self.runc().args(["delete", "--force", &self.id]).output();
        }
    }
}

/// The settings the kubelet asks containerd for, on `runc spec`'s defaults:
/// the process, a read-only shared root filesystem, the pod's volumes, and
/// cgroupsPath `/kubepods/besteffort/pod<uid>/<id>` (the cgroupfs driver).
fn kubelet_settings(config: &mut Value, spec: &Spec, rootfs: &Path) {
    let caps: Vec<&str> = CONTAINERD_CAPS.to_vec();
    let (effective, permitted) = if spec.uid == 0 {
        (caps.clone(), caps.clone())
    } else {
        (Vec::new(), Vec::new())
    };
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(spec.args);
    config["process"]["user"] = json!({"uid": spec.uid, "gid": spec.uid});
    config["process"]["capabilities"] = json!({
        "bounding": caps, "effective": effective, "permitted": permitted,
    });
    config["root"] = json!({"path": rootfs, "readonly": true});
    config["hostname"] = json!(&spec.id[..12]);
    let mounts = config["mounts"].as_array_mut().unwrap();
    for (host, at) in spec.volumes {
        mounts.push(json!({
            "destination": at, "type": "bind", "source": host,
            "options": ["rbind", "ro", "rprivate"],
        }));
    }
    // The kubelet's tmpfs for a writable /tmp is an emptyDir; here a tmpfs.
    mounts.push(
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=1777", "size=1m"]}),
    );
    config["linux"]["cgroupsPath"] = json!(format!(
        "/kubepods/besteffort/pod{}/{}",
        spec.pod_uid, spec.id
    ));
    // runc's default spec joins a new network namespace; a pod's containers
    // share the sandbox's, which these tests do not need.
    let ns = config["linux"]["namespaces"].as_array_mut().unwrap();
    ns.retain(|n| n["type"] != "network");
}
