//! The range directory the eBPF programs decide destinations with, built
//! from the agent's table.
//!
//! The address space of each family is cut into 65,536 chunks by the top
//! 16 bits. A chunk that the table decides as a whole is one directory
//! entry; any other is a sorted list of range starts, each range decided
//! alike, neighbours decided differently (see
//! [`ip_masq_common::DirectoryEntry`]). The programs find a destination's
//! range by binary search, so the cost depends on how finely the table
//! cuts that one /16, never on the size of the whole table.
//!
//! Here, all pure:
//! - [`FamilyTable`]: one family's prefixes and the ranges of each chunk
//!   ([`FamilyTable::chunk_ranges`]), exactly the longest-prefix answer;
//! - [`Layout`]: where each chunk's ranges sit in the range array, the
//!   free space, and the publishing of a chunk through the [`Memory`] door
//!   in an order that readers never see half done.

mod layout;
mod table;

pub use layout::{Layout, LookupError, Memory, PublishReport};
pub use table::{FamilyTable, Ranges};

/// An address family of the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Bits of an address.
    pub const fn width(self) -> u32 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }

    /// Bits below the chunk index: what the range starts tell apart.
    pub const fn chunk_shift(self) -> u32 {
        self.width() - ip_masq_common::CHUNK_BITS
    }

    /// The chunk (directory slot) that holds `address`.
    pub const fn chunk_of(self, address: u128) -> u32 {
        (address >> self.chunk_shift()) as u32
    }

    /// The first address of `chunk`.
    pub const fn chunk_start(self, chunk: u32) -> u128 {
        (chunk as u128) << self.chunk_shift()
    }

    /// The last address of `chunk`.
    pub const fn chunk_end(self, chunk: u32) -> u128 {
        self.chunk_start(chunk) | ((1u128 << self.chunk_shift()) - 1)
    }

    /// The family's name in messages.
    pub const fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}
