//! A sequence appended at the back and let go from the front, kept in chunks that a copy
//! shares: copying it costs one pointer per chunk, not one per item, and appending
//! copies at most the last chunk, once, while a copy still holds it.
//!
//! This is what lets a partition hand its dedupe window and its winners to a snapshot
//! without stopping for them (docs/adr/0010-snapshots-per-partition-without-stopping.md).
//! Every item has a sequence number (its place among all items ever appended), stable
//! while it is held.

use std::collections::VecDeque;
use std::sync::Arc;

/// Items per chunk.
pub const CHUNK: usize = 4096;

/// An append-only sequence in shared chunks. Cloning it is the cheap copy.
#[derive(Debug)]
pub struct Chunked<T> {
    chunks: VecDeque<Arc<Vec<T>>>,
    /// The sequence number of the first item of the first chunk.
    base: u64,
    /// Items let go at the front of the first chunk.
    skip: usize,
    len: usize,
}

impl<T> Clone for Chunked<T> {
    fn clone(&self) -> Self {
        Chunked {
            chunks: self.chunks.clone(),
            base: self.base,
            skip: self.skip,
            len: self.len,
        }
    }
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: VecDeque::new(),
            base: 0,
            skip: 0,
            len: 0,
        }
    }
}

impl<T: Clone> Chunked<T> {
    /// Appends an item; returns its sequence number. If a copy shares the last chunk,
    /// that chunk is copied first (at most [`CHUNK`] items).
    pub fn push(&mut self, item: T) -> u64 {
        let seq = self.front_seq() + self.len as u64;
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => {
                let last = Arc::make_mut(last);
                // A copied chunk has only the room it needed: give it the whole chunk's.
                if last.capacity() < CHUNK {
                    last.reserve_exact(CHUNK - last.len());
                }
                last.push(item);
            }
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(item);
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.len += 1;
        seq
    }
}

impl<T> Chunked<T> {
    /// The sequence number of the first item held (of the next one, if none is).
    pub fn front_seq(&self) -> u64 {
        self.base + self.skip as u64
    }

    /// The item with sequence number `seq`, if it is still held.
    pub fn get(&self, seq: u64) -> Option<&T> {
        if seq < self.front_seq() || seq >= self.front_seq() + self.len as u64 {
            return None;
        }
        let i = (seq - self.base) as usize;
        self.chunks.get(i / CHUNK).and_then(|c| c.get(i % CHUNK))
    }

    /// The first item held, with its sequence number.
    pub fn front(&self) -> Option<(u64, &T)> {
        let seq = self.front_seq();
        self.get(seq).map(|t| (seq, t))
    }

    /// Lets go of the first item. Its chunk is freed (unless a copy holds it) once every
    /// item of it has gone; returns whether that happened.
    pub fn pop_front(&mut self) -> bool {
        if self.len == 0 {
            return false;
        }
        self.len -= 1;
        self.skip += 1;
        if self.skip == CHUNK {
            self.chunks.pop_front();
            self.base += CHUNK as u64;
            self.skip = 0;
            if self.chunks.capacity() > 64 && self.chunks.len() < self.chunks.capacity() / 4 {
                self.chunks.shrink_to(self.chunks.len() * 2);
            }
            return true;
        }
        false
    }

    /// The items held, first to last, with their sequence numbers.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let skip = self.skip;
        let front = self.front_seq();
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .skip(skip)
            .take(self.len)
            .enumerate()
            .map(move |(i, t)| (front + i as u64, t))
    }

    /// The items held, first to last.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, t)| t)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_their_numbers_across_chunks_and_fronts() {
        let mut c = Chunked::default();
        for i in 0..(CHUNK * 2 + 10) {
            assert_eq!(c.push(i), i as u64);
        }
        assert_eq!(c.get(CHUNK as u64 + 3), Some(&(CHUNK + 3)));
        for _ in 0..CHUNK + 1 {
            c.pop_front();
        }
        assert_eq!(c.len(), CHUNK + 9);
        assert_eq!(c.front(), Some((CHUNK as u64 + 1, &(CHUNK + 1))));
        assert_eq!(c.get(3), None, "let go");
        assert_eq!(c.get((CHUNK * 2 + 10) as u64), None, "not yet appended");
        let all: Vec<_> = c.iter().collect();
        assert_eq!(all.len(), c.len());
        assert_eq!(all[0], (CHUNK as u64 + 1, &(CHUNK + 1)));
        assert_eq!(
            all.last(),
            Some(&((CHUNK * 2 + 9) as u64, &(CHUNK * 2 + 9)))
        );
        assert_eq!(c.push(7), (CHUNK * 2 + 10) as u64);
    }

    #[test]
    fn a_copy_keeps_what_it_saw_while_the_original_goes_on() {
        let mut c = Chunked::default();
        for i in 0..10u32 {
            c.push(i);
        }
        let copy = c.clone();
        c.push(10);
        c.pop_front();
        assert_eq!(
            copy.values().copied().collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(
            c.values().copied().collect::<Vec<_>>(),
            (1..11).collect::<Vec<_>>()
        );
        // The copy shared the chunk until the append copied it.
        assert!(!Arc::ptr_eq(&c.chunks[0], &copy.chunks[0]));
        let again = c.clone();
        assert!(
            Arc::ptr_eq(&c.chunks[0], &again.chunks[0]),
            "a copy shares chunks"
        );
    }

    #[test]
    fn emptied_fully_then_used_again() {
        let mut c = Chunked::default();
        for i in 0..CHUNK {
            c.push(i);
        }
        for _ in 0..CHUNK {
            c.pop_front();
        }
        assert!(c.is_empty());
        assert_eq!(c.front(), None);
        assert_eq!(c.push(1), CHUNK as u64);
        assert_eq!(c.front(), Some((CHUNK as u64, &1)));
        assert!(!c.pop_front() && c.is_empty() && !c.pop_front());
    }
}
