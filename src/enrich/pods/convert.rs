//! Stripping a Kubernetes Pod down to a [`PodMeta`]: names, the kept labels,
//! the owning workload, containers and their mounts, and each volume's
//! sources.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::interner::Interner;
use super::meta::{ContainerMeta, LabelFilter, PodMeta, VolumeMountMeta, VolumeSource};
use crate::model::pod::{Name, SourceKind, Workload};

/// The mounts of watched volumes among `mounts`; `subPathExpr` mounts are
/// left out (their path depends on the environment of the container).
fn watched_mounts(
    mounts: Option<&Vec<k8s_openapi::api::core::v1::VolumeMount>>,
    watched: &[Name],
    names: &Interner,
) -> Box<[VolumeMountMeta]> {
    mounts
        .into_iter()
        .flatten()
        .filter(|m| m.sub_path_expr.as_deref().unwrap_or_default().is_empty())
        .filter(|m| watched.iter().any(|w| **w == *m.name))
        .map(|m| VolumeMountMeta {
            path: m.mount_path.trim_end_matches('/').into(),
            volume: names.get(&m.name),
            sub_path: m
                .sub_path
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(Box::from),
        })
        .collect()
}

fn strip_scheme(id: &str) -> &str {
    id.split_once("://").map(|(_, i)| i).unwrap_or(id)
}

/// The workload of a pod from its controller owner reference.
pub(super) fn workload_of(pod: &Pod, names: &Interner) -> Option<Workload> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    let (kind, name) = match (owner.kind.as_str(), hash) {
        // A Deployment's ReplicaSet is named <deployment>-<pod-template-hash>.
        ("ReplicaSet", Some(h)) => match owner.name.strip_suffix(&format!("-{h}")) {
            Some(d) => ("Deployment", d),
            None => ("ReplicaSet", owner.name.as_str()),
        },
        // A CronJob's Job is named <cronjob>-<scheduled time in minutes>.
        ("Job", _) => match owner.name.rsplit_once('-') {
            Some((cj, t)) if t.len() >= 8 && t.bytes().all(|b| b.is_ascii_digit()) => {
                ("CronJob", cj)
            }
            _ => ("Job", owner.name.as_str()),
        },
        (k, _) => (k, owner.name.as_str()),
    };
    Some(Workload {
        kind: names.get(kind),
        name: names.get(name),
    })
}

/// Builds sources with interned strings.
struct Sources<'a>(&'a Interner);

impl Sources<'_> {
    fn items(
        &self,
        list: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    ) -> Box<[(Name, Name)]> {
        list.iter()
            .flat_map(|l| l.iter())
            .map(|i| (self.0.get(&i.key), self.0.get(&i.path)))
            .collect()
    }

    fn paths<'p>(&self, paths: impl Iterator<Item = &'p str>) -> Box<[(Name, Name)]> {
        paths
            .map(|p| {
                let n = self.0.get(p);
                (Arc::clone(&n), n)
            })
            .collect()
    }

    fn source(
        &self,
        kind: SourceKind,
        name: Option<&str>,
        items: Box<[(Name, Name)]>,
    ) -> VolumeSource {
        VolumeSource {
            kind,
            name: name.map(|n| self.0.get(n)),
            items,
        }
    }

    fn projected(&self, p: &k8s_openapi::api::core::v1::VolumeProjection) -> Option<VolumeSource> {
        if let Some(s) = &p.secret {
            return Some(self.source(
                SourceKind::Secret,
                Some(&s.name),
                self.items(s.items.as_ref()),
            ));
        }
        if let Some(c) = &p.config_map {
            return Some(self.source(
                SourceKind::ConfigMap,
                Some(&c.name),
                self.items(c.items.as_ref()),
            ));
        }
        if let Some(t) = &p.service_account_token {
            let items = self.paths(std::iter::once(t.path.as_str()));
            return Some(self.source(SourceKind::ServiceAccountToken, None, items));
        }
        if let Some(d) = &p.downward_api {
            let items = self.paths(d.items.iter().flatten().map(|i| i.path.as_str()));
            return Some(self.source(SourceKind::DownwardApi, None, items));
        }
        if let Some(b) = &p.cluster_trust_bundle {
            let name = b.name.as_deref().or(b.signer_name.as_deref());
            let items = self.paths(std::iter::once(b.path.as_str()));
            return Some(self.source(SourceKind::ClusterTrustBundle, name, items));
        }
        None
    }

    fn volume(&self, v: &k8s_openapi::api::core::v1::Volume) -> Option<Box<[VolumeSource]>> {
        let one = |s: VolumeSource| Some(vec![s].into_boxed_slice());
        if let Some(s) = &v.secret {
            return one(self.source(
                SourceKind::Secret,
                s.secret_name.as_deref(),
                self.items(s.items.as_ref()),
            ));
        }
        if let Some(c) = &v.config_map {
            return one(self.source(
                SourceKind::ConfigMap,
                Some(&c.name),
                self.items(c.items.as_ref()),
            ));
        }
        if let Some(d) = &v.downward_api {
            let items = self.paths(d.items.iter().flatten().map(|i| i.path.as_str()));
            return one(self.source(SourceKind::DownwardApi, None, items));
        }
        let p = v.projected.as_ref()?;
        Some(
            p.sources
                .iter()
                .flatten()
                .filter_map(|s| self.projected(s))
                .collect(),
        )
    }
}

