//! Sluice's own IPAM: addresses from the node's pod CIDR, one file per
//! reserved address, as the standard `host-local` plugin keeps them.
//!
//! Layout: `<data_dir>/<network>/<address>` holds `<container id>\n<ifname>\n`;
//! `last_reserved_ip` remembers where the previous allocation stopped, so
//! addresses go round-robin and a freed address is not handed out again at
//! once (stale conntrack or neighbour entries for it die first).
//!
//! Crash safety and concurrency without a lock: a reservation is written to
//! a temporary file, synced, then `link(2)`ed to the address's name. The
//! link either creates the whole file or fails with `EEXIST` because
//! another ADD holds that address, so a reservation is never half-written
//! and never given to two containers, whatever runs at the same time or
//! dies half-way. A crash can leave a temporary file behind: they are named
//! after the process that wrote them and removed once it is gone.

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

/// Addresses a network may hand out: `first..=last`, minus `reserved`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// First address handed out.
    pub first: Ipv4Addr,
    /// Last address handed out.
    pub last: Ipv4Addr,
    /// Never handed out (the pods' gateway).
    pub reserved: Vec<Ipv4Addr>,
}

impl Range {
    /// Every host address of `subnet` except the network address, the
    /// broadcast address and `gateway`, narrowed to `start..=end` when
    /// given. Errors name what is wrong.
    pub fn new(
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        start: Option<Ipv4Addr>,
        end: Option<Ipv4Addr>,
    ) -> Result<Range, String> {
        if subnet.prefix_len() > 30 {
            return Err(format!("{subnet} has no room for pods (at most /30)"));
        }
        let lo = u32::from(subnet.network()) + 1;
        let hi = u32::from(subnet.broadcast()) - 1;
        let first = start.map_or(lo, u32::from);
        let last = end.map_or(hi, u32::from);
        for (name, v) in [("rangeStart", first), ("rangeEnd", last)] {
            if !(lo..=hi).contains(&v) {
                return Err(format!(
                    "{name} {} is not a host address of {subnet}",
                    Ipv4Addr::from(v)
                ));
            }
        }
        if first > last {
            return Err(format!(
                "rangeStart {} is after rangeEnd {}",
                Ipv4Addr::from(first),
                Ipv4Addr::from(last)
            ));
        }
        Ok(Range {
            first: first.into(),
            last: last.into(),
            reserved: vec![gateway],
        })
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip) && !self.reserved.contains(&ip)
    }

    fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }
}

/// One reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The address.
    pub ip: Ipv4Addr,
    /// Who holds it: `CNI_CONTAINERID`.
    pub container_id: String,
    /// And `CNI_IFNAME`.
    pub ifname: String,
}

/// Why an allocation failed.
#[derive(Debug)]
pub enum IpamError {
    /// Every address of the range is taken.
    Exhausted(Range),
    /// The store could not be read or written.
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for IpamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpamError::Exhausted(r) => write!(
                f,
                "no free address in {}-{}: every one is reserved (delete pods, or run CNI GC to release addresses of pods that are gone)",
                r.first, r.last
            ),
            IpamError::Io(p, e) => write!(f, "IPAM store {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for IpamError {}

const LAST: &str = "last_reserved_ip";
const TMP: &str = ".tmp-";

/// The reservations of one network.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

fn io_err(p: &Path) -> impl FnOnce(io::Error) -> IpamError + '_ {
    move |e| IpamError::Io(p.to_path_buf(), e)
}

impl Store {
    /// Opens (creating) `<data_dir>/<network>` and removes temporary files
    /// of writers that are gone.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store, IpamError> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let s = Store { dir };
        s.sweep_temporaries();
        Ok(s)
    }

