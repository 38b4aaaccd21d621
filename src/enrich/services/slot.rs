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

    /// Removes one occurrence of exactly `target`; returns whether the slot is empty now.
    pub fn remove(&mut self, target: &Target) -> bool {
        let Slot::Many(all) = self else {
            return matches!(self, Slot::One(t) if t.same(target));
        };
        let mut v = std::mem::take(all).into_vec();
        if let Some(i) = v.iter().position(|t| t.same(target)) {
            v.swap_remove(i);
        }
        match (v.pop(), v.is_empty()) {
            (None, _) => true,
            (Some(last), true) => {
                *self = Slot::One(last);
                false
            }
            (Some(last), false) => {
                v.push(last);
                *self = Slot::Many(v.into_boxed_slice());
                false
            }
        }
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