impl PodMeta {
    /// Strips a Pod down to what enrichment needs. `None` without a UID.
    pub fn from_pod(pod: &Pod, labels: &LabelFilter, names: &Interner) -> Option<Self> {
        let md = &pod.metadata;
        let uid = names.get(md.uid.as_deref()?);
        let spec = pod.spec.as_ref();
        let statuses: Vec<_> = pod
            .status
            .iter()
            .flat_map(|s| {
                [
                    &s.container_statuses,
                    &s.init_container_statuses,
                    &s.ephemeral_container_statuses,
                ]
                .into_iter()
                .flatten()
                .flatten()
            })
            .collect();
        let ids: HashMap<&str, &str> = statuses
            .iter()
            .filter_map(|c| Some((c.name.as_str(), strip_scheme(c.container_id.as_deref()?))))
            .collect();
        let started: HashMap<&str, i64> = statuses
            .iter()
            .filter_map(|c| {
                let running = c.state.as_ref()?.running.as_ref()?;
                Some((c.name.as_str(), running.started_at.as_ref()?.0.as_second()))
            })
            .collect();
        let sources = Sources(names);
        let volumes: Box<[_]> = spec
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|v| Some((names.get(&v.name), sources.volume(v)?)))
            .collect();
        let watched: Vec<Name> = volumes.iter().map(|(n, _)| Arc::clone(n)).collect();
        let mut containers = Vec::new();
        if let Some(spec) = spec {
            let regular = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .map(|c| {
                    (
                        c.name.as_str(),
                        c.image.as_deref(),
                        c.volume_mounts.as_ref(),
                    )
                });
            let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| {
                (
                    c.name.as_str(),
                    c.image.as_deref(),
                    c.volume_mounts.as_ref(),
                )
            });
            for (name, image, mounts) in regular.chain(ephemeral) {
                containers.push(ContainerMeta {
                    name: names.get(name),
                    image: names.get(image.unwrap_or_default()),
                    id: ids.get(name).map(|id| Box::from(*id)),
                    started_at: started.get(name).copied(),
                    mounts: watched_mounts(mounts, &watched, names),
                });
            }
        }
        Some(Self {
            uid,
            name: md.name.as_deref().unwrap_or_default().into(),
            namespace: names.get(md.namespace.as_deref().unwrap_or_default()),
            labels: md
                .labels
                .iter()
                .flatten()
                .filter(|(k, _)| labels.keeps(k))
                .map(|(k, v)| (names.get(k), names.get(v)))
                .collect(),
            workload: workload_of(pod, names),
            service_account: spec
                .and_then(|s| s.service_account_name.as_deref())
                .map(|s| names.get(s)),
            containers: containers.into_boxed_slice(),
            share_process_namespace: spec
                .and_then(|s| s.share_process_namespace)
                .unwrap_or(false),
            volumes,
        })
    }
}
