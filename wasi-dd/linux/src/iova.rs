//! [`IovaAllocator`]: the I/O virtual addresses the platform gives DMA buffers. Under VFIO the
//! process chooses where in the device's address space each buffer appears; the device can
//! reach those addresses and nothing else.
//!
//! First fit from the lowest address, so that addresses stay small: devices with 32-bit DMA
//! (and QEMU's `edu`, which masks DMA addresses to 28 bits) work as long as the instance's
//! buffers fit below their limit.

use std::collections::BTreeMap;

/// The window DMA buffers are placed in: above the first MiB (so that no buffer is at 0, which
/// some drivers and devices treat as "no address"), below 4 GiB (32-bit DMA devices).
pub const DEFAULT_WINDOW: (u64, u64) = (1 << 20, 1 << 32);
/// The x86 interrupt message window: an MSI is a device write there, never DMA to memory.
pub const MSI_WINDOW: (u64, u64) = (0xfee0_0000, 0xfef0_0000);

/// Free IOVA ranges, by start address (end exclusive). All starts and sizes are multiples of
/// the IOMMU page size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IovaAllocator {
    free: BTreeMap<u64, u64>,
    page: u64,
}

impl IovaAllocator {
    /// An allocator over `usable` (start, end-exclusive) ranges intersected with `window` and
    /// with `excluded` cut out, shrunk inward to whole pages of `page` bytes (a power of two).
    pub fn new(
        usable: &[(u64, u64)],
        window: (u64, u64),
        excluded: &[(u64, u64)],
        page: u64,
    ) -> Self {
        assert!(
            page.is_power_of_two(),
            "IOMMU page size {page} is not a power of two"
        );
        let mut ranges: Vec<(u64, u64)> = usable
            .iter()
            .map(|&(start, end)| (start.max(window.0), end.min(window.1)))
            .filter(|(start, end)| start < end)
            .collect();
        for &(cut_start, cut_end) in excluded {
            ranges = ranges
                .into_iter()
                .flat_map(|(start, end)| {
                    let below = (start, end.min(cut_start));
                    let above = (start.max(cut_end), end);
                    [below, above]
                })
                .filter(|(start, end)| start < end)
                .collect();
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        let free = merged
            .into_iter()
            .filter_map(|(start, end)| {
                let start = start.checked_next_multiple_of(page)?;
                let end = end & !(page - 1);
                (start < end).then_some((start, end))
            })
            .collect();
        IovaAllocator { free, page }
    }

    pub fn page_size(&self) -> u64 {
        self.page
    }

    /// `size` rounded up to whole pages.
    pub fn rounded(&self, size: u64) -> Option<u64> {
        size.checked_next_multiple_of(self.page)
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|(start, end)| end - start).sum()
    }

