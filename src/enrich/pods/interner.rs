//! Interning of the strings pods repeat.

use std::sync::Arc;

use crate::model::pod::Name;

/// Interns the strings pods repeat, so 10,000 replicas of a handful of
/// workloads cost little more than their UIDs and names.
#[derive(Debug, Default)]
pub struct Interner {
    set: std::sync::Mutex<std::collections::HashSet<Name>>,
}

impl Interner {
    /// The shared copy of `s`.
    pub fn get(&self, s: &str) -> Name {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = set.get(s) {
            return Arc::clone(n);
        }
        let n: Name = Arc::from(s);
        set.insert(Arc::clone(&n));
        n
    }

    /// Drops strings no pod uses any more.
    pub fn sweep(&self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|n| Arc::strong_count(n) > 1);
    }

    /// Number of distinct strings held.
    pub fn len(&self) -> usize {
        self.set.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
