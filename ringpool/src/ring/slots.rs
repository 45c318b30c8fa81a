//! Which pool segment each slot of a ring's table holds.
//!
//! A ring made by `BufferTable::ring` holds segment `i` in slot `i`. A
//! ranged clone can put a segment anywhere (entries 2..4 of the template
//! into slots 0..2), so a ring looks up the slot of a lease's segment
//! instead of assuming it, and refuses a lease whose segment it lacks.

/// The two directions of the map; empty means no table.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotMap {
    /// Segment held by each slot of the kernel table.
    segment_at: Vec<Option<u16>>,
    /// Slot holding each segment.
    slot_of: Vec<Option<u16>>,
    /// Slots holding a segment.
    filled: u16,
}

impl SlotMap {
    /// Slot `i` holds segment `i`, for `i < n`.
    pub(crate) fn identity(n: u16) -> SlotMap {
        let v: Vec<Option<u16>> = (0..n).map(Some).collect();
        SlotMap { segment_at: v.clone(), slot_of: v, filled: n }
    }

    /// The slot holding `segment`.
    pub(crate) fn slot(&self, segment: u16) -> Option<u16> {
        self.slot_of.get(segment as usize).copied().flatten()
    }

    /// The segment slot `slot` holds.
    pub(crate) fn segment_at(&self, slot: u16) -> Option<u16> {
        self.segment_at.get(slot as usize).copied().flatten()
    }

    /// Slots that hold a segment.
    pub(crate) fn filled(&self) -> u16 {
        self.filled
    }

    /// Makes `slot` hold `segment` (or nothing).
    pub(crate) fn set(&mut self, slot: u16, segment: Option<u16>) {
        if let Some(old) = self.segment_at(slot) {
            self.filled -= 1;
            self.segment_at[slot as usize] = None;
            if self.slot(old) == Some(slot) {
                // Another slot may hold the same segment still.
                let other = self.segment_at.iter().position(|&s| s == Some(old)).map(|i| i as u16);
                self.slot_of[old as usize] = other;
            }
        }
        if self.segment_at.len() <= slot as usize {
            self.segment_at.resize(slot as usize + 1, None);
        }
        self.segment_at[slot as usize] = segment;
        if let Some(seg) = segment {
            if self.slot_of.len() <= seg as usize {
                self.slot_of.resize(seg as usize + 1, None);
            }
            // A segment held twice is looked up in its newest slot.
            self.slot_of[seg as usize] = Some(slot);
            self.filled += 1;
        }
    }

    /// Forgets everything (the table was unregistered).
    pub(crate) fn clear(&mut self) {
        *self = SlotMap::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clone_maps_segments_to_their_slots() {
        // Entries 2..4 of an identity source into slots 0..2.
        let src = SlotMap::identity(4);
        let mut m = SlotMap::default();
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
