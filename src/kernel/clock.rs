//! Converts kernel CLOCK_MONOTONIC timestamps to wall-clock time.

use chrono::{DateTime, SecondsFormat, Utc};
use nix::time::{clock_gettime, ClockId};

fn now_ns(clock: ClockId) -> i128 {
    clock_gettime(clock)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC now, in ns: the kernel's `bpf_ktime_get_ns` clock.
pub fn monotonic_ns() -> u64 {
    u64::try_from(now_ns(ClockId::CLOCK_MONOTONIC)).unwrap_or(0)
}

/// Offset between CLOCK_REALTIME and CLOCK_MONOTONIC, refreshed by [`WallClock::refresh`].
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ns: i128,
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl WallClock {
    /// Measures the offset now.
    pub fn new() -> Self {
        let mut c = Self { offset_ns: 0 };
        c.refresh();
        c
    }

    /// Re-measures the offset (wall-clock steps and NTP slew change it), taking
    /// the tightest of a few readings.
    pub fn refresh(&mut self) {
        let mut best: Option<(i128, i128)> = None;
        for _ in 0..3 {
            let m0 = now_ns(ClockId::CLOCK_MONOTONIC);
            let r = now_ns(ClockId::CLOCK_REALTIME);
            let m1 = now_ns(ClockId::CLOCK_MONOTONIC);
            let width = m1 - m0;
            if best.is_none_or(|(w, _)| width < w) {
                best = Some((width, r - (m0 + width / 2)));
            }
        }
        self.offset_ns = best.map(|(_, o)| o).unwrap_or(0);
    }

    /// Wall-clock time of a CLOCK_MONOTONIC reading.
    pub fn wall(&self, mono_ns: u64) -> DateTime<Utc> {
        let ns = i128::from(mono_ns) + self.offset_ns;
        let ns = i64::try_from(ns).unwrap_or(0);
        DateTime::from_timestamp_nanos(ns)
    }

    /// Milliseconds elapsed since a CLOCK_MONOTONIC reading (0 if it is in the future).
    pub fn elapsed_ms(mono_ns: u64) -> f64 {
        let d = now_ns(ClockId::CLOCK_MONOTONIC) - i128::from(mono_ns);
        (d.max(0) as f64) / 1e6
    }

    /// RFC 3339 UTC with nanoseconds, e.g. `2024-01-21T10:30:45.123456789Z`.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        self.wall(mono_ns)
            .to_rfc3339_opts(SecondsFormat::Nanos, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_now_maps_to_wall_now() {
        let c = WallClock::new();
        let mono = now_ns(ClockId::CLOCK_MONOTONIC) as u64;
        let wall = c.wall(mono);
        let diff = (Utc::now() - wall).num_milliseconds().abs();
        assert!(diff < 1000, "wall clock off by {diff} ms");
        let s = c.rfc3339(mono);
        assert!(
            s.ends_with('Z') && s.len() == "2024-01-21T10:30:45.123456789Z".len(),
            "{s}"
        );
    }
}
