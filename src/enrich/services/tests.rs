//! Unit tests of the conversion and the store: real Service and
//! EndpointSlice JSON, replacement, deletion, relists, the bound, and the
//! change log.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::*;
use crate::model::health::HealthBoard;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(a: &str, port: u16) -> EndpointKey {
    EndpointKey::new(ip(a), port, Protocol::Tcp)
}

fn service(ns: &str, name: &str, ips: &[&str]) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "uid": "s-1", "resourceVersion": "1",
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"type": "ClusterIP", "clusterIP": ips[0], "clusterIPs": ips,
                 "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack",
                 "selector": {"app": name}, "sessionAffinity": "None",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                           {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]},
        "status": {"loadBalancer": {}}
    }))
    .unwrap()
}

fn slice(
    ns: &str,
    name: &str,
    svc: &str,
    family: &str,
    endpoints: &[(&str, &str)],
) -> EndpointSlice {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|(addr, pod)| json!({
            "addresses": [addr], "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": "node-a", "zone": "z1",
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod, "uid": format!("uid-{pod}")}
        }))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": family,
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": svc, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc, "uid": "s-1", "controller": true}]},
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap()
}

fn map() -> ServiceMap {
    ServiceMap::new(MapSettings::default())
}

fn add_service(m: &ServiceMap, s: &Service) {
    m.apply(service_entries(s, m.names(), m.max_entries()).unwrap());
}

fn add_slice(m: &ServiceMap, s: &EndpointSlice) {
    m.apply(slice_entries(s, m.names(), m.max_entries()).unwrap());
}

fn names(targets: &[Target]) -> Vec<(String, Option<String>, Option<String>)> {
    targets
        .iter()
        .map(|t| {
            (
                format!("{}/{}", t.service.namespace, t.service.name),
                t.service.port_name.as_deref().map(str::to_string),
                t.pod.as_ref().map(|p| p.name.to_string()),
            )
        })
        .collect()
}

#[test]
fn a_dual_stack_service_maps_both_cluster_ips_and_every_port() {
    let m = map();
    add_service(&m, &service("shop", "web", &["10.96.0.10", "fd00::a"]));
    assert_eq!(m.len(), 4);
    let v4 = m.lookup(&tcp("10.96.0.10", 80));
    assert_eq!(names(&v4), [("shop/web".into(), Some("http".into()), None)]);
    assert_eq!(v4[0].service.role, Role::ClusterIp);
    let v6 = m.lookup(&EndpointKey::new(ip("fd00::a"), 53, Protocol::Udp));
    assert_eq!(names(&v6), [("shop/web".into(), Some("dns".into()), None)]);
    assert!(
        m.lookup(&tcp("10.96.0.10", 53)).is_empty(),
        "53 is UDP only"
    );
}

#[test]
fn endpoints_map_to_their_service_port_and_pod() {
    let m = map();
    add_slice(
        &m,
        &slice(
            "shop",
            "web-abc",
            "web",
            "IPv4",
            &[("10.1.0.5", "web-0"), ("10.1.0.6", "web-1")],
        ),
    );
    let t = m.lookup(&tcp("10.1.0.5", 8080));
    assert_eq!(
        names(&t),
        [("shop/web".into(), Some("http".into()), Some("web-0".into()))]
    );
    let pod = t[0].pod.as_ref().unwrap();
    assert_eq!((&*pod.uid, &*pod.namespace), ("uid-web-0", "shop"));
    assert_eq!(t[0].service.role, Role::Endpoint);
    let backed = m.by_pod("uid-web-1");
    assert_eq!(backed.len(), 1);
    assert_eq!(backed[0].0, tcp("10.1.0.6", 8080));
    assert!(m.by_pod("uid-nobody").is_empty());
}

