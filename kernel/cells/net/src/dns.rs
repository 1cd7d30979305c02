//! DNS messages for looking up IPv4 addresses: a query for a name's A records, and the
//! addresses in an answer (over smoltcp's DNS wire types). The lookups themselves go over a UDP
//! socket of the [`crate::Stack`], so any server and port can answer (tests run their own).

use alloc::vec;
use alloc::vec::Vec;
use smoltcp::wire::{
    DnsFlags, DnsOpcode, DnsPacket, DnsQueryType, DnsQuestion, DnsRcode, DnsRecord, DnsRecordData,
    DnsRepr, Ipv4Address,
};

/// Why a lookup failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// Not a name DNS can carry (an empty label, one longer than 63 bytes, 255 bytes in all).
    BadName,
    /// The server says the name does not exist, or it has no IPv4 address.
    NotFound,
    /// The server failed (or refused) the query.
    ServerFailure,
    /// The answer is not a well-formed answer to our query.
    Malformed,
    /// No answer in time.
    TimedOut,
    /// No address (or no DNS server) to ask from.
    NoServer,
}

impl core::fmt::Display for DnsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DnsError::BadName => "not a valid host name",
            DnsError::NotFound => "no such host (or no IPv4 address)",
            DnsError::ServerFailure => "the DNS server failed the query",
            DnsError::Malformed => "a malformed DNS answer",
            DnsError::TimedOut => "no answer from the DNS server",
            DnsError::NoServer => "no DNS server (is the interface configured?)",
        })
    }
}

/// `name` as DNS labels (`www.example.org` → `3www7example3org0`); a trailing dot is allowed.
fn encode_name(name: &str) -> Result<Vec<u8>, DnsError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 || !label.is_ascii() {
            return Err(DnsError::BadName);
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() > 255 {
        return Err(DnsError::BadName);
    }
    Ok(out)
}

/// A recursive query with transaction `id` for the A records of `name`.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, DnsError> {
    let encoded = encode_name(name)?;
    let repr = DnsRepr {
        transaction_id: id,
        opcode: DnsOpcode::Query,
        flags: DnsFlags::RECURSION_DESIRED,
        question: DnsQuestion {
            name: &encoded,
            type_: DnsQueryType::A,
        },
    };
    let mut bytes = vec![0; repr.buffer_len()];
    repr.emit(&mut DnsPacket::new_unchecked(&mut bytes[..]));
    Ok(bytes)
}

/// The IPv4 addresses in `answer`, the response to query `id`. `Ok(None)` if it answers some
/// other query (a late answer to an earlier try): keep waiting.
pub fn addresses(id: u16, answer: &[u8]) -> Result<Option<Vec<Ipv4Address>>, DnsError> {
    let packet = DnsPacket::new_checked(answer).map_err(|_| DnsError::Malformed)?;
    if packet.transaction_id() != id {
        return Ok(None);
    }
    if !packet.flags().contains(DnsFlags::RESPONSE) || packet.opcode() != DnsOpcode::Query {
        return Err(DnsError::Malformed);
    }
    match packet.rcode() {
        DnsRcode::NoError => {}
        DnsRcode::NXDomain => return Err(DnsError::NotFound),
        _ => return Err(DnsError::ServerFailure),
    }
    let mut rest = packet.payload();
    for _ in 0..packet.question_count() {
        rest = DnsQuestion::parse(rest).map_err(|_| DnsError::Malformed)?.0;
    }
    let mut found = Vec::new();
    for _ in 0..packet.answer_record_count() {
        let (after, record): (&[u8], DnsRecord<'_>) =
            DnsRecord::parse(rest).map_err(|_| DnsError::Malformed)?;
        if let DnsRecordData::A(address) = record.data {
            found.push(address);
        }
        rest = after;
    }
    if found.is_empty() {
        return Err(DnsError::NotFound);
    }
    Ok(Some(found))
}

/// An answer to `query` (as a server would send it) with `addresses` as A records, or
/// NXDOMAIN when there are none. For tests, and for anyone serving names on a Keel stack.
pub fn answer(query: &[u8], addresses: &[Ipv4Address]) -> Result<Vec<u8>, DnsError> {
    let packet = DnsPacket::new_checked(query).map_err(|_| DnsError::Malformed)?;
    let (after, _) = DnsQuestion::parse(packet.payload()).map_err(|_| DnsError::Malformed)?;
    let question = &packet.payload()[..packet.payload().len() - after.len()];
    let mut out = Vec::new();
    out.extend_from_slice(&packet.transaction_id().to_be_bytes());
    let rcode: u16 = if addresses.is_empty() { 3 } else { 0 };
    // Response, recursion desired and available, and the code.
    out.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for address in addresses {
        // A pointer to the question's name, type A, class IN, TTL 60, 4 bytes of address.
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        out.extend_from_slice(&address.octets());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_encode_names_as_labels() {
        let q = query(0x1234, "keel.test.").unwrap();
        assert_eq!(&q[0..2], &[0x12, 0x34]);
        assert_eq!(&q[12..], b"\x04keel\x04test\x00\x00\x01\x00\x01");
        assert_eq!(query(1, "a..b"), Err(DnsError::BadName));
        assert_eq!(query(1, &"x".repeat(64)), Err(DnsError::BadName));
        assert_eq!(query(1, ""), Err(DnsError::BadName));
    }

    #[test]
    fn answers_round_trip_and_errors_are_told_apart() {
        let q = query(7, "keel.test").unwrap();
        let ip = Ipv4Address::new(10, 0, 2, 99);
        let a = answer(&q, &[ip]).unwrap();
        assert_eq!(addresses(7, &a), Ok(Some(vec![ip])));
        assert_eq!(addresses(8, &a), Ok(None), "another query's answer");
        let none = answer(&q, &[]).unwrap();
        assert_eq!(addresses(7, &none), Err(DnsError::NotFound));
        assert_eq!(addresses(7, &a[..20]), Err(DnsError::Malformed));
        assert_eq!(
            addresses(7, &q),
            Err(DnsError::Malformed),
            "a query is no answer"
        );
    }
}
