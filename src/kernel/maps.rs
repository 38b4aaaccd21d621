//! Typed access to the BPF maps user space writes and reads: the watched
//! directories, the correlation maps and the counters. Keys and values are
//! encoded by [`super::decode`]; callers never see raw bytes.

use std::collections::HashMap;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::abi::types::{cac_dir_info, cac_stat};
use super::decode::{
    bytes_of, cgroup_key, decode_cgroup_key, decode_container_pid, decode_endpoint_key,
    decode_pod_info, decode_sample, decode_u64, dev_bit, dir_bit, dir_key, encode_cgroup_class,
    encode_container_pid, encode_pod_info, encode_service_endpoint, endpoint_key, EndpointAddr,
    ServiceEndpoint, FILTER_WORDS,
};
use crate::model::correlation::{ContainerPid, PodInfo};
use crate::model::stats::KernelStats;
use crate::model::volume::{FileId, VolumeType};

/// A BPF map operation failed.
#[derive(Debug, thiserror::Error)]
#[error("BPF map {map}")]
pub struct MapError {
    /// The map's name in the BPF object.
    pub map: &'static str,
    #[source]
    pub source: libbpf_rs::Error,
}

impl MapError {
    /// Whether the map refused a new entry because it is full.
    pub fn is_full(&self) -> bool {
        self.source.kind() == libbpf_rs::ErrorKind::TooBig
    }
}

fn map_err(map: &'static str) -> impl FnOnce(libbpf_rs::Error) -> MapError {
    move |source| MapError { map, source }
}

/// One of the open path's bitmaps (`dev_filter`, `dir_filter`): a bit is
/// set while at least one watched entry maps to it (reference-counted here).
#[derive(Debug)]
struct BitFilter {
    map: MapHandle,
    name: &'static str,
    words: Vec<u64>,
    refs: HashMap<u32, u32>,
}

impl BitFilter {
    fn new(map: MapHandle, name: &'static str) -> Self {
        Self {
            map,
            name,
            words: vec![0; FILTER_WORDS],
            refs: HashMap::new(),
        }
    }

    fn write_word(&self, word: usize) -> Result<(), MapError> {
        let key = u32::try_from(word).unwrap_or(u32::MAX);
        self.map
            .update(
                &key.to_ne_bytes(),
                &self.words[word].to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(map_err(self.name))
    }

    /// Counts one more entry on `bit`, setting it in the kernel if it was clear.
    fn add(&mut self, bit: u32) -> Result<(), MapError> {
        let refs = self.refs.entry(bit).or_insert(0);
        *refs += 1;
        if *refs > 1 {
            return Ok(());
        }
        let word = bit as usize / 64;
        self.words[word] |= 1 << (bit % 64);
        self.write_word(word).inspect_err(|_| {
            self.words[word] &= !(1 << (bit % 64));
            self.refs.remove(&bit);
        })
    }

    /// Counts one entry less on `bit`, clearing it when none is left.
    fn remove(&mut self, bit: u32) {
        let Some(refs) = self.refs.get_mut(&bit) else {
            return;
        };
        *refs -= 1;
        if *refs == 0 {
            self.refs.remove(&bit);
            let word = bit as usize / 64;
            self.words[word] &= !(1 << (bit % 64));
            let _ = self.write_word(word);
        }
    }
}

/// The kernel maps of watched directories (`watched_dirs`) and the two
/// bitmaps in front of it (`dev_filter`, `dir_filter`).
#[derive(Debug)]
pub struct KernelDirs {
    dirs: MapHandle,
    devs: BitFilter,
    dir_bits: BitFilter,
}

impl KernelDirs {
    /// Over the three maps' handles.
    pub fn new(dirs: MapHandle, dev_filter: MapHandle, dir_filter: MapHandle) -> Self {
        Self {
            dirs,
            devs: BitFilter::new(dev_filter, "dev_filter"),
            dir_bits: BitFilter::new(dir_filter, "dir_filter"),
        }
    }

    /// Watches directory `dir` as volume `volume_id`; on error nothing was added.
    pub fn insert(
        &mut self,
        dir: FileId,
        volume_id: u32,
        volume_type: VolumeType,
    ) -> Result<(), MapError> {
        let info = cac_dir_info {
            volume_id,
            volume_type: super::abi::volume_type(volume_type),
        };
        let key = dir_key(dir);
        self.dirs
            .update(bytes_of(&key), bytes_of(&info), MapFlags::ANY)
            .map_err(map_err("watched_dirs"))?;
        if let Err(e) = self.dir_bits.add(dir_bit(dir)) {
            let _ = self.dirs.delete(bytes_of(&key));
            return Err(e);
        }
        if let Err(e) = self.devs.add(dev_bit(dir.dev)) {
            self.dir_bits.remove(dir_bit(dir));
            let _ = self.dirs.delete(bytes_of(&key));
            return Err(e);
        }
        Ok(())
    }

