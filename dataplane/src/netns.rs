//! Running setup code inside another network namespace ([`run_in`], from
//! netcfg), and [`cmd`] for the test and demo topologies, which build
//! namespaces with iproute2. The daemon's own paths use netcfg (rtnetlink,
//! the ethtool ioctl): no subprocess.

use std::io;

pub use netcfg::netns::run_in;

/// Runs a command (such as `ip route ...`) and fails with its stderr: for
/// topologies built by tests, the demo and the harness, never the daemon.
pub fn cmd(args: &[&str]) -> io::Result<()> {
    let (prog, rest) = args
        .split_first()
        .ok_or_else(|| io::Error::other("empty command"))?;
    let out = std::process::Command::new(prog).args(rest).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
