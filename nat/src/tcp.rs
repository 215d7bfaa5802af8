//! TCP connection tracking after Linux's `nf_conntrack_proto_tcp.c`: the
//! same state table (`tcp_conntracks`) and the same in-window test
//! (`tcp_in_window`, after Guido van Rooij's "Real Stateful TCP Packet
//! Filtering in IP Filter"), so an out-of-window RST cannot tear down an
//! established connection.

use encap::tcp::TcpFlags;

use crate::tuple::Direction;

/// TCP conntrack states (Linux `enum tcp_conntrack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// No state yet.
    None = 0,
    /// SYN seen.
    SynSent,
    /// SYN/ACK seen.
    SynRecv,
    /// Three-way handshake done (or picked up mid-stream).
    Established,
    /// FIN seen.
    FinWait,
    /// FIN seen in the other direction, ACKed.
    CloseWait,
    /// FIN seen in both directions.
    LastAck,
    /// Last FIN ACKed.
    TimeWait,
    /// RST seen.
    Close,
    /// Simultaneous open: SYN seen in both directions.
    SynSent2,
}

/// What the state table says about a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Move to this state.
    To(TcpState),
    /// Invalid in this state (`sIV`): the packet is dropped.
    Invalid,
    /// Ignored for state purposes (`sIG`): passed, state unchanged.
    Ignore,
}

use TcpState::{
    Close, CloseWait, Established, FinWait, LastAck, SynRecv, SynSent, SynSent2, TimeWait,
};
use Transition::{Ignore as IG, Invalid as IV, To};

const SS: Transition = To(SynSent);
const SR: Transition = To(SynRecv);
const ES: Transition = To(Established);
const FW: Transition = To(FinWait);
const CW: Transition = To(CloseWait);
const LA: Transition = To(LastAck);
const TW: Transition = To(TimeWait);
const CL: Transition = To(Close);
const S2: Transition = To(SynSent2);

