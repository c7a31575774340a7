//! The lookup structures a compiled policy decides with, each answering
//! "which rule (lowest index) matches this?" without scanning the rules:
//!
//! - [`PrefixTable`]: one hash map per prefix length present, probed from
//!   the longest; at most 33 (IPv4) or 129 (IPv6) probes whatever the
//!   number of rules, usually a handful.
//! - [`DomainTable`]: exact names and `*.` suffixes in hash maps, probed
//!   once per label of the asked name.
//! - [`PortTable`]: disjoint sorted intervals (built with a sweep, each
//!   carrying the lowest rule index covering it), binary-searched.

use std::collections::{BTreeMap, HashMap};

/// The index of a rule in its policy (lower = listed first).
pub type RuleId = u32;

/// Addresses as integers: `u32` for IPv4, `u128` for IPv6.
pub trait Bits: Copy + Eq + std::hash::Hash + Default {
    const WIDTH: u8;
    fn masked(self, len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn masked(self, len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - len))
        }
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn masked(self, len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - len))
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PrefixTable<B: Bits> {
    /// (length, network -> rule), longest first.
    levels: Vec<(u8, HashMap<B, RuleId>)>,
}

impl<B: Bits> PrefixTable<B> {
    /// Add a prefix; the first rule to add a network keeps it.
    pub fn insert(&mut self, net: B, len: u8, id: RuleId) {
        let len = len.min(B::WIDTH);
        let pos = match self.levels.binary_search_by(|(l, _)| len.cmp(l)) {
            Ok(p) => p,
            Err(p) => {
                self.levels.insert(p, (len, HashMap::new()));
                p
            }
        };
        self.levels[pos].1.entry(net.masked(len)).or_insert(id);
    }

    /// The lowest rule index among the prefixes containing `addr`.
    pub fn lookup(&self, addr: B) -> Option<RuleId> {
        self.levels
            .iter()
            .filter_map(|(len, map)| map.get(&addr.masked(*len)).copied())
            .min()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
pub struct DomainTable {
    exact: HashMap<Box<str>, RuleId>,
    /// `*.suffix` rules, keyed by `suffix`.
    below: HashMap<Box<str>, RuleId>,
}

impl DomainTable {
    pub fn insert(&mut self, name: &str, wildcard: bool, id: RuleId) {
        let map = if wildcard {
            &mut self.below
        } else {
            &mut self.exact
        };
        map.entry(name.into()).or_insert(id);
    }

    /// The lowest rule index matching `name` (lowercase, no trailing dot).
    pub fn lookup(&self, name: &str) -> Option<RuleId> {
        let mut best = self.exact.get(name).copied();
        if !self.below.is_empty() {
            let mut rest = name;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(&id) = self.below.get(suffix) {
                    best = Some(best.map_or(id, |b| b.min(id)));
                }
                rest = suffix;
            }
        }
        best
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.below.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
pub struct PortTable {
    /// Disjoint intervals sorted by start: (lo, hi, lowest rule covering).
    intervals: Vec<(u16, u16, RuleId)>,
}

impl PortTable {
    /// Build from (lo, hi, rule) ranges, overlapping or not.
    pub fn build(ranges: &[(u16, u16, RuleId)]) -> PortTable {
        // Sweep the boundaries; between two of them the set of covering
        // rules is constant, and its minimum names the interval.
        let mut events: BTreeMap<u32, (Vec<RuleId>, Vec<RuleId>)> = BTreeMap::new();
        for &(lo, hi, id) in ranges {
            events.entry(lo as u32).or_default().0.push(id);
            events.entry(hi as u32 + 1).or_default().1.push(id);
        }
        let mut active: BTreeMap<RuleId, usize> = BTreeMap::new();
        let mut intervals: Vec<(u16, u16, RuleId)> = Vec::new();
        let points: Vec<u32> = events.keys().copied().collect();
        for (i, at) in points.iter().enumerate() {
            let (start, end) = &events[at];
            for id in start {
                *active.entry(*id).or_default() += 1;
            }
            for id in end {
                if let Some(n) = active.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        active.remove(id);
                    }
                }
            }
            if let (Some((&min, _)), Some(&next)) = (active.first_key_value(), points.get(i + 1)) {
                let (lo, hi) = (*at as u16, (next - 1) as u16);
                match intervals.last_mut() {
                    Some(last) if last.2 == min && last.1 as u32 + 1 == *at => last.1 = hi,
                    _ => intervals.push((lo, hi, min)),
                }
            }
        }
        PortTable { intervals }
    }

    pub fn lookup(&self, port: u16) -> Option<RuleId> {
        let i = self.intervals.partition_point(|&(lo, _, _)| lo <= port);
        let &(lo, hi, id) = self.intervals.get(i.checked_sub(1)?)?;
        (lo <= port && port <= hi).then_some(id)
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_or_first_prefix_names_the_match() {
        let mut t = PrefixTable::<u32>::default();
        t.insert(0x0a00_0000, 8, 5);
        t.insert(0x0a01_0000, 16, 2);
        t.insert(0x0a01_0000, 16, 9);
        assert_eq!(t.lookup(0x0a01_0203), Some(2));
        assert_eq!(t.lookup(0x0a02_0000), Some(5));
        assert_eq!(t.lookup(0x0b00_0000), None);
        t.insert(0, 0, 7);
        assert_eq!(t.lookup(0x0b00_0000), Some(7));
    }

    #[test]
    fn domains_exact_and_below() {
        let mut t = DomainTable::default();
        t.insert("example.com", false, 3);
        t.insert("example.com", true, 1);
        assert_eq!(t.lookup("example.com"), Some(3));
        assert_eq!(t.lookup("a.b.example.com"), Some(1));
        assert_eq!(t.lookup("badexample.com"), None);
        assert_eq!(t.lookup("com"), None);
    }

    #[test]
    fn port_intervals_keep_the_lowest_rule() {
        let t = PortTable::build(&[
            (1000, 2000, 4),
            (1500, 1600, 1),
            (80, 80, 0),
            (65535, 65535, 2),
        ]);
        assert_eq!(t.lookup(80), Some(0));
        assert_eq!(t.lookup(81), None);
        assert_eq!(t.lookup(1000), Some(4));
        assert_eq!(t.lookup(1550), Some(1));
        assert_eq!(t.lookup(1601), Some(4));
        assert_eq!(t.lookup(2001), None);
        assert_eq!(t.lookup(65535), Some(2));
        assert_eq!(PortTable::build(&[]).lookup(1), None);
    }
}
