//! Following the log: one ordered stream of events from any position, and the durable cursors
//! of followers with side effects.
//!
//! A [`Subscription`] reads the store from its position until it has caught up, then takes
//! appended events live from the broadcast. When it falls more than the broadcast holds behind
//! (`Lagged`), it reads the store again from where it stopped. Each event reaches it once and
//! in log order: appends are serialised (one writer), so the broadcast carries events in
//! `seq` order, and an event both read from the store and received live is skipped by its
//! `seq`.

use crate::{EventFilter, Store, StoreError};
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use takt_model::Event;
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;

/// How many events one catch-up read takes from the store.
pub const CATCH_UP_BATCH: u32 = 1000;

/// An ordered stream of the log's events after a position: see the module docs.
pub struct Subscription {
    store: Store,
    rx: tokio::sync::broadcast::Receiver<Event>,
    /// Every event up to here has been handed out (or did not match).
    position: i64,
    /// How far the last catch-up read went: the position once its buffer is handed out.
    read_to: i64,
    kinds: Vec<&'static str>,
    buffer: VecDeque<Event>,
    live: bool,
}

impl Subscription {
    pub(crate) fn new(store: Store, after: i64, kinds: &[&'static str]) -> Subscription {
        // Subscribe before the first read: whatever is appended from now on is either in that
        // read or in the broadcast (or both, and then skipped by its seq).
        let rx = store.appended.subscribe();
        Subscription {
            store,
            rx,
            position: after,
            read_to: after,
            kinds: kinds.to_vec(),
            buffer: VecDeque::new(),
            live: false,
        }
    }

    /// The position reached: every event up to this `seq` has been returned by [`next`] or
    /// did not match the subscription's kinds.
    ///
    /// [`next`]: Subscription::next
    pub fn position(&self) -> i64 {
        self.position
    }

    /// Whether the subscription has caught up with the log and takes events live.
    pub fn is_live(&self) -> bool {
        self.live && self.buffer.is_empty()
    }

    fn wanted(&self, e: &Event) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&e.kind.name())
    }

    /// The next event after the position, waiting for one to be appended if need be.
    pub async fn next(&mut self) -> Result<Event, StoreError> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                // Not past the events still buffered: a follower saves this position as done.
                let seq = e.seq.unwrap_or(self.position);
                self.position = if self.buffer.is_empty() {
                    self.read_to.max(seq)
                } else {
                    seq
                };
                return Ok(e);
            }
            if !self.live {
                self.catch_up().await?;
                continue;
            }
            match self.rx.recv().await {
                Ok(e) => {
                    let seq = e.seq.unwrap_or(0);
                    if seq <= self.position {
                        continue; // already read from the store
                    }
                    self.position = seq;
                    if self.wanted(&e) {
                        return Ok(e);
                    }
                }
                // Fell behind the broadcast: what it dropped is in the store.
                Err(RecvError::Lagged(_)) => self.live = false,
                // Every sender is gone only when the store is: nothing more will come.
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }

    /// Reads one batch from the store; goes live when the batch reaches the log's head.
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        let head = self.store.head().await?;
        if head <= self.position {
            self.live = true;
            return Ok(());
        }
        let batch = self
            .store
            .events(&EventFilter {
                after: Some(self.position),
                until_seq: Some(head),
                kinds: self.kinds.clone(),
                limit: Some(CATCH_UP_BATCH),
                ..Default::default()
            })
            .await?;
        let full = batch.len() == CATCH_UP_BATCH as usize;
        let end = match (full, batch.last().and_then(|e| e.seq)) {
            (true, Some(last)) => last,
            _ => head,
        };
        self.live = !full;
        if batch.is_empty() {
            self.position = end;
        } else {
            self.read_to = end;
            self.buffer.extend(batch);
        }
        Ok(())
    }
}

/// The low-water mark of a follower whose side effects finish out of order: the position up to
/// which every event's work is done, which is what its durable cursor may be moved to.
#[derive(Debug, Default)]
pub struct Watermark {
    /// Events taken whose work is not done yet, with how many pieces of work each still has.
    open: BTreeMap<i64, usize>,
    /// The position of the follower's subscription.
    read: i64,
}

