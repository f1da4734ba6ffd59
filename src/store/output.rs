//! Where a durable subscriber's output file stood at its last commit: the file's
//! identity and length, and the last sequence written to it per publisher
//! ([`crate::io::sink::FileSink`] keeps it).
//!
//! The whole position is one value, so one insert writes it: sled persists a prefix of
//! its writes at a crash, and a length written apart from the cursors could survive
//! without them (or the other way round), losing or repeating lines.
//!
//! Layout (tree `output`, key `file`), after the version byte 1:
//!
//! | field | layout |
//! | --- | --- |
//! | since | u64: the subscriber's join boundary, Unix ms |
//! | dev, ino, born | u64 x 3: the file's device, inode and creation time (ns since the Unix epoch, 0 where the file system does not say): its identity, as an inode number is soon reused |
//! | len | u64: the file's length at the commit |
//! | format | bytes: how the lines are written, the writer's word (`json`, `lines`) |
//! | positions | count (4), then per publisher its id (16) and last sequence (8) |

use uuid::Uuid;

use super::codec::{Reader, Writer};
use super::{DecodeError, Store, StoreError};

pub(crate) const TREE: &str = "output";
const KEY: &[u8] = b"file";
const VERSION: u8 = 1;

/// Where an output file stood at its last commit (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputRecord {
    /// The subscriber's join boundary (Unix ms): with no position for a publisher, it
    /// gets what that publisher published since then.
    pub since_ms: u64,
    /// The file's device, with `ino` its identity: another file at the same path (a
    /// rotated log) starts afresh.
    pub dev: u64,
    /// The file's inode.
    pub ino: u64,
    /// The file's creation time, ns since the Unix epoch (0: not known): a file removed
    /// and made again often gets the same inode.
    pub born: u64,
    /// The file's length at the commit: bytes past it were written but never committed.
    pub len: u64,
    /// How the lines are written, in the writer's words (`bosun sub`: `json` or
    /// `lines`): a file is not continued in another format.
    pub format: String,
    /// The last sequence written to the file, per publisher.
    pub positions: Vec<(Uuid, u64)>,
}

impl OutputRecord {
    fn encode(&self) -> Vec<u8> {
        let size = 1 + 8 * 5 + 4 + self.format.len() + 4 + self.positions.len() * 24;
        let mut w = Writer::new(VERSION, size);
        w.u64(self.since_ms);
        w.u64(self.dev);
        w.u64(self.ino);
        w.u64(self.born);
        w.u64(self.len);
        w.bytes(self.format.as_bytes());
        w.u32(u32::try_from(self.positions.len()).unwrap_or(u32::MAX));
        for (p, s) in self.positions.iter().take(u32::MAX as usize) {
            w.raw(p.as_bytes());
            w.u64(*s);
        }
        w.finish()
    }

    fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(value, VERSION)?;
        let since_ms = r.u64("since")?;
        let dev = r.u64("dev")?;
        let ino = r.u64("ino")?;
        let born = r.u64("born")?;
        let len = r.u64("len")?;
        let format = r.text("format")?;
        let n = r.u32("count")?;
        let mut positions = Vec::new();
        for _ in 0..n {
            let id = Uuid::from_bytes(r.array::<16>("publisher id")?);
            positions.push((id, r.u64("sequence")?));
        }
        r.finish()?;
        Ok(OutputRecord {
            since_ms,
            dev,
            ino,
            born,
            len,
            format,
            positions,
        })
    }
}

impl Store {
    /// The output file's record, if one was committed.
    pub fn output_record(&self) -> Result<Option<OutputRecord>, StoreError> {
        let tree = self.tree(TREE)?;
        match tree.get(KEY)? {
            None => Ok(None),
            Some(v) => OutputRecord::decode(&v)
                .map(Some)
                .map_err(|e| tree.corrupt(KEY, e)),
        }
    }

    /// Writes the output file's record (not flushed: see [`Store::flush`]).
    pub fn set_output_record(&self, record: &OutputRecord) -> Result<(), StoreError> {
        self.tree(TREE)?.insert(KEY, record.encode()).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OutputRecord {
        OutputRecord {
            since_ms: 1_700_000_000_000,
            dev: 7,
            ino: 1234,
            born: 1_700_000_000_000_000_123,
            len: 99,
            format: "json".into(),
            positions: vec![
                (Uuid::from_u128(1), 5),
                (Uuid::from_u128(u128::MAX), u64::MAX),
            ],
        }
    }

    #[test]
    fn a_record_reads_back_as_written_and_survives_a_crash_once_flushed() {
        let store = Store::memory();
        assert_eq!(store.output_record().unwrap(), None);
        store.set_output_record(&record()).unwrap();
        assert_eq!(store.output_record().unwrap(), Some(record()));
        let crashed = store.crash_and_reopen().unwrap();
        assert_eq!(crashed.output_record().unwrap(), None, "never flushed");
        store.flush().unwrap();
        let crashed = store.crash_and_reopen().unwrap();
        assert_eq!(crashed.output_record().unwrap(), Some(record()));
    }

    #[test]
    fn every_truncation_of_a_record_is_an_error_never_a_panic() {
        let bytes = record().encode();
        for cut in 0..bytes.len() {
            assert!(OutputRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(OutputRecord::decode(&long).is_err(), "trailing byte");
        let mut huge = bytes;
        huge[1 + 48..1 + 52].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            OutputRecord::decode(&huge).is_err(),
            "a count past the bytes"
        );
    }
}
