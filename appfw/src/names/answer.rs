//! A DNS message -> the (address, name, TTL) triples its answers give.
//!
//! Parsing is hickory-proto's: appfw reads none of the wire format itself.
//! Only responses count. An address record is named after the question
//! when a CNAME chain in the answer leads from the question to it (the
//! name the program asked for), else after its own owner name.

use std::net::IpAddr;

use hickory_proto::{
    op::{Message, MessageType},
    rr::{Name, RData},
};

use appfw_common::dns::{PROTO_TCP, PROTO_UDP};

/// What a message received over `proto` says; `None` when it is no DNS
/// response that can be read whole (malformed, cut, or a TCP segment that
/// does not start a message or does not hold all of it).
pub fn addresses(proto: u8, data: &[u8]) -> Option<Vec<(IpAddr, String, u32)>> {
    let message = match proto {
        PROTO_UDP => data,
        PROTO_TCP => {
            let (len, rest) = data.split_first_chunk::<2>()?;
            rest.get(..usize::from(u16::from_be_bytes(*len)))?
        }
        _ => return None,
    };
    let m = Message::from_vec(message).ok()?;
    if m.metadata.message_type != MessageType::Response {
        return None;
    }
    let question = m.queries.first().map(|q| q.name().clone());
    // The work per message is bounded whatever it holds (a sender may
    // craft messages to stall the verdict thread): a real answer has a
    // short CNAME chain and a few addresses.
    let aliases: Vec<(&Name, &Name)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some((&c.0, &r.name)),
            _ => None,
        })
        .take(MAX_CNAMES)
        .collect();
    let mut out = Vec::new();
    for r in &m.answers {
        let addr = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        if out.len() >= MAX_ADDRESSES {
            break;
        }
        let name = asked_for(&aliases, &r.name, question.as_ref());
        if let Some(text) = display(name) {
            out.push((addr, text, r.ttl));
        }
    }
    Some(out)
}

/// CNAME records of a message that are followed.
const MAX_CNAMES: usize = 16;
/// CNAMEs followed from one address record back to the question.
const MAX_HOPS: usize = 8;
/// Address records of a message that are learned.
const MAX_ADDRESSES: usize = 32;

/// Follows `aliases` (target, owner) back from `owner` towards the
/// question, at most [`MAX_HOPS`] steps, so a CNAME loop ends.
fn asked_for<'a>(
    aliases: &[(&Name, &'a Name)],
    owner: &'a Name,
    question: Option<&Name>,
) -> &'a Name {
    let mut name = owner;
    for _ in 0..MAX_HOPS {
        if question.is_some_and(|q| q.eq_case(name) || q == name) {
            break;
        }
        let Some(alias) = aliases.iter().find(|(target, _)| *target == name) else {
            break;
        };
        name = alias.1;
    }
    name
}

/// The name in lower case, without the root's dot; `None` for the root.
/// Other bytes than letters, digits, '-' and '_' are left out of reports
/// by the escaping of report lines, not here.
fn display(name: &Name) -> Option<String> {
    let text = name.to_lowercase().to_ascii();
    let text = text.trim_end_matches('.');
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::{
        op::{Message, Query},
        rr::{rdata, Record, RecordType},
    };
    use std::str::FromStr;

    fn response(question: &str, answers: Vec<Record>) -> Vec<u8> {
        let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(
            Name::from_str(question).unwrap(),
            RecordType::A,
        ));
        for a in answers {
            m.add_answer(a);
        }
        m.to_vec().unwrap()
    }

    /// A response to `name` with one A record.
    pub(crate) fn response_for(name: &str, ip: [u8; 4]) -> Vec<u8> {
        response(name, vec![a(name, ip, 60)])
    }

    fn a(name: &str, ip: [u8; 4], ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_str(name).unwrap(),
            ttl,
            RData::A(rdata::A::from(std::net::Ipv4Addr::from(ip))),
        )
    }

    fn cname(name: &str, target: &str) -> Record {
        Record::from_rdata(
            Name::from_str(name).unwrap(),
            30,
            RData::CNAME(rdata::CNAME(Name::from_str(target).unwrap())),
        )
    }

    #[test]
    fn answers_give_addresses_named_by_the_question() {
        let wire = response(
            "WWW.Test.Example.",
            vec![
                cname("www.test.example.", "edge.cdn.example."),
                a("edge.cdn.example.", [198, 51, 100, 2], 300),
            ],
        );
        let got = addresses(PROTO_UDP, &wire).unwrap();
        assert_eq!(
            got,
            vec![(
                "198.51.100.2".parse().unwrap(),
                "www.test.example".to_owned(),
                300
            )]
        );
        // Over TCP, with the length in front.
        let mut tcp = (wire.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&wire);
        assert_eq!(addresses(PROTO_TCP, &tcp).unwrap(), got);
        // A TCP segment that holds only part of the message: nothing.
        assert_eq!(addresses(PROTO_TCP, &tcp[..tcp.len() - 1]), None);
    }

    #[test]
    fn queries_and_garbage_give_nothing() {
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_str("test.example.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(addresses(PROTO_UDP, &q.to_vec().unwrap()), None);
        assert_eq!(addresses(PROTO_UDP, &[0u8; 5]), None);
        let wire = response(
            "test.example.",
            vec![a("test.example.", [198, 51, 100, 2], 1)],
        );
        for cut in 12..wire.len() {
            // Truncated anywhere: no panic, and no half-read records.
            let _ = addresses(PROTO_UDP, &wire[..cut]);
        }
    }

    #[test]
    fn compression_loops_end() {
        // Header: a response, 1 question, 1 answer; the question's name
        // is a pointer to itself (offset 12).
        let mut wire = vec![0, 7, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        wire.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        wire.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 51, 100, 2]);
        assert_eq!(addresses(PROTO_UDP, &wire), None);
        // A CNAME loop in the answers ends too.
        let wire = response(
            "a.example.",
            vec![
                cname("a.example.", "b.example."),
                cname("b.example.", "a.example."),
                a("c.example.", [198, 51, 100, 3], 9),
            ],
        );
        let got = addresses(PROTO_UDP, &wire).unwrap();
        assert_eq!(
            got,
            vec![("198.51.100.3".parse().unwrap(), "c.example".to_owned(), 9)]
        );
    }
}
