//! The TCP window check (`nat::tcp::in_window`, Linux `tcp_in_window`)
//! pinned at its edges: after a handshake with known numbers, each of the
//! four bounds is probed one sequence number inside and one outside, and
//! the tracked state after each accepted segment is checked field by
//! field, with and without window scaling. This is what keeps a blind RST
//! from killing a flow, so an off-by-one here is a security bug.

use encap::tcp::TcpFlags;
use nat::Direction::{Original, Reply};
use nat::tcp::{Segment, Sender, in_window, wscale};

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;

fn seg(flags: TcpFlags, seq: u32, ack: u32, len: u32, window: u16, ws: Option<u8>) -> Segment {
    Segment {
        flags,
        seq,
        ack,
        window,
        len,
        wscale: ws,
    }
}

fn s(end: u32, maxend: u32, maxwin: u32, scale: u8) -> Sender {
    Sender {
        end,
        maxend,
        maxwin,
        scale,
    }
}

/// SYN 1000 -> SYN/ACK 5000 -> ACK with 100 bytes, windows 65535, no
/// scaling; every intermediate state checked.
fn established() -> [Sender; 2] {
    let mut t = [Sender::default(); 2];
    assert!(in_window(
        &mut t,
        Original,
        &seg(SYN, 1000, 0, 0, 65535, None)
    ));
    // The receiver's end is the ACK it was told (none yet: 0), its maxend
    // that plus the window.
    assert_eq!(t, [s(1001, 1001, 65535, 0), s(0, 65535, 0, 0)]);
    assert!(in_window(
        &mut t,
        Reply,
        &seg(SYN | ACK, 5000, 1001, 0, 65535, None)
    ));
    assert_eq!(t, [s(1001, 66536, 65535, 0), s(5001, 5001, 65535, 0)]);
    assert!(in_window(
        &mut t,
        Original,
        &seg(ACK, 1001, 5001, 100, 65535, None)
    ));
    assert_eq!(t, [s(1101, 66536, 65535, 0), s(5001, 70536, 65535, 0)]);
    t
}

fn accepts(t: &[Sender; 2], dir: nat::Direction, g: Segment) -> bool {
    let mut c = *t;
    let ok = in_window(&mut c, dir, &g);
    if !ok {
        assert_eq!(&c, t, "a refused segment changes nothing");
    }
    ok
}

#[test]
fn each_bound_of_the_window_is_exact() {
    let t = established();
    let (o, r) = (t[0], t[1]);
    // 1. The segment starts no later than the sender's maxend.
    assert!(accepts(
        &t,
        Original,
        seg(ACK, o.maxend, 5001, 0, 65535, None)
    ));
    assert!(!accepts(
        &t,
        Original,
        seg(ACK, o.maxend + 1, 5001, 0, 65535, None)
    ));
    // 2. It ends after the sender's end minus the receiver's window.
    let low = o.end.wrapping_sub(r.maxwin);
    assert!(accepts(&t, Original, seg(ACK, low, 5001, 0, 65535, None)));
    assert!(!accepts(
        &t,
        Original,
        seg(ACK, low.wrapping_sub(1), 5001, 0, 65535, None)
    ));
    // The length counts: one byte more brings that one back in.
    assert!(accepts(
        &t,
        Original,
        seg(ACK, low.wrapping_sub(1), 5001, 1, 65535, None)
    ));
    // 3. It acknowledges nothing the receiver has not sent.
    assert!(accepts(&t, Original, seg(ACK, 1101, r.end, 0, 65535, None)));
    assert!(!accepts(
        &t,
        Original,
        seg(ACK, 1101, r.end + 1, 0, 65535, None)
    ));
    // 4. Nor far behind it: MAXACKWINDOW, the larger of the sender's
    // largest window and 66000.
    let oldest = r.end.wrapping_sub(66_000);
    assert!(accepts(
        &t,
        Original,
        seg(ACK, 1101, oldest, 0, 65535, None)
    ));
    assert!(!accepts(
        &t,
        Original,
        seg(ACK, 1101, oldest.wrapping_sub(1), 0, 65535, None)
    ));
    // Without ACK, the acknowledgement bounds do not apply.
    assert!(accepts(
        &t,
        Original,
        seg(TcpFlags(0), 1101, oldest.wrapping_sub(1), 0, 65535, None)
    ));
    // The same from the other side: the reply's maxend and the original's.
    assert!(accepts(&t, Reply, seg(ACK, r.maxend, 1101, 0, 65535, None)));
    assert!(!accepts(
        &t,
        Reply,
        seg(ACK, r.maxend + 1, 1101, 0, 65535, None)
    ));
    assert!(accepts(&t, Reply, seg(ACK, 5001, o.end, 0, 65535, None)));
    assert!(!accepts(
        &t,
        Reply,
        seg(ACK, 5001, o.end + 1, 0, 65535, None)
    ));
    // A blind RST a quarter of the sequence space away.
    let rst = seg(TcpFlags::RST | ACK, 1101 + 0x4000_0000, 5001, 0, 0, None);
    assert!(!accepts(&t, Original, rst));
}

