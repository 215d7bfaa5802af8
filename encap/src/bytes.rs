//! Bounds-checked fixed-width reads and writes at byte offsets.
//!
//! Views check their length once in `new_checked`; these helpers then make the
//! accessors total without indexing (so no accessor can panic even if a caller
//! built a view with `new_unchecked` over a short buffer: it reads zeros and
//! writes nothing). The compiler removes the checks where the length is known.

#[inline(always)]
pub(crate) fn array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    buf.get(at..at.saturating_add(N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}

#[inline(always)]
pub(crate) fn array_mut<const N: usize>(buf: &mut [u8], at: usize) -> Option<&mut [u8; N]> {
    buf.get_mut(at..at.saturating_add(N))
        .and_then(|s| <&mut [u8; N]>::try_from(s).ok())
}

#[inline(always)]
pub(crate) fn u8_at(buf: &[u8], at: usize) -> u8 {
    buf.get(at).copied().unwrap_or(0)
}

#[inline(always)]
pub(crate) fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(array(buf, at))
}

#[inline(always)]
pub(crate) fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array(buf, at))
}

#[inline(always)]
pub(crate) fn set_u8(buf: &mut [u8], at: usize, v: u8) {
    if let Some(b) = buf.get_mut(at) {
        *b = v;
    }
}

#[inline(always)]
pub(crate) fn set_be16(buf: &mut [u8], at: usize, v: u16) {
    if let Some(a) = array_mut::<2>(buf, at) {
        *a = v.to_be_bytes();
    }
}

#[inline(always)]
pub(crate) fn set_be32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(a) = array_mut::<4>(buf, at) {
        *a = v.to_be_bytes();
    }
}

#[inline(always)]
pub(crate) fn set_array<const N: usize>(buf: &mut [u8], at: usize, v: [u8; N]) {
    if let Some(a) = array_mut::<N>(buf, at) {
        *a = v;
    }
}

/// `buf[from..to]`, or an empty slice if the range is out of bounds.
#[inline(always)]
pub(crate) fn sub(buf: &[u8], from: usize, to: usize) -> &[u8] {
    buf.get(from..to).unwrap_or(&[])
}

/// `&mut buf[from..to]`, or an empty slice if the range is out of bounds.
#[inline(always)]
pub(crate) fn sub_mut(buf: &mut [u8], from: usize, to: usize) -> &mut [u8] {
    buf.get_mut(from..to).unwrap_or(&mut [])
}
