//! Packet buffers: fixed-size, owned by the worker, reused forever.
//!
//! A [`Buf`] holds one frame with [`HEADROOM`] bytes free in front of it, so
//! the pipeline can put an Ethernet header in front of a TUN packet and the
//! 50-byte VXLAN header in front of that without moving the frame. Buffers
//! move between the worker's pool, the RX burst and the TX queues by value
//! (a pointer move): nothing is allocated per packet.
//!
//! A worker with ports that move super-packets (offloading TUN pods, the
//! offload uplink's TAP) also holds a few *big* buffers ([`Buf::big`]): a
//! pod's TSO burst or a peer's UDP-tunnel GSO burst is read into one and
//! crosses the pipeline whole, its segmentation described by [`Gso`], so
//! its headers are handled once and its payload is never cut and merged
//! again in userspace.

/// Bytes of a buffer.
pub const BUF_SIZE: usize = 2048;

/// Free bytes kept in front of a received frame: an inner Ethernet header
/// (14) plus VXLAN's 50, rounded up to a cache line.
pub const HEADROOM: usize = 128;

/// Largest frame a buffer holds after its headroom.
pub const MAX_FRAME: usize = BUF_SIZE - HEADROOM;

/// Bytes of a big buffer: the headroom, then a 64 KiB IP packet behind an
/// Ethernet header (a super-packet read from a TAP) and a virtio-net
/// header read with it.
pub const BIG_BUF_SIZE: usize = HEADROOM + 65_536 + 64;

/// How a super-packet is cut into segments (by the kernel that receives
/// it, or by the worker for a port that takes no super-packets): a TCP
/// over IPv4 burst, as `SKB_GSO_TCPV4` describes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    /// Payload bytes per segment (the MSS).
    pub size: u16,
    /// The TCP packet is inside VXLAN (outer Ethernet, IPv4, UDP, VXLAN,
    /// inner Ethernet), as `SKB_GSO_UDP_TUNNEL` describes one.
    pub tunnel: bool,
}

/// One packet buffer. It belongs to the worker that allocated it: a buffer
/// handed to another worker goes back to its owner's pool after use, so
/// pools never drift between workers.
pub struct Buf {
    data: Box<[u8]>,
    start: usize,
    len: usize,
    owner: u8,
    gso: Option<Gso>,
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buf")
            .field("owner", &self.owner)
            .field("start", &self.start)
            .field("len", &self.len)
            .field("gso", &self.gso)
            .finish()
    }
}

impl Default for Buf {
    fn default() -> Self {
        Buf::new()
    }
}

impl Buf {
    /// An empty buffer (allocates: call at start-up, not per packet).
    pub fn new() -> Buf {
        Buf::owned_by(0)
    }

    /// An empty buffer of worker `owner`.
    pub fn owned_by(owner: u8) -> Buf {
        Buf::sized(owner, BUF_SIZE)
    }

    /// An empty big buffer ([`BIG_BUF_SIZE`]) of worker `owner`, for a
    /// super-packet (allocates: call at start-up, not per packet).
    pub fn big(owner: u8) -> Buf {
        Buf::sized(owner, BIG_BUF_SIZE)
    }

    fn sized(owner: u8, size: usize) -> Buf {
        Buf {
            data: vec![0; size].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
            owner,
            gso: None,
        }
    }

    /// Whether this is a big buffer (room for a super-packet).
    pub fn is_big(&self) -> bool {
        self.data.len() > BUF_SIZE
    }

    /// How the frame is cut into segments, if it is a super-packet.
    pub fn gso(&self) -> Option<Gso> {
        self.gso
    }

    /// Marks the frame a super-packet cut as `gso` says (or not).
    pub fn set_gso(&mut self, gso: Option<Gso>) {
        self.gso = gso;
    }

    /// The worker whose pool this buffer belongs to.
    pub fn owner(&self) -> u8 {
        self.owner
    }

    /// Empties the buffer and returns the whole room after the headroom, for
    /// a port to receive into; then call [`Buf::set_len`].
    pub fn rx_room(&mut self) -> &mut [u8] {
        self.start = HEADROOM;
        self.len = 0;
        self.gso = None;
        self.data.get_mut(HEADROOM..).unwrap_or_default()
    }

