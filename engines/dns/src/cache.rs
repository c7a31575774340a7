//! The forwarding cache: answers from upstream by (name, type), kept for
//! their TTL (negative answers for the SOA's negative TTL, RFC 2308), TTLs
//! counting down while cached, at most `capacity` entries (the oldest go
//! first). A hit is answered synchronously on the receive path, without the
//! resolver's futures: that is what keeps a cached forwarded name as cheap
//! as a local one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RData, Record, RecordType};

type Key = (LowerName, RecordType);

struct Entry {
    rcode: ResponseCode,
    answers: Arc<[Record]>,
    authorities: Arc<[Record]>,
    stored: Instant,
    expires: Instant,
    /// Which insertion this is, to tell its eviction-queue slot apart from
    /// a replaced version's.
    version: u64,
}

struct Inner {
    entries: HashMap<Key, Entry, foldhash::fast::RandomState>,
    /// Insertion order, for eviction; may name entries already replaced.
    order: VecDeque<(Key, u64)>,
    next_version: u64,
}

/// A cached answer, TTLs already counted down.
pub(crate) struct Hit {
    pub(crate) rcode: ResponseCode,
    pub(crate) answers: Vec<Record>,
    pub(crate) authorities: Vec<Record>,
}

pub(crate) struct ForwardCache {
    capacity: usize,
    max_ttl: Duration,
    inner: Mutex<Inner>,
}

fn aged(records: &[Record], elapsed: u32) -> Vec<Record> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.ttl = r.ttl.saturating_sub(elapsed);
            r
        })
        .collect()
}

impl ForwardCache {
    pub(crate) fn new(capacity: usize, max_ttl: Duration) -> Self {
        Self {
            capacity,
            max_ttl,
            inner: Mutex::new(Inner {
                entries: HashMap::default(),
                order: VecDeque::new(),
                next_version: 0,
            }),
        }
    }

    pub(crate) fn get(&self, name: &LowerName, qtype: RecordType, now: Instant) -> Option<Hit> {
        if self.capacity == 0 {
            return None;
        }
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = inner.entries.get(&(name.clone(), qtype))?;
        if now >= entry.expires {
            return None;
        }
        let elapsed = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        Some(Hit {
            rcode: entry.rcode,
            answers: aged(&entry.answers, elapsed),
            authorities: aged(&entry.authorities, elapsed),
        })
    }

