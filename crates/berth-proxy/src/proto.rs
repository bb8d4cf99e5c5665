//! The protobuf wire format, just enough to read, check and rebuild BuildKit's solve requests.
//!
//! Owns: splitting a message into its fields (number, wire type, value), and encoding fields
//! back. Values stay undecoded bytes until a caller asks for a string, a nested message or a
//! `map<string, string>`.
//! Must not: guess. Malformed input (truncated values, overlong varints, groups, field 0) is an
//! error; callers decide which field numbers they understand and refuse the rest.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
}

/// One field's value as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Varint(u64),
    Fixed64(u64),
    Bytes(Vec<u8>),
    Fixed32(u32),
}

/// A message as a list of fields in wire order (repeated fields appear repeatedly).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub fields: Vec<(u32, Value)>,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProtoError> {
    let mut out = 0u64;
    for i in 0..10 {
        let b = *buf
            .get(*pos)
            .ok_or(ProtoError::Malformed("truncated varint"))?;
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(ProtoError::Malformed("varint longer than 64 bits"));
        }
        out |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(ProtoError::Malformed("varint longer than 10 bytes"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], ProtoError> {
    let end = pos
        .checked_add(n)
        .filter(|e| *e <= buf.len())
        .ok_or(ProtoError::Malformed("truncated value"))?;
    let s = &buf[*pos..end];
    *pos = end;
    Ok(s)
}

impl Message {
    pub fn parse(buf: &[u8]) -> Result<Message, ProtoError> {
        let mut pos = 0;
        let mut fields = Vec::new();
        while pos < buf.len() {
            let key = varint(buf, &mut pos)?;
            let number = u32::try_from(key >> 3)
                .ok()
                .filter(|n| *n != 0 && *n < (1 << 29))
                .ok_or(ProtoError::Malformed("bad field number"))?;
            let value = match key & 7 {
                0 => Value::Varint(varint(buf, &mut pos)?),
                1 => Value::Fixed64(u64::from_le_bytes(
                    take(buf, &mut pos, 8)?.try_into().expect("8 bytes"),
                )),
                2 => {
                    let n = usize::try_from(varint(buf, &mut pos)?)
                        .map_err(|_| ProtoError::Malformed("length too large"))?;
                    Value::Bytes(take(buf, &mut pos, n)?.to_vec())
                }
                5 => Value::Fixed32(u32::from_le_bytes(
                    take(buf, &mut pos, 4)?.try_into().expect("4 bytes"),
                )),
                _ => return Err(ProtoError::Malformed("unsupported wire type")),
            };
            fields.push((number, value));
        }
        Ok(Message { fields })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in &self.fields {
            let n = u64::from(*n) << 3;
            match v {
                Value::Varint(x) => {
                    put_varint(&mut out, n);
                    put_varint(&mut out, *x);
                }
                Value::Fixed64(x) => {
                    put_varint(&mut out, n | 1);
                    out.extend_from_slice(&x.to_le_bytes());
                }
                Value::Bytes(b) => {
                    put_varint(&mut out, n | 2);
                    put_varint(&mut out, b.len() as u64);
                    out.extend_from_slice(b);
                }
                Value::Fixed32(x) => {
                    put_varint(&mut out, n | 5);
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        out
    }

    /// Field numbers present, each once.
    pub fn numbers(&self) -> Vec<u32> {
        let mut n: Vec<u32> = self.fields.iter().map(|(n, _)| *n).collect();
        n.sort_unstable();
        n.dedup();
        n
    }

    pub fn has(&self, number: u32) -> bool {
        self.fields.iter().any(|(n, _)| *n == number)
    }

    /// All length-delimited values of a field.
    pub fn bytes(&self, number: u32) -> Result<Vec<&[u8]>, ProtoError> {
        self.fields
            .iter()
            .filter(|(n, _)| *n == number)
            .map(|(_, v)| match v {
                Value::Bytes(b) => Ok(b.as_slice()),
                _ => Err(ProtoError::Malformed("expected a length-delimited field")),
            })
            .collect()
    }

    /// A singular string field: the last occurrence wins, as in protobuf; empty when absent.
    pub fn string(&self, number: u32) -> Result<String, ProtoError> {
        match self.bytes(number)?.last() {
            Some(b) => String::from_utf8(b.to_vec())
                .map_err(|_| ProtoError::Malformed("string is not UTF-8")),
            None => Ok(String::new()),
        }
    }

    /// All strings of a repeated string field.
    pub fn strings(&self, number: u32) -> Result<Vec<String>, ProtoError> {
        self.bytes(number)?
            .into_iter()
            .map(|b| {
                String::from_utf8(b.to_vec())
                    .map_err(|_| ProtoError::Malformed("string is not UTF-8"))
            })
            .collect()
    }

    /// A `map<string, string>` field (entries: key = 1, value = 2; the last duplicate key wins,
    /// as protobuf decoders do).
    pub fn string_map(&self, number: u32) -> Result<BTreeMap<String, String>, ProtoError> {
        let mut out = BTreeMap::new();
        for entry in self.bytes(number)? {
            let e = Message::parse(entry)?;
            if e.numbers().iter().any(|n| *n != 1 && *n != 2) {
                return Err(ProtoError::Malformed("unexpected field in a map entry"));
            }
            out.insert(e.string(1)?, e.string(2)?);
        }
        Ok(out)
    }

    /// Replaces every occurrence of a field with the given values (appended at the end).
    pub fn set(&mut self, number: u32, values: Vec<Value>) {
        self.fields.retain(|(n, _)| *n != number);
        self.fields.extend(values.into_iter().map(|v| (number, v)));
    }

    pub fn set_string(&mut self, number: u32, s: &str) {
        self.set(number, vec![Value::Bytes(s.as_bytes().to_vec())]);
    }

    pub fn set_string_map(&mut self, number: u32, map: &BTreeMap<String, String>) {
        let entries = map
            .iter()
            .map(|(k, v)| {
                let mut e = Message::default();
                e.set_string(1, k);
                e.set_string(2, v);
                Value::Bytes(e.encode())
            })
            .collect();
        self.set(number, entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_maps() {
        let mut m = Message::default();
        m.set_string(1, "ref");
        let mut map = BTreeMap::new();
        map.insert("build-arg:A".to_string(), "1".to_string());
        map.insert("target".to_string(), String::new());
        m.set_string_map(7, &map);
        m.set(9, vec![Value::Varint(300)]);
        let bytes = m.encode();
        let back = Message::parse(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.string(1).unwrap(), "ref");
        assert_eq!(back.string_map(7).unwrap(), map);
        assert_eq!(back.numbers(), vec![1, 7, 9]);
    }

    #[test]
    fn malformed_input_is_refused() {
        for bad in [
            &[0x0a, 0x05, b'a'][..], // truncated bytes
            &[0x08][..],             // truncated varint
            &[0x00, 0x01][..],       // field 0
            &[0x0b][..],             // group start
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ][..],
        ] {
            assert!(Message::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_reencodes_stably(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Ok(m) = Message::parse(&data) {
                let again = Message::parse(&m.encode()).unwrap();
                proptest::prop_assert_eq!(again, m);
            }
        }
    }
}
