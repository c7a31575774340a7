//! From request bytes to response bytes: parsing (hickory-server's
//! request type), local answers from the record table, the policy check,
//! and encoding (hickory-server's response builder, which truncates and
//! sets TC when the client's size is exceeded).

use std::future::Future;
use std::iter;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::{Edns, Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use tracing::debug;

use crate::forward::{Forwarded, Forwarder};
use crate::names::{self, KeyBuf};
use crate::policy::{PolicyQuery, Verdict};
use crate::records::{Family, NameLookup, RecordTable};
use crate::scopes::ClientScopes;

/// UDP answers stay within this size unless the client asks for less
/// (the DNS flag day 2020 value: no IP fragmentation).
const UDP_PAYLOAD: u16 = 1232;

/// What parsing a datagram or TCP message gave.
pub(crate) enum Parsed {
    Query(Box<Request>),
    /// Unparseable but with a header: FORMERR to send.
    FormErr(Vec<u8>),
    /// Not worth an answer: shorter than a header, or a response.
    Ignore,
}

/// How a parsed query is answered.
pub(crate) enum Step<F> {
    /// Answered from the record table (or an error known at once).
    Local(Vec<u8>),
    /// Refused by a policy.
    Refused(Vec<u8>),
    /// A forwarded name answered from the forwarding cache.
    Cached(Vec<u8>),
    /// Needs upstream: the future gives the response.
    Forward(F),
}

pub(crate) fn parse(raw: &[u8], src: SocketAddr, protocol: Protocol) -> Parsed {
    if let Ok(request) = Request::from_bytes(raw.to_vec(), src, protocol) {
        return match request.metadata.message_type {
            MessageType::Query => Parsed::Query(Box::new(request)),
            // Never answer a response: no reflection.
            MessageType::Response => Parsed::Ignore,
        };
    }
    // Unparseable: FORMERR if there is a query header to answer.
    match Header::read(&mut BinDecoder::new(raw)) {
        Ok(header) if header.metadata.message_type == MessageType::Query => {
            Parsed::FormErr(encode_error(&header.metadata, ResponseCode::FormErr))
        }
        _ => Parsed::Ignore,
    }
}

fn max_size(request: &Request, protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Udp => request.max_payload().min(UDP_PAYLOAD),
        _ => u16::MAX,
    }
}

fn response_metadata(request: &Request, rcode: ResponseCode) -> Metadata {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.recursion_available = true;
    metadata.response_code = rcode;
    metadata
}

/// Encodes a response to `request`. Never fails: an answer that cannot be
/// encoded becomes SERVFAIL.
pub(crate) fn encode(
    request: &Request,
    protocol: Protocol,
    rcode: ResponseCode,
    answers: &[Record],
    authorities: &[Record],
) -> Vec<u8> {
    let edns = request.edns.as_ref().map(|_| {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        edns
    });
    // hickory-server echoes several questions wrongly (its compression
    // cache assumes one; found by the fuzz target): answer those bare.
    if request.queries.len() != 1 {
        return encode_error(&request.metadata, rcode);
    }
    let rebuilt;
    let queries = if has_pointer(request.queries.as_bytes()) {
        let Some(canonical) = canonical_queries(request) else {
            return encode_error(&request.metadata, ResponseCode::ServFail);
        };
        rebuilt = canonical;
        &rebuilt
    } else {
        &request.queries
    };
    let builder = MessageResponseBuilder::new(queries, edns.as_ref());
    let response = builder.build(
        response_metadata(request, rcode),
        answers.iter(),
        authorities.iter(),
        iter::empty(),
        iter::empty(),
    );
    let mut bytes = Vec::with_capacity(128);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max_size(request, protocol));
    if response.destructive_emit(&mut encoder).is_ok() {
        return bytes;
    }
    encode_error(&request.metadata, ResponseCode::ServFail)
}

/// Whether the question bytes hold a compression pointer. hickory-server
/// echoes the client's question bytes verbatim; a pointer in them may point
/// at a part of the request the response does not copy (found by the fuzz
/// target), so such a question is re-encoded first.
fn has_pointer(questions: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&len) = questions.get(at) {
        match len {
            // End of a name; its type and class follow.
            0 => at += 5,
            // A pointer (or a reserved label type): rebuild to be safe.
            l if l & 0xC0 != 0 => return true,
            l => at += 1 + usize::from(l),
        }
    }
    false
}

/// The request's questions encoded afresh from their parsed form.
fn canonical_queries(request: &Request) -> Option<Queries> {
    let mut bytes = Vec::with_capacity(64);
    let mut encoder = BinEncoder::new(&mut bytes);
    for query in request.queries.queries() {
        query.emit(&mut encoder).ok()?;
    }
    Queries::read(&mut BinDecoder::new(&bytes), request.queries.len()).ok()
}

/// A bare error response (no question echoed) for a request header.
pub(crate) fn encode_error(request: &Metadata, rcode: ResponseCode) -> Vec<u8> {
    // Reading zero questions cannot fail.
    let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
        return Vec::new();
    };
    let mut response = MessageResponseBuilder::new(&queries, None).error_msg(request, rcode);
    response.metadata_mut().recursion_available = true;
    let mut bytes = Vec::with_capacity(12);
    let mut encoder = BinEncoder::new(&mut bytes);
    // A 12-byte header always fits.
    let _ = response.destructive_emit(&mut encoder);
    bytes
}