    /// How long an answer may be cached: the smallest answer TTL; for a
    /// negative answer min(SOA TTL, SOA minimum); nothing without a TTL.
    fn lifetime(
        &self,
        rcode: ResponseCode,
        answers: &[Record],
        authorities: &[Record],
    ) -> Option<Duration> {
        let ttl = match rcode {
            ResponseCode::NoError if !answers.is_empty() => answers.iter().map(|r| r.ttl).min()?,
            ResponseCode::NoError | ResponseCode::NXDomain => {
                authorities.iter().find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })?
            }
            _ => return None,
        };
        let ttl = Duration::from_secs(u64::from(ttl)).min(self.max_ttl);
        (!ttl.is_zero()).then_some(ttl)
    }

    pub(crate) fn insert(
        &self,
        name: LowerName,
        qtype: RecordType,
        rcode: ResponseCode,
        answers: &[Record],
        authorities: &[Record],
        now: Instant,
    ) {
        if self.capacity == 0 {
            return;
        }
        let Some(lifetime) = self.lifetime(rcode, answers, authorities) else {
            return;
        };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *inner;
        let key = (name, qtype);
        while !inner.entries.contains_key(&key) && inner.entries.len() >= self.capacity {
            let Some((old, version)) = inner.order.pop_front() else {
                break;
            };
            // Only if that queue slot is still the entry's current version.
            if inner
                .entries
                .get(&old)
                .is_some_and(|e| e.version == version)
            {
                inner.entries.remove(&old);
            }
        }
        let version = inner.next_version;
        inner.next_version += 1;
        inner.order.push_back((key.clone(), version));
        inner.entries.insert(
            key,
            Entry {
                rcode,
                answers: answers.into(),
                authorities: authorities.into(),
                stored: now,
                expires: now + lifetime,
                version,
            },
        );
        // Replaced entries leave stale queue slots; keep the queue bounded.
        if inner.order.len() > 2 * self.capacity {
            let entries = &inner.entries;
            inner
                .order
                .retain(|(key, version)| entries.get(key).is_some_and(|e| e.version == *version));
        }
    }

    pub(crate) fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.entries.clear();
        inner.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn name(n: &str) -> LowerName {
        LowerName::from(Name::from_str(n).unwrap())
    }

    fn a(ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_str("x.example.").unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        )
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let n = Name::from_str("example.").unwrap();
        Record::from_rdata(
            n.clone(),
            ttl,
            RData::SOA(SOA::new(n.clone(), n, 1, 1, 1, 1, minimum)),
        )
    }

    #[test]
    fn ttls_count_down_and_entries_expire() {
        let cache = ForwardCache::new(10, Duration::from_secs(3600));
        let t0 = Instant::now();
        cache.insert(
            name("x.example."),
            RecordType::A,
            ResponseCode::NoError,
            &[a(60), a(30)],
            &[],
            t0,
        );
        let hit = cache
            .get(
                &name("X.example."),
                RecordType::A,
                t0 + Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(
            hit.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(),
            [50, 20]
        );
        assert!(cache
            .get(&name("x.example."), RecordType::AAAA, t0)
            .is_none());
        assert!(cache
            .get(
                &name("x.example."),
                RecordType::A,
                t0 + Duration::from_secs(30)
            )
            .is_none());
    }

    #[test]
    fn negative_answers_live_for_the_soa_negative_ttl() {
        let cache = ForwardCache::new(10, Duration::from_secs(3600));
        let t0 = Instant::now();
        cache.insert(
            name("n.example."),
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
            &[soa(300, 20)],
            t0,
        );
        let hit = cache
            .get(
                &name("n.example."),
                RecordType::A,
                t0 + Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(hit.rcode, ResponseCode::NXDomain);
        assert!(cache
            .get(
                &name("n.example."),
                RecordType::A,
                t0 + Duration::from_secs(20)
            )
            .is_none());
        // Without an SOA there is no negative TTL: not cached.
        cache.insert(
            name("m.example."),
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
            &[],
            t0,
        );
        assert!(cache.get(&name("m.example."), RecordType::A, t0).is_none());
        // Failures are never cached; nor is a zero TTL.
        cache.insert(
            name("f.example."),
            RecordType::A,
            ResponseCode::ServFail,
            &[],
            &[],
            t0,
        );
        cache.insert(
            name("z.example."),
            RecordType::A,
            ResponseCode::NoError,
            &[a(0)],
            &[],
            t0,
        );
        assert!(cache.get(&name("f.example."), RecordType::A, t0).is_none());
        assert!(cache.get(&name("z.example."), RecordType::A, t0).is_none());
    }

    #[test]
    fn size_is_bounded_oldest_first_and_max_ttl_applies() {
        let cache = ForwardCache::new(3, Duration::from_secs(5));
        let t0 = Instant::now();
        for i in 0..10 {
            let n = name(&format!("h{i}.example."));
            cache.insert(
                n.clone(),
                RecordType::A,
                ResponseCode::NoError,
                &[a(600)],
                &[],
                t0,
            );
            // Replacing the same name many times keeps the queue bounded.
            cache.insert(n, RecordType::A, ResponseCode::NoError, &[a(600)], &[], t0);
        }
        let inner = cache.inner.lock().unwrap();
        assert_eq!(inner.entries.len(), 3);
        assert!(inner.order.len() <= 6);
        drop(inner);
        assert!(cache.get(&name("h9.example."), RecordType::A, t0).is_some());
        assert!(cache.get(&name("h0.example."), RecordType::A, t0).is_none());
        assert!(cache
            .get(
                &name("h9.example."),
                RecordType::A,
                t0 + Duration::from_secs(6)
            )
            .is_none());
    }
}
