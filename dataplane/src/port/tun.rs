//! TUN ports (tun-rs): one device per pod. Built in the next step.
