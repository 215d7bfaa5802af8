//! AF_XDP ports (xsk-rs). Built in the next step.