    /// Where the reservations are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sweep_temporaries(&self) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(TMP) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Every reservation (files that do not parse are skipped: they are
    /// not ours).
    pub fn list(&self) -> Result<Vec<Reservation>, IpamError> {
        let rd = fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Ok(ip) = e.file_name().to_string_lossy().parse::<Ipv4Addr>() else {
                continue;
            };
            let Ok(text) = fs::read_to_string(e.path()) else {
                continue;
            };
            let mut l = text.lines();
            out.push(Reservation {
                ip,
                container_id: l.next().unwrap_or_default().to_string(),
                ifname: l.next().unwrap_or_default().to_string(),
            });
        }
        out.sort_by_key(|r| r.ip);
        Ok(out)
    }

    /// The address `(container_id, ifname)` holds, if any.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|r| r.container_id == container_id && r.ifname == ifname)
            .map(|r| r.ip))
    }

    /// Reserves an address of `range` for `(container_id, ifname)`, or
    /// returns the one it already holds (a repeated ADD).
    pub fn allocate(
        &self,
        range: &Range,
        container_id: &str,
        ifname: &str,
    ) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.find(container_id, ifname)? {
            return Ok(ip);
        }
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!("{TMP}{}-{seq}", std::process::id()));
        {
            let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(format!("{container_id}\n{ifname}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io_err(&tmp))?;
        }
        let result = self.link_free(range, &tmp);
        let _ = fs::remove_file(&tmp);
        let ip = result?;
        // The new name is durable once the directory is.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.remember(ip);
        Ok(ip)
    }

    /// Links `tmp` to the first free address after the last one reserved.
    fn link_free(&self, range: &Range, tmp: &Path) -> Result<Ipv4Addr, IpamError> {
        let n = range.len();
        let after = fs::read_to_string(self.dir.join(LAST))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .filter(|ip| (range.first..=range.last).contains(ip));
        let start = after.map_or(0, |ip| {
            u64::from(u32::from(ip) - u32::from(range.first)) + 1
        });
        for k in 0..n {
            let off = (start + k) % n;
            let ip = Ipv4Addr::from(u32::from(range.first) + off as u32);
            if !range.contains(ip) {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            match fs::hard_link(tmp, &path) {
                Ok(()) => return Ok(ip),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(IpamError::Io(path, e)),
            }
        }
        Err(IpamError::Exhausted(range.clone()))
    }

    fn remember(&self, ip: Ipv4Addr) {
        let tmp = self.dir.join(format!("{TMP}{}-last", std::process::id()));
        if fs::write(&tmp, ip.to_string()).is_ok() {
            let _ = fs::rename(&tmp, self.dir.join(LAST));
        }
    }

    /// Releases what `(container_id, ifname)` holds; returns the address,
    /// `None` if it held nothing (a repeated DEL).
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let Some(ip) = self.find(container_id, ifname)? else {
            return Ok(None);
        };
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(Some(ip)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IpamError::Io(path, e)),
        }
    }

    /// Releases every reservation not held by one of `valid`
    /// (`(container_id, ifname)` pairs); returns what was released.
    pub fn retain(&self, valid: &[(String, String)]) -> Result<Vec<Reservation>, IpamError> {
        let mut gone = Vec::new();
        for r in self.list()? {
            if valid
                .iter()
                .any(|(c, i)| *c == r.container_id && *i == r.ifname)
            {
                continue;
            }
            let path = self.dir.join(r.ip.to_string());
            match fs::remove_file(&path) {
                Ok(()) => gone.push(r),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(IpamError::Io(path, e)),
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-ipam-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn range24() -> Range {
        Range::new(
            "10.244.1.0/24".parse().unwrap(),
            "10.244.1.1".parse().unwrap(),
            None,
            None,
        )
        .unwrap()
    }

    #[test]
    fn allocates_round_robin_skipping_the_gateway_and_is_idempotent() {
        let d = tmpdir("rr");
        let s = Store::open(&d, "net").unwrap();
        let r = range24();
        let a = s.allocate(&r, "c1", "eth0").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(s.allocate(&r, "c1", "eth0").unwrap(), a, "repeated ADD");
        let b = s.allocate(&r, "c2", "eth0").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(s.release("c1", "eth0").unwrap(), Some(a));
        assert_eq!(s.release("c1", "eth0").unwrap(), None, "repeated DEL");
        // The freed .2 is not reused at once.
        assert_eq!(
            s.allocate(&r, "c3", "eth0").unwrap(),
            Ipv4Addr::new(10, 244, 1, 4)
        );
        // A second interface of the same container gets its own.
        assert_ne!(s.allocate(&r, "c3", "net1").unwrap(), b);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_full_range_is_an_error_that_says_what_to_do() {
        let d = tmpdir("full");
        let s = Store::open(&d, "net").unwrap();
        let r = Range::new(
            "10.244.1.0/29".parse().unwrap(),
            "10.244.1.1".parse().unwrap(),
            None,
            None,
        )
        .unwrap();
        // .2 to .6: five addresses.
        for i in 0..5 {
            s.allocate(&r, &format!("c{i}"), "eth0").unwrap();
        }
        let e = s.allocate(&r, "c9", "eth0").unwrap_err();
        assert!(matches!(e, IpamError::Exhausted(_)));
        assert!(e.to_string().contains("GC"), "{e}");
        // GC keeps the valid ones and frees the rest.
        let gone = s
            .retain(&[("c0".into(), "eth0".into()), ("c4".into(), "eth0".into())])
            .unwrap();
        assert_eq!(gone.len(), 3);
        assert_eq!(s.list().unwrap().len(), 2);
        s.allocate(&r, "c9", "eth0").unwrap();
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let d = tmpdir("conc");
        let r = range24();
        let ips: Vec<Ipv4Addr> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..16)
                .map(|t| {
                    let (d, r) = (&d, &r);
                    sc.spawn(move || {
                        // Each thread opens its own store, as concurrent
                        // plugin processes do.
                        let s = Store::open(d, "net").unwrap();
                        (0..10)
                            .map(|i| s.allocate(r, &format!("c{t}-{i}"), "eth0").unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut uniq = ips.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 160);
        assert_eq!(Store::open(&d, "net").unwrap().list().unwrap().len(), 160);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn leftovers_of_a_crash_are_swept_and_never_count_as_reservations() {
        let d = tmpdir("crash");
        let s = Store::open(&d, "net").unwrap();
        // A writer that died before linking (pid 0 is never a process
        // directory in /proc) and garbage a person left there.
        fs::write(s.dir().join(".tmp-0-x"), "c7\neth0\n").unwrap();
        fs::write(s.dir().join("notes.txt"), "hello").unwrap();
        let s = Store::open(&d, "net").unwrap();
        assert!(!s.dir().join(".tmp-0-x").exists());
        assert!(s.list().unwrap().is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn ranges_are_checked() {
        let net: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let gw = Ipv4Addr::new(10, 244, 1, 1);
        assert!(Range::new(net, gw, Some("10.244.2.5".parse().unwrap()), None).is_err());
        assert!(
            Range::new(
                net,
                gw,
                Some("10.244.1.9".parse().unwrap()),
                Some("10.244.1.5".parse().unwrap())
            )
            .is_err()
        );
        assert!(Range::new("10.0.0.0/31".parse().unwrap(), gw, None, None).is_err());
        let r = Range::new(
            net,
            gw,
            Some("10.244.1.10".parse().unwrap()),
            Some("10.244.1.20".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(r.len(), 11);
    }
}