    /// The whole room after the headroom, read-only (what
    /// [`Buf::rx_room`] hands out, without emptying the buffer).
    pub fn room(&self) -> &[u8] {
        self.data.get(HEADROOM..).unwrap_or_default()
    }

    /// Exchanges the frames (bytes, start, length and [`Gso`]) of two
    /// buffers by moving pointers; each keeps its owner, so pools do not
    /// drift. Both must be the same size ([`Buf::is_big`]), so a pool's
    /// big buffers stay big.
    pub fn swap_frame(&mut self, other: &mut Buf) {
        debug_assert_eq!(self.data.len(), other.data.len());
        std::mem::swap(&mut self.data, &mut other.data);
        std::mem::swap(&mut self.start, &mut other.start);
        std::mem::swap(&mut self.len, &mut other.len);
        std::mem::swap(&mut self.gso, &mut other.gso);
    }

    /// Sets the frame length after receiving into [`Buf::rx_room`]
    /// (clamped to the room).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.data.len().saturating_sub(self.start));
    }

    /// Replaces the content with `frame` (truncated to the room:
    /// [`MAX_FRAME`] bytes, or 64 KiB in a big buffer).
    pub fn fill(&mut self, frame: &[u8]) {
        let n = frame.len().min(self.data.len() - HEADROOM);
        let room = self.rx_room();
        if let (Some(dst), Some(src)) = (room.get_mut(..n), frame.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.set_len(n);
    }

    /// The frame.
    pub fn data(&self) -> &[u8] {
        self.data
            .get(self.start..self.start + self.len)
            .unwrap_or_default()
    }

    /// The frame, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.data
            .get_mut(self.start..self.start + self.len)
            .unwrap_or_default()
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free bytes in front of the frame.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Grows the frame by `n` bytes at the front and returns them; `None` if
    /// the headroom is too small.
    pub fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        let start = self.start.checked_sub(n)?;
        self.start = start;
        self.len += n;
        self.data.get_mut(start..start + n)
    }

    /// Drops `n` bytes from the front of the frame (all of it if shorter).
    pub fn pull_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.start += n;
        self.len -= n;
    }

    /// Shortens the frame to `len` bytes (no effect if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The whole buffer and the frame's range in it, for in-place
    /// operations that write into the headroom (VXLAN encapsulation).
    pub fn raw_mut(&mut self) -> (&mut [u8], std::ops::Range<usize>) {
        let r = self.start..self.start + self.len;
        (&mut self.data[..], r)
    }

    /// Makes `range` of the whole buffer the frame (after an in-place
    /// operation through [`Buf::raw_mut`]); ignored if out of bounds.
    pub fn set_range(&mut self, range: std::ops::Range<usize>) {
        if range.start <= range.end && range.end <= self.data.len() {
            self.start = range.start;
            self.len = range.end - range.start;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull_move_the_front_within_the_buffer() {
        let mut b = Buf::new();
        b.fill(&[1, 2, 3]);
        assert_eq!(b.headroom(), HEADROOM);
        b.push_front(2).unwrap().copy_from_slice(&[9, 8]);
        assert_eq!(b.data(), &[9, 8, 1, 2, 3]);
        b.pull_front(3);
        assert_eq!(b.data(), &[2, 3]);
        assert!(b.push_front(HEADROOM + 10).is_none());
        b.pull_front(100);
        assert!(b.is_empty());
        b.fill(&[0; BUF_SIZE]);
        assert_eq!(b.len(), MAX_FRAME);
    }

    #[test]
    fn swap_frame_moves_the_bytes_and_keeps_the_owners() {
        let mut a = Buf::owned_by(1);
        let mut b = Buf::owned_by(2);
        a.fill(&[1, 2, 3]);
        b.fill(&[7]);
        b.pull_front(1);
        a.swap_frame(&mut b);
        assert_eq!((a.owner(), b.owner()), (1, 2));
        assert_eq!(b.data(), &[1, 2, 3]);
        assert!(a.is_empty());
        assert_eq!(a.headroom(), HEADROOM + 1);
        assert_eq!(a.room().len(), MAX_FRAME);
    }
}
