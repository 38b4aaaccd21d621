//! The usage report as a person reads it: one row per mounted volume with
//! files never read, and what to change (`config-access-collector report`).

use comfy_table::presets::ASCII_MARKDOWN;
use comfy_table::{ContentArrangement, Table};

use super::answers::{EvidenceStatus, UnreadMount, UnreadReport};

/// The report as a table, with a heading and a footer that says how sure it is.
pub fn render(report: &UnreadReport) -> String {
    let mut out = format!(
        "Volumes watched for at least {} with keys never read: {}\n\n",
        humantime::format_duration(std::time::Duration::from_secs(report.unused_after_secs)),
        report.mounts.len()
    );
    if report.mounts.is_empty() {
        out.push_str("Every key of every volume watched that long was read.\n");
        return out;
    }
    let mut table = Table::new();
    table
        .load_style(ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "NAMESPACE/POD",
            "WORKLOAD",
            "VOLUME",
            "OBJECT",
            "KEYS NEVER READ",
            "KEYS READ",
            "EVIDENCE",
            "SUGGESTION",
        ]);
    for m in &report.mounts {
        table.add_row(row(m));
    }
    out.push_str(&table.to_string());
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
    let pod = match (&m.namespace, &m.pod_name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => m.pod_uid.clone(),
    };
    let workload = m
        .workload
        .as_ref()
        .map_or_else(|| "-".into(), |w| format!("{}/{}", w.kind, w.name));
    let mut objects: Vec<String> = m
        .keys_never_read
        .iter()
        .filter_map(|k| k.source.as_ref())
        .map(|s| {
            // The kind as the API spells it (`DownwardAPI`, ...).
            let kind = serde_json::to_value(s.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
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
        format!("{} ({})", m.volume, m.volume_type.as_str()),
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
    fn fixture() -> UnreadReport {
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
            render(&empty),
            "Volumes watched for at least 1day with keys never read: 0\n\n\
             Every key of every volume watched that long was read.\n"
        );
    }
}