/// `tcp_conntracks[dir][flag][state]`, states in enum order:
/// None, SynSent, SynRecv, Established, FinWait, CloseWait, LastAck,
/// TimeWait, Close, SynSent2.
const TABLE: [[[Transition; 10]; 6]; 2] = [
    [
        // ORIGINAL
        /* syn    */ [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
        /* synack */ [IV, IV, SR, IV, IV, IV, IV, IV, IV, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
    [
        // REPLY
        /* syn    */ [IV, S2, IV, IV, IV, IV, IV, SS, IV, S2],
        /* synack */ [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
];

/// Linux `get_conntrack_index`.
fn flag_index(f: TcpFlags) -> usize {
    if f.contains(TcpFlags::RST) {
        4
    } else if f.contains(TcpFlags::SYN) {
        if f.contains(TcpFlags::ACK) { 1 } else { 0 }
    } else if f.contains(TcpFlags::FIN) {
        2
    } else if f.contains(TcpFlags::ACK) {
        3
    } else {
        5
    }
}

/// The state table lookup.
pub fn transition(dir: Direction, flags: TcpFlags, state: TcpState) -> Transition {
    TABLE
        .get(dir.index())
        .and_then(|d| d.get(flag_index(flags)))
        .and_then(|f| f.get(state as usize))
        .copied()
        .unwrap_or(Transition::Invalid)
}

/// What one direction has sent (Linux `struct ip_ct_tcp_state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sender {
    /// Highest sequence number sent, plus length (`td_end`).
    pub end: u32,
    /// Highest acceptable end of sequence: peer's ACK plus window (`td_maxend`).
    pub maxend: u32,
    /// Largest window advertised (`td_maxwin`); 0 = direction not seen yet.
    pub maxwin: u32,
    /// Window scale from its SYN (`td_scale`).
    pub scale: u8,
}

/// The TCP fields a segment contributes to tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Control bits.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Raw window field.
    pub window: u16,
    /// Payload length.
    pub len: u32,
    /// Window scale option, if the segment carries one (SYN only).
    pub wscale: Option<u8>,
}

const fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

const fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// Linux `tcp_in_window`, reduced to what decides acceptance: the segment
/// must overlap what the receiver can accept, and its ACK must acknowledge
/// data the receiver has sent. On acceptance the window state advances.
/// Returns whether the segment is in window.
pub fn in_window(senders: &mut [Sender; 2], dir: Direction, seg: &Segment) -> bool {
    let [orig, reply] = *senders;
    let (mut sender, mut receiver) = match dir {
        Direction::Original => (orig, reply),
        Direction::Reply => (reply, orig),
    };
    let syn = seg.flags.contains(TcpFlags::SYN);
    let fin = seg.flags.contains(TcpFlags::FIN);
    let end = seg
        .seq
        .wrapping_add(seg.len)
        .wrapping_add(u32::from(syn))
        .wrapping_add(u32::from(fin));
    let mut win = u32::from(seg.window);

    if sender.maxwin == 0 {
        // First segment in this direction: initialise from it.
        if syn {
            sender.scale = seg.wscale.unwrap_or(0);
        } else {
            win <<= sender.scale;
        }
        sender.end = end;
        sender.maxend = end;
        sender.maxwin = win.max(1);
        if syn && seg.flags.contains(TcpFlags::ACK) && receiver.maxwin != 0 && seg.wscale.is_none()
        {
            // The peer did not agree to scaling: neither side scales.
            receiver.scale = 0;
            sender.scale = 0;
        }
    } else if !syn {
        win <<= sender.scale;
    }
    let ack = if seg.flags.contains(TcpFlags::ACK) {
        seg.ack
    } else {
        receiver.end
    };
    // MAXACKWINDOW in Linux.
    let max_ack_window = sender.maxwin.max(66_000);
    let ok = receiver.maxwin == 0
        || (before(seg.seq, sender.maxend.wrapping_add(1))
            && after(
                end,
                sender.end.wrapping_sub(receiver.maxwin).wrapping_sub(1),
            )
            && before(ack, receiver.end.wrapping_add(1))
            && after(
                ack,
                receiver.end.wrapping_sub(max_ack_window).wrapping_sub(1),
            ));
    if ok {
        if after(end, sender.end) {
            sender.end = end;
        }
        if sender.maxwin < win {
            sender.maxwin = win;
        }
        let ack_end = ack.wrapping_add(win.max(1));
        if receiver.maxwin != 0 && after(ack_end, receiver.maxend) {
            receiver.maxend = ack_end;
        } else if receiver.maxwin == 0 {
            receiver.end = ack;
            receiver.maxend = ack_end;
        }
        *senders = match dir {
            Direction::Original => [sender, receiver],
            Direction::Reply => [receiver, sender],
        };
    }
    ok
}

/// Reads the window-scale option (kind 3) from TCP options.
pub fn wscale(options: &[u8]) -> Option<u8> {
    let mut rest = options;
    while let Some((&kind, tail)) = rest.split_first() {
        match kind {
            0 => return None,
            1 => rest = tail,
            _ => {
                let len = usize::from(*tail.first()?);
                if len < 2 || rest.len() < len {
                    return None;
                }
                if kind == 3 && len == 3 {
                    return tail.get(1).map(|s| (*s).min(14));
                }
                rest = rest.get(len..)?;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: TcpFlags, seq: u32, ack: u32, len: u32) -> Segment {
        Segment {
            flags,
            seq,
            ack,
            window: 65535,
            len,
            wscale: None,
        }
    }

    #[test]
    fn handshake_and_teardown_through_the_table() {
        use Direction::*;
        let steps = [
            (Original, TcpFlags::SYN, SynSent),
            (Reply, TcpFlags::SYN | TcpFlags::ACK, SynRecv),
            (Original, TcpFlags::ACK, Established),
            (Original, TcpFlags::FIN | TcpFlags::ACK, FinWait),
            (Reply, TcpFlags::ACK, CloseWait),
            (Reply, TcpFlags::FIN | TcpFlags::ACK, LastAck),
            (Original, TcpFlags::ACK, TimeWait),
        ];
        let mut st = None;
        for (dir, flags, want) in steps {
            match transition(dir, flags, st.unwrap_or(TcpState::None)) {
                To(s) => st = Some(s),
                t => panic!("{dir:?} {flags:?} in {st:?}: {t:?}"),
            }
            assert_eq!(st, Some(want));
        }
        assert_eq!(
            transition(Reply, TcpFlags::SYN, TcpState::None),
            Transition::Invalid
        );
        assert_eq!(transition(Original, TcpFlags::RST, Established), To(Close));
        assert_eq!(
            transition(Original, TcpFlags(0), Established),
            Transition::Invalid
        );
    }

    #[test]
    fn window_check_rejects_far_away_sequence_numbers() {
        let mut s = [Sender::default(); 2];
        assert!(in_window(
            &mut s,
            Direction::Original,
            &seg(TcpFlags::SYN, 1000, 0, 0)
        ));
        assert!(in_window(
            &mut s,
            Direction::Reply,
            &seg(TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, 0)
        ));
        assert!(in_window(
            &mut s,
            Direction::Original,
            &seg(TcpFlags::ACK, 1001, 5001, 100)
        ));
        // An RST far outside the window (blind reset) is out of window.
        let rst = seg(TcpFlags::RST | TcpFlags::ACK, 1001 + 0x4000_0000, 5001, 0);
        assert!(!in_window(&mut s.clone(), Direction::Original, &rst));
        // In-window RST is accepted.
        assert!(in_window(
            &mut s,
            Direction::Original,
            &seg(TcpFlags::RST | TcpFlags::ACK, 1101, 5001, 0)
        ));
    }

    #[test]
    fn wscale_option() {
        assert_eq!(wscale(&[2, 4, 5, 0xb4, 1, 3, 3, 7]), Some(7));
        assert_eq!(wscale(&[1, 1, 0, 3, 3, 7]), None);
        assert_eq!(wscale(&[3, 3]), None);
        assert_eq!(wscale(&[3, 3, 20]), Some(14));
        assert_eq!(wscale(&[8, 0]), None);
    }
}
