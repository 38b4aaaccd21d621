//! The targets of one key: nearly always one, held inline; several when
//! Services share an address and port (or a slice is being replaced).

use super::Target;

/// The targets of one key of the index (never empty: an emptied slot is
/// removed from the index).
#[derive(Debug, Clone)]
pub enum Slot {
    One(Target),
    Many(Box<[Target]>),
}

impl Slot {
    /// Adds `target`.
    pub fn push(&mut self, target: Target) {
        let mut all = match std::mem::replace(self, Slot::Many(Box::new([]))) {
            Slot::One(t) => vec![t],
            Slot::Many(all) => all.into_vec(),
        };
        all.push(target);
        *self = Slot::Many(all.into_boxed_slice());
    }

    /// Removes one target `owned` picks; returns it, and whether the slot
    /// is empty now.
    pub fn take(&mut self, owned: impl Fn(&Target) -> bool) -> (Option<Target>, bool) {
        let mut v = match std::mem::replace(self, Slot::Many(Box::new([]))) {
            Slot::One(t) => vec![t],
            Slot::Many(all) => all.into_vec(),
        };
        let taken = v.iter().position(owned).map(|i| v.swap_remove(i));
        let empty = v.is_empty();
        *self = match (v.pop(), v.is_empty()) {
            (Some(last), true) => Slot::One(last),
            (Some(last), false) => {
                v.push(last);
                Slot::Many(v.into_boxed_slice())
            }
            (None, _) => Slot::Many(Box::new([])),
        };
        (taken, empty)
    }

    /// The target `owned` picks.
    pub fn find(&self, owned: impl Fn(&Target) -> bool) -> Option<&Target> {
        self.iter().find(|t| owned(t))
    }

    /// Every target.
    pub fn iter(&self) -> std::slice::Iter<'_, Target> {
        match self {
            Slot::One(t) => std::slice::from_ref(t).iter(),
            Slot::Many(all) => all.iter(),
        }
    }

    /// The preferred target (the kernel map holds one per key).
    pub fn primary(&self) -> Option<&Target> {
        self.iter().min_by(|a, b| a.rank().cmp(&b.rank()))
    }
}