impl Watermark {
    pub fn new(position: i64) -> Watermark {
        Watermark {
            open: BTreeMap::new(),
            read: position,
        }
    }

    /// The follower has read up to `position`; event `seq` (at or before it) still has
    /// `pieces` pieces of work to do (0: none).
    pub fn read(&mut self, position: i64, seq: i64, pieces: usize) {
        self.read = self.read.max(position);
        if pieces > 0 {
            *self.open.entry(seq).or_default() += pieces;
        }
    }

    /// The follower has read up to `position` with nothing to do.
    pub fn passed(&mut self, position: i64) {
        self.read = self.read.max(position);
    }

    /// One piece of the work for event `seq` is done.
    pub fn done(&mut self, seq: i64) {
        if let Some(n) = self.open.get_mut(&seq) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&seq);
            }
        }
    }

    /// Every event up to this position is done.
    pub fn low(&self) -> i64 {
        match self.open.keys().next() {
            Some(first) => (first - 1).min(self.read),
            None => self.read,
        }
    }
}

/// The least time between two saves of a durable cursor: after a crash a follower re-does at
/// most this much work (its work is idempotent or deduplicated on the log's facts).
pub const SAVE_EVERY: Duration = Duration::from_millis(100);

/// A follower's durable cursor: its [`Watermark`], saved in the store (table `cursors`) when it
/// moves, at most every [`SAVE_EVERY`].
pub struct Cursor {
    name: String,
    mark: Mutex<Watermark>,
    moved: Arc<Notify>,
}

impl Cursor {
    /// Opens the follower `name`'s cursor and starts saving it; returns it with the position to
    /// subscribe from. A follower that has never run starts at the log's head: it acts on what
    /// happens from its first start on, not on the history before it.
    pub async fn open(store: &Store, name: &str) -> Result<(Arc<Cursor>, i64), StoreError> {
        let start = match store.cursor(name).await? {
            Some(seq) => seq,
            None => {
                let head = store.head().await?;
                store.save_cursor(name, head).await?;
                head
            }
        };
        let cursor = Arc::new(Cursor {
            name: name.to_string(),
            mark: Mutex::new(Watermark::new(start)),
            moved: Arc::new(Notify::new()),
        });
        let saver = Arc::downgrade(&cursor);
        let moved = cursor.moved.clone();
        let store = store.clone();
        tokio::spawn(async move {
            let mut saved = start;
            loop {
                let Some(c) = saver.upgrade() else { return };
                let low = c.low();
                if low > saved {
                    match store.save_cursor(&c.name, low).await {
                        Ok(()) => saved = low,
                        Err(e) => tracing::warn!(follower = %c.name, error = %e, "cannot save a follower's cursor"),
                    }
                }
                drop(c);
                moved.notified().await;
                tokio::time::sleep(SAVE_EVERY).await;
            }
        });
        Ok((cursor, start))
    }

    fn with(&self, f: impl FnOnce(&mut Watermark)) {
        {
            let mut m = self.mark.lock();
            f(&mut m);
        }
        self.moved.notify_one();
    }

    /// See [`Watermark::read`].
    pub fn read(&self, position: i64, seq: i64, pieces: usize) {
        self.with(|m| m.read(position, seq, pieces));
    }

    /// See [`Watermark::passed`].
    pub fn passed(&self, position: i64) {
        self.with(|m| m.passed(position));
    }

    /// See [`Watermark::done`].
    pub fn done(&self, seq: i64) {
        self.with(|m| m.done(seq));
    }

    /// Every event up to here is done.
    pub fn low(&self) -> i64 {
        self.mark.lock().low()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_stops_at_the_oldest_open_event() {
        let mut w = Watermark::new(3);
        assert_eq!(w.low(), 3);
        w.read(5, 5, 2);
        w.read(9, 7, 1);
        assert_eq!(w.low(), 4);
        w.done(7);
        assert_eq!(w.low(), 4);
        w.done(5);
        assert_eq!(w.low(), 4, "event 5 has one more piece of work");
        w.done(5);
        assert_eq!(w.low(), 9);
        w.passed(12);
        assert_eq!(w.low(), 12);
        w.done(99); // unknown: nothing happens
        assert_eq!(w.low(), 12);
    }
}
