//! The clean-close record: how a store that lost writes while it was closed is told from
//! one that is whole.
//!
//! sled reads a database file cut short or overwritten in places as a crash would have
//! left it: it may open it with some entries missing, and say nothing. After a crash that
//! is expected (unflushed writes are lost); after a clean close it means damage. So a
//! clean close records, in the `meta` tree, how many clean closes the store has had, then
//! flushes, then writes the same number and each tree's entry count to
//! [`STATE_FILE`] beside the database (atomically: a temporary file renamed over it).
//! Opening compares them, and then marks the file `open`, so that a crash leaves
//! `open` and the next start trusts sled's recovery as it must.
//!
//! What this catches: a store closed cleanly and damaged since (a truncated copy, a disk
//! that lost a tail). What it cannot: damage after a crash (sled's recovery and the damage
//! look alike), and damage that keeps every count and the close number.
//!
//! The file is also bosun's marker: it is written (`open`) when a store is created,
//! before sled makes its files, and a directory that holds files but not this one is
//! not opened at all (see the store's module docs).
//!
//! The file is text: `bosun-state 1` then `open`, or
//! `closed N outbox=A dedup=B dead_letters=C cursors=D`. An unreadable file means
//! "cannot verify", never "damaged": a store is refused as damaged only on evidence.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// The clean-close record's file, in the data directory.
pub(crate) const STATE_FILE: &str = "bosun.state";
const TMP_FILE: &str = "bosun.state.tmp";
const HEADER: &str = "bosun-state 1";

/// Whether `name` is one of the files bosun keeps beside sled's.
pub(crate) fn is_ours(name: &str) -> bool {
    name == STATE_FILE || name == TMP_FILE
}

/// What the state file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DirState {
    /// The store is open, or was when its process died.
    Open,
    /// Closed cleanly for the `closes`-th time, with these trees of these sizes.
    Closed {
        closes: u64,
        counts: Vec<(String, usize)>,
    },
}

/// The state recorded in `dir`, or `None` when there is none or it cannot be read.
pub(crate) fn read(dir: &Path) -> Option<DirState> {
    parse(&fs::read_to_string(dir.join(STATE_FILE)).ok()?)
}

/// Records `state` in `dir`, durably and atomically.
pub(crate) fn write(dir: &Path, state: &DirState) -> io::Result<()> {
    let tmp = dir.join(TMP_FILE);
    let mut file = File::create(&tmp)?;
    file.write_all(render(state).as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(STATE_FILE))?;
    // The rename itself is durable once the directory is.
    File::open(dir)?.sync_all()
}

fn render(state: &DirState) -> String {
    match state {
        DirState::Open => format!("{HEADER}\nopen\n"),
        DirState::Closed { closes, counts } => {
            let counts: Vec<String> = counts.iter().map(|(t, n)| format!("{t}={n}")).collect();
            format!("{HEADER}\nclosed {closes} {}\n", counts.join(" "))
        }
    }
}

fn parse(text: &str) -> Option<DirState> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut words = lines.next()?.split(' ');
    match words.next()? {
        "open" => Some(DirState::Open),
        "closed" => {
            let closes = words.next()?.parse().ok()?;
            let counts = words
                .map(|w| {
                    let (tree, n) = w.split_once('=')?;
                    Some((tree.to_string(), n.parse().ok()?))
                })
                .collect::<Option<Vec<_>>>()?;
            Some(DirState::Closed { closes, counts })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_anything_else_is_unknown() {
        let closed = DirState::Closed {
            closes: 3,
            counts: vec![("outbox".into(), 12), ("dedup".into(), 0)],
        };
        for s in [DirState::Open, closed] {
            assert_eq!(parse(&render(&s)), Some(s));
        }
        for bad in [
            "",
            "bosun-state 2\nopen\n",
            "bosun-state 1\n",
            "bosun-state 1\nclosed x\n",
            "bosun-state 1\nclosed 3 outbox\n",
            "bosun-state 1\nclosed 3 outbox=-1\n",
            "bosun-state 1\nshut\n",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
