//! State that outlives the daemon: fixed-size records in memory mapped
//! (`MAP_SHARED`) from a file under the run directory, on tmpfs. Writers
//! update the mapping in place, so the file holds the last state when the
//! process dies, however it dies; the next process maps the file back.
//!
//! Nothing in a file is trusted: [`Region::open`] checks the header (magic,
//! kind, layout version, record size and count, the boot, the settings the
//! records depend on, and a checksum) and discards a file that differs,
//! saying why ([`Opened::Discarded`]). Each record carries a sequence word
//! at both ends ([`write`], [`read`]): a record torn by a kill in the middle
//! of an update reads as absent. Decoding a record's body is the owner's
//! job, and it validates every field too.
//!
//! One process maps a file at a time: the file is `flock`ed for the
//! region's life, so a second daemon given the same run directory is
//! refused instead of scribbling over the first one's flows.
// Two `unsafe` blocks: mapping the file (memmap2's `map_mut`) and its flock.
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod header;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, compiler_fence};

use memmap2::MmapMut;

pub use header::{HEADER_LEN, MAX_PARAMS, Mismatch, PARAM_NAME, Spec, check};

/// Where the high-water mark lives: in the header page, after what the
/// checksum covers.
const MARK_AT: usize = 2048;

/// How [`Region::open`] found the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// A file written under the same spec: its records are mapped back.
    Restored,
    /// No file (or an empty one): a fresh, empty region.
    Fresh,
    /// A file that did not match, emptied; the reason names what differed.
    Discarded(Mismatch),
}

/// A mapped state file (or an anonymous mapping, for tests).
#[derive(Debug)]
pub struct Region {
    map: MmapMut,
    record_len: usize,
    records: usize,
    path: Option<PathBuf>,
    /// Holds the file's `flock` while mapped.
    _file: Option<File>,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

impl Region {
    /// Maps `path` for `spec`, creating it if absent. A file that fails
    /// [`check`] is emptied and re-initialised: the result says so, and
    /// why, for the caller to log. Fails if another process has the file
    /// mapped, or on I/O errors (named with the path).
    pub fn open(path: &Path, spec: &Spec) -> io::Result<(Region, Opened)> {
        spec.validate().map_err(invalid)?;
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(named)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(named)?;
        // SAFETY: flock on a descriptor `file` keeps open.
        #[allow(unsafe_code)]
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{}: {e}: another sluice daemon has this state file mapped; \
                     give each daemon its own admin.run_dir",
                    path.display()
                ),
            ));
        }
        let len = file.metadata().map_err(named)?.len();
        let want = spec.file_len() as u64;
        let mut opened = Opened::Fresh;
        if len > 0 {
            let map = map_file(&file).map_err(named)?;
            match check(&map, spec) {
                Ok(()) if len == want => {
                    return Ok((
                        Region {
                            map,
                            record_len: spec.record_len,
                            records: spec.records,
                            path: Some(path.to_path_buf()),
                            _file: Some(file),
                        },
                        Opened::Restored,
                    ));
                }
                Ok(()) => {
                    opened = Opened::Discarded(Mismatch::Short {
                        len: len as usize,
                        need: want as usize,
                    });
                }
                Err(m) => opened = Opened::Discarded(m),
            }
        }
        // Empty it (tmpfs gives back the pages), size it (sparse: pages are
        // allocated as records are first written), then write the header
        // last: a kill before that leaves a file the next open discards.
        file.set_len(0).map_err(named)?;
        file.set_len(want).map_err(named)?;
        let mut map = map_file(&file).map_err(named)?;
        if let Some(h) = map.get_mut(..HEADER_LEN) {
            h.copy_from_slice(&spec.header());
        }
        Ok((
            Region {
                map,
                record_len: spec.record_len,
                records: spec.records,
                path: Some(path.to_path_buf()),
                _file: Some(file),
            },
            opened,
        ))
    }

    /// An empty region in anonymous memory: nothing outlives the process.
    pub fn anonymous(spec: &Spec) -> io::Result<Region> {
        spec.validate().map_err(invalid)?;
        let mut map = MmapMut::map_anon(spec.file_len())?;
        if let Some(h) = map.get_mut(..HEADER_LEN) {
            h.copy_from_slice(&spec.header());
        }
        Ok(Region {
            map,
            record_len: spec.record_len,
            records: spec.records,
            path: None,
            _file: None,
        })
    }

    /// A region holding a copy of `bytes` (a whole file), if they pass
    /// [`check`] for `spec`: what [`Region::open`] maps back, without a
    /// file (the fuzz target's entry point).
    pub fn from_bytes(spec: &Spec, bytes: &[u8]) -> Result<Region, Mismatch> {
        check(bytes, spec)?;
        if spec.validate().is_err() || bytes.len() != spec.file_len() {
            return Err(Mismatch::Short {
                len: bytes.len(),
                need: spec.file_len(),
            });
        }
        let mut r = Region::anonymous(spec).map_err(|_| Mismatch::Short {
            len: bytes.len(),
            need: spec.file_len(),
        })?;
        r.map.copy_from_slice(bytes);
        Ok(r)
    }

    /// The writer's high-water mark: one past the highest record it has
    /// used, so a reader scans only that far (a sparse file's untouched
    /// tail is never faulted in). A hint outside the checksum, updated in
    /// place: readers bound it by the record count, and a wrong one loses
    /// records, never trusts bad ones.
    pub fn mark(&self) -> usize {
        self.map
            .get(MARK_AT..MARK_AT + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
            .min(self.records as u64) as usize
    }

    /// Raises the high-water mark to `n` records (never lowers it).
    pub fn raise_mark(&mut self, n: usize) {
        if n > self.mark()
            && let Some(b) = self.map.get_mut(MARK_AT..MARK_AT + 8)
        {
            b.copy_from_slice(&(n.min(self.records) as u64).to_le_bytes());
        }
    }

    /// The whole mapping: header and records, as a file holds them.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The file it maps, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Records it holds.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Bytes per record.
    pub fn record_len(&self) -> usize {
        self.record_len
    }

    /// Record `i`, whole (sequence words included).
    pub fn record(&self, i: usize) -> Option<&[u8]> {
        let at = HEADER_LEN.checked_add(i.checked_mul(self.record_len)?)?;
        if i >= self.records {
            return None;
        }
        self.map.get(at..at.checked_add(self.record_len)?)
    }

    /// Record `i`, whole, for [`write`] or [`clear`].
    pub fn record_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        let at = HEADER_LEN.checked_add(i.checked_mul(self.record_len)?)?;
        if i >= self.records {
            return None;
        }
        self.map.get_mut(at..at.checked_add(self.record_len)?)
    }

    /// Clears every record.
    pub fn clear_all(&mut self) {
        if let Some(r) = self.map.get_mut(HEADER_LEN..) {
            r.fill(0);
        }
    }
}

