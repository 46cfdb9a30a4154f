//! Records as the reducer takes them: the AT Protocol data model's JSON form, where a CID link
//! is `{"$link": "<cid>"}` and bytes are `{"$bytes": "<base64, no padding>"}`.

use base64::Engine;
use ipld_core::ipld::Ipld;
use serde_json::{json, Map, Value};

use crate::car::DecodeError;
use crate::limits::MAX_RECORD_DEPTH;

/// Checks, without recursion, that CBOR `bytes` nest no deeper than [`MAX_RECORD_DEPTH`] (the
/// decoders recurse, so a hostile input must not reach them first).
pub fn check_nesting(bytes: &[u8]) -> Result<(), DecodeError> {
    let bad = |m: &str| DecodeError::Malformed { what: "CBOR", message: m.to_string() };
    // Items still to read at each open level.
    let mut open: Vec<u64> = vec![u64::MAX];
    let mut at = 0usize;
    while at < bytes.len() {
        let top = open.last_mut().ok_or_else(|| bad("unbalanced"))?;
        if *top == 0 {
            open.pop();
            continue;
        }
        *top = top.saturating_sub(1);
        let initial = bytes[at];
        at += 1;
        let (major, info) = (initial >> 5, initial & 0x1f);
        let arg = match info {
            0..=23 => info as u64,
            24..=27 => {
                let n = 1usize << (info - 24);
                let b = bytes.get(at..at + n).ok_or_else(|| bad("truncated"))?;
                at += n;
                b.iter().fold(0u64, |a, x| (a << 8) | *x as u64)
            }
            // DAG-CBOR forbids indefinite lengths.
            _ => return Err(bad("indefinite or reserved length")),
        };
        match major {
            2 | 3 => {
                let len = usize::try_from(arg).map_err(|_| bad("length"))?;
                at = at.checked_add(len).filter(|&e| e <= bytes.len()).ok_or_else(|| bad("truncated"))?;
            }
            4..=6 => {
                let items = match major {
                    4 => arg,
                    5 => arg.checked_mul(2).ok_or_else(|| bad("length"))?,
                    _ => 1,
                };
                if open.len() > MAX_RECORD_DEPTH {
                    return Err(bad("nested too deep"));
                }
                open.push(items);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Decodes one DAG-CBOR block into the data model's JSON form.
pub fn record_json(block: &[u8]) -> Result<Value, DecodeError> {
    check_nesting(block)?;
    let ipld: Ipld = serde_ipld_dagcbor::from_slice(block)
        .map_err(|e| DecodeError::Malformed { what: "record", message: e.to_string() })?;
    to_json(&ipld, 0)
}

/// An IPLD value in the data model's JSON form.
pub fn to_json(v: &Ipld, depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_RECORD_DEPTH {
        return Err(DecodeError::Malformed {
            what: "record",
            message: format!("nested deeper than {MAX_RECORD_DEPTH}"),
        });
    }
    Ok(match v {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => json!(b),
        Ipld::Integer(i) => match i64::try_from(*i) {
            Ok(i) => json!(i),
            Err(_) => {
                return Err(DecodeError::Malformed { what: "record", message: "an integer outside 64 bits".into() })
            }
        },
        // The data model has no floats; DAG-CBOR may still carry one.
        Ipld::Float(f) => json!(f),
        Ipld::String(s) => json!(s),
        Ipld::Bytes(b) => json!({ "$bytes": base64::engine::general_purpose::STANDARD_NO_PAD.encode(b) }),
        Ipld::List(items) => Value::Array(items.iter().map(|i| to_json(i, depth + 1)).collect::<Result<_, _>>()?),
        Ipld::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(k.clone(), to_json(v, depth + 1)?);
            }
            Value::Object(out)
        }
        Ipld::Link(cid) => json!({ "$link": cid.to_string() }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn links_and_bytes_take_the_data_model_json_form() {
        let cid: cid::Cid = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm".parse().unwrap();
        let record = Ipld::Map(BTreeMap::from([
            ("$type".to_string(), Ipld::String("app.forum.post".into())),
            ("text".to_string(), Ipld::String("hello".into())),
            ("ref".to_string(), Ipld::Link(cid)),
            ("sig".to_string(), Ipld::Bytes(vec![1, 2, 3, 4])),
            ("n".to_string(), Ipld::List(vec![Ipld::Integer(1), Ipld::Null])),
        ]));
        let block = serde_ipld_dagcbor::to_vec(&record).unwrap();
        let v = record_json(&block).unwrap();
        assert_eq!(v["ref"], json!({"$link": cid.to_string()}));
        assert_eq!(v["sig"], json!({"$bytes": "AQIDBA"}));
        assert_eq!(v["n"], json!([1, null]));
        assert_eq!(v["$type"], "app.forum.post");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut v = Ipld::Null;
        for _ in 0..(MAX_RECORD_DEPTH + 2) {
            v = Ipld::List(vec![v]);
        }
        assert!(to_json(&v, 0).is_err());
    }
}
