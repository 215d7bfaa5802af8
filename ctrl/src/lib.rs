//! The Sluice control plane: it compiles what the cluster says (Kubernetes Node
//! objects, or a static YAML file) into immutable routing snapshots for the
//! dataplane workers, and ships the CNI plugin.
//!
//! Not built yet: issues 5 and 7.