    /// Stops watching `dir` (a missing entry is not an error: the goal is its absence).
    pub fn remove(&mut self, dir: FileId) {
        if self.dirs.delete(bytes_of(&dir_key(dir))).is_ok() {
            self.dir_bits.remove(dir_bit(dir));
            self.devs.remove(dev_bit(dir.dev));
        }
    }
}

/// A process and its cgroup ids: a record of `pid_samples`, or of the /proc scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidSample {
    pub tgid: u32,
    pub cgroup_id: u64,
    /// 0 when no cgroup v1 hierarchy is used.
    pub cgroup_v1_id: u64,
}

/// The kernel correlation maps: `pod_info` (cgroup id -> pod),
/// `container_pids` (tgid -> container) and the process records `pid_samples`.
#[derive(Debug)]
pub struct KernelMaps {
    pub pod_info: MapHandle,
    pub container_pids: MapHandle,
    pub pid_samples: MapHandle,
    pub cgroup_classes: MapHandle,
    /// The kernel counters, for the process records it could not write.
    pub stats: StatsReader,
}

impl KernelMaps {
    /// Writes the pod of a cgroup.
    pub fn put_pod_info(&self, cgroup_id: u64, info: &PodInfo) -> Result<(), MapError> {
        self.pod_info
            .update(
                &cgroup_id.to_ne_bytes(),
                bytes_of(&encode_pod_info(info)),
                MapFlags::ANY,
            )
            .map_err(map_err("pod_info_map"))
    }

    /// The pod of a cgroup.
    pub fn pod_info(&self, cgroup_id: u64) -> Option<PodInfo> {
        let v = self
            .pod_info
            .lookup(&cgroup_id.to_ne_bytes(), MapFlags::ANY)
            .ok()??;
        decode_pod_info(&v)
    }

    /// Removes a cgroup's pod.
    pub fn delete_pod_info(&self, cgroup_id: u64) -> Result<(), MapError> {
        self.pod_info
            .delete(&cgroup_id.to_ne_bytes())
            .map_err(map_err("pod_info_map"))
    }

    /// The cgroup ids `pod_info` holds.
    pub fn pod_info_ids(&self) -> Vec<u64> {
        self.pod_info
            .keys()
            .filter_map(|key| Some(u64::from_ne_bytes(key.as_slice().try_into().ok()?)))
            .collect()
    }

    /// Writes the container of process `tgid`.
    pub fn put_container_pid(&self, tgid: u32, c: &ContainerPid) -> Result<(), MapError> {
        self.container_pids
            .update(
                &tgid.to_ne_bytes(),
                bytes_of(&encode_container_pid(c)),
                MapFlags::ANY,
            )
            .map_err(map_err("container_pids"))
    }

    /// The container of process `tgid`.
    pub fn container_pid(&self, tgid: u32) -> Option<ContainerPid> {
        let v = self
            .container_pids
            .lookup(&tgid.to_ne_bytes(), MapFlags::ANY)
            .ok()??;
        decode_container_pid(&v)
    }

    /// Classifies the cgroups (v2 id, v1 id): `Some` container of a pod, or
    /// `None` for cgroups outside every pod.
    pub fn put_cgroup_class(
        &self,
        ids: (u64, u64),
        container: Option<&ContainerPid>,
    ) -> Result<(), MapError> {
        self.cgroup_classes
            .update(
                bytes_of(&cgroup_key(ids.0, ids.1)),
                bytes_of(&encode_cgroup_class(container)),
                MapFlags::ANY,
            )
            .map_err(map_err("cgroup_classes"))
    }

    /// The classified cgroups, as (v2 id, v1 id).
    pub fn cgroup_class_ids(&self) -> Vec<(u64, u64)> {
        self.cgroup_classes
            .keys()
            .filter_map(|key| decode_cgroup_key(&key))
            .collect()
    }

    /// Forgets the class of cgroups (v2 id, v1 id).
    pub fn delete_cgroup_class(&self, ids: (u64, u64)) -> Result<(), MapError> {
        self.cgroup_classes
            .delete(bytes_of(&cgroup_key(ids.0, ids.1)))
            .map_err(map_err("cgroup_classes"))
    }

