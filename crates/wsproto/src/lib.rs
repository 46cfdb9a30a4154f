//! # epoch-wsproto
//!
//! Client messages of SpacetimeDB 1.3's WebSocket protocol (v1): BSATN from binary frames, JSON
//! from text frames (whatever protocol was negotiated, as 1.3 decides by frame type). A crate of
//! its own so the fuzzer can reach the decoder without the server around it.
//!
//! Not for: server messages (`epoch_api::ws::encode`) or the connection itself.

use epoch_sats::bsatn::{DecodeError, Reader};
use serde_json::Value;

/// A decoded client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    CallReducer { reducer: String, args: Args, request_id: u32, notify_success: bool },
    Subscribe { queries: Vec<String>, request_id: u32 },
    OneOffQuery { message_id: Vec<u8>, query: String },
    SubscribeSingle { query: String, request_id: u32, query_id: u32 },
    SubscribeMulti { queries: Vec<String>, request_id: u32, query_id: u32 },
    Unsubscribe { request_id: u32, query_id: u32 },
    UnsubscribeMulti { request_id: u32, query_id: u32 },
}

/// Reducer arguments as they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    Bsatn(Vec<u8>),
    Json(String),
}

/// Why a frame could not be decoded (the connection is closed with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("invalid BSATN message: {0}")]
    Bsatn(#[from] DecodeError),
    #[error("unknown client message tag {0}")]
    UnknownTag(u8),
    #[error("invalid call reducer flag {0}")]
    BadFlag(u8),
    #[error("invalid JSON message: {0}")]
    Json(String),
}

/// `CallReducerFlags::FullUpdate`: the caller always hears of its call.
const FULL_UPDATE: u8 = 0;
/// `CallReducerFlags::NoSuccessNotify`: the caller hears of a success only through its queries.
const NO_SUCCESS_NOTIFY: u8 = 1;

fn flag(f: u8) -> Result<bool, MessageError> {
    match f {
        FULL_UPDATE => Ok(true),
        NO_SUCCESS_NOTIFY => Ok(false),
        other => Err(MessageError::BadFlag(other)),
    }
}

/// Decodes a binary frame.
pub fn from_bsatn(bytes: &[u8]) -> Result<ClientMessage, MessageError> {
    let mut r = Reader::new(bytes);
    let strings = |r: &mut Reader<'_>| r.vec(|r| r.str().map(str::to_string));
    let msg = match r.u8()? {
        0 => ClientMessage::CallReducer {
            reducer: r.str()?.to_string(),
            args: {
                let n = r.len_prefix(1)?;
                Args::Bsatn(r.take(n)?.to_vec())
            },
            request_id: r.u32()?,
            notify_success: flag(r.u8()?)?,
        },
        1 => ClientMessage::Subscribe { queries: strings(&mut r)?, request_id: r.u32()? },
        2 => ClientMessage::OneOffQuery {
            message_id: {
                let n = r.len_prefix(1)?;
                r.take(n)?.to_vec()
            },
            query: r.str()?.to_string(),
        },
        3 => ClientMessage::SubscribeSingle { query: r.str()?.to_string(), request_id: r.u32()?, query_id: r.u32()? },
        4 => ClientMessage::SubscribeMulti { queries: strings(&mut r)?, request_id: r.u32()?, query_id: r.u32()? },
        5 => ClientMessage::Unsubscribe { request_id: r.u32()?, query_id: r.u32()? },
        6 => ClientMessage::UnsubscribeMulti { request_id: r.u32()?, query_id: r.u32()? },
        tag => return Err(MessageError::UnknownTag(tag)),
    };
    r.finish()?;
    Ok(msg)
}

const VARIANTS: [&str; 7] =
    ["CallReducer", "Subscribe", "OneOffQuery", "SubscribeSingle", "SubscribeMulti", "Unsubscribe", "UnsubscribeMulti"];

/// Decodes a text frame: a sum as `{"Variant": payload}` (or the tag as key, or `[tag, payload]`),
/// structs as objects or positional arrays, as 1.3's SATS-JSON reader accepts them.
pub fn from_json(text: &str) -> Result<ClientMessage, MessageError> {
    let err = |m: &str| MessageError::Json(m.to_string());
    let v: Value = serde_json::from_str(text).map_err(|e| MessageError::Json(e.to_string()))?;
    let (tag, payload) = sum(&v, &VARIANTS).ok_or_else(|| err("expected a client message variant"))?;
    let fields: &[&str] = match tag {
        0 => &["reducer", "args", "request_id", "flags"],
        1 => &["query_strings", "request_id"],
        2 => &["message_id", "query_string"],
        3 => &["query", "request_id", "query_id"],
        4 => &["query_strings", "request_id", "query_id"],
        5 | 6 => &["request_id", "query_id"],
        _ => return Err(err("unknown variant")),
    };
    let f =
        Fields::new(payload, fields).ok_or_else(|| err("expected an object or an array of the message's fields"))?;
    let msg = match tag {
        0 => ClientMessage::CallReducer {
            reducer: f.string(0)?,
            args: Args::Json(f.string(1)?),
            request_id: f.u32(2)?,
            notify_success: flag(u8::try_from(f.u64(3)?).map_err(|_| err("invalid flags"))?)?,
        },
        1 => ClientMessage::Subscribe { queries: f.strings(0)?, request_id: f.u32(1)? },
        2 => ClientMessage::OneOffQuery { message_id: f.bytes(0)?, query: f.string(1)? },
        3 => ClientMessage::SubscribeSingle { query: f.string(0)?, request_id: f.u32(1)?, query_id: f.query_id(2)? },
        4 => ClientMessage::SubscribeMulti { queries: f.strings(0)?, request_id: f.u32(1)?, query_id: f.query_id(2)? },
        5 => ClientMessage::Unsubscribe { request_id: f.u32(0)?, query_id: f.query_id(1)? },
        _ => ClientMessage::UnsubscribeMulti { request_id: f.u32(0)?, query_id: f.query_id(1)? },
    };
    Ok(msg)
}

