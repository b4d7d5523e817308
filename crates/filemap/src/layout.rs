//! The object record that filemap keeps in every object file on Linux.
//!
//! An object file is laid out as
//!
//! ```text
//! offset 0                  data_len                 data_len + name_area
//! | the object's data ...   | the name (long names)  | record (4096 bytes)  |
//! ```
//!
//! The data starts at offset 0, so another language can map a mapping's bytes as they are.
//! `data_len` is the data size rounded up to 4096. The name area is empty, except for a
//! name whose file name is hashed (see [`Name`](crate::Name)): it then holds the part of
//! the name after the prefix, in UTF-8, and is `name_len` rounded up to 4096 bytes. The
//! record, always the last 4096 bytes, holds the kind, the exact size that the creator asked
//! for and the flags, in little-endian fixed-width fields:
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 8    | magic `b"FILEMAP\0"`                    |
//! | 8      | 4    | layout version (1)                      |
//! | 12     | 4    | kind: 1 mapping, 2 mutex, 3 semaphore, 4 event, 5 stream, 6 broadcast, 7 latest, 8 request-reply |
//! | 16     | 4    | flags: 1 persistent, 2 file-backed      |
//! | 20     | 4    | pid of the creator                      |
//! | 24     | 8    | size: the exact size seen by openers    |
//! | 32     | 8    | `data_len`                              |
//! | 40     | 8    | creation time, nanoseconds since 1970   |
//! | 48     | 4    | `name_len`: the stored name's length in bytes, 0 if none |
//!
//! The rest of the record is zero. It is written before the file gets its name, so no
//! opener ever sees a file without it.

// Linux keeps every field of the record, Windows only the size (its kernel does the
// rest), and other targets have no backend yet.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::fmt;

/// The kinds of object that share the one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A file mapping (shared memory, or a mapped file with a name).
    Mapping,
    /// A named mutex.
    Mutex,
    /// A named semaphore.
    Semaphore,
    /// A named event.
    Event,
    /// A stream channel: one producer, one consumer, byte messages in a ring.
    Stream,
    /// A broadcast channel: one publisher, many subscribers that each read every message.
    Broadcast,
    /// A latest-value channel: one writer, readers that get the latest whole value.
    Latest,
    /// A request/reply channel: clients that send requests, one server that answers.
    RequestReply,
}

impl Kind {
    pub(crate) fn code(self) -> u32 {
        match self {
            Kind::Mapping => 1,
            Kind::Mutex => 2,
            Kind::Semaphore => 3,
            Kind::Event => 4,
            Kind::Stream => 5,
            Kind::Broadcast => 6,
            Kind::Latest => 7,
            Kind::RequestReply => 8,
        }
    }

    pub(crate) fn from_code(code: u32) -> Option<Kind> {
        Some(match code {
            1 => Kind::Mapping,
            2 => Kind::Mutex,
            3 => Kind::Semaphore,
            4 => Kind::Event,
            5 => Kind::Stream,
            6 => Kind::Broadcast,
            7 => Kind::Latest,
            8 => Kind::RequestReply,
            _ => return None,
        })
    }

    /// The lower-case word for the kind, as used in messages and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mapping => "mapping",
            Kind::Mutex => "mutex",
            Kind::Semaphore => "semaphore",
            Kind::Event => "event",
            Kind::Stream => "stream",
            Kind::Broadcast => "broadcast",
            Kind::Latest => "latest",
            Kind::RequestReply => "request-reply",
        }
    }
}