#[test]
fn headless_services_fqdn_slices_and_bad_fields_are_left_out_safely() {
    let m = map();
    let mut headless = service("shop", "db", &["None"]);
    headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    add_service(&m, &headless);
    assert_eq!(m.len(), 0);
    let fqdn = slice("shop", "ext", "ext", "FQDN", &[("example.com", "x")]);
    assert!(matches!(
        slice_entries(&fqdn, m.names(), 10),
        Err(SkippedObject::AddressType(_))
    ));
    let mut unlabelled = slice("shop", "manual", "x", "IPv4", &[("10.1.0.9", "p")]);
    unlabelled.metadata.labels = None;
    assert_eq!(
        slice_entries(&unlabelled, m.names(), 10).unwrap_err(),
        SkippedObject::NoServiceLabel
    );
    let bad: EndpointSlice = serde_json::from_value(json!({
        "addressType": "IPv4",
        "metadata": {"name": "s", "namespace": "n", "labels": {"kubernetes.io/service-name": "svc"}},
        "endpoints": [{"addresses": ["not-an-ip"]}, {"addresses": []}, {"addresses": ["10.2.0.1"], "targetRef": {"kind": "Node", "name": "n1", "uid": "u"}}],
        "ports": [{"port": 70000}, {"port": 0}, {"port": 9, "protocol": "ICMP"}, {"name": "", "port": 9100}, {"name": "all"}]
    }))
    .unwrap();
    add_slice(&m, &bad);
    let t = m.lookup(&tcp("10.2.0.1", 9100));
    assert_eq!(
        names(&t),
        [("n/svc".into(), None, None)],
        "only the valid port, no pod"
    );
    assert_eq!(m.len(), 1);
}

#[test]
fn updates_replace_and_deletes_take_back() {
    let m = map();
    add_slice(
        &m,
        &slice("shop", "web-abc", "web", "IPv4", &[("10.1.0.5", "web-0")]),
    );
    let g1 = m.generation();
    add_slice(
        &m,
        &slice("shop", "web-abc", "web", "IPv4", &[("10.1.0.5", "web-0")]),
    );
    assert_eq!(m.generation(), g1, "an unchanged object changes nothing");
    add_slice(
        &m,
        &slice("shop", "web-abc", "web", "IPv4", &[("10.1.0.7", "web-2")]),
    );
    assert!(m.lookup(&tcp("10.1.0.5", 8080)).is_empty());
    assert!(m.by_pod("uid-web-0").is_empty());
    assert_eq!(m.by_pod("uid-web-2").len(), 1);
    let id = object_id(
        ObjectKind::EndpointSlice,
        &slice("shop", "web-abc", "web", "IPv4", &[]).metadata,
        m.names(),
    )
    .unwrap();
    m.delete(&id);
    assert_eq!((m.len(), m.entry_count(), m.objects()), (0, 0, 0));
    assert!(m.by_pod("uid-web-2").is_empty());
}

#[test]
fn shared_keys_keep_every_target_and_lose_only_the_deleted_one() {
    let m = map();
    add_slice(&m, &slice("shop", "a-1", "a", "IPv4", &[("10.1.0.5", "p")]));
    add_slice(&m, &slice("shop", "b-1", "b", "IPv4", &[("10.1.0.5", "p")]));
    let t = m.lookup(&tcp("10.1.0.5", 8080));
    assert_eq!(t.len(), 2);
    assert_eq!(
        &*m.entries().entries[0].1.service.name,
        "a",
        "the preferred target"
    );
    let id = object_id(
        ObjectKind::EndpointSlice,
        &slice("shop", "a-1", "a", "IPv4", &[]).metadata,
        m.names(),
    )
    .unwrap();
    m.delete(&id);
    assert_eq!(names(&m.lookup(&tcp("10.1.0.5", 8080)))[0].0, "shop/b");
    assert_eq!(m.by_pod("uid-p").len(), 1);
}

#[test]
fn a_relist_deletes_what_it_no_longer_lists_of_its_kind_only() {
    let m = map();
    add_service(&m, &service("shop", "web", &["10.96.0.10"]));
    add_slice(
        &m,
        &slice("shop", "old", "web", "IPv4", &[("10.1.0.5", "web-0")]),
    );
    assert!(!m.synced());
    m.begin_relist(ObjectKind::EndpointSlice);
    add_slice(
        &m,
        &slice("shop", "new", "web", "IPv4", &[("10.1.0.6", "web-1")]),
    );
    assert_eq!(
        m.lookup(&tcp("10.1.0.5", 8080)).len(),
        1,
        "answers during the relist"
    );
    m.end_relist(ObjectKind::EndpointSlice);
    assert!(m.lookup(&tcp("10.1.0.5", 8080)).is_empty());
    assert_eq!(m.lookup(&tcp("10.1.0.6", 8080)).len(), 1);
    assert_eq!(
        m.lookup(&tcp("10.96.0.10", 80)).len(),
        1,
        "Services are not relisted"
    );
    assert!(!m.synced(), "Services were never listed");
    m.begin_relist(ObjectKind::Service);
    m.end_relist(ObjectKind::Service);
    assert!(m.synced());
    assert!(m.lookup(&tcp("10.96.0.10", 80)).is_empty());
}

