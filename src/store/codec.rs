//! The small binary layout every stored record uses: a version byte, then fixed-width
//! big-endian integers and length-prefixed byte strings. No serde: the layout is part of
//! the on-disk format and is written down next to each record type.
//!
//! | item | layout |
//! | --- | --- |
//! | integer | big-endian, 1, 4 or 8 bytes |
//! | bytes | length (4) then the bytes |
//! | optional bytes | flag (1: 0 absent, 1 present), then bytes when present |
//! | frames | count (4) then each frame as bytes |
//!
//! [`Reader`] checks every length against what is left before it allocates, so a record
//! claiming 4 GiB costs nothing, and reports trailing bytes: a decoder either returns
//! exactly what was written or a [`DecodeError`], never a panic.

use super::DecodeError;

/// Builds one record.
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    /// A record of `capacity` bytes (its exact size, so no reallocation), starting with
    /// `version`.
    pub(crate) fn new(version: u8, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        out.push(version);
        Writer(out)
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    /// Bytes of a fixed width, with no length (the reader knows it).
    pub(crate) fn raw(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    /// Length (4) and bytes. Lengths past `u32::MAX` cannot be written; every caller
    /// stores frames that a bosun peer already bounded to 64 MiB.
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u32(len32(v.len()));
        self.0.extend_from_slice(v);
    }

    pub(crate) fn opt_bytes(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.bytes(v);
            }
        }
    }

    pub(crate) fn frames(&mut self, frames: &[Vec<u8>]) {
        self.u32(len32(frames.len()));
        for f in frames {
            self.bytes(f);
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// A length as the 4-byte field. Saturates rather than wraps: a record that large would
/// be refused by the length check of its decoder instead of read wrongly.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The encoded size of `frames` (count and each length-prefixed frame).
pub(crate) fn frames_size(frames: &[Vec<u8>]) -> usize {
    4 + frames.iter().map(|f| 4 + f.len()).sum::<usize>()
}

/// The encoded size of optional bytes.
pub(crate) fn opt_bytes_size(v: Option<&[u8]>) -> usize {
    1 + v.map_or(0, |v| 4 + v.len())
}

/// Reads one record, never out of range.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Reads the version byte and checks it is `version`.
    pub(crate) fn new(buf: &'a [u8], version: u8) -> Result<Self, DecodeError> {
        let mut r = Reader { buf, at: 0 };
        let found = r.u8("version")?;
        if found != version {
            return Err(DecodeError::new(format!(
                "record version {found}, expected {version}"
            )));
        }
        Ok(r)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let left = self.buf.len() - self.at;
        if n > left {
            return Err(DecodeError::new(format!(
                "truncated: {what} needs {n} bytes at offset {}, {left} left",
                self.at
            )));
        }
        let out = &self.buf[self.at..self.at + n]; // in range: n <= left, checked above
        self.at += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0]) // `take(1)` returned exactly one byte
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn bytes(&mut self, what: &str) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32(what)? as usize;
        Ok(self.take(n, what)?.to_vec())
    }

    pub(crate) fn text(&mut self, what: &str) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes(what)?)
            .map_err(|_| DecodeError::new(format!("{what} is not UTF-8")))
    }

    pub(crate) fn opt_bytes(&mut self, what: &str) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => self.bytes(what).map(Some),
            other => Err(DecodeError::new(format!(
                "{what}: presence flag {other}, expected 0 or 1"
            ))),
        }
    }

    pub(crate) fn frames(&mut self, what: &str) -> Result<Vec<Vec<u8>>, DecodeError> {
        let count = self.u32(what)? as usize;
        // Every frame takes at least its 4-byte length: a count beyond that is a lie,
        // refused before anything is allocated for it.
        let left = self.buf.len() - self.at;
        if count > left / 4 {
            return Err(DecodeError::new(format!(
                "{what}: {count} frames cannot fit in the {left} bytes left"
            )));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.bytes(what)?);
        }
        Ok(out)
    }

    /// Checks that the whole record was read.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        let extra = self.buf.len() - self.at;
        if extra != 0 {
            return Err(DecodeError::new(format!(
                "{extra} trailing bytes after the record"
            )));
        }
        Ok(())
    }
}

/// A 16-byte key as an id, or why not.
pub(crate) fn id_key(key: &[u8]) -> Result<uuid::Uuid, DecodeError> {
    let bytes: [u8; 16] = key
        .try_into()
        .map_err(|_| DecodeError::new(format!("key of {} bytes, expected 16", key.len())))?;
    Ok(uuid::Uuid::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_every_item() {
        let frames = vec![b"a".to_vec(), vec![], vec![0xff; 300]];
        let mut w = Writer::new(7, 0);
        w.u8(9);
        w.u32(0xdead_beef);
        w.u64(u64::MAX - 1);
        w.bytes(b"xyz");
        w.opt_bytes(None);
        w.opt_bytes(Some(b"svc"));
        w.frames(&frames);
        let buf = w.finish();
        assert_eq!(
            buf.len(),
            1 + 1
                + 4
                + 8
                + 7
                + opt_bytes_size(None)
                + opt_bytes_size(Some(b"svc"))
                + frames_size(&frames)
        );
        let mut r = Reader::new(&buf, 7).unwrap();
        assert_eq!(r.u8("a").unwrap(), 9);
        assert_eq!(r.u32("b").unwrap(), 0xdead_beef);
        assert_eq!(r.u64("c").unwrap(), u64::MAX - 1);
        assert_eq!(r.bytes("d").unwrap(), b"xyz");
        assert_eq!(r.opt_bytes("e").unwrap(), None);
        assert_eq!(r.opt_bytes("f").unwrap(), Some(b"svc".to_vec()));
        assert_eq!(r.frames("g").unwrap(), frames);
        r.finish().unwrap();
    }

    #[test]
    fn lies_and_leftovers_are_errors() {
        assert!(Reader::new(&[], 1).is_err());
        assert!(Reader::new(&[2], 1).is_err());
        // 4 billion frames announced in 4 bytes.
        let mut r = Reader::new(&[1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], 1).unwrap();
        assert!(r.frames("payload").is_err());
        // 4 GiB of bytes announced.
        let mut r = Reader::new(&[1, 0xff, 0xff, 0xff, 0xff], 1).unwrap();
        assert!(r.bytes("payload").is_err());
        let mut r = Reader::new(&[1, 2], 1).unwrap();
        assert!(r.opt_bytes("service").is_err());
        let r = Reader::new(&[1, 0], 1).unwrap();
        assert!(r.finish().is_err());
        assert!(id_key(&[0; 15]).is_err());
        assert_eq!(id_key(&[0; 16]).unwrap(), uuid::Uuid::nil());
    }
}
