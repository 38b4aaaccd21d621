//! Kubelet volume paths, parsed by their parts (for failed opens, whose
//! file has no kernel identity).

use std::path::{Path, PathBuf};

use crate::model::volume::VolumeType;

/// A path that names the kubelet volume tree, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    pub pod_uid: String,
    pub volume_type: VolumeType,
    pub volume_name: String,
    /// Host path of the volume directory.
    pub mount_path: PathBuf,
    /// Path inside the volume without `..<timestamp>/` parts; `None` for the directory itself.
    pub key: Option<String>,
}

/// Parses `.../pods/<uid>/volumes/kubernetes.io~<plugin>/<volume>[/<key>]`.
pub fn parse_volume_path(path: &Path) -> Option<VolumePath> {
    let parts: Vec<&str> = path.to_str()?.split('/').collect();
    let at = parts.iter().position(|p| p.starts_with("kubernetes.io~"))?;
    if at < 3 || parts[at - 1] != "volumes" || parts[at - 3] != "pods" {
        return None;
    }
    let volume_type = VolumeType::from_plugin_dir(parts[at])?;
    let volume_name = parts.get(at + 1).filter(|s| !s.is_empty())?.to_string();
    let key: Vec<&str> = parts[at + 2..]
        .iter()
        .copied()
        .filter(|p| !p.is_empty() && !p.starts_with(".."))
        .collect();
    Some(VolumePath {
        pod_uid: parts[at - 2].to_string(),
        volume_type,
        mount_path: parts[..at + 2].join("/").into(),
        volume_name,
        key: (!key.is_empty()).then(|| key.join("/")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubelet_volume_paths() {
        let p = parse_volume_path(Path::new(
            "/var/lib/kubelet/pods/abc/volumes/kubernetes.io~secret/db/..2024_x/password",
        ))
        .unwrap();
        assert_eq!(p.pod_uid, "abc");
        assert_eq!(p.volume_type, VolumeType::Secret);
        assert_eq!(p.volume_name, "db");
        assert_eq!(
            p.mount_path,
            Path::new("/var/lib/kubelet/pods/abc/volumes/kubernetes.io~secret/db")
        );
        assert_eq!(p.key.as_deref(), Some("password"));
        assert!(parse_volume_path(Path::new("/etc/passwd")).is_none());
        assert!(parse_volume_path(Path::new("/x/volumes/kubernetes.io~secret/db")).is_none());
        assert!(parse_volume_path(Path::new("/pods/u/volumes/kubernetes.io~nfs/db/k")).is_none());
    }
}