#[test]
fn a_full_map_counts_what_it_leaves_out_and_says_so() {
    let health = std::sync::Arc::new(HealthBoard::default());
    let m = ServiceMap::new(MapSettings { max_entries: 3 }).with_health(health.clone());
    add_service(&m, &service("shop", "web", &["10.96.0.10", "fd00::a"]));
    assert_eq!(m.entry_count(), 3);
    assert_eq!(m.overflow(), 1);
    assert_eq!(m.incomplete_objects(), 1);
    let c = health.conditions();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].component, HEALTH_COMPONENT);
    assert!(
        c[0].reason
            .contains("kernel_monitor_service_map_overflow_total"),
        "{}",
        c[0].reason
    );
    add_slice(&m, &slice("shop", "s", "web", "IPv4", &[("10.1.0.5", "p")]));
    assert_eq!((m.overflow(), m.incomplete_objects()), (2, 2));
    assert!(m.lookup(&tcp("10.1.0.5", 8080)).is_empty());
    // The Service goes: the slice fits when it comes again.
    let id = object_id(
        ObjectKind::Service,
        &service("shop", "web", &["10.96.0.10"]).metadata,
        m.names(),
    )
    .unwrap();
    m.delete(&id);
    assert_eq!(m.incomplete_objects(), 1);
    add_slice(&m, &slice("shop", "s", "web", "IPv4", &[("10.1.0.5", "p")]));
    assert_eq!(m.incomplete_objects(), 0);
    assert_eq!(m.lookup(&tcp("10.1.0.5", 8080)).len(), 1);
    assert!(
        health.conditions().is_empty(),
        "cleared once everything fits"
    );
}

#[test]
fn conversion_stops_at_the_limit_without_building_the_rest() {
    let endpoints: Vec<(String, String)> = (0..50)
        .map(|i| (format!("10.3.0.{i}"), format!("p{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = endpoints
        .iter()
        .map(|(a, p)| (a.as_str(), p.as_str()))
        .collect();
    let c = slice_entries(
        &slice("n", "s", "svc", "IPv4", &refs),
        &crate::enrich::pods::Interner::default(),
        10,
    )
    .unwrap();
    assert_eq!((c.entries.len(), c.dropped), (10, 40));
}

#[test]
fn the_change_log_names_changed_keys_until_it_overflows() {
    let m = map();
    let start = m.entries().generation;
    let rx = m.subscribe();
    add_slice(
        &m,
        &slice("shop", "s", "web", "IPv6", &[("fd00:1::5", "web-0")]),
    );
    assert!(rx.has_changed().unwrap());
    let key = EndpointKey::new(ip("fd00:1::5"), 8080, Protocol::Tcp);
    let Changes::Keys { generation, keys } = m.changes_since(start) else {
        panic!("expected keys")
    };
    assert_eq!(keys, [key]);
    assert_eq!(
        m.changes_since(generation),
        Changes::Keys {
            generation,
            keys: vec![]
        }
    );
    assert_eq!(m.changes_since(generation + 1), Changes::Resync);
    // More changed keys than the log holds: a consumer that far behind resyncs.
    let many: Vec<(String, String)> = (0..CHANGE_LOG + 10)
        .map(|i| {
            (
                format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                format!("p{i}"),
            )
        })
        .collect();
    for chunk in many.chunks(500) {
        let refs: Vec<(&str, &str)> = chunk
            .iter()
            .map(|(a, p)| (a.as_str(), p.as_str()))
            .collect();
        add_slice(
            &m,
            &slice("shop", &format!("big-{}", chunk[0].1), "big", "IPv4", &refs),
        );
    }
    assert_eq!(m.changes_since(generation), Changes::Resync);
    let snap = m.entries();
    assert_eq!(snap.entries.len(), m.len());
    assert_eq!(
        m.changes_since(snap.generation),
        Changes::Keys {
            generation: snap.generation,
            keys: vec![]
        }
    );
}

#[test]
fn protocols_parse_in_any_case() {
    assert_eq!(Protocol::parse("tcp"), Some(Protocol::Tcp));
    assert_eq!(Protocol::parse("SCTP"), Some(Protocol::Sctp));
    assert_eq!(Protocol::parse("icmp"), None);
    assert_eq!(Protocol::Udp.number(), 17);
}
