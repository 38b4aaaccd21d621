//! The usage report as a person reads it (`config-access-collector
//! report`): one row per mounted volume with files never read and what to
//! change; the readers of rotated volumes, stale ones first; the keys read
//! only at a container's start.

use comfy_table::presets::ASCII_MARKDOWN;
use comfy_table::{ContentArrangement, Table};

use super::answers::{EvidenceStatus, UnreadMount, UnreadReport};
use super::rotation::{RotatedReader, RotatedVolume, RotationReport};
use super::startup::{StartupOnlyRead, StartupOnlyReport};
use super::UsageReport;

/// The whole report: its three sections.
pub fn render(report: &UsageReport) -> String {
    [
        render_unread(&report.unread),
        render_rotations(&report.rotations),
        render_startup(&report.startup),
    ]
    .join("\n")
}

/// A table with `header`, as every section draws it.
fn table<const N: usize>(header: [&str; N], rows: impl IntoIterator<Item = [String; N]>) -> String {
    let mut table = Table::new();
    table
        .load_style(ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for row in rows {
        table.add_row(row);
    }
    table.to_string()
}

/// "namespace/pod", else the pod UID.
fn pod_name(namespace: Option<&str>, name: Option<&str>, uid: &str) -> String {
    match (namespace, name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => uid.to_string(),
    }
}

/// Rotated volumes: each reader, whether it re-read, how long it is stale.
fn render_rotations(report: &RotationReport) -> String {
    let mut out = format!(
        "Volumes rotated by the kubelet (Secret or ConfigMap updated, token refreshed): {}; readers still running on replaced content: {}\n\n",
        report.volumes.len(),
        report.stale_readers
    );
    if report.volumes.is_empty() {
        return out;
    }
    let mut rows: Vec<(bool, [String; 7])> = report
        .volumes
        .iter()
        .flat_map(|v| v.readers.iter().map(move |r| (r.stale, rotation_row(v, r))))
        .collect();
    // Stale readers first.
    rows.sort_by_key(|(stale, _)| !stale);
    out.push_str(&table(
        [
            "NAMESPACE/POD",
            "VOLUME",
            "KEY",
            "CONTAINER",
            "PROCESS",
            "LAST OPENED",
            "STATUS",
        ],
        rows.into_iter().map(|(_, row)| row),
    ));
    out.push('\n');
    for (r, warning) in report
        .volumes
        .iter()
        .flat_map(|v| &v.readers)
        .filter_map(|r| r.warning.as_ref().map(|w| (r, w)))
    {
        out.push_str(&format!("\n{} (pid {}) {warning}.\n", r.command, r.pid));
    }
    out
}

fn rotation_row(v: &RotatedVolume, r: &RotatedReader) -> [String; 7] {
    let status = if r.current {
        "re-read the current revision".to_string()
    } else if !r.running {
        "exited before re-reading".to_string()
    } else {
        match r.stale_secs {
            Some(secs) => format!(
                "STALE for {}",
                humantime::format_duration(std::time::Duration::from_secs(
                    secs - secs % 60 * u64::from(secs >= 60)
                ))
            ),
            None => "STALE (rotated while the collector was down)".to_string(),
        }
    };
    [
        pod_name(
            v.mount.namespace.as_deref(),
            v.mount.pod_name.as_deref(),
            &v.mount.pod_uid,
        ),
        v.mount.volume.clone(),
        r.key.clone(),
        r.container.clone().unwrap_or_else(|| "host".into()),
        format!("{} (pid {}, uid {})", r.command, r.pid, r.uid),
        format!("{} at {}", r.revision, r.last_read),
        status,
    ]
}

/// Keys read only at a container's start.
fn render_startup(report: &StartupOnlyReport) -> String {
    let mut out = format!(
        "Keys read only in the first {} after their container started: {}\n",
        humantime::format_duration(std::time::Duration::from_secs(report.startup_window_secs)),
        report.reads.len()
    );
    if report.reads.is_empty() {
        return out;
    }
    out.push('\n');
    out.push_str(&table(
        [
            "NAMESPACE/POD",
            "CONTAINER",
            "VOLUME",
            "KEY",
            "OBJECT",
            "LAST READ",
        ],
        report.reads.iter().map(startup_row),
    ));
    out.push_str("\n\nA change of these keys reaches the container only when it restarts.\n");
    out
}

fn startup_row(r: &StartupOnlyRead) -> [String; 6] {
    let object = r.source.as_ref().map_or_else(
        || "-".to_string(),
        |s| match (&s.name, &s.key) {
            (Some(name), Some(key)) => format!("{} {name} key {key}", kind_name(s.kind)),
            (Some(name), None) => format!("{} {name}", kind_name(s.kind)),
            _ => kind_name(s.kind),
        },
    );
    [
        format!("{}/{}", r.namespace, r.pod_name),
        r.container.clone(),
        r.volume.clone(),
        r.key.clone(),
        object,
        r.last_read.clone(),
    ]
}

/// A source kind as the API spells it (`DownwardAPI`, ...).
fn kind_name(kind: crate::model::pod::SourceKind) -> String {
    kind.as_str().to_string()
}

/// The unread volumes as a table, with a heading and a footer that says how sure it is.
fn render_unread(report: &UnreadReport) -> String {
    let mut out = format!(
        "Volumes watched for at least {} with keys never read: {}\n\n",
        humantime::format_duration(std::time::Duration::from_secs(report.unused_after_secs)),
        report.mounts.len()
    );
    if report.mounts.is_empty() {
        out.push_str("Every key of every volume watched that long was read.\n");
        return out;
    }
    out.push_str(&table(
        [
            "NAMESPACE/POD",
            "WORKLOAD",
            "VOLUME",
            "OBJECT",
            "KEYS NEVER READ",
            "KEYS READ",
            "EVIDENCE",
            "SUGGESTION",
        ],
        report.mounts.iter().map(row),
    ));
    out.push_str(
        "\n\nEVIDENCE complete: no access was lost while the volume was watched, so \
         \"never read\" is a fact; unknown: accesses were lost (reasons given), so a \
         read may have been missed and nothing is suggested.\n",
    );
    out.push_str(&gaps(report));
    out
}

/// The collector's downtimes, the latest three.
fn gaps(report: &UnreadReport) -> String {
    let Some(latest) = report.gaps.len().checked_sub(1) else {
        return String::new();
    };
    let shown: Vec<String> = report.gaps[latest.saturating_sub(2)..]
        .iter()
        .map(|g| format!("{} to {}", utc(g.from), utc(g.to)))
        .collect();
    format!(
        "The collector was down {} time(s), seeing nothing then; the latest: {}.\n",
        report.gaps.len(),
        shown.join(", ")
    )
}

/// Unix seconds as RFC 3339 UTC.
fn utc(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// One volume's row.
fn row(m: &UnreadMount) -> [String; 8] {
    let pod = pod_name(
        m.mount.namespace.as_deref(),
        m.mount.pod_name.as_deref(),
        &m.mount.pod_uid,
    );
    let workload = m
        .mount
        .workload
        .as_ref()
        .map_or_else(|| "-".into(), |w| format!("{}/{}", w.kind, w.name));
    let mut objects: Vec<String> = m
        .keys_never_read
        .iter()
        .filter_map(|k| k.source.as_ref())
        .map(|s| {
            let kind = kind_name(s.kind);
            match &s.name {
                Some(name) => format!("{kind} {name}"),
                None => kind,
            }
        })
        .collect();
    objects.dedup();
    let never: Vec<&str> = m.keys_never_read.iter().map(|k| k.key.as_str()).collect();
    let evidence = match m.evidence.status {
        EvidenceStatus::Complete => format!("complete, {}", window(m.evidence.window_secs)),
        EvidenceStatus::Unknown => format!("unknown: {}", m.evidence.reasons.join(", ")),
    };
    [
        pod,
        workload,
        format!("{} ({})", m.mount.volume, m.mount.volume_type.as_str()),
        or_dash(objects.join(", ")),
        never.join(", "),
        or_dash(m.keys_read.join(", ")),
        evidence,
        or_dash(m.suggestion.clone().unwrap_or_default()),
    ]
}

fn or_dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// A window's length, to the hour above an hour.
fn window(secs: u64) -> String {
    let rounded = if secs >= 3600 {
        secs - secs % 3600
    } else {
        secs
    };
    humantime::format_duration(std::time::Duration::from_secs(rounded)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as the API serves it (the fixture of the golden file).
    fn fixture() -> UsageReport {
        serde_json::from_str(include_str!("../../tests/golden/usage-report.json"))
            .expect("the fixture decodes")
    }

    #[test]
    fn the_table_matches_the_golden_file() {
        let golden = include_str!("../../tests/golden/usage-report.txt");
        let rendered = render(&fixture());
        if std::env::var_os("CAC_UPDATE_GOLDEN").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/usage-report.txt");
            std::fs::write(path, &rendered).unwrap();
        }
        assert_eq!(
            rendered, golden,
            "the report changed: check it, then CAC_UPDATE_GOLDEN=1 cargo test --lib usage::report"
        );
    }

    #[test]
    fn an_empty_report_says_so() {
        let empty = UnreadReport {
            unused_after_secs: 86400,
            mounts: Vec::new(),
            gaps: Vec::new(),
        };
        assert_eq!(
            render_unread(&empty),
            "Volumes watched for at least 1day with keys never read: 0\n\n\
             Every key of every volume watched that long was read.\n"
        );
    }
}
