//! Summaries of repeated opens: reads the counts the kernel keeps in the
//! `repeats` map (opens of volume files) and the `failed_repeats` map
//! (reported failed opens: denied ones, and those naming the kubelet
//! volume tree) instead of emitting every open, and turns what is new since
//! the last look into summary events with the exact number.
//!
//! The kernel only adds to an entry's count while the entry's window is
//! open, and the count is never reset, so the difference to what was
//! already reported is exact however the two sides interleave. An entry
//! idle for [`idle_after`] is deleted with one atomic lookup-and-delete,
//! which returns its final count: by then the kernel no longer adds to it
//! (its window closed long before), so nothing counted is ever lost.

use std::collections::HashMap;
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::decode::{decode_failed_repeat, decode_repeat, repeat_counts, KernelEvent, Repeats};

/// How long an entry stays after its last open: two windows, and never
/// less than a second, so that no program still adding to it can be
/// racing the delete.
pub fn idle_after(window: Duration) -> Duration {
    (window * 2).max(Duration::from_secs(1))
}

/// What was reported of one entry.
#[derive(Debug, Clone, Copy)]
struct Reported {
    /// The entry's count at the last summary.
    count: u64,
    /// CLOCK_MONOTONIC ns up to which its opens were reported.
    until_ns: u64,
}

/// The kernel's maps of counted repeats.
#[derive(Debug)]
pub struct RepeatMaps {
    /// `repeats`: opens of volume files.
    pub opens: MapHandle,
    /// `failed_repeats`: reported failed opens.
    pub failed: MapHandle,
}

/// Builds a summary event from an entry's key and value and its new count.
type Decode = fn(&[u8], &[u8], Repeats) -> Option<KernelEvent>;

/// One map of counted repeats, and what was reported of its entries.
#[derive(Debug)]
struct Table {
    map: MapHandle,
    decode: Decode,
    reported: HashMap<Vec<u8>, Reported>,
}

impl Table {
    fn new(map: MapHandle, decode: Decode) -> Self {
        Self {
            map,
            decode,
            reported: HashMap::new(),
        }
    }
}

/// Reads the repeat maps and reports the counts.
#[derive(Debug)]
pub struct RepeatSweeper {
    tables: [Table; 2],
    window: Duration,
    /// Entries that did not decode since the last [`take_errors`](Self::take_errors).
    errors: u64,
}

impl RepeatSweeper {
    /// Over the kernel's repeat maps; `window` is the aggregation window.
    pub fn new(maps: RepeatMaps, window: Duration) -> Self {
        Self {
            tables: [
                Table::new(maps.opens, decode_repeat),
                Table::new(maps.failed, decode_failed_repeat),
            ],
            window,
            errors: 0,
        }
    }

    /// The aggregation window (how often [`sweep`](Self::sweep) is due).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Entries whose summary could not be decoded (their opens are lost;
    /// never expected: the kernel writes every field), since the last call.
    pub fn take_errors(&mut self) -> u64 {
        std::mem::take(&mut self.errors)
    }

    /// Summaries of the opens counted since the last sweep, at
    /// CLOCK_MONOTONIC `now_ns`; deletes the entries idle long enough
    /// (`all`: every entry, at shutdown once the programs are detached).
    pub fn sweep(&mut self, now_ns: u64, all: bool) -> Vec<KernelEvent> {
        let idle_ns = u64::try_from(idle_after(self.window).as_nanos()).unwrap_or(u64::MAX);
        let idle_before_ns = now_ns.saturating_sub(idle_ns);
        let mut out = Vec::new();
        for table in &mut self.tables {
            self.errors += table.sweep(idle_before_ns, all, &mut out);
        }
        out
    }
}

impl Table {
    /// Adds the summaries of this map's entries to `out`; returns how many
    /// entries did not decode.
    fn sweep(&mut self, idle_before_ns: u64, all: bool, out: &mut Vec<KernelEvent>) -> u64 {
        // Keys first: deleting while walking would restart the walk.
        let keys: Vec<Vec<u8>> = self.map.keys().collect();
        let mut errors = 0;
        let mut reported = HashMap::with_capacity(keys.len());
        for key in keys {
            let before = self.reported.remove(&key);
            let Some((value, gone)) = self.read_entry(&key, idle_before_ns, all) else {
                // Not read this time: what was reported still stands.
                reported.extend(before.map(|b| (key, b)));
                continue;
            };
            let Some((summary, after)) = summarize(self.decode, &key, &value, before) else {
                errors += 1;
                reported.extend(before.map(|b| (key, b)));
                continue;
            };
            out.extend(summary);
            if !gone {
                reported.insert(key, after);
            }
        }
        self.reported = reported;
        errors
    }

