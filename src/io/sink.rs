//! An output file that a durable subscriber writes each message to exactly once, across
//! crashes: `bosun sub --output FILE --data-dir DIR`, or a program that writes what it
//! receives to a file.
//!
//! Writing a message and recording that it was written cannot be one step, so the
//! file's length is recorded with the positions instead ([`OutputRecord`], one store
//! value): a batch is written and synced, then the record of the file's new length and
//! the batch's last sequences is written and flushed. At the next start, bytes past the
//! recorded length were written but never committed: they are cut off, and the
//! subscriber, resuming from the recorded positions ([`FileSink::positions`] for
//! [`crate::io::subscriber::SubscriberBuilder::resume`]), writes those messages again.
//! So the file holds each message once, in order per publisher, whatever the moment the
//! process was killed. (A reader following the file as it grows may have seen the cut
//! lines; the file's content is what is exactly once.)
//!
//! Another file at the path (a rotated log: another device, inode or creation time) is
//! appended to from the recorded positions; the same file shorter than its record was
//! cut by something else, and is refused rather than trusted.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{ConfigError, Error};
use crate::io::{self, Counting};
use crate::proto::subscriber::Message;
use crate::store::{OutputRecord, Store};

/// The output file of a subscriber. See the module docs.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    /// The file's length is `out.written`, counting what is buffered.
    out: Counting<BufWriter<File>>,
    /// With a store: the record of the last commit, kept up to date.
    store: Option<(Store, OutputRecord)>,
    /// The last sequence written, per publisher (committed or not).
    written_through: BTreeMap<Uuid, u64>,
}

