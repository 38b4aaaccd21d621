//! The kernel side: the generated skeleton and its ABI glue ([`abi`]),
//! loading and attaching ([`probe`]), the ring-buffer poller ([`ring`]),
//! decoding raw records ([`decode`]), typed BPF map access ([`maps`]), the
//! kernel's losses as health conditions ([`losses`]), the
//! summaries of repeated opens counted in the kernel ([`repeats`]), and
//! the monotonic-to-wall-clock conversion of kernel timestamps ([`clock`]).
//!
//! It may use `model`; it knows nothing of volumes' meaning, pods or outputs.

pub mod abi;
pub mod clock;
pub mod decode;
pub mod losses;
pub mod maps;
pub mod probe;
pub mod repeats;
pub mod ring;