fn map_file(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the file is ours, flocked for the mapping's life, and never
    // truncated while mapped (only before mapping, in `open`). Another
    // process ignoring the lock could change the bytes under us: every
    // byte read from the mapping is validated, so that corrupts state, not
    // memory.
    #[allow(unsafe_code)]
    unsafe {
        MmapMut::map_mut(file)
    }
}

fn word(rec: &[u8], at: usize) -> u32 {
    rec.get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_ne_bytes)
}

fn set_word(rec: &mut [u8], at: usize, v: u32) {
    if let Some(b) = rec.get_mut(at..at + 4) {
        b.copy_from_slice(&v.to_ne_bytes());
    }
}

/// The body of a record: between the head and tail sequence words.
pub fn body(rec: &[u8]) -> &[u8] {
    rec.get(4..rec.len().saturating_sub(4)).unwrap_or_default()
}

/// The body of `rec` if it is whole: both sequence words equal and not
/// zero (zero: empty). A record torn by a kill mid-[`write`] reads `None`.
pub fn read(rec: &[u8]) -> Option<&[u8]> {
    let head = word(rec, 0);
    (rec.len() >= 8 && head != 0 && head == word(rec, rec.len() - 4)).then(|| body(rec))
}

/// Whether `rec` was torn by a kill mid-[`write`] (as opposed to whole,
/// or empty).
pub fn torn(rec: &[u8]) -> bool {
    rec.len() >= 8 && word(rec, 0) != word(rec, rec.len() - 4)
}

/// Updates `rec`'s body with `f`: the head word moves to the next sequence
/// number first, the tail word last, so a process killed in between leaves
/// a record that [`read`] rejects. The words are ordered for the compiler
/// only: the reader is a later process, after this one's stores have all
/// reached memory (a process dies between instructions, in program order).
pub fn write(rec: &mut [u8], f: impl FnOnce(&mut [u8])) {
    if rec.len() < 8 {
        return;
    }
    let tail = rec.len() - 4;
    let s = match word(rec, 0).wrapping_add(1) {
        0 => 1,
        s => s,
    };
    set_word(rec, 0, s);
    compiler_fence(Ordering::Release);
    if let Some(b) = rec.get_mut(4..tail) {
        f(b);
    }
    compiler_fence(Ordering::Release);
    set_word(rec, tail, s);
}

/// Empties `rec` (it reads as absent).
pub fn clear(rec: &mut [u8]) {
    if rec.len() < 8 {
        return;
    }
    let tail = rec.len() - 4;
    set_word(rec, 0, 0);
    compiler_fence(Ordering::Release);
    set_word(rec, tail, 0);
}

/// The boot this machine is in (`/proc/sys/kernel/random/boot_id`, 16
/// bytes): the epoch of monotonic time. All zero if unreadable.
pub fn boot_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let hex: Vec<u8> = s
            .trim()
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|c| match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => c.to_ascii_lowercase().wrapping_sub(b'a' - 10),
            })
            .collect();
        for (d, pair) in id.iter_mut().zip(hex.chunks(2)) {
            if let [hi, lo] = pair {
                *d = hi << 4 | lo;
            }
        }
    }
    id
}

#[cfg(test)]
mod tests;
