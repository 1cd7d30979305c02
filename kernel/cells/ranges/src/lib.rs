//! A first-fit allocator of numbered units kept as a sorted list of free ranges.
//!
//! It needs no heap (the list is a fixed array), so it can serve the physical frame allocator and
//! the kernel's virtual page allocator before the heap exists. Neighbouring free ranges are merged
//! on free, so the list only grows with real fragmentation. Every misuse (double free, freeing what
//! was never handed out, running out of list slots) is an error value.
//!
//! [`IntervalMap`] (which does use the heap) keeps a value per unit as runs of equal values.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod interval_map;

pub use interval_map::IntervalMap;

use core::fmt;

/// A half-open range `[start, start + count)` of units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitRange {
    pub start: u64,
    pub count: u64,
}

impl UnitRange {
    pub const fn new(start: u64, count: u64) -> Self {
        Self { start, count }
    }
    pub const fn end(&self) -> u64 {
        self.start + self.count
    }
    pub const fn contains(&self, unit: u64) -> bool {
        unit >= self.start && unit < self.end()
    }
    pub const fn overlaps(&self, other: &UnitRange) -> bool {
        self.start < other.end() && other.start < self.end()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// No free range is large enough (with the requested alignment).
    Exhausted,
    /// The requested units are not all free.
    NotFree,
    /// Some of the units given back were already free.
    DoubleFree,
    /// The free list has no slot left for another separate range.
    TooFragmented,
    /// A zero-sized or overflowing request.
    InvalidRequest,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RangeError::Exhausted => "no free range is large enough",
            RangeError::NotFree => "the requested range is not free",
            RangeError::DoubleFree => "part of the range was already free",
            RangeError::TooFragmented => "free list is full (too fragmented)",
            RangeError::InvalidRequest => "empty or overflowing range",
        })
    }
}

/// Free ranges, sorted by start, never touching or overlapping one another.
pub struct RangeAllocator<const N: usize> {
    free: [UnitRange; N],
    len: usize,
    free_units: u64,
}

impl<const N: usize> Default for RangeAllocator<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> RangeAllocator<N> {
    pub const fn new() -> Self {
        Self {
            free: [UnitRange::new(0, 0); N],
            len: 0,
            free_units: 0,
        }
    }

    /// Number of free units.
    pub fn free_units(&self) -> u64 {
        self.free_units
    }

    /// The free ranges, sorted by start.
    pub fn free_ranges(&self) -> &[UnitRange] {
        &self.free[..self.len]
    }