#[test]
fn an_accepted_segment_advances_the_state() {
    let mut t = established();
    // 200 bytes with a smaller window: end moves, maxwin keeps the largest,
    // the peer's maxend does not move back.
    assert!(in_window(
        &mut t,
        Original,
        &seg(ACK, 1101, 5001, 200, 1000, None)
    ));
    assert_eq!(t, [s(1301, 66536, 65535, 0), s(5001, 70536, 65535, 0)]);
    // A FIN counts one: end is seq + len + 1.
    assert!(in_window(
        &mut t,
        Original,
        &seg(TcpFlags::FIN | ACK, 1301, 5001, 0, 65535, None)
    ));
    assert_eq!(t[0].end, 1302);
    // The reply acknowledges it with a bigger window: the original's
    // maxend becomes ack + window.
    assert!(in_window(
        &mut t,
        Reply,
        &seg(ACK, 5001, 1302, 10, 65535, None)
    ));
    assert_eq!(
        t,
        [s(1302, 1302 + 65535, 65535, 0), s(5011, 70536, 65535, 0)]
    );
    // A retransmission (end not after the sender's end) leaves end alone.
    assert!(in_window(
        &mut t,
        Reply,
        &seg(ACK, 5001, 1302, 5, 65535, None)
    ));
    assert_eq!(t[1].end, 5011);
}

#[test]
fn window_scaling_applies_after_the_handshake_when_both_agree() {
    let mut t = [Sender::default(); 2];
    assert!(in_window(
        &mut t,
        Original,
        &seg(SYN, 1000, 0, 0, 65535, Some(7))
    ));
    assert_eq!(
        t[0],
        s(1001, 1001, 65535, 7),
        "a SYN's window is not scaled"
    );
    assert!(in_window(
        &mut t,
        Reply,
        &seg(SYN | ACK, 5000, 1001, 0, 65535, Some(7))
    ));
    assert_eq!(t, [s(1001, 66536, 65535, 7), s(5001, 5001, 65535, 7)]);
    // Window 1000 is 128000 bytes now.
    assert!(in_window(
        &mut t,
        Original,
        &seg(ACK, 1001, 5001, 0, 1000, None)
    ));
    assert_eq!(t, [s(1001, 66536, 128_000, 7), s(5001, 133_001, 65535, 7)]);
    // MAXACKWINDOW follows the sender's largest window once it passes
    // 66000: an ACK 128000 back is still in.
    assert!(accepts(
        &t,
        Original,
        seg(ACK, 1001, 5001u32.wrapping_sub(128_000), 0, 1000, None)
    ));
    assert!(!accepts(
        &t,
        Original,
        seg(ACK, 1001, 5001u32.wrapping_sub(128_001), 0, 1000, None)
    ));
    assert!(in_window(
        &mut t,
        Reply,
        &seg(ACK, 5001, 1001, 1000, 2, None)
    ));
    assert_eq!(t, [s(1001, 66536, 128_000, 7), s(6001, 133_001, 65535, 7)]);
}

#[test]
fn no_scaling_unless_the_syn_ack_agrees() {
    let mut t = [Sender::default(); 2];
    assert!(in_window(
        &mut t,
        Original,
        &seg(SYN, 1000, 0, 0, 65535, Some(7))
    ));
    assert!(in_window(
        &mut t,
        Reply,
        &seg(SYN | ACK, 5000, 1001, 0, 65535, None)
    ));
    assert_eq!((t[0].scale, t[1].scale), (0, 0), "neither side scales");
    assert!(in_window(
        &mut t,
        Original,
        &seg(ACK, 1001, 5001, 0, 1000, None)
    ));
    assert_eq!(
        t[1].maxend,
        5001 + 1000,
        "window 1000 unscaled (128000 if scaled)"
    );
    assert_eq!(t[0].maxwin, 65535);
    // A first segment in a direction that is not a SYN (picked up
    // mid-stream) is scaled by what is known.
    let mut m = [s(0, 0, 0, 2), Sender::default()];
    assert!(in_window(&mut m, Original, &seg(ACK, 10, 0, 5, 100, None)));
    assert_eq!(m[0], s(15, 15, 400, 2));
}

#[test]
fn the_window_scale_option_is_found_among_others() {
    // MSS, SACK-permitted (length 2), NOPs, then window scale.
    assert_eq!(wscale(&[2, 4, 5, 0xb4, 4, 2, 1, 3, 3, 6]), Some(6));
    // A kind-3 option of the wrong length is skipped like any other.
    assert_eq!(wscale(&[3, 4, 7, 0, 3, 3, 5]), Some(5));
    assert_eq!(wscale(&[3, 3, 14]), Some(14));
    assert_eq!(wscale(&[3, 3, 15]), Some(14), "RFC 7323: at most 14");
    assert_eq!(wscale(&[0, 3, 3, 2]), None, "end of options");
    assert_eq!(
        wscale(&[0, 2, 3, 3, 7]),
        None,
        "nothing after the end counts"
    );
    assert_eq!(
        wscale(&[2, 1, 3, 3, 2]),
        None,
        "a length under 2 ends the walk"
    );
    assert_eq!(wscale(&[2, 10, 3, 3, 2]), None, "a length past the end");
    assert_eq!(wscale(&[1, 1, 1]), None);
    assert_eq!(wscale(&[]), None);
    assert_eq!(wscale(&[5]), None, "kind without a length");
}
