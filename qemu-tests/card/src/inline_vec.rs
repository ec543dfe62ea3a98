//! A vector of `Copy` items whose first `N` live inline, for the short
//! lists an I/O command makes on the card's hot path (its PRP segments,
//! the iovecs of a transfer): a 4 KiB command has one or two, and a heap
//! allocation and free for each of them cost more than the rest of the
//! list's work. Longer lists move to the heap, whole.

use std::ops::{Deref, DerefMut};

/// Up to `N` items inline, more on the heap.
#[derive(Debug, Clone)]
pub(crate) struct InlineVec<T: Copy, const N: usize> {
    /// The items while there are at most `N` (the rest is filler).
    inline: [T; N],
    /// Items in all.
    len: usize,
    /// Every item once there are more than `N` (empty until then).
    heap: Vec<T>,
}

impl<T: Copy, const N: usize> InlineVec<T, N> {
    /// An empty vector; `fill` only initialises the inline slots (never
    /// read as an item).
    pub(crate) fn new(fill: T) -> Self {
        Self {
            inline: [fill; N],
            len: 0,
            heap: Vec::new(),
        }
    }

    /// Appends `item`; `expect` is how many items the list will have in
    /// all (a hint: the heap's first allocation takes at least that).
    pub(crate) fn push(&mut self, item: T, expect: usize) {
        if self.len < N {
            self.inline[self.len] = item;
        } else {
            if self.len == N {
                self.heap.reserve(expect.max(2 * N + 1));
                self.heap.extend_from_slice(&self.inline);
            }
            self.heap.push(item);
        }
        self.len += 1;
    }

    /// Removes every item (keeping the heap's room for the next ones).
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.heap.clear();
    }

    /// The items in a `Vec`.
    pub(crate) fn into_vec(self) -> Vec<T> {
        if self.len > N {
            self.heap
        } else {
            self.inline[..self.len].to_vec()
        }
    }
}

impl<T: Copy, const N: usize> Deref for InlineVec<T, N> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        if self.len > N {
            &self.heap
        } else {
            &self.inline[..self.len]
        }
    }
}

impl<T: Copy, const N: usize> DerefMut for InlineVec<T, N> {
    fn deref_mut(&mut self) -> &mut [T] {
        if self.len > N {
            &mut self.heap
        } else {
            &mut self.inline[..self.len]
        }
    }
}

impl<T: Copy + PartialEq, const N: usize> PartialEq for InlineVec<T, N> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_inline_and_on_the_heap_and_clears() {
        let mut v: InlineVec<u32, 2> = InlineVec::new(0);
        assert!(v.is_empty());
        for round in 0..2 {
            for i in 0..7 {
                v.push(i * 10 + round, 0);
                let want: Vec<u32> = (0..=i).map(|j| j * 10 + round).collect();
                assert_eq!(&*v, &want[..]);
            }
            v[6] = 1;
            assert_eq!(v.last(), Some(&1));
            assert_eq!(v.clone().into_vec().len(), 7);
            v.clear();
            assert!(v.is_empty());
        }
        v.push(4, 1);
        v[0] += 1;
        assert_eq!(v.into_vec(), vec![5]);
    }
}