    /// Gives units to the allocator: at start-up, or when something is returned.
    pub fn free(&mut self, range: UnitRange) -> Result<(), RangeError> {
        if range.count == 0 || range.start.checked_add(range.count).is_none() {
            return Err(RangeError::InvalidRequest);
        }
        // Index of the first free range that starts after `range`.
        let next = self.free[..self.len].partition_point(|r| r.start <= range.start);
        if next > 0 && self.free[next - 1].end() > range.start {
            return Err(RangeError::DoubleFree);
        }
        if next < self.len && range.end() > self.free[next].start {
            return Err(RangeError::DoubleFree);
        }
        let joins_prev = next > 0 && self.free[next - 1].end() == range.start;
        let joins_next = next < self.len && range.end() == self.free[next].start;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.free[next - 1].count += range.count + self.free[next].count;
                self.remove_slot(next);
            }
            (true, false) => self.free[next - 1].count += range.count,
            (false, true) => {
                self.free[next].start = range.start;
                self.free[next].count += range.count;
            }
            (false, false) => self.insert_slot(next, range)?,
        }
        self.free_units += range.count;
        Ok(())
    }

    /// Allocates `count` units whose first unit is a multiple of `align`, lowest address first.
    pub fn allocate(&mut self, count: u64, align: u64) -> Result<UnitRange, RangeError> {
        self.allocate_within(count, align, 0, u64::MAX)
    }

    /// Like [`allocate`](Self::allocate) but only from units in `[low, high)`.
    pub fn allocate_within(
        &mut self,
        count: u64,
        align: u64,
        low: u64,
        high: u64,
    ) -> Result<UnitRange, RangeError> {
        if count == 0 || align == 0 || !align.is_power_of_two() {
            return Err(RangeError::InvalidRequest);
        }
        for i in 0..self.len {
            let r = self.free[i];
            let from = r.start.max(low);
            let Some(start) = from.checked_next_multiple_of(align) else {
                continue;
            };
            let Some(end) = start.checked_add(count) else {
                continue;
            };
            if end <= r.end() && end <= high {
                let got = UnitRange::new(start, count);
                self.take(i, got)?;
                return Ok(got);
            }
        }
        Err(RangeError::Exhausted)
    }

    /// Allocates exactly the units of `range`, which must all be free.
    pub fn allocate_at(&mut self, range: UnitRange) -> Result<(), RangeError> {
        if range.count == 0 || range.start.checked_add(range.count).is_none() {
            return Err(RangeError::InvalidRequest);
        }
        let idx = self.free[..self.len].partition_point(|r| r.start <= range.start);
        if idx == 0 || self.free[idx - 1].end() < range.end() {
            return Err(RangeError::NotFree);
        }
        self.take(idx - 1, range)
    }

    /// Removes units from the free list regardless of which are free (reserving memory that
    /// holds the kernel, boot modules, firmware tables). Returns how many units were free.
    pub fn reserve(&mut self, range: UnitRange) -> Result<u64, RangeError> {
        let mut removed = 0;
        let mut i = 0;
        while i < self.len {
            let r = self.free[i];
            if !r.overlaps(&range) {
                i += 1;
                continue;
            }
            let start = r.start.max(range.start);
            let end = r.end().min(range.end());
            let cut = UnitRange::new(start, end - start);
            let before = self.len;
            self.take(i, cut)?;
            removed += cut.count;
            // `take` may have removed (len - 1) or split (len + 1) the slot.
            if self.len >= before {
                i += 1;
            }
        }
        Ok(removed)
    }

    /// Takes `part` (which lies inside free slot `i`) out of the free list.
    fn take(&mut self, i: usize, part: UnitRange) -> Result<(), RangeError> {
        let r = self.free[i];
        debug_assert!(part.start >= r.start && part.end() <= r.end());
        let head = UnitRange::new(r.start, part.start - r.start);
        let tail = UnitRange::new(part.end(), r.end() - part.end());
        match (head.count > 0, tail.count > 0) {
            (false, false) => self.remove_slot(i),
            (true, false) => self.free[i] = head,
            (false, true) => self.free[i] = tail,
            (true, true) => {
                self.insert_slot(i + 1, tail)?;
                self.free[i] = head;
            }
        }
        self.free_units -= part.count;
        Ok(())
    }

    fn insert_slot(&mut self, at: usize, range: UnitRange) -> Result<(), RangeError> {
        if self.len == N {
            return Err(RangeError::TooFragmented);
        }
        self.free.copy_within(at..self.len, at + 1);
        self.free[at] = range;
        self.len += 1;
        Ok(())
    }

    fn remove_slot(&mut self, at: usize) {
        self.free.copy_within(at + 1..self.len, at);
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc_with(ranges: &[(u64, u64)]) -> RangeAllocator<64> {
        let mut a = RangeAllocator::new();
        for &(s, c) in ranges {
            a.free(UnitRange::new(s, c)).unwrap();
        }
        a
    }

    #[test]
    fn merges_neighbours_on_free() {
        let a = alloc_with(&[(0, 10), (20, 10), (10, 10)]);
        assert_eq!(a.free_ranges(), &[UnitRange::new(0, 30)]);
        assert_eq!(a.free_units(), 30);
    }

    #[test]
    fn first_fit_lowest_and_aligned() {
        let mut a = alloc_with(&[(3, 100)]);
        assert_eq!(a.allocate(4, 1).unwrap(), UnitRange::new(3, 4));
        assert_eq!(a.allocate(4, 16).unwrap(), UnitRange::new(16, 4));
        assert_eq!(a.free_units(), 92);
        assert_eq!(
            a.free_ranges(),
            &[UnitRange::new(7, 9), UnitRange::new(20, 83)]
        );
    }

    #[test]
    fn exhaustion_and_bad_requests_are_errors() {
        let mut a = alloc_with(&[(0, 8)]);
        assert_eq!(a.allocate(9, 1), Err(RangeError::Exhausted));
        assert_eq!(a.allocate(0, 1), Err(RangeError::InvalidRequest));
        assert_eq!(a.allocate(1, 3), Err(RangeError::InvalidRequest));
        assert_eq!(
            a.free(UnitRange::new(u64::MAX, 2)),
            Err(RangeError::InvalidRequest)
        );
    }

    #[test]
    fn double_free_is_detected() {
        let mut a = alloc_with(&[(0, 8)]);
        let r = a.allocate(4, 1).unwrap();
        a.free(r).unwrap();
        assert_eq!(a.free(r), Err(RangeError::DoubleFree));
        assert_eq!(a.free(UnitRange::new(6, 4)), Err(RangeError::DoubleFree));
        assert_eq!(a.free_units(), 8);
    }

    #[test]
    fn allocate_at_needs_every_unit_free() {
        let mut a = alloc_with(&[(0, 8), (10, 8)]);
        assert_eq!(
            a.allocate_at(UnitRange::new(6, 4)),
            Err(RangeError::NotFree)
        );
        a.allocate_at(UnitRange::new(12, 2)).unwrap();
        assert_eq!(
            a.allocate_at(UnitRange::new(13, 1)),
            Err(RangeError::NotFree)
        );
        assert_eq!(a.free_units(), 14);
    }

    #[test]
    fn reserve_cuts_across_ranges() {
        let mut a = alloc_with(&[(0, 10), (20, 10), (40, 10)]);
        assert_eq!(a.reserve(UnitRange::new(5, 40)).unwrap(), 5 + 10 + 5);
        assert_eq!(
            a.free_ranges(),
            &[UnitRange::new(0, 5), UnitRange::new(45, 5)]
        );
        assert_eq!(a.reserve(UnitRange::new(100, 5)).unwrap(), 0);
    }

    #[test]
    fn full_list_reports_fragmentation() {
        let mut a = RangeAllocator::<2>::new();
        a.free(UnitRange::new(0, 1)).unwrap();
        a.free(UnitRange::new(2, 1)).unwrap();
        assert_eq!(a.free(UnitRange::new(4, 1)), Err(RangeError::TooFragmented));
        assert_eq!(a.free_units(), 2);
    }

    /// Random allocations and frees against a bitmap model: the two must always agree.
    #[test]
    fn agrees_with_a_bitmap_model() {
        const UNITS: u64 = 512;
        let mut a = RangeAllocator::<512>::new();
        a.free(UnitRange::new(0, UNITS)).unwrap();
        let mut used = [false; UNITS as usize];
        let mut live: Vec<UnitRange> = Vec::new();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            if rand() % 2 == 0 || live.is_empty() {
                let count = rand() % 9 + 1;
                let align = 1 << (rand() % 4);
                match a.allocate(count, align) {
                    Ok(r) => {
                        assert_eq!(r.start % align, 0);
                        for u in r.start..r.end() {
                            assert!(!used[u as usize], "unit {u} handed out twice");
                            used[u as usize] = true;
                        }
                        live.push(r);
                    }
                    Err(RangeError::Exhausted) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                }
            } else {
                let r = live.swap_remove((rand() as usize) % live.len());
                for u in r.start..r.end() {
                    used[u as usize] = false;
                }
                a.free(r).unwrap();
            }
            let free_in_model = used.iter().filter(|u| !**u).count() as u64;
            assert_eq!(a.free_units(), free_in_model);
            for w in a.free_ranges().windows(2) {
                assert!(w[0].end() < w[1].start, "ranges must be sorted and merged");
            }
        }
    }
}