impl FileSink {
    /// Opens `path` for appending, creating it. With a store, the file is first cut
    /// back to its length at the last commit (see the module docs), and a store that
    /// never held a record gets one, flushed, with the join boundary set to now.
    /// `format` names how the caller writes its lines (`json`, `lines`): the same file
    /// is not continued in another.
    pub fn open(path: &Path, store: Option<&Store>, format: &str) -> Result<FileSink, Error> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io(format!("open --output {}", path.display()), e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("inspect --output {}", path.display()), e))?;
        let shown = path.display();
        if store.is_some() && !meta.is_file() {
            return Err(ConfigError::Invalid {
                field: "output",
                reason: format!(
                    "{shown} is not a regular file (a pipe or a device): with --data-dir the \
                     file is cut back to its last commit after a crash, which only a regular \
                     file allows; give a file, or leave out --data-dir"
                ),
            }
            .into());
        }
        lock(&file).map_err(|e| {
            let in_use = e.kind() == std::io::ErrorKind::WouldBlock;
            let what = if in_use {
                format!("--output {shown} is being written by another process (it is locked)")
            } else {
                format!("lock --output {shown}")
            };
            Error::io(what, e)
        })?;
        let (dev, ino, mut len) = (meta.dev(), meta.ino(), meta.len());
        let born = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let store = match store {
            None => None,
            Some(store) => {
                let record = match store.output_record()? {
                    Some(r) if (r.dev, r.ino, r.born) == (dev, ino, born) => {
                        if r.format != format {
                            return Err(ConfigError::Invalid {
                                field: "output",
                                reason: format!(
                                    "{shown} holds lines written as {}; this run writes \
                                     them as {format}: give another file (and --data-dir), \
                                     or the same format",
                                    r.format
                                ),
                            }
                            .into());
                        }
                        if len < r.len {
                            return Err(ConfigError::Invalid {
                                field: "output",
                                reason: format!(
                                    "{} holds {len} bytes, but {} bytes of it were recorded \
                                     as written: something else cut it, and lines may be \
                                     missing; move it aside to start a new file",
                                    path.display(),
                                    r.len
                                ),
                            }
                            .into());
                        }
                        if len > r.len {
                            tracing::warn!(
                                "{}: the last {} bytes are past what this subscriber \
                                 committed (written before it was stopped, or appended by \
                                 something else): cut off; the messages not committed are \
                                 written again",
                                path.display(),
                                len - r.len
                            );
                            file.set_len(r.len)
                                .and_then(|()| file.sync_data())
                                .map_err(|e| {
                                    Error::io(format!("cut --output {}", path.display()), e)
                                })?;
                            len = r.len;
                        }
                        r
                    }
                    Some(r) => {
                        tracing::warn!(
                            "{} is not the file this subscriber wrote to last (another \
                             device, inode or creation time: rotated or replaced): appending \
                             to it from the last commit; the previous file may end with \
                             lines written after that commit, which are written here again",
                            path.display()
                        );
                        let r = OutputRecord {
                            dev,
                            ino,
                            born,
                            len,
                            format: format.to_string(),
                            ..r
                        };
                        store.set_output_record(&r)?;
                        store.flush()?;
                        r
                    }
                    None => {
                        let r = OutputRecord {
                            since_ms: io::unix_ms(),
                            dev,
                            ino,
                            born,
                            len,
                            format: format.to_string(),
                            positions: Vec::new(),
                        };
                        store.set_output_record(&r)?;
                        store.flush()?;
                        r
                    }
                };
                Some((store.clone(), record))
            }
        };
        let written_through = store
            .as_ref()
            .map(|(_, r)| r.positions.iter().copied().collect())
            .unwrap_or_default();
        Ok(FileSink {
            path: path.to_path_buf(),
            out: Counting {
                inner: BufWriter::with_capacity(1 << 16, file),
                written: len,
            },
            store,
            written_through,
        })
    }

    /// The last sequence written to the file per publisher, as of the last commit: where
    /// a subscriber writing to it resumes. Empty without a store.
    pub fn positions(&self) -> Vec<(Uuid, u64)> {
        self.store
            .as_ref()
            .map(|(_, r)| r.positions.clone())
            .unwrap_or_default()
    }

    /// The subscriber's join boundary (Unix ms) kept with the file's record: set when
    /// the store first held one. `None` without a store.
    pub fn since_ms(&self) -> Option<u64> {
        self.store.as_ref().map(|(_, r)| r.since_ms)
    }

    /// The file's length, counting what is not yet committed.
    pub fn len(&self) -> u64 {
        self.out.written
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `batch`, just written, as the file's content: flushes and syncs the
    /// file, then (with a store) writes and flushes the record of its length and the
    /// batch's last sequences. Returns the positions committed.
    pub fn commit(&mut self, batch: &[Message]) -> Result<Vec<(Uuid, u64)>, Error> {
        for m in batch {
            let at = self.written_through.entry(m.publisher).or_insert(0);
            *at = (*at).max(m.seq);
        }
        let what = |op: &str| format!("{op} --output {}", self.path.display());
        self.out.flush().map_err(|e| Error::io(what("write"), e))?;
        let Some((store, record)) = &mut self.store else {
            return Ok(Vec::new());
        };
        // Synced before the record says so: a power cut must not leave a record
        // pointing past what the disk holds.
        self.out
            .inner
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io(what("sync"), e))?;
        record.len = self.out.written;
        record.positions = self.written_through.iter().map(|(p, s)| (*p, *s)).collect();
        store.set_output_record(record)?;
        store.flush()?;
        Ok(record.positions.clone())
    }
}

