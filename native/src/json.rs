//! A small JSON writer: compact, UTF-8 kept as is, only what JSON requires escaped (as
//! orjson writes), appending to one buffer.

pub struct Writer {
    pub out: Vec<u8>,
    // Per open object or array: whether it has no member yet (no comma before the next).
    empty: Vec<bool>,
    // A member name was just written: the value that follows takes no comma.
    after_key: bool,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Writer {
    pub fn with_capacity(capacity: usize) -> Self {
        Writer { out: Vec::with_capacity(capacity), empty: Vec::with_capacity(8), after_key: false }
    }

    fn separate(&mut self) {
        if self.after_key {
            self.after_key = false;
            return;
        }
        if let Some(empty) = self.empty.last_mut() {
            if *empty {
                *empty = false;
            } else {
                self.out.push(b',');
            }
        }
    }

    /// A member name; its value is written next.
    pub fn key(&mut self, name: &str) {
        self.separate();
        self.string_raw(name);
        self.out.push(b':');
        self.after_key = true;
    }

    pub fn open_object(&mut self) {
        self.separate();
        self.out.push(b'{');
        self.empty.push(true);
    }

    pub fn close_object(&mut self) {
        self.out.push(b'}');
        self.empty.pop();
    }

    pub fn open_array(&mut self) {
        self.separate();
        self.out.push(b'[');
        self.empty.push(true);
    }

    pub fn close_array(&mut self) {
        self.out.push(b']');
        self.empty.pop();
    }

    pub fn string(&mut self, value: &str) {
        self.separate();
        self.string_raw(value);
    }

    pub fn int(&mut self, value: i64) {
        self.separate();
        self.out.extend_from_slice(value.to_string().as_bytes());
    }

    pub fn uint(&mut self, value: u64) {
        self.separate();
        self.out.extend_from_slice(value.to_string().as_bytes());
    }

    /// A finite float, as its shortest round-trip text.
    pub fn float(&mut self, value: f64) {
        self.separate();
        let mut buffer = ryu::Buffer::new();
        self.out.extend_from_slice(buffer.format_finite(value).as_bytes());
    }

    pub fn boolean(&mut self, value: bool) {
        self.separate();
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// Text already in its final form that needs no escaping (base64, hex, times).
    pub fn ascii(&mut self, value: &[u8]) {
        self.separate();
        self.out.push(b'"');
        self.out.extend_from_slice(value);
        self.out.push(b'"');
    }

    fn string_raw(&mut self, value: &str) {
        let out = &mut self.out;
        out.push(b'"');
        let bytes = value.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0x00..=0x1f => b"",
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..i]);
            if escape.is_empty() {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            } else {
                out.extend_from_slice(escape);
            }
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::Writer;

    #[test]
    fn nested_objects_and_arrays() {
        let mut w = Writer::with_capacity(64);
        w.open_object();
        w.key("a");
        w.open_array();
        w.string("x\"y");
        w.int(-3);
        w.close_array();
        w.key("b");
        w.open_object();
        w.key("c");
        w.boolean(true);
        w.close_object();
        w.key("d");
        w.string("\u{1}é");
        w.close_object();
        assert_eq!(
            String::from_utf8(w.out).unwrap(),
            "{\"a\":[\"x\\\"y\",-3],\"b\":{\"c\":true},\"d\":\"\\u0001é\"}"
        );
    }
}
