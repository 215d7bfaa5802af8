//! `sluice-cni`: the CNI plugin (see `ctrl::cni`). Called by the container
//! runtime with `CNI_*` in the environment and the network configuration
//! on stdin; prints the result (or an error result) on stdout and exits
//! with the error's code.
//!
//! Built in this package so that its tests can run it next to the `sluice`
//! daemon it talks to; the plugin itself is `ctrl::cni`.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let args: Vec<String> = std::env::args().collect();
    if std::env::var_os("CNI_COMMAND").is_none() {
        // Run by hand: say what this is (as the reference plugins do).
        eprintln!(
            "{}: the Sluice CNI plugin (CNI spec 0.3.0-1.1.0); run by the container runtime",
            args.first().map_or("sluice-cni", String::as_str)
        );
        if args.iter().any(|a| a == "--version" || a == "version") {
            return ExitCode::SUCCESS;
        }
    }
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let out = ctrl::cni::run(&|k| std::env::var(k).ok(), &stdin);
    let mut so = std::io::stdout();
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.flush();
    ExitCode::from(u8::try_from(out.code).unwrap_or(u8::MAX))
}
