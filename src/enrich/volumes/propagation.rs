//! Whether the kubelet's later mounts reach the collector's mount namespace.
//!
//! The kubelet mounts each Secret, projected and downward-API volume as a
//! tmpfs when its pod starts. A collector in a container sees those mounts
//! only if its view of the kubelet root receives mount propagation from the
//! host (`mountPropagation: HostToContainer`, which makes it a slave:
//! `master:N` in `/proc/self/mountinfo`, or a shared mount). Without it the
//! volumes present at start are seen and every later one is an empty
//! directory: their reads go unreported, silently. [`check`] tells these
//! cases apart once, at start.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How mounts made under the kubelet root reach this mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Propagation {
    /// The collector runs in the host's mount namespace (pid 1's).
    HostNamespace,
    /// The mount holding the kubelet root receives the host's mounts
    /// (`shared:` or `master:` in mountinfo).
    Received { mount_point: PathBuf },
    /// The mount holding the kubelet root is private to this namespace:
    /// volumes mounted after the start are not seen.
    Private { mount_point: PathBuf },
    /// The mount namespaces or the mount table could not be read.
    Unknown { reason: String },
}

/// Checks how mounts under `kubelet_root` reach this process. Where pid 1's
/// mount namespace cannot be read (a sandbox that hides it), only a mount
/// exactly at the kubelet root (a container's hostPath mount) is judged.
pub fn check(kubelet_root: &Path) -> Propagation {
    let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    let exact_only = match (ns("/proc/self/ns/mnt"), ns("/proc/1/ns/mnt")) {
        (Ok(own), Ok(host)) if own == host => return Propagation::HostNamespace,
        (Ok(_), Ok(_)) => false,
        (Ok(_), Err(_)) => true,
        (Err(e), _) => {
            return Propagation::Unknown {
                reason: format!("/proc/self/ns/mnt: {e}"),
            }
        }
    };
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => of_mount(&text, kubelet_root, exact_only),
        Err(e) => Propagation::Unknown {
            reason: format!("/proc/self/mountinfo: {e}"),
        },
    }
}

/// The propagation of the mount that holds `path`, from mountinfo `text`:
/// the last (topmost) mount whose mount point is `path` or, unless
/// `exact_only`, an ancestor.
fn of_mount(text: &str, path: &Path, exact_only: bool) -> Propagation {
    let mut best: Option<(PathBuf, bool)> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(point), Some(optional)) = (fields.get(4), fields.get(6..sep)) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        let holds = if exact_only {
            point == path
        } else {
            path.starts_with(&point)
        };
        let longer = best
            .as_ref()
            .is_none_or(|(b, _)| point.components().count() >= b.components().count());
        if holds && longer {
            let receives = optional
                .iter()
                .any(|o| o.starts_with("shared:") || o.starts_with("master:"));
            best = Some((point, receives));
        }
    }
    match best {
        Some((mount_point, true)) => Propagation::Received { mount_point },
        Some((mount_point, false)) => Propagation::Private { mount_point },
        None => Propagation::Unknown {
            reason: format!("no mount holds {}", path.display()),
        },
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro
41 22 254:0 /var/lib/kubelet /var/lib/kubelet ro,relatime master:1 - ext4 /dev/vda rw
42 41 0:51 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~secret/s rw master:33 - tmpfs tmpfs rw
43 22 254:0 /srv/my\\040root /srv/my\\040root rw - ext4 /dev/vda rw
";

    #[test]
    fn the_mount_holding_the_root_decides() {
        let received = |p: &str| of_mount(MOUNTINFO, Path::new(p), false);
        assert_eq!(
            received("/var/lib/kubelet"),
            Propagation::Received {
                mount_point: "/var/lib/kubelet".into()
            }
        );
        // A private root mount: the container's own root here.
        assert_eq!(
            received("/var/lib/other"),
            Propagation::Private {
                mount_point: "/".into()
            }
        );
        assert_eq!(
            received("/srv/my root/kubelet"),
            Propagation::Private {
                mount_point: "/srv/my root".into()
            }
        );
        assert!(matches!(
            of_mount("", Path::new("/x"), false),
            Propagation::Unknown { .. }
        ));
    }

    #[test]
    fn without_pid_1_only_a_mount_at_the_root_itself_is_judged() {
        let exact = |p: &str| of_mount(MOUNTINFO, Path::new(p), true);
        assert_eq!(
            exact("/var/lib/kubelet"),
            Propagation::Received {
                mount_point: "/var/lib/kubelet".into()
            }
        );
        assert!(matches!(
            exact("/var/lib/other"),
            Propagation::Unknown { .. }
        ));
        assert_eq!(
            exact("/srv/my root"),
            Propagation::Private {
                mount_point: "/srv/my root".into()
            }
        );
    }

    #[test]
    fn a_later_mount_on_the_same_point_wins() {
        let text = format!("{MOUNTINFO}50 41 254:0 / /var/lib/kubelet ro - ext4 /dev/vda rw\n");
        assert_eq!(
            of_mount(&text, Path::new("/var/lib/kubelet"), false),
            Propagation::Private {
                mount_point: "/var/lib/kubelet".into()
            }
        );
    }

    #[test]
    fn unescape_handles_octal_and_plain_backslashes() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("tail\\"), "tail\\");
        assert_eq!(unescape("\\09x"), "\\09x");
    }
}