/// A SATS-JSON sum: its tag and payload.
fn sum<'v>(v: &'v Value, names: &[&str]) -> Option<(usize, &'v Value)> {
    match v {
        Value::Object(m) if m.len() == 1 => {
            let (k, payload) = m.iter().next()?;
            let tag = names.iter().position(|n| n == k).or_else(|| k.parse::<usize>().ok())?;
            (tag < names.len()).then_some((tag, payload))
        }
        Value::Array(a) if a.len() == 2 => {
            let tag = a[0].as_u64()? as usize;
            (tag < names.len()).then_some((tag, &a[1]))
        }
        _ => None,
    }
}

/// A struct's fields by position, from an object (by name) or an array.
struct Fields<'v> {
    values: Vec<Option<&'v Value>>,
    names: &'static [&'static str],
}

impl<'v> Fields<'v> {
    fn new(v: &'v Value, names: &'static [&'static str]) -> Option<Self> {
        let values = match v {
            Value::Object(m) => names.iter().map(|n| m.get(*n)).collect(),
            Value::Array(a) => (0..names.len()).map(|i| a.get(i)).collect(),
            _ => return None,
        };
        Some(Self { values, names })
    }

    fn get(&self, i: usize) -> Result<&'v Value, MessageError> {
        self.values[i].ok_or_else(|| MessageError::Json(format!("missing field `{}`", self.names[i])))
    }

    fn bad(&self, i: usize, what: &str) -> MessageError {
        MessageError::Json(format!("field `{}`: expected {what}", self.names[i]))
    }

    fn string(&self, i: usize) -> Result<String, MessageError> {
        self.get(i)?.as_str().map(str::to_string).ok_or_else(|| self.bad(i, "a string"))
    }

    fn u64(&self, i: usize) -> Result<u64, MessageError> {
        self.get(i)?.as_u64().ok_or_else(|| self.bad(i, "an unsigned integer"))
    }

    fn u32(&self, i: usize) -> Result<u32, MessageError> {
        u32::try_from(self.u64(i)?).map_err(|_| self.bad(i, "a u32"))
    }

    /// `QueryId { id }`: `{"id": n}`, `[n]`, or a bare number.
    fn query_id(&self, i: usize) -> Result<u32, MessageError> {
        let v = self.get(i)?;
        let n = match v {
            Value::Object(m) => m.get("id").and_then(Value::as_u64),
            Value::Array(a) if a.len() == 1 => a[0].as_u64(),
            other => other.as_u64(),
        };
        n.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| self.bad(i, "a query id"))
    }

    fn strings(&self, i: usize) -> Result<Vec<String>, MessageError> {
        let a = self.get(i)?.as_array().ok_or_else(|| self.bad(i, "an array of strings"))?;
        a.iter().map(|s| s.as_str().map(str::to_string).ok_or_else(|| self.bad(i, "an array of strings"))).collect()
    }

    /// Bytes: a hex string or an array of numbers.
    fn bytes(&self, i: usize) -> Result<Vec<u8>, MessageError> {
        match self.get(i)? {
            Value::String(s) => hex::decode(s).map_err(|_| self.bad(i, "hex bytes")),
            Value::Array(a) => a
                .iter()
                .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()).ok_or_else(|| self.bad(i, "bytes")))
                .collect(),
            _ => Err(self.bad(i, "bytes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsatn_call_reducer_and_bad_flags() {
        let mut b = vec![0u8];
        epoch_sats::bsatn::write::str(&mut b, "send");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&[1, 2, 3]);
        b.extend_from_slice(&7u32.to_le_bytes());
        b.push(1);
        assert_eq!(
            from_bsatn(&b).unwrap(),
            ClientMessage::CallReducer {
                reducer: "send".into(),
                args: Args::Bsatn(vec![1, 2, 3]),
                request_id: 7,
                notify_success: false
            }
        );
        *b.last_mut().unwrap() = 2;
        assert_eq!(from_bsatn(&b).unwrap_err().to_string(), "invalid call reducer flag 2");
        b.push(0);
        assert!(from_bsatn(&b).is_err(), "trailing bytes are refused");
        assert_eq!(from_bsatn(&[9]).unwrap_err(), MessageError::UnknownTag(9));
    }

    #[test]
    fn json_forms() {
        let m = from_json(r#"{"SubscribeSingle":{"query":"SELECT * FROM t","request_id":1,"query_id":{"id":4}}}"#);
        assert_eq!(
            m.unwrap(),
            ClientMessage::SubscribeSingle { query: "SELECT * FROM t".into(), request_id: 1, query_id: 4 }
        );
        let m = from_json(r#"[1, [["SELECT * FROM t"], 2]]"#).unwrap();
        assert_eq!(m, ClientMessage::Subscribe { queries: vec!["SELECT * FROM t".into()], request_id: 2 });
        let m = from_json(r#"{"2":{"message_id":"0a0b","query_string":"SELECT * FROM t"}}"#).unwrap();
        assert_eq!(m, ClientMessage::OneOffQuery { message_id: vec![10, 11], query: "SELECT * FROM t".into() });
        assert!(from_json(r#"{"Nope":{}}"#).is_err());
        assert!(from_json(r#"{"Unsubscribe":{"request_id":1}}"#).unwrap_err().to_string().contains("query_id"));
    }
}
