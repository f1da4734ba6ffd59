//! A small JSON writer for the command line's machine-readable output (`client
//! --json`, `stats --json`): one object per line, strings escaped as RFC 8259 asks,
//! bytes that are not UTF-8 as standard base64.

use std::fmt::Write;

/// `s` as a JSON string literal, quotes included: `"`, `\` and every control
/// character escaped; everything else (any Unicode) kept as it is.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Standard base64 (RFC 4648 §4, with `=` padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A JSON object written field by field, in the order given.
#[derive(Debug, Default)]
pub struct Object(String);

impl Object {
    /// An empty object.
    pub fn new() -> Self {
        Object::default()
    }

    fn key(&mut self, key: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        self.0.push_str(&string(key));
        self.0.push(':');
    }

    /// A string field.
    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        self.0.push_str(&string(value));
        self
    }

    /// A string field, or `null`.
    pub fn opt_str(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.raw(key, "null"),
        }
    }

    /// An integer field, or `null`.
    pub fn opt_u64(self, key: &str, value: Option<u64>) -> Self {
        match value {
            Some(v) => self.raw(key, &v.to_string()),
            None => self.raw(key, "null"),
        }
    }

    /// A number field (finite; anything else is written as `null`).
    pub fn num(self, key: &str, value: f64) -> Self {
        if value.is_finite() {
            self.raw(key, &format!("{value}"))
        } else {
            self.raw(key, "null")
        }
    }

    /// A field whose value is already JSON.
    pub fn raw(mut self, key: &str, json: &str) -> Self {
        self.key(key);
        self.0.push_str(json);
        self
    }

    /// Bytes as two fields: `encoding` (`"utf8"` or `"base64"`) and `key`, the text
    /// itself when it is UTF-8, else its base64.
    pub fn bytes(self, key: &str, value: &[u8]) -> Self {
        match std::str::from_utf8(value) {
            Ok(text) => self.str("encoding", "utf8").str(key, text),
            Err(_) => self.str("encoding", "base64").str(key, &base64(value)),
        }
    }

    /// The object's text, `{}` when it has no field.
    pub fn finish(self) -> String {
        if self.0.is_empty() {
            "{}".to_string()
        } else {
            self.0 + "}"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_requires() {
        assert_eq!(string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(string("l1\nl2\r\t"), r#""l1\nl2\r\t""#);
        assert_eq!(string("\u{0}\u{1f}\u{7f}"), r#""\u0000\u001f\u007f""#);
        assert_eq!(string("café ✓"), "\"café ✓\"");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain:?}");
        }
        assert_eq!(base64(b"caf\xe9"), "Y2Fm6Q==");
    }

    #[test]
    fn objects_in_field_order() {
        let o = Object::new()
            .opt_u64("id", Some(1))
            .opt_str("service", None)
            .num("rtt_ms", 1.5)
            .num("nan", f64::NAN)
            .bytes("payload", b"\xff")
            .finish();
        assert_eq!(
            o,
            r#"{"id":1,"service":null,"rtt_ms":1.5,"nan":null,"encoding":"base64","payload":"/w=="}"#
        );
        assert_eq!(Object::new().finish(), "{}");
    }
}
