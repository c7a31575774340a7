//! Token buckets per listener and per source address, with a bounded table
//! of sources. Checked before a packet is even parsed, so a flood costs a
//! receive and a lookup here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::Limits;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }

    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct State {
    listener: Bucket,
    sources: HashMap<IpAddr, Bucket>,
    /// Shared by sources that found the table full.
    overflow: Bucket,
    last_purge: Instant,
}

/// A full source table is swept at most this often (a sweep is O(table)).
const PURGE_INTERVAL: Duration = Duration::from_millis(100);

/// Decides whether one more query may be served.
pub(crate) struct RateLimiter {
    source_rate: f64,
    source_burst: f64,
    listener_rate: f64,
    listener_burst: f64,
    max_sources: usize,
    unlimited: bool,
    state: Mutex<State>,
}

impl RateLimiter {
    pub(crate) fn new(limits: &Limits, now: Instant) -> Self {
        let source_burst = f64::from(limits.source_burst.max(1));
        let listener_burst = f64::from(limits.listener_burst.max(1));
        Self {
            source_rate: f64::from(limits.source_qps),
            source_burst,
            listener_rate: f64::from(limits.listener_qps),
            listener_burst,
            max_sources: limits.max_sources.max(1),
            unlimited: limits.source_qps == u32::MAX && limits.listener_qps == u32::MAX,
            state: Mutex::new(State {
                listener: Bucket::full(listener_burst, now),
                sources: HashMap::new(),
                overflow: Bucket::full(source_burst, now),
                last_purge: now,
            }),
        }
    }

    /// Takes a token for `source` and the listener; `false` = drop.
    pub(crate) fn allow(&self, source: IpAddr, now: Instant) -> bool {
        if self.unlimited {
            return true;
        }
        let (rate, burst) = (self.source_rate, self.source_burst);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        if !state.sources.contains_key(&source)
            && state.sources.len() >= self.max_sources
            && now.saturating_duration_since(state.last_purge) >= PURGE_INTERVAL
        {
            state.last_purge = now;
            // Forget sources whose bucket refilled: they are idle, and a
            // fresh bucket is full anyway.
            state.sources.retain(|_, b| {
                b.refill(rate, burst, now);
                b.tokens < burst
            });
        }
        let bucket = if state.sources.len() < self.max_sources {
            state
                .sources
                .entry(source)
                .or_insert_with(|| Bucket::full(burst, now))
        } else {
            state
                .sources
                .get_mut(&source)
                .unwrap_or(&mut state.overflow)
        };
        // The listener's token is only spent when the source may send, so a
        // flooding source cannot drain the listener for the others.
        if !bucket.take(rate, burst, now) {
            return false;
        }
        state
            .listener
            .take(self.listener_rate, self.listener_burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(
        source_qps: u32,
        source_burst: u32,
        listener_qps: u32,
        listener_burst: u32,
    ) -> Limits {
        Limits {
            source_qps,
            source_burst,
            listener_qps,
            listener_burst,
            max_sources: 2,
            ..Limits::default()
        }
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(&limits(10, 5, 1000, 1000), t0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!((0..20).filter(|_| rl.allow(a, t0)).count(), 5);
        // 10 qps: after 0.5 s, 5 more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..20).filter(|_| rl.allow(a, t1)).count(), 5);
    }

    #[test]
    fn one_flooding_source_leaves_others_their_share() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(&limits(10, 5, 1000, 1000), t0);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..10_000 {
            rl.allow(a, t0);
        }
        assert_eq!((0..5).filter(|_| rl.allow(b, t0)).count(), 5);
    }

    #[test]
    fn the_listener_caps_the_sum() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(&limits(100, 100, 10, 3), t0);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let n =
            (0..5).filter(|_| rl.allow(a, t0)).count() + (0..5).filter(|_| rl.allow(b, t0)).count();
        assert_eq!(n, 3);
    }

    #[test]
    fn the_source_table_stays_bounded() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(&limits(10, 2, 1_000_000, 1_000_000), t0);
        for i in 0..10_000u32 {
            rl.allow(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(rl.state.lock().unwrap().sources.len() <= 2);
    }
}
