//! A refused input record goes to the dead-letter topic inside the same transaction as the
//! batch it came in, unchanged, with why and where from in headers. The partition moves on.

use crate::domain::validate::Invalid;
use rdkafka::message::{Header, Message, OwnedHeaders};

pub const HEADER_REASON: &str = "helpgrid.dlq.reason";
pub const HEADER_KIND: &str = "helpgrid.dlq.kind";
pub const HEADER_TOPIC: &str = "helpgrid.dlq.origin.topic";
pub const HEADER_PARTITION: &str = "helpgrid.dlq.origin.partition";
pub const HEADER_OFFSET: &str = "helpgrid.dlq.origin.offset";

/// A record to write to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: OwnedHeaders,
    pub kind: &'static str,
    pub origin_topic: String,
}

pub fn dead_letter(message: &impl Message, invalid: &Invalid) -> DeadLetter {
    let reason = invalid.to_string();
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: HEADER_REASON,
            value: Some(reason.as_str()),
        })
        .insert(Header {
            key: HEADER_KIND,
            value: Some(invalid.kind()),
        })
        .insert(Header {
            key: HEADER_TOPIC,
            value: Some(message.topic()),
        })
        .insert(Header {
            key: HEADER_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: HEADER_OFFSET,
            value: Some(offset.as_str()),
        });
    DeadLetter {
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers,
        kind: invalid.kind(),
        origin_topic: message.topic().to_owned(),
    }
}
