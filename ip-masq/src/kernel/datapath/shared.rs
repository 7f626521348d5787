//! The range directory's arrays written in place: each `BPF_F_MMAPABLE`
//! array mapped into the agent, and the wait for the programs to leave
//! ranges the agent means to reuse. Every `unsafe` of the directory is in
//! this module.
//!
//! - A mapping is the array's whole value area (`max_entries` times the
//!   8-byte-aligned value size, rounded up to a page), shared with the
//!   kernel; it lives as long as [`SharedArray`], which also keeps the map
//!   open so the area cannot be freed under it.
//! - Every access is an aligned 64-bit atomic load or store inside the
//!   mapping: programs read the same words concurrently, and a directory
//!   entry must never be seen torn. Entries are stored with `Release`, so
//!   the ranges written before them are visible first.
//! - The wait is the kernel's own guarantee for map-in-map updates: an
//!   update of a `BPF_MAP_TYPE_ARRAY_OF_MAPS` returns only after an RCU
//!   grace period ("so that userspace, when we return to it, knows that
//!   all programs that could be running use the new map value"), and every
//!   program run (tcx, xt_bpf, test runs) sits inside an RCU read section.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;

/// One array's value area, mapped shared.
pub(crate) struct SharedArray {
    words: NonNull<AtomicU64>,
    word_count: usize,
    bytes: usize,
    /// Keeps the map, and so its value area, alive.
    map: MapData,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics.
unsafe impl Send for SharedArray {}

impl SharedArray {
    /// Maps the value area of `map`, an array of `max_entries` values of
    /// `value_size` bytes created with `BPF_F_MMAPABLE`.
    ///
    /// # Errors
    /// The kernel's error for `mmap` (the map is not mmapable, or smaller).
    pub(crate) fn map(map: MapData, max_entries: u32, value_size: usize) -> io::Result<Self> {
        let element = value_size.next_multiple_of(8);
        let used = element * max_entries as usize;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("no page size"))?;
        let bytes = used.next_multiple_of(page).max(page);
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map's fd at offset 0; the
        // kernel refuses a length beyond the array's value area.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let words = NonNull::new(address.cast::<AtomicU64>()).expect("mmap never returns null");
        Ok(Self {
            words,
            word_count: used / 8,
            bytes,
            map,
        })
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(
            index < self.word_count,
            "word {index} of {}",
            self.word_count
        );
        // SAFETY: in bounds (checked above), page-aligned base so every word
        // is aligned, and the mapping lives as long as `self`.
        unsafe { &*self.words.as_ptr().add(index) }
    }

    /// The word at `index`.
    pub(crate) fn load(&self, index: usize) -> u64 {
        self.word(index).load(Ordering::Acquire)
    }

    /// Stores `value` at `index`, after every store before it.
    pub(crate) fn store(&self, index: usize, value: u64) {
        self.word(index).store(value, Ordering::Release);
    }

    /// The map, for pinning.
    pub(crate) fn map_data(&self) -> &MapData {
        &self.map
    }

    /// Words in the value area.
    pub(crate) fn word_count(&self) -> usize {
        self.word_count
    }
}

impl Drop for SharedArray {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.words.as_ptr().cast(), self.bytes) };
    }
}

/// An array-of-maps of one slot and the inner map it is updated with:
/// each update is a wait for the programs running before it.
pub(crate) struct ReaderFence {
    outer: OwnedFd,
    inner: OwnedFd,
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The `map_create` member of `union bpf_attr`, up to `inner_map_fd`.
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

/// The `map_elem` member of `union bpf_attr`.
#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf<T>(command: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a repr(C) prefix of `union bpf_attr` for `command`,
    // passed with its size; the kernel zero-fills the rest.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn create_map(attr: &MapCreate) -> io::Result<OwnedFd> {
    let fd = bpf(BPF_MAP_CREATE, attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: a fresh fd the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl ReaderFence {
    /// Creates the two maps (unpinned: they live as long as the agent).
    ///
    /// # Errors
    /// The kernel's error (no CAP_BPF, or no map-in-map support).
    pub(crate) fn new() -> io::Result<Self> {
        let inner = create_map(&MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..MapCreate::default()
        })?;
        let outer = create_map(&MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: u32::try_from(inner.as_raw_fd()).expect("fds are non-negative"),
            ..MapCreate::default()
        })?;
        Ok(Self { outer, inner })
    }

    /// Returns once every program that was running at the call has
    /// finished.
    ///
    /// # Errors
    /// The kernel's error for the update.
    pub(crate) fn wait(&self) -> io::Result<()> {
        let key = 0u32;
        let value = u32::try_from(self.inner.as_raw_fd()).expect("fds are non-negative");
        bpf(
            BPF_MAP_UPDATE_ELEM,
            &MapElem {
                map_fd: u32::try_from(self.outer.as_raw_fd()).expect("fds are non-negative"),
                _pad: 0,
                key: std::ptr::from_ref(&key) as u64,
                value: std::ptr::from_ref(&value) as u64,
                flags: 0,
            },
        )
        .map(drop)
    }
}
