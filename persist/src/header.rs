//! The header at the front of every state file: what the records are, who
//! wrote them and under which settings, behind a checksum. A file whose
//! header does not match what the reader expects, field by field, is
//! discarded; [`check`] says which field and why.

use std::fmt;

/// Bytes reserved for the header: records start on the next page.
pub const HEADER_LEN: usize = 4096;

const MAGIC: [u8; 8] = *b"SLUICEST";
/// Parameters a header carries at most.
pub const MAX_PARAMS: usize = 16;
/// Longest parameter name, in bytes.
pub const PARAM_NAME: usize = 24;
const KIND_LEN: usize = 16;
const PARAMS_AT: usize = 64;
const PARAM_LEN: usize = PARAM_NAME + 8;
const SUM_AT: usize = PARAMS_AT + MAX_PARAMS * PARAM_LEN;

/// What a reader expects a state file to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// What the records are (`conntrack`, `affinity`): at most 16 bytes.
    pub kind: &'static str,
    /// The record layout's version: a daemon that changes the layout bumps
    /// it, and files written by the other version are discarded.
    pub version: u32,
    /// Bytes per record (at least 8: a sequence word at each end).
    pub record_len: usize,
    /// Records in the file.
    pub records: usize,
    /// The boot the file's timestamps belong to
    /// (`/proc/sys/kernel/random/boot_id`): monotonic time restarts at
    /// boot, so a file from another boot is discarded.
    pub epoch: [u8; 16],
    /// Settings the records depend on (the SNAT address, the worker's slice
    /// of ports): a file written under other values is discarded, naming
    /// the setting. At most [`MAX_PARAMS`], names at most [`PARAM_NAME`]
    /// bytes.
    pub params: Vec<(&'static str, u64)>,
}

/// Why a file is not trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// Shorter than its header and records.
    Short {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Not a Sluice state file (or a torn header).
    Magic,
    /// The header's checksum does not match: torn or corrupted.
    Checksum,
    /// A field differs from what this daemon expects.
    Field {
        /// Which field (`version`, `kind`, `boot`, a parameter's name).
        name: String,
        /// What the file says.
        found: String,
        /// What this daemon expects.
        want: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Short { len, need } => {
                write!(f, "{len} bytes where the layout needs {need} (truncated)")
            }
            Mismatch::Magic => f.write_str("not a sluice state file (bad magic)"),
            Mismatch::Checksum => f.write_str("header checksum mismatch (torn or corrupted)"),
            Mismatch::Field { name, found, want } => {
                write!(f, "{name} is {found} in the file, {want} now")
            }
        }
    }
}

/// FNV-1a, 64-bit: enough to catch a torn or scribbled header.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn put(h: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = h.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

fn u32_at(h: &[u8], at: usize) -> u32 {
    h.get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(h: &[u8], at: usize) -> u64 {
    h.get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut b = [0u8; N];
    for (d, s) in b.iter_mut().zip(s.bytes()) {
        *d = s;
    }
    b
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap_or_default()).into_owned()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Spec {
    /// File length: header and records.
    pub fn file_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.record_len.saturating_mul(self.records))
    }

    /// Whether the spec itself is usable; the error names what is not.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind.is_empty() || self.kind.len() > KIND_LEN {
            return Err(format!("kind {:?}: 1 to {KIND_LEN} bytes", self.kind));
        }
        if self.record_len < 8 {
            return Err(format!("record_len {}: at least 8", self.record_len));
        }
        if self.params.len() > MAX_PARAMS {
            return Err(format!(
                "{} params: at most {MAX_PARAMS}",
                self.params.len()
            ));
        }
        if let Some((n, _)) = self
            .params
            .iter()
            .find(|(n, _)| n.is_empty() || n.len() > PARAM_NAME)
        {
            return Err(format!("param {n:?}: 1 to {PARAM_NAME} bytes"));
        }
        Ok(())
    }

    /// The header for this spec.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        put(&mut h, 0, &MAGIC);
        put(&mut h, 8, &padded::<KIND_LEN>(self.kind));
        put(&mut h, 24, &self.version.to_le_bytes());
        put(&mut h, 28, &(self.record_len as u32).to_le_bytes());
        put(&mut h, 32, &(self.records as u64).to_le_bytes());
        put(&mut h, 40, &self.epoch);
        put(&mut h, 56, &(self.params.len() as u32).to_le_bytes());
        for (i, (name, v)) in self.params.iter().take(MAX_PARAMS).enumerate() {
            let at = PARAMS_AT + i * PARAM_LEN;
            put(&mut h, at, &padded::<PARAM_NAME>(name));
            put(&mut h, at + PARAM_NAME, &v.to_le_bytes());
        }
        let sum = fnv(h.get(..SUM_AT).unwrap_or_default());
        put(&mut h, SUM_AT, &sum.to_le_bytes());
        h
    }
}

/// Checks a whole file's bytes against `spec`: its length, then its
/// header, field by field. Arbitrary bytes are rejected, never trusted.
pub fn check(file: &[u8], spec: &Spec) -> Result<(), Mismatch> {
    let need = spec.file_len();
    let h = file.get(..HEADER_LEN).ok_or(Mismatch::Short {
        len: file.len(),
        need,
    })?;
    if h.get(..8) != Some(&MAGIC[..]) {
        return Err(Mismatch::Magic);
    }
    if u64_at(h, SUM_AT) != fnv(h.get(..SUM_AT).unwrap_or_default()) {
        return Err(Mismatch::Checksum);
    }
    let field = |name: &str, found: String, want: String| {
        if found == want {
            Ok(())
        } else {
            Err(Mismatch::Field {
                name: name.to_string(),
                found,
                want,
            })
        }
    };
    field(
        "kind",
        text(h.get(8..24).unwrap_or_default()),
        spec.kind.to_string(),
    )?;
    field(
        "version",
        u32_at(h, 24).to_string(),
        spec.version.to_string(),
    )?;
    field(
        "record_len",
        u32_at(h, 28).to_string(),
        spec.record_len.to_string(),
    )?;
    field(
        "records",
        u64_at(h, 32).to_string(),
        spec.records.to_string(),
    )?;
    field(
        "boot",
        hex(h.get(40..56).unwrap_or_default()),
        hex(&spec.epoch),
    )?;
    let n = u32_at(h, 56) as usize;
    let found: Vec<(String, u64)> = (0..n.min(MAX_PARAMS))
        .map(|i| {
            let at = PARAMS_AT + i * PARAM_LEN;
            (
                text(h.get(at..at + PARAM_NAME).unwrap_or_default()),
                u64_at(h, at + PARAM_NAME),
            )
        })
        .collect();
    for (name, want) in &spec.params {
        let got = found.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        field(
            name,
            got.map_or("absent".into(), |v| v.to_string()),
            want.to_string(),
        )?;
    }
    if let Some((name, v)) = found
        .iter()
        .find(|(n, _)| !spec.params.iter().any(|(s, _)| s == n))
    {
        field(name, v.to_string(), "absent".into())?;
    }
    if file.len() < need {
        return Err(Mismatch::Short {
            len: file.len(),
            need,
        });
    }
    Ok(())
}
