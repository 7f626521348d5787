//! ip-masq's pure core, the part of the agent that decides and never acts:
//! the ip-masq-agent config file read exactly as upstream reads it
//! ([`parse`]), Go durations ([`duration`]), and the effective table that
//! the maps must hold with its diff against what they hold ([`table`]).
//!
//! Nothing here does I/O, so the agent, the fuzz targets and xtask share
//! one implementation.

#![warn(missing_docs)]

pub mod duration;
mod file;
pub mod identity;
pub mod preview;
pub mod sources;
pub mod table;

pub use file::*;
