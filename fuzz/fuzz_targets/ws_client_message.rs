//! WebSocket client messages (protocol v1), as the server decodes every frame a client sends:
//! BSATN from binary frames, JSON from text frames. Never panics and never allocates past the
//! input's means; a decoded BSATN message, encoded again by hand, decodes to the same message.
//!
//! Input: byte 0's low bit picks the frame type (even: binary, odd: text); the rest is the frame.
#![no_main]

use epoch_wsproto::{from_bsatn, from_json, Args, ClientMessage};
use libfuzzer_sys::fuzz_target;

fn str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn strings(out: &mut Vec<u8>, v: &[String]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for s in v {
        str(out, s);
    }
}

/// The BSATN of `m`, written from the layout (not by the decoder's code).
fn encode(m: &ClientMessage) -> Option<Vec<u8>> {
    let mut b = Vec::new();
    match m {
        ClientMessage::CallReducer { reducer, args: Args::Bsatn(a), request_id, notify_success } => {
            b.push(0);
            str(&mut b, reducer);
            b.extend_from_slice(&(a.len() as u32).to_le_bytes());
            b.extend_from_slice(a);
            b.extend_from_slice(&request_id.to_le_bytes());
            b.push(if *notify_success { 0 } else { 1 });
        }
        ClientMessage::CallReducer { args: Args::Json(_), .. } => return None,
        ClientMessage::Subscribe { queries, request_id } => {
            b.push(1);
            strings(&mut b, queries);
            b.extend_from_slice(&request_id.to_le_bytes());
        }
        ClientMessage::OneOffQuery { message_id, query } => {
            b.push(2);
            b.extend_from_slice(&(message_id.len() as u32).to_le_bytes());
            b.extend_from_slice(message_id);
            str(&mut b, query);
        }
        ClientMessage::SubscribeSingle { query, request_id, query_id } => {
            b.push(3);
            str(&mut b, query);
            b.extend_from_slice(&request_id.to_le_bytes());
            b.extend_from_slice(&query_id.to_le_bytes());
        }
        ClientMessage::SubscribeMulti { queries, request_id, query_id } => {
            b.push(4);
            strings(&mut b, queries);
            b.extend_from_slice(&request_id.to_le_bytes());
            b.extend_from_slice(&query_id.to_le_bytes());
        }
        ClientMessage::Unsubscribe { request_id, query_id }
        | ClientMessage::UnsubscribeMulti { request_id, query_id } => {
            b.push(if matches!(m, ClientMessage::Unsubscribe { .. }) { 5 } else { 6 });
            b.extend_from_slice(&request_id.to_le_bytes());
            b.extend_from_slice(&query_id.to_le_bytes());
        }
    }
    Some(b)
}

fuzz_target!(|data: &[u8]| {
    let [kind, frame @ ..] = data else { return };
    if kind & 1 == 0 {
        if let Ok(m) = from_bsatn(frame) {
            let again = encode(&m).expect("binary frames carry BSATN arguments");
            assert_eq!(again, frame, "a decoded message is exactly its bytes");
            assert_eq!(from_bsatn(&again).unwrap(), m);
        }
    } else if let Ok(text) = std::str::from_utf8(frame) {
        let _ = from_json(text);
    }
});
