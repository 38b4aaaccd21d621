//! Looks addresses up in a pinned `svc_endpoints` as another collector
//! would: the key built from the ABI's description, read with `bpftool`.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The key bytes of `svc_endpoints` for an address, built from the ABI's
/// description as another collector's program would: the IPv6 address
/// (IPv4 as `::ffff:a.b.c.d`), the port in network byte order, the protocol
/// number, a zero byte.
pub fn endpoint_key(ip: &str, port: u16, protocol: u8) -> Vec<String> {
    let v6 = match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut key = v6.octets().to_vec();
    key.extend(port.to_be_bytes());
    key.extend([protocol, 0]);
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bpftool map lookup pinned PIN key hex …`: the BTF-formatted value as
/// (namespace, service, port name, pod UID, role), or `None` when the map
/// does not hold the address.
pub fn kernel_lookup(pin: &Path, ip: &str, port: u16, protocol: u8) -> Option<(String, u64)> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "lookup", "pinned"])
        .arg(pin)
        .args(["key", "hex"])
        .args(endpoint_key(ip, port, protocol))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // bpftool -j answers a missing key with `null` and exit status 254.
    if !out.status.success() {
        assert_eq!(text.trim(), "null", "bpftool: {out:?}");
        return None;
    }
    let answer: Value = serde_json::from_str(&text).unwrap();
    let v = &answer["formatted"]["value"];
    let field = |f: &str| v[f].as_str().unwrap_or("?").to_string();
    let described = format!(
        "{}/{}:{}@{}",
        field("namespace"),
        field("service"),
        field("port_name"),
        field("pod_uid")
    );
    Some((described, v["role"].as_u64().unwrap_or(0)))
}