    /// Takes every process record out of `pid_samples` (each atomically:
    /// a record the kernel rewrites meanwhile is taken whole or left whole).
    pub fn take_samples(&self) -> Vec<PidSample> {
        let keys: Vec<Vec<u8>> = self.pid_samples.keys().collect();
        keys.into_iter()
            .filter_map(|key| {
                let tgid = u32::from_ne_bytes(key.as_slice().try_into().ok()?);
                let v = self.pid_samples.lookup_and_delete(&key).ok()??;
                let s = decode_sample(&v)?;
                Some(PidSample {
                    tgid,
                    cgroup_id: s.cgroup_id,
                    cgroup_v1_id: s.cgroup_v1_id,
                })
            })
            .collect()
    }

    /// Process records the kernel could not write because `pid_samples` was
    /// full, since load (0 when the counters cannot be read).
    pub fn records_full(&self) -> u64 {
        self.stats.read().map_or(0, |s| s.records_full)
    }
}

/// The kernel's Service endpoint map `svc_endpoints`, which other
/// collectors' BPF programs look up: (IP, port, protocol) -> Service port
/// and pod.
#[derive(Debug)]
pub struct KernelServices {
    map: MapHandle,
}

impl KernelServices {
    /// Over the `svc_endpoints` map's handle.
    pub fn new(map: MapHandle) -> Self {
        Self { map }
    }

    /// Writes what `addr` belongs to.
    pub fn put(&self, addr: EndpointAddr, value: &ServiceEndpoint<'_>) -> Result<(), MapError> {
        self.map
            .update(
                bytes_of(&endpoint_key(addr)),
                bytes_of(&encode_service_endpoint(value)),
                MapFlags::ANY,
            )
            .map_err(map_err("svc_endpoints"))
    }

    /// Removes `addr` (a missing entry is not an error: the goal is its absence).
    pub fn delete(&self, addr: EndpointAddr) -> Result<(), MapError> {
        match self.map.delete(bytes_of(&endpoint_key(addr))) {
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            other => other.map_err(map_err("svc_endpoints")),
        }
    }

    /// Whether the map holds `addr`.
    pub fn contains(&self, addr: EndpointAddr) -> bool {
        matches!(
            self.map
                .lookup(bytes_of(&endpoint_key(addr)), MapFlags::ANY),
            Ok(Some(_))
        )
    }

    /// The addresses the map holds.
    pub fn addresses(&self) -> Vec<EndpointAddr> {
        self.map
            .keys()
            .filter_map(|key| decode_endpoint_key(&key))
            .collect()
    }
}

/// Reads the per-CPU `stats` map.
#[derive(Debug)]
pub struct StatsReader {
    map: MapHandle,
}

impl StatsReader {
    /// Over the `stats` map's handle.
    pub fn new(map: MapHandle) -> Self {
        Self { map }
    }

    /// A second reader of the same map.
    pub fn try_clone(&self) -> Result<Self, MapError> {
        Ok(Self {
            map: MapHandle::try_from(&self.map).map_err(map_err("stats"))?,
        })
    }

    /// Current counter values.
    pub fn read(&self) -> Result<KernelStats, MapError> {
        let get = |idx: cac_stat| -> Result<u64, MapError> {
            let values = self
                .map
                .lookup_percpu(&idx.0.to_ne_bytes(), MapFlags::ANY)
                .map_err(map_err("stats"))?
                .unwrap_or_default();
            Ok(values.iter().filter_map(|v| decode_u64(v)).sum())
        };
        Ok(KernelStats {
            matched: get(cac_stat::CAC_STAT_MATCHED)?,
            delivered: get(cac_stat::CAC_STAT_DELIVERED)?,
            dropped_ringbuf: get(cac_stat::CAC_STAT_DROPPED_RINGBUF)?,
            sampled: get(cac_stat::CAC_STAT_SAMPLED)?,
            opens_seen: get(cac_stat::CAC_STAT_OPENS_SEEN)?,
            own: get(cac_stat::CAC_STAT_OWN)?,
            repeated: get(cac_stat::CAC_STAT_REPEATED)?,
            repeat_full: get(cac_stat::CAC_STAT_REPEAT_FULL)?,
            records_full: get(cac_stat::CAC_STAT_RECORDS_FULL)?,
            uring_unobserved: get(cac_stat::CAC_STAT_URING_UNOBSERVED)?,
        })
    }
}
