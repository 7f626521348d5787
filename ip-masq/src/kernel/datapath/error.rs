//! Why the datapath could not be loaded, pinned, attached or read.

use std::{io, path::PathBuf};

use aya::{
    maps::MapError,
    programs::{ProgramError, links::LinkError},
};
use thiserror::Error;

/// Errors of the datapath layer.
#[derive(Debug, Error)]
pub enum DatapathError {
    #[error("cannot create pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not on a bpf filesystem (mount one: `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs { path: PathBuf },
    #[error("cannot load the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("eBPF program error")]
    Program(#[source] Box<ProgramError>),
    #[error("eBPF map error")]
    Map(#[source] Box<MapError>),
    #[error("cannot map the range directory's arrays")]
    Directory(#[source] io::Error),
    #[error("cannot publish the range directory")]
    Publish(#[source] ip_masq_lookup::LookupError),
    #[error("pinned link {path}")]
    Link {
        path: PathBuf,
        #[source]
        source: Box<LinkError>,
    },
    #[error("cannot pin link at {path}")]
    PinLink {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("cannot look up pin {path}")]
    PinLookup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot pin map at {path}")]
    PinMap {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("cannot pin program at {path}")]
    PinProgram {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("cannot move pin {from} over {to}")]
    ReplacePin {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot query the programs at tcx ingress of {interface}")]
    TcxQuery {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove stale pin {path}")]
    Unpin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "pinned map {name} has {found} entries of capacity but {expected} were asked for; run `ip-masq cleanup` to recreate it"
    )]
    CapacityMismatch {
        name: &'static str,
        found: u32,
        expected: u32,
    },
}

impl From<ProgramError> for DatapathError {
    fn from(err: ProgramError) -> Self {
        Self::Program(Box::new(err))
    }
}

impl From<MapError> for DatapathError {
    fn from(err: MapError) -> Self {
        Self::Map(Box::new(err))
    }
}
