//! [`IntervalMap`]: a value for every unit of a range, stored as maximal runs of equal values.
//!
//! Used for the access rights of reserved pages: setting a right over a million pages is one
//! entry, not a million.

use alloc::collections::BTreeMap;
use core::ops::Range;

/// Maps units (`u64`) to values; units not set have none. Adjacent runs with equal values are
/// merged, so the number of entries only grows with the number of distinct runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalMap<V> {
    /// Run start → (run end, value). Runs never overlap and are never empty.
    runs: BTreeMap<u64, (u64, V)>,
}

impl<V: Copy + Eq> IntervalMap<V> {
    pub const fn new() -> Self {
        Self {
            runs: BTreeMap::new(),
        }
    }

    /// The value of `unit`, if one is set.
    pub fn get(&self, unit: u64) -> Option<V> {
        let (_, &(end, value)) = self.runs.range(..=unit).next_back()?;
        (unit < end).then_some(value)
    }

    /// Sets every unit of `range` to `value`, or clears them with `None`.
    pub fn set(&mut self, range: Range<u64>, value: Option<V>) {
        if range.is_empty() {
            return;
        }
        self.split_at(range.start);
        self.split_at(range.end);
        let covered: alloc::vec::Vec<u64> =
            self.runs.range(range.clone()).map(|(&s, _)| s).collect();
        for start in covered {
            self.runs.remove(&start);
        }
        let Some(value) = value else {
            return;
        };
        let (mut start, mut end) = (range.start, range.end);
        if let Some((&prev_start, &(prev_end, prev_value))) = self.runs.range(..start).next_back()
            && prev_end == start
            && prev_value == value
        {
            self.runs.remove(&prev_start);
            start = prev_start;
        }
        if let Some(&(next_end, next_value)) = self.runs.get(&end)
            && next_value == value
        {
            self.runs.remove(&end);
            end = next_end;
        }
        self.runs.insert(start, (end, value));
    }

    /// The runs overlapping `range`, clipped to it, in order.
    pub fn runs_in(&self, range: Range<u64>) -> impl Iterator<Item = (Range<u64>, V)> + '_ {
        let range = range.start..range.end.max(range.start);
        let first = self
            .runs
            .range(..=range.start)
            .next_back()
            .map_or(range.start, |(&s, _)| s);
        self.runs
            .range(first..range.end)
            .map(move |(&start, &(end, value))| (start.max(range.start)..end.min(range.end), value))
            .filter(|(clipped, _)| !clipped.is_empty())
    }

    /// Number of runs stored.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Makes `unit` the start of a run if a run covers it.
    fn split_at(&mut self, unit: u64) {
        let Some((&start, &(end, value))) = self.runs.range(..unit).next_back() else {
            return;
        };
        if unit < end {
            self.runs.insert(start, (unit, value));
            self.runs.insert(unit, (end, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IntervalMap;

    /// A reference model: one slot per unit.
    fn check(map: &IntervalMap<u8>, model: &[Option<u8>]) {
        for (unit, want) in model.iter().enumerate() {
            assert_eq!(map.get(unit as u64), *want, "unit {unit}");
        }
        // Runs are maximal: no two adjacent runs with the same value.
        let runs: Vec<_> = map.runs_in(0..model.len() as u64).collect();
        for pair in runs.windows(2) {
            assert!(
                !(pair[0].0.end == pair[1].0.start && pair[0].1 == pair[1].1),
                "runs not merged: {runs:?}"
            );
        }
        let mut from_runs = vec![None; model.len()];
        for (range, value) in runs {
            for unit in range {
                from_runs[unit as usize] = Some(value);
            }
        }
        assert_eq!(from_runs, model);
    }

    #[test]
    fn set_get_and_clear() {
        let mut map = IntervalMap::new();
        let mut model = vec![None; 64];
        map.set(10..20, Some(1));
        model[10..20].fill(Some(1));
        check(&map, &model);
        map.set(15..30, Some(2));
        model[15..30].fill(Some(2));
        check(&map, &model);
        map.set(12..16, None);
        model[12..16].fill(None);
        check(&map, &model);
        map.set(0..64, Some(1));
        model.fill(Some(1));
        check(&map, &model);
        assert_eq!(map.run_count(), 1);
        map.set(5..5, Some(3));
        check(&map, &model);
    }

    #[test]
    fn equal_neighbours_merge() {
        let mut map = IntervalMap::new();
        map.set(0..4, Some(7));
        map.set(8..12, Some(7));
        map.set(4..8, Some(7));
        assert_eq!(map.run_count(), 1);
        assert_eq!(map.runs_in(2..10).collect::<Vec<_>>(), vec![(2..10, 7)]);
    }

    #[test]
    fn matches_a_per_unit_model_under_random_operations() {
        // xorshift: a fixed sequence, so a failure reproduces.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const UNITS: u64 = 96;
        let mut map = IntervalMap::new();
        let mut model = vec![None; UNITS as usize];
        for _ in 0..5000 {
            let a = next() % (UNITS + 1);
            let b = next() % (UNITS + 1);
            let (start, end) = (a.min(b), a.max(b));
            let value = match next() % 4 {
                0 => None,
                v => Some(v as u8),
            };
            map.set(start..end, value);
            model[start as usize..end as usize].fill(value);
            check(&map, &model);
            let (qa, qb) = (next() % (UNITS + 1), next() % (UNITS + 1));
            let query = qa.min(qb)..qa.max(qb);
            for (range, value) in map.runs_in(query.clone()) {
                assert!(range.start >= query.start && range.end <= query.end && !range.is_empty());
                for unit in range {
                    assert_eq!(model[unit as usize], Some(value));
                }
            }
        }
    }
}
