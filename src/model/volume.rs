//! Volumes as every layer names them: the kubelet volume plugins, the kernel
//! identity of files and directories, and the hash that keys a volume's
//! host path.

use std::path::Path;

/// Kubelet volume plugins whose files the collector watches.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeType {
    Secret,
    #[serde(rename = "configmap")]
    ConfigMap,
    Projected,
    DownwardApi,
}

impl VolumeType {
    /// Every watched plugin.
    pub const ALL: [VolumeType; 4] = [
        VolumeType::Secret,
        VolumeType::ConfigMap,
        VolumeType::Projected,
        VolumeType::DownwardApi,
    ];

    /// The plugin's directory name under `volumes/`.
    pub fn plugin_dir(self) -> &'static str {
        match self {
            VolumeType::Secret => "kubernetes.io~secret",
            VolumeType::ConfigMap => "kubernetes.io~configmap",
            VolumeType::Projected => "kubernetes.io~projected",
            VolumeType::DownwardApi => "kubernetes.io~downward-api",
        }
    }

    /// The plugin for a directory name under `volumes/`.
    pub fn from_plugin_dir(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.plugin_dir() == name)
    }

    /// Short name used in events (`volume_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeType::Secret => "secret",
            VolumeType::ConfigMap => "configmap",
            VolumeType::Projected => "projected",
            VolumeType::DownwardApi => "downward-api",
        }
    }

    /// `event_type` of a pod's access to this kind of volume.
    pub fn event_type(self) -> &'static str {
        match self {
            VolumeType::Secret => "secret_access",
            VolumeType::ConfigMap => "configmap_access",
            VolumeType::Projected => "projected_access",
            VolumeType::DownwardApi => "downward_api_access",
        }
    }
}

/// A volume type reads as its name in events (`secret`, `configmap`,
/// `projected`, `downward-api`), as [`VolumeType::as_str`] gives it.
impl std::ops::Deref for VolumeType {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for VolumeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Converts a `stat()` device number (glibc encoding) to the kernel's `s_dev`.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = nix::sys::stat::major(st_dev) as u32;
    let minor = nix::sys::stat::minor(st_dev) as u32;
    (major << 20) | (minor & 0xf_ffff)
}

/// blake3 hash (hex) of a volume's host path: the key of the mount correlation map.
pub fn path_hash(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    blake3::hash(path.as_os_str().as_bytes())
        .to_hex()
        .to_string()
}

/// Identity of a file or directory as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Device in the kernel's encoding (`major << 20 | minor`).
    pub dev: u32,
    /// Inode number.
    pub ino: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_encoding() {
        // ext4 on 254:0 is 0xfe00 from stat(), 0x0fe00000 in the kernel.
        assert_eq!(kernel_dev(0xfe00), 0x0fe0_0000);
        assert_eq!(kernel_dev(nix::sys::stat::makedev(0, 52)), 52);
        assert_eq!(kernel_dev(nix::sys::stat::makedev(8, 300)), (8 << 20) | 300);
    }

    #[test]
    fn path_hash_is_blake3_hex() {
        let h = path_hash(Path::new(
            "/var/lib/kubelet/pods/a/volumes/kubernetes.io~secret/s",
        ));
        assert_eq!(h.len(), 64);
        assert_eq!(
            h,
            blake3::hash(b"/var/lib/kubelet/pods/a/volumes/kubernetes.io~secret/s")
                .to_hex()
                .to_string()
        );
    }
}
