//! config-access-collector: which pod, container and process read which Secret or ConfigMap.

pub mod abi {
    //! The generated libbpf-rs skeleton; its `types` module holds the ABI structs of `bpf/cac_abi.h`.
    #![allow(clippy::all, missing_docs, non_camel_case_types, non_upper_case_globals)]
    include!(concat!(env!("OUT_DIR"), "/collector.skel.rs"));
}
pub mod decode;
pub mod logging;
pub mod probe;