/// Answers queries for one engine: the record table first, then the
/// forwarder.
pub(crate) struct Responder<'a> {
    pub(crate) records: &'a RecordTable,
    pub(crate) forwarder: &'a Forwarder,
    pub(crate) ttl: u32,
    pub(crate) rotation: &'a AtomicUsize,
}

impl Responder<'_> {
    /// Answers `request` for a client that sees `client`.
    pub(crate) fn answer(
        &self,
        request: Box<Request>,
        client: &ClientScopes,
        source: IpAddr,
        protocol: Protocol,
    ) -> Step<impl Future<Output = Vec<u8>> + Send + 'static> {
        let reply = |rcode| Step::Local(encode(&request, protocol, rcode, &[], &[]));
        if request.metadata.op_code != OpCode::Query {
            return reply(ResponseCode::NotImp);
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return reply(ResponseCode::BADVERS);
        }
        let [query] = request.queries.queries() else {
            // Not echoing a question list that is not one question.
            return Step::Local(encode_error(&request.metadata, ResponseCode::FormErr));
        };
        if query.query_class() != DNSClass::IN {
            return reply(ResponseCode::NotImp);
        }
        let owner = query.original().name();
        let qtype = query.query_type();
        let mut buf: KeyBuf = [0; names::MAX_NAME_LEN];
        let key = names::query_key(owner, &mut buf);

        if let Some(records) = self.local(owner, key, qtype, client) {
            return Step::Local(encode(
                &request,
                protocol,
                ResponseCode::NoError,
                &records,
                &[],
            ));
        }

        let policy_name = match key {
            Some(key) => key.to_string(),
            None => owner
                .to_lowercase()
                .to_ascii()
                .trim_end_matches('.')
                .to_string(),
        };
        let asked = PolicyQuery {
            name: &policy_name,
            qtype,
            source,
            scopes: client.scopes(),
        };
        let refused = client
            .policy
            .iter()
            .any(|p| p.check(&asked) == Verdict::Refuse)
            || self.records.any_policy_refuses(client.scopes(), &asked);
        if refused {
            return Step::Refused(encode(&request, protocol, ResponseCode::Refused, &[], &[]));
        }

        if let Some(hit) = self.forwarder.cached(query.name(), qtype) {
            let bytes = encode(
                &request,
                protocol,
                hit.rcode,
                &hit.answers,
                &hit.authorities,
            );
            return Step::Cached(bytes);
        }
        let lookup = self.forwarder.lookup(owner.clone(), qtype);
        Step::Forward(async move {
            match lookup.await {
                Forwarded::Answer {
                    rcode,
                    answers,
                    authorities,
                } => encode(&request, protocol, rcode, &answers, &authorities),
                Forwarded::Failed(reason) => {
                    let name = request
                        .queries
                        .queries()
                        .first()
                        .map(|q| q.name().to_string());
                    debug!(?name, reason, "SERVFAIL");
                    encode(&request, protocol, ResponseCode::ServFail, &[], &[])
                }
            }
        })
    }

    /// The local answer records (possibly none: NODATA), or `None` when the
    /// name is not local and must be forwarded.
    fn local(
        &self,
        owner: &Name,
        key: Option<&str>,
        qtype: RecordType,
        client: &ClientScopes,
    ) -> Option<Vec<Record>> {
        if client.scopes().is_empty() {
            return None;
        }
        if qtype == RecordType::PTR {
            let addr = names::reverse_addr(owner)?;
            let target = self.records.reverse(client.scopes(), addr)?;
            return Some(vec![Record::from_rdata(
                owner.clone(),
                self.ttl,
                RData::PTR(PTR(target)),
            )]);
        }
        let family = match qtype {
            RecordType::A => Family::V4,
            RecordType::AAAA => Family::V6,
            _ => Family::Both,
        };
        let mut addrs = match self.records.lookup(client.scopes(), key?, family) {
            NameLookup::NotLocal => return None,
            NameLookup::NoData => return Some(Vec::new()),
            NameLookup::Found(addrs) => addrs,
        };
        if !matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
            // A local name has no other types: NOERROR without records, as
            // Docker answers MX for its names.
            return Some(Vec::new());
        }
        // Round robin across a scaled service's addresses.
        if addrs.len() > 1 {
            let turn = self.rotation.fetch_add(1, Ordering::Relaxed) % addrs.len();
            addrs.rotate_left(turn);
        }
        let records = addrs
            .into_iter()
            .map(|addr| {
                let data = match addr {
                    IpAddr::V4(a) => RData::A(A(a)),
                    IpAddr::V6(a) => RData::AAAA(AAAA(a)),
                };
                Record::from_rdata(owner.clone(), self.ttl, data)
            })
            .collect();
        Some(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_are_found_in_any_question() {
        // "web." A IN
        let plain = [3, b'w', b'e', b'b', 0, 0, 1, 0, 1];
        assert!(!has_pointer(&plain));
        let mut two = plain.to_vec();
        two.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(has_pointer(&two));
        assert!(has_pointer(&[0x41, 0]));
        assert!(!has_pointer(&[]));
    }
}
