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
        Writer {
            out: Vec::with_capacity(capacity),
            empty: Vec::with_capacity(8),
            after_key: false,
        }
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
        if value < 0 {
            self.out.push(b'-');
        }
        self.digits(value.unsigned_abs());
    }

    pub fn uint(&mut self, value: u64) {
        self.separate();
        self.digits(value);
    }

    fn digits(&mut self, mut value: u64) {
        let mut buffer = [0u8; 20];
        let mut at = buffer.len();
        loop {
            at -= 1;
            buffer[at] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&buffer[at..]);
    }

    /// A finite float, as its shortest round-trip text.
    pub fn float(&mut self, value: f64) {
        self.separate();
        let mut buffer = ryu::Buffer::new();
        self.out
            .extend_from_slice(buffer.format_finite(value).as_bytes());
    }

    pub fn boolean(&mut self, value: bool) {
        self.separate();
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// Text already in its final form that needs no escaping (base64, hex, times).
    pub fn ascii(&mut self, value: &[u8]) {
        self.separate();
        self.out.push(b'"');
        self.out.extend_from_slice(value);
        self.out.push(b'"');
    }

    /// Base64 (standard alphabet, padded) of `data` as a string value, encoded straight
    /// into the buffer.
    pub fn base64(&mut self, data: &[u8]) {
        use base64::Engine;
        self.separate();
        self.out.push(b'"');
        let start = self.out.len();
        let size = data.len().div_ceil(3) * 4;
        self.out.resize(start + size, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(data, &mut self.out[start..])
            .expect("buffer sized for the encoding");
        self.out.truncate(start + written);
        self.out.push(b'"');
    }

    /// Lowercase hex of `data` as a string value.
    pub fn hex(&mut self, data: &[u8]) {
        self.separate();
        self.out.push(b'"');
        for b in data {
            self.out.push(HEX[(b >> 4) as usize]);
            self.out.push(HEX[(b & 0xf) as usize]);
        }
        self.out.push(b'"');
    }

    fn string_raw(&mut self, value: &str) {
        let out = &mut self.out;
        out.push(b'"');
        let bytes = value.as_bytes();
        let mut start = 0;
        // Most text needs no escaping: find the next byte that does and copy up to it.
        while let Some(offset) = bytes[start..]
            .iter()
            .position(|&b| NEEDS_ESCAPE[b as usize])
        {
            let i = start + offset;
            out.extend_from_slice(&bytes[start..i]);
            let b = bytes[i];
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                _ => {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(b >> 4) as usize]);
                    out.push(HEX[(b & 0xf) as usize]);
                }
            }
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
        out.push(b'"');
    }
}

// Bytes JSON requires escaped inside a string: controls, the quote and the backslash.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = true;
        i += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

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
        w.key("e");
        w.base64(b"crm-audit");
        w.key("f");
        w.hex(&[0x0f, 0xa0]);
        w.key("g");
        w.uint(u64::MAX);
        w.key("h");
        w.int(i64::MIN);
        w.close_object();
        assert_eq!(
            String::from_utf8(w.out).unwrap(),
            "{\"a\":[\"x\\\"y\",-3],\"b\":{\"c\":true},\"d\":\"\\u0001é\",\
             \"e\":\"Y3JtLWF1ZGl0\",\"f\":\"0fa0\",\"g\":18446744073709551615,\
             \"h\":-9223372036854775808}"
        );
    }
}
