//! The link between a table and its rings: the filled slots and the
//! generation of the table, and their history, shared (`Arc`) by the
//! template, every ring made from it, and the memory it registers (which
//! must know what may still hold its segments before it shrinks).

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

/// What rings follow of a table: its filled slots and generation, and
/// their history. Shared by the template and every ring made from it, so
/// that a ring can tell which of its slots went stale (a shrink, then a
/// growth that reused the slots) even after the table is gone.
pub(crate) struct TableLink {
    /// Slots filled: segments `[0, entries)`.
    entries: AtomicU16,
    /// Bumped by every growth and shrink; rings compare theirs with it
    /// before each fixed operation (one load).
    generation: AtomicU64,
    /// (generation, entries after it), oldest first.
    history: std::sync::Mutex<Vec<(u64, u16)>>,
}

impl TableLink {
    pub(crate) fn new(entries: u16) -> TableLink {
        TableLink {
            entries: AtomicU16::new(entries),
            generation: AtomicU64::new(0),
            history: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Slots filled now (Acquire: the slots are registered before this moves).
    pub(crate) fn entries(&self) -> u16 {
        self.entries.load(Ordering::Acquire)
    }

    /// How many times the table grew or shrank.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// What a ring at generation `since` must do to catch up, read
    /// together: the generation now, the entries now, the lowest entry
    /// count the table had since `since` (slots from there on may have
    /// changed), and whether the history reaches back to `since` (if not,
    /// every slot may have changed).
    pub(crate) fn catch_up(&self, since: u64) -> (u64, u16, u16, bool) {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let (generation, entries) = (self.generation(), self.entries());
        let low = h.iter().filter(|(g, _)| *g > since).map(|&(_, e)| e).min().unwrap_or(entries).min(entries);
        let oldest = h.first().map_or(0, |&(g, _)| g.saturating_sub(1));
        (generation, entries, low, since >= oldest)
    }

    /// Records a new entry count and generation (under the history lock,
    /// so that `catch_up` reads them together).
    pub(crate) fn advance(&self, entries: u16) -> u64 {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        self.entries.store(entries, Ordering::Release);
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        h.push((generation, entries));
        // A ring further behind than this catches up with a whole refresh.
        if h.len() > 1024 {
            h.drain(..512);
        }
        generation
    }
}