    /// The entry's value, and whether it was deleted (then the value is
    /// final): entries whose latest open is before `idle_before_ns`, or
    /// every entry when `all`.
    fn read_entry(&self, key: &[u8], idle_before_ns: u64, all: bool) -> Option<(Vec<u8>, bool)> {
        let value = self.map.lookup(key, MapFlags::ANY).ok()??;
        let idle = all || repeat_counts(&value).is_some_and(|c| c.latest_ns < idle_before_ns);
        if idle {
            if let Ok(Some(last)) = self.map.lookup_and_delete(key) {
                return Some((last, true));
            }
        }
        Some((value, false))
    }
}

/// The summary of the opens of entry (`key`, `value`) not reported
/// `before` (none when there are no new ones), and what is reported after
/// it; `None` when the entry does not decode.
fn summarize(
    decode: Decode,
    key: &[u8],
    value: &[u8],
    before: Option<Reported>,
) -> Option<(Option<KernelEvent>, Reported)> {
    let counts = repeat_counts(value)?;
    let before = before.unwrap_or(Reported {
        count: 0,
        until_ns: counts.first_ns,
    });
    let after = Reported {
        count: counts.count,
        until_ns: counts.latest_ns.max(before.until_ns),
    };
    let new = counts.count.saturating_sub(before.count);
    let repeats = Repeats {
        count: new,
        since_ns: before.until_ns,
    };
    let summary = match new {
        0 => None,
        _ => Some(decode(key, value, repeats)?),
    };
    Some((summary, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::abi::types::{cac_repeat, cac_repeat_key, cac_syscall};
    use crate::kernel::decode::bytes_of;

    fn entry(first_ns: u64, window_ns: u64, last_ns: u64, count: u64) -> (Vec<u8>, Vec<u8>) {
        let mut key: cac_repeat_key = bytemuck::Zeroable::zeroed();
        key.tgid = 42;
        key.ino = 7;
        key.dev = 3;
        let mut value: cac_repeat = bytemuck::Zeroable::zeroed();
        value.first_ns = first_ns;
        value.window_ns = window_ns;
        value.last_ns = last_ns;
        value.count = count;
        value.volume_id = 5;
        value.syscall = cac_syscall::CAC_SYS_OPENAT.0 as u8;
        (bytes_of(&key).to_vec(), bytes_of(&value).to_vec())
    }

    fn summary_of(
        (key, value): &(Vec<u8>, Vec<u8>),
        before: Option<Reported>,
    ) -> (Option<KernelEvent>, Reported) {
        summarize(decode_repeat, key, value, before).expect("the entry decodes")
    }

    #[test]
    fn summaries_report_what_the_count_added_since_the_last_one() {
        let (s, after) = summary_of(&entry(100, 100, 180, 30), None);
        let s = s.expect("30 new opens");
        assert_eq!(
            s.repeats,
            Some(Repeats {
                count: 30,
                since_ns: 100
            })
        );
        assert_eq!((s.ts_ns, s.tgid, s.path.as_deref()), (180, 42, None));
        assert_eq!(s.volume.map(|(id, _)| id), Some(5));

        // Nothing new: no summary, nothing forgotten.
        let (none, same) = summary_of(&entry(100, 100, 180, 30), Some(after));
        assert!(none.is_none());
        assert_eq!((same.count, same.until_ns), (30, 180));

        // The window rolled over and 12 more came: only those.
        let (s, after) = summary_of(&entry(100, 1_100, 1_150, 42), Some(same));
        let r = s.expect("12 new opens").repeats.unwrap();
        assert_eq!((r.count, r.since_ns), (12, 180));
        assert_eq!((after.count, after.until_ns), (42, 1_150));
    }

    #[test]
    fn entries_idle_for_two_windows_and_at_least_a_second_are_removed() {
        assert_eq!(
            idle_after(Duration::from_millis(100)),
            Duration::from_secs(1)
        );
        assert_eq!(
            idle_after(Duration::from_millis(1000)),
            Duration::from_secs(2)
        );
    }
}
