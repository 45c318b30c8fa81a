//! Which pool segment each slot of a ring's table holds.
//!
//! A ring made by `BufferTable::ring` holds segment `i` in slot `i`. A
//! ranged clone can put a segment anywhere (entries 2..4 of the template
//! into slots 0..2), so a ring looks up the slot of a lease's segment
//! instead of assuming it, and refuses a lease whose segment it lacks.

/// The map: slot `i` holds segment `i` below `n` (every ring made by
/// `BufferTable::ring`, with no allocation), or any map after ranged clones.
#[derive(Debug, Clone)]
pub(crate) enum SlotMap {
    /// Slots `[0, n)` hold segments `[0, n)`.
    Identity(u16),
    /// Both directions of any map.
    Mapped {
        /// Segment held by each slot of the kernel table.
        segment_at: Vec<Option<u16>>,
        /// Slot holding each segment.
        slot_of: Vec<Option<u16>>,
        /// Slots holding a segment.
        filled: u16,
    },
}

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap::Identity(0)
    }
}

impl SlotMap {
    /// Slot `i` holds segment `i`, for `i < n`.
    pub(crate) fn identity(n: u16) -> SlotMap {
        SlotMap::Identity(n)
    }

    /// The slot holding `segment`.
    pub(crate) fn slot(&self, segment: u16) -> Option<u16> {
        match self {
            SlotMap::Identity(n) => (segment < *n).then_some(segment),
            SlotMap::Mapped { slot_of, .. } => slot_of.get(segment as usize).copied().flatten(),
        }
    }

    /// The segment slot `slot` holds.
    pub(crate) fn segment_at(&self, slot: u16) -> Option<u16> {
        match self {
            SlotMap::Identity(n) => (slot < *n).then_some(slot),
            SlotMap::Mapped { segment_at, .. } => segment_at.get(slot as usize).copied().flatten(),
        }
    }

    /// Slots that hold a segment.
    pub(crate) fn filled(&self) -> u16 {
        match self {
            SlotMap::Identity(n) => *n,
            SlotMap::Mapped { filled, .. } => *filled,
        }
    }

    /// Makes `slot` hold `segment` (or nothing).
    pub(crate) fn set(&mut self, slot: u16, segment: Option<u16>) {
        if let SlotMap::Identity(n) = *self {
            if segment == Some(slot) && slot <= n {
                // Extends (or keeps) the identity prefix.
                *self = SlotMap::Identity(n.max(slot + 1));
                return;
            }
            let v: Vec<Option<u16>> = (0..n).map(Some).collect();
            *self = SlotMap::Mapped { segment_at: v.clone(), slot_of: v, filled: n };
        }
        let SlotMap::Mapped { segment_at, slot_of, filled } = self else { unreachable!("made Mapped above") };
        if let Some(old) = segment_at.get(slot as usize).copied().flatten() {
            *filled -= 1;
            segment_at[slot as usize] = None;
            if slot_of.get(old as usize).copied().flatten() == Some(slot) {
                // Another slot may hold the same segment still.
                let other = segment_at.iter().position(|&s| s == Some(old)).map(|i| i as u16);
                slot_of[old as usize] = other;
            }
        }
        if segment_at.len() <= slot as usize {
            segment_at.resize(slot as usize + 1, None);
        }
        segment_at[slot as usize] = segment;
        if let Some(seg) = segment {
            if slot_of.len() <= seg as usize {
                slot_of.resize(seg as usize + 1, None);
            }
            // A segment held twice is looked up in its newest slot.
            slot_of[seg as usize] = Some(slot);
            *filled += 1;
        }
    }

    /// Forgets everything (the table was unregistered).
    pub(crate) fn clear(&mut self) {
        *self = SlotMap::default();
    }

    /// Forgets the slots that hold segments `low` and up (a shrink may
    /// have released them, and a growth reused their numbers).
    pub(crate) fn forget_segments_from(&mut self, low: u16) {
        match self {
            SlotMap::Identity(n) => *n = (*n).min(low),
            SlotMap::Mapped { segment_at, .. } => {
                let stale: Vec<u16> = segment_at
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_some_and(|s| s >= low))
                    .map(|(slot, _)| slot as u16)
                    .collect();
                for slot in stale {
                    self.set(slot, None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_segments_keeps_the_lower_ones() {
        let mut id = SlotMap::identity(6);
        id.forget_segments_from(4);
        assert_eq!((id.slot(3), id.slot(4), id.filled()), (Some(3), None, 4));
        let mut m = SlotMap::default();
        m.set(0, Some(5));
        m.set(1, Some(2));
        m.forget_segments_from(3);
        assert_eq!((m.slot(5), m.slot(2), m.filled()), (None, Some(1), 1));
    }

    #[test]
    fn a_shifted_clone_maps_segments_to_their_slots() {
        // Entries 2..4 of an identity source into slots 0..2.
        let src = SlotMap::identity(4);
        let mut m = SlotMap::default();
        let mut id = SlotMap::default();
        for k in 0..3 {
            id.set(k, Some(k));
        }
        assert!(matches!(id, SlotMap::Identity(3)), "{id:?}");
        for k in 0..2 {
            m.set(k, src.segment_at(2 + k));
        }
        assert_eq!((m.slot(2), m.slot(3)), (Some(0), Some(1)));
        assert_eq!((m.slot(0), m.slot(1)), (None, None));
        assert_eq!(m.filled(), 2);
        // Replacing slot 0 with a hole drops segment 2.
        m.set(0, None);
        assert_eq!((m.slot(2), m.filled()), (None, 1));
        // A segment in two slots stays reachable when one is replaced.
        m.set(5, Some(3));
        assert_eq!((m.slot(3), m.filled()), (Some(5), 2));
        m.set(5, None);
        assert_eq!((m.slot(3), m.filled()), (Some(1), 1));
    }
}
