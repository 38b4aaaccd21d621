//! The kernel/user ABI: the generated libbpf-rs skeleton, whose `types`
//! module holds the structs and enums of `bpf/cac_abi.h` (from the object's
//! BTF, never hand-written), and the `bytemuck::Pod` impls that let
//! [`super::decode`] read and write them as bytes.

mod skel {
    #![allow(
        clippy::all,
        missing_docs,
        non_camel_case_types,
        non_upper_case_globals
    )]
    include!(concat!(env!("OUT_DIR"), "/collector.skel.rs"));
}

pub use skel::*;

use crate::model::volume::VolumeType;
use types::{
    cac_cgroup_class, cac_cgroup_key, cac_container_pid, cac_dir_info, cac_dir_key,
    cac_endpoint_key, cac_event, cac_failed_key, cac_failed_repeat, cac_pod_info, cac_repeat,
    cac_repeat_key, cac_sample, cac_service_endpoint, cac_volume_type,
};

// SAFETY: these skeleton types are `#[repr(C)]`, contain only integers and
// integer arrays, and have no implicit padding (the C header pads explicitly
// and `_Static_assert`s the sizes), so every bit pattern is valid.
unsafe impl bytemuck::Zeroable for cac_event {}
unsafe impl bytemuck::Pod for cac_event {}
unsafe impl bytemuck::Zeroable for cac_dir_key {}
unsafe impl bytemuck::Pod for cac_dir_key {}
unsafe impl bytemuck::Zeroable for cac_dir_info {}
unsafe impl bytemuck::Pod for cac_dir_info {}
unsafe impl bytemuck::Zeroable for cac_sample {}
unsafe impl bytemuck::Pod for cac_sample {}
unsafe impl bytemuck::Zeroable for cac_pod_info {}
unsafe impl bytemuck::Pod for cac_pod_info {}
unsafe impl bytemuck::Zeroable for cac_container_pid {}
unsafe impl bytemuck::Pod for cac_container_pid {}
unsafe impl bytemuck::Zeroable for cac_cgroup_key {}
unsafe impl bytemuck::Pod for cac_cgroup_key {}
unsafe impl bytemuck::Zeroable for cac_cgroup_class {}
unsafe impl bytemuck::Pod for cac_cgroup_class {}
unsafe impl bytemuck::Zeroable for cac_repeat_key {}
unsafe impl bytemuck::Pod for cac_repeat_key {}
unsafe impl bytemuck::Zeroable for cac_repeat {}
unsafe impl bytemuck::Pod for cac_repeat {}
unsafe impl bytemuck::Zeroable for cac_failed_key {}
unsafe impl bytemuck::Pod for cac_failed_key {}
unsafe impl bytemuck::Zeroable for cac_failed_repeat {}
unsafe impl bytemuck::Pod for cac_failed_repeat {}
unsafe impl bytemuck::Zeroable for cac_endpoint_key {}
unsafe impl bytemuck::Pod for cac_endpoint_key {}
unsafe impl bytemuck::Zeroable for cac_service_endpoint {}
unsafe impl bytemuck::Pod for cac_service_endpoint {}

/// The ABI value of a volume type (`enum cac_volume_type`).
pub fn volume_type(t: VolumeType) -> u32 {
    match t {
        VolumeType::Secret => cac_volume_type::CAC_VOL_SECRET.0,
        VolumeType::ConfigMap => cac_volume_type::CAC_VOL_CONFIGMAP.0,
        VolumeType::Projected => cac_volume_type::CAC_VOL_PROJECTED.0,
        VolumeType::DownwardApi => cac_volume_type::CAC_VOL_DOWNWARD_API.0,
    }
}