impl Kind {
    /// The word with its indefinite article: "a mapping", "an event".
    pub(crate) fn with_article(self) -> String {
        match self {
            Kind::Event => "an event".to_owned(),
            k => format!("a {k}"),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The size of the record at the end of every object file.
pub(crate) const RECORD_LEN: u64 = 4096;
/// The alignment of the data area; also the size unit of the record.
pub(crate) const DATA_ALIGN: u64 = 4096;

const MAGIC: [u8; 8] = *b"FILEMAP\0";
const VERSION: u32 = 1;
/// The number of meaningful bytes at the start of the record.
pub(crate) const RECORD_USED: usize = 52;

/// The longest stored name: every UTF-16 code unit of the longest name takes at most three
/// bytes of UTF-8.
pub(crate) const MAX_STORED_NAME: usize = 3 * crate::Name::MAX_LEN;

pub(crate) const FLAG_PERSISTENT: u32 = 1;
pub(crate) const FLAG_FILE_BACKED: u32 = 2;

/// The decoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) kind: Kind,
    pub(crate) flags: u32,
    pub(crate) creator_pid: u32,
    pub(crate) size: u64,
    pub(crate) data_len: u64,
    pub(crate) created_ns: u64,
    /// The length of the name stored after the data, for a hashed file name; else 0.
    pub(crate) name_len: u32,
}

impl Record {
    pub(crate) fn persistent(&self) -> bool {
        self.flags & FLAG_PERSISTENT != 0
    }

    pub(crate) fn file_backed(&self) -> bool {
        self.flags & FLAG_FILE_BACKED != 0
    }

    /// The size of the area that holds a stored name of `name_len` bytes.
    pub(crate) fn name_area_for(name_len: u32) -> u64 {
        u64::from(name_len).div_ceil(DATA_ALIGN) * DATA_ALIGN
    }

    /// The length of the whole file: data, stored name and record.
    pub(crate) fn file_len(&self) -> Option<u64> {
        self.data_len
            .checked_add(Record::name_area_for(self.name_len))?
            .checked_add(RECORD_LEN)
    }

    /// The data length for `size` bytes of data: `size` rounded up to [`DATA_ALIGN`].
    pub(crate) fn data_len_for(size: u64) -> Option<u64> {
        size.checked_add(DATA_ALIGN - 1)
            .map(|n| n & !(DATA_ALIGN - 1))
    }

    pub(crate) fn encode(&self) -> [u8; RECORD_USED] {
        let mut b = [0u8; RECORD_USED];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.kind.code().to_le_bytes());
        b[16..20].copy_from_slice(&self.flags.to_le_bytes());
        b[20..24].copy_from_slice(&self.creator_pid.to_le_bytes());
        b[24..32].copy_from_slice(&self.size.to_le_bytes());
        b[32..40].copy_from_slice(&self.data_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.created_ns.to_le_bytes());
        b[48..52].copy_from_slice(&self.name_len.to_le_bytes());
        b
    }

    /// Decodes and checks a record read from a file of `file_len` bytes.
    pub(crate) fn decode(b: &[u8; RECORD_USED], file_len: u64) -> Result<Record, String> {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        if b[0..8] != MAGIC {
            return Err("no filemap record at its end".into());
        }
        if u32_at(8) != VERSION {
            return Err(format!("unknown layout version {}", u32_at(8)));
        }
        let kind =
            Kind::from_code(u32_at(12)).ok_or_else(|| format!("unknown kind {}", u32_at(12)))?;
        let rec = Record {
            kind,
            flags: u32_at(16),
            creator_pid: u32_at(20),
            size: u64_at(24),
            data_len: u64_at(32),
            created_ns: u64_at(40),
            name_len: u32_at(48),
        };
        if rec.name_len as usize > MAX_STORED_NAME {
            return Err(format!(
                "its stored name of {} bytes is too long",
                rec.name_len
            ));
        }
        if rec.file_len() != Some(file_len) || rec.data_len % DATA_ALIGN != 0 {
            return Err(format!(
                "its length is {file_len} bytes but its record says {}: it was truncated or resized",
                rec.file_len().unwrap_or(u64::MAX)
            ));
        }
        if !rec.file_backed()
            && (rec.size == 0 || Record::data_len_for(rec.size) != Some(rec.data_len))
        {
            return Err(format!(
                "its size {} does not match its data length {}",
                rec.size, rec.data_len
            ));
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_checks() {
        let rec = Record {
            kind: Kind::Mapping,
            flags: FLAG_PERSISTENT,
            creator_pid: 42,
            size: 65536,
            data_len: 65536,
            created_ns: 7,
            name_len: 0,
        };
        let bytes = rec.encode();
        assert_eq!(Record::decode(&bytes, 65536 + RECORD_LEN), Ok(rec));
        // A peer that truncated the file is caught.
        assert!(Record::decode(&bytes, 4096 + RECORD_LEN).is_err());
        let mut bad = bytes;
        bad[0] = b'X';
        assert!(Record::decode(&bad, 65536 + RECORD_LEN).is_err());
        let mut bad = bytes;
        bad[12] = 9;
        assert!(Record::decode(&bad, 65536 + RECORD_LEN).is_err());
        assert_eq!(Record::data_len_for(1), Some(4096));
        assert_eq!(Record::data_len_for(4096), Some(4096));
        assert_eq!(Record::data_len_for(u64::MAX), None);
        // A stored name sits between data and record, in whole pages.
        let named = Record {
            name_len: 5000,
            ..rec
        };
        let bytes = named.encode();
        assert_eq!(Record::decode(&bytes, 65536 + 8192 + RECORD_LEN), Ok(named));
        assert!(Record::decode(&bytes, 65536 + RECORD_LEN).is_err());
        // A planted record cannot make a reader allocate gigabytes for a name.
        let huge = Record {
            name_len: u32::MAX,
            ..rec
        };
        let len = huge.file_len().unwrap();
        assert!(Record::decode(&huge.encode(), len).is_err());
    }
}
