//! How a response is written into Redis (the shared cache tier, shared idempotency keys): a
//! 4-byte big-endian length, a JSON head of that length, then the body as it is. The head
//! stays readable with redis-cli and can grow fields; the body is not escaped.

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Appends `head` and `body` to `out`.
pub(crate) fn encode<H: Serialize>(head: &H, body: &[u8], out: &mut BytesMut) -> Option<()> {
    let json = serde_json::to_vec(head).ok()?;
    out.reserve(4 + json.len() + body.len());
    out.extend_from_slice(&u32::try_from(json.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(body);
    Some(())
}

/// The head and body of `record`, or `None` if it is not one.
pub(crate) fn decode<H: DeserializeOwned>(record: &[u8]) -> Option<(H, &[u8])> {
    let (len, rest) = record.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    let head = serde_json::from_slice(rest.get(..len)?).ok()?;
    Some((head, rest.get(len..)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_frame_a_head_and_a_body() {
        let mut out = bytes::BytesMut::new();
        super::encode(&("head", 7), b"\x00body\xff", &mut out).unwrap();
        let (head, body): ((String, u32), &[u8]) = super::decode(&out).unwrap();
        assert_eq!(
            (head.0.as_str(), head.1, body),
            ("head", 7, &b"\x00body\xff"[..])
        );
        assert!(super::decode::<(String, u32)>(&out[..6]).is_none());
        assert!(super::decode::<(String, u32)>(b"\xff\xff\xff\xff{}").is_none());
    }
}