    /// The lowest address where `size` bytes (rounded up to pages) fit at a multiple of
    /// `align` (at least a page), taken out of the free ranges.
    pub fn allocate(&mut self, size: u64, align: u64) -> Option<u64> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let size = self.rounded(size)?;
        let align = align.max(self.page);
        let (start, end, at) = self.free.iter().find_map(|(&start, &end)| {
            let at = start.checked_next_multiple_of(align)?;
            (at.checked_add(size)? <= end).then_some((start, end, at))
        })?;
        self.free.remove(&start);
        if start < at {
            self.free.insert(start, at);
        }
        if at + size < end {
            self.free.insert(at + size, end);
        }
        Some(at)
    }

    /// Gives back `size` bytes (rounded up to pages) at `iova`, from an earlier `allocate`.
    pub fn free(&mut self, iova: u64, size: u64) {
        if let Some(size) = self.rounded(size) {
            self.give_back(iova, iova + size);
        }
    }

    /// Inserts `start..end`, merged with the free neighbours it touches.
    fn give_back(&mut self, mut start: u64, mut end: u64) {
        if let Some((&before, &before_end)) = self.free.range(..=start).next_back() {
            debug_assert!(before_end <= start, "IOVA {start:#x} freed twice");
            if before_end == start {
                self.free.remove(&before);
                start = before;
            }
        }
        if let Some(&after_end) = self.free.get(&end) {
            self.free.remove(&end);
            end = after_end;
        }
        debug_assert!(
            self.free.range(start..end).next().is_none(),
            "IOVA range {start:#x}..{end:#x} freed twice"
        );
        self.free.insert(start, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    fn allocator() -> IovaAllocator {
        IovaAllocator::new(&[(0, u64::MAX)], DEFAULT_WINDOW, &[MSI_WINDOW], PAGE)
    }

    #[test]
    fn allocates_from_the_bottom_of_the_window_in_whole_pages() {
        let mut iova = allocator();
        assert_eq!(iova.allocate(1, 1), Some(0x10_0000));
        assert_eq!(iova.allocate(4096, 4096), Some(0x10_1000));
        assert_eq!(iova.allocate(4097, 8), Some(0x10_2000));
        assert_eq!(iova.allocate(1, 1), Some(0x10_4000));
    }

    #[test]
    fn honours_alignment_and_keeps_the_gap_it_skips() {
        let mut iova = allocator();
        assert_eq!(iova.allocate(4096, 4096), Some(0x10_0000));
        assert_eq!(iova.allocate(4096, 0x10_0000), Some(0x20_0000));
        // The pages skipped for alignment are still there.
        assert_eq!(iova.allocate(4096, 4096), Some(0x10_1000));
    }

    #[test]
    fn freed_ranges_merge_and_are_reused() {
        let mut iova = allocator();
        let total = iova.free_bytes();
        let a = iova.allocate(8192, 4096).unwrap();
        let b = iova.allocate(4096, 4096).unwrap();
        let c = iova.allocate(4096, 4096).unwrap();
        iova.free(b, 4096);
        assert_eq!(iova.allocate(4096, 4096), Some(b));
        iova.free(a, 8192);
        iova.free(b, 4096);
        iova.free(c, 4096);
        assert_eq!(iova.free_bytes(), total);
        assert_eq!(
            iova.free.len(),
            2,
            "one range below the MSI window, one above"
        );
        assert_eq!(iova.allocate(3 * 4096, 4096), Some(a));
    }

    #[test]
    fn never_hands_out_the_msi_window_or_addresses_outside_the_window() {
        let mut iova = IovaAllocator::new(
            &[(0, u64::MAX)],
            (0xfed0_0000, 0xff00_0000),
            &[MSI_WINDOW],
            PAGE,
        );
        assert_eq!(iova.allocate(0x10_0000, 4096), Some(0xfed0_0000));
        assert_eq!(iova.allocate(4096, 4096), Some(0xfef0_0000));
        assert_eq!(iova.allocate(0x10_0000, 4096), None);
        assert_eq!(iova.free_bytes(), 0xff00_0000 - 0xfef0_1000);
    }

    #[test]
    fn uses_only_what_the_iommu_reports_usable() {
        // Two usable ranges, not page aligned at their edges.
        let mut iova = IovaAllocator::new(
            &[(0x20_0800, 0x20_3000), (0x30_0000, 0x30_1fff)],
            DEFAULT_WINDOW,
            &[],
            PAGE,
        );
        assert_eq!(iova.free_bytes(), 0x2000 + 0x1000);
        assert_eq!(iova.allocate(0x2000, 4096), Some(0x20_1000));
        assert_eq!(iova.allocate(0x2000, 4096), None);
        assert_eq!(iova.allocate(0x1000, 4096), Some(0x30_0000));
    }

    #[test]
    fn refuses_nonsense() {
        let mut iova = allocator();
        assert_eq!(iova.allocate(0, 4096), None);
        assert_eq!(iova.allocate(4096, 3), None);
        assert_eq!(iova.allocate(u64::MAX, 4096), None);
        assert_eq!(iova.allocate(1 << 33, 4096), None);
    }
}