/// Takes an exclusive lock on the output file for the life of the sink (released when
/// the file is closed, also by a crash): two writers would cut each other's lines.
fn lock(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows, valid for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file path of this test's own, removed first.
    fn path(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("bosun-sink-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    fn msg(p: u128, seq: u64) -> Message {
        Message {
            publisher: Uuid::from_u128(p),
            seq,
            topic: Vec::new(),
            payload: vec![format!("{p}:{seq}").into_bytes()],
            published_at_ms: 0,
            redelivered: false,
        }
    }

    /// Writes one line per message of `batch`.
    fn write(sink: &mut FileSink, batch: &[Message]) {
        for m in batch {
            sink.write_all(&m.payload[0]).unwrap();
            sink.write_all(b"\n").unwrap();
        }
    }

    #[test]
    fn what_was_written_but_not_committed_is_cut_off_at_the_next_start() {
        let p = path("cut");
        let store = Store::memory();
        let mut sink = FileSink::open(&p, Some(&store), "lines").unwrap();
        assert!(sink.positions().is_empty());
        let since = sink.since_ms().unwrap();
        let first = [msg(1, 1), msg(1, 2), msg(2, 1)];
        write(&mut sink, &first);
        assert_eq!(
            sink.commit(&first).unwrap(),
            vec![(Uuid::from_u128(1), 2), (Uuid::from_u128(2), 1)]
        );
        write(&mut sink, &[msg(1, 3), msg(2, 2)]);
        sink.flush().unwrap(); // on disk, never committed: a crash here
        let crashed = store.crash_and_reopen().unwrap();
        drop(sink);
        let mut sink = FileSink::open(&p, Some(&crashed), "lines").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"1:1\n1:2\n2:1\n");
        assert_eq!(
            sink.positions(),
            vec![(Uuid::from_u128(1), 2), (Uuid::from_u128(2), 1)]
        );
        assert_eq!(sink.since_ms(), Some(since), "the join boundary is kept");
        let again = [msg(1, 3), msg(2, 2)];
        write(&mut sink, &again);
        sink.commit(&again).unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"1:1\n1:2\n2:1\n1:3\n2:2\n",
            "each once"
        );
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn another_file_at_the_path_is_appended_to_and_a_file_cut_by_another_is_refused() {
        let p = path("rotated");
        let store = Store::memory();
        let mut sink = FileSink::open(&p, Some(&store), "lines").unwrap();
        let batch = [msg(1, 1), msg(1, 2)];
        write(&mut sink, &batch);
        sink.commit(&batch).unwrap();
        drop(sink);
        // Rotated: a new file with a line of someone else's.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"header\n").unwrap();
        let sink = FileSink::open(&p, Some(&store), "lines").unwrap();
        assert_eq!(sink.positions(), vec![(Uuid::from_u128(1), 2)]);
        assert_eq!(std::fs::read(&p).unwrap(), b"header\n", "nothing cut");
        drop(sink);
        // The same file cut shorter than its record.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(3)
            .unwrap();
        let err = FileSink::open(&p, Some(&store), "lines").unwrap_err();
        assert!(err.to_string().contains("something else cut it"), "{err}");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn a_file_written_by_another_sink_or_not_a_regular_file_is_refused() {
        let p = path("locked");
        let store = Store::memory();
        let first = FileSink::open(&p, Some(&store), "lines").unwrap();
        let err = FileSink::open(&p, None, "lines").unwrap_err();
        assert!(
            err.to_string().contains("being written by another"),
            "{err}"
        );
        drop(first);
        FileSink::open(&p, None, "lines").expect("free again once the first is gone");
        let err = FileSink::open(Path::new("/dev/null"), Some(&store), "lines").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        FileSink::open(Path::new("/dev/null"), None, "lines").expect("without a store, any file");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn the_same_file_is_not_continued_in_another_format() {
        let p = path("format");
        let store = Store::memory();
        drop(FileSink::open(&p, Some(&store), "lines").unwrap());
        let err = FileSink::open(&p, Some(&store), "json").unwrap_err();
        assert!(err.to_string().contains("written as lines"), "{err}");
        drop(FileSink::open(&p, Some(&store), "lines").expect("the same format"));
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn without_a_store_the_file_is_only_appended_to() {
        let p = path("plain");
        std::fs::write(&p, b"before\n").unwrap();
        let mut sink = FileSink::open(&p, None, "lines").unwrap();
        assert_eq!((sink.positions(), sink.since_ms()), (Vec::new(), None));
        let batch = [msg(1, 1)];
        write(&mut sink, &batch);
        assert!(sink.commit(&batch).unwrap().is_empty());
        assert_eq!(sink.len(), 11);
        assert_eq!(std::fs::read(&p).unwrap(), b"before\n1:1\n");
        let _ = std::fs::remove_file(&p);
    }
}
