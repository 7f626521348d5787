//! The flow generator: UDP frames written straight onto the pod's
//! interface through an `AF_PACKET` socket (`PACKET_QDISC_BYPASS`, batches
//! of `sendmmsg`), each with a source and destination port pair no other
//! frame of the measurement uses, so that each is a new conntrack entry at
//! the node. No socket per flow and no UDP stack in the pod: what the
//! measurement sees is the node's cost of a new connection, not the
//! generator's.
//!
//! The frames are built here (pure) and sent by one small unsafe function,
//! [`Injector::send_batch`].

use std::{
    net::Ipv4Addr,
    ops::Range,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, ensure};

/// Frames per `sendmmsg` call.
pub(super) const BATCH: usize = 64;
/// Bytes of each frame: Ethernet, IPv4, UDP and one payload byte, padded to
/// the Ethernet minimum.
const FRAME_LEN: usize = 60;
const UDP_SOURCE_PORT_AT: usize = 14 + 20;
const UDP_DESTINATION_PORT_AT: usize = 14 + 22;

/// Link and network addresses of the frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Addresses {
    pub source_mac: [u8; 6],
    pub gateway_mac: [u8; 6],
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
}

/// The RFC 1071 checksum of an IPv4 header.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One UDP frame from `source_port` to `destination_port`. The UDP checksum
/// is left 0 (none, which IPv4 allows), so only the ports differ between
/// frames.
pub(super) fn udp_frame(
    addresses: &Addresses,
    source_port: u16,
    destination_port: u16,
) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    frame[0..6].copy_from_slice(&addresses.gateway_mac);
    frame[6..12].copy_from_slice(&addresses.source_mac);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut frame[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&29u16.to_be_bytes()); // 20 + 8 + 1
    ip[6] = 0x40; // DF
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&addresses.source.octets());
    ip[16..20].copy_from_slice(&addresses.destination.octets());
    let checksum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame[UDP_SOURCE_PORT_AT..UDP_SOURCE_PORT_AT + 2].copy_from_slice(&source_port.to_be_bytes());
    frame[UDP_DESTINATION_PORT_AT..UDP_DESTINATION_PORT_AT + 2]
        .copy_from_slice(&destination_port.to_be_bytes());
    frame[38..40].copy_from_slice(&9u16.to_be_bytes()); // UDP length
    frame
}

/// The port pairs one generator thread walks: every destination port for
/// each source port of its share, so that no pair repeats before
/// `ports.len() * destinations.len()` frames.
#[derive(Clone, Debug)]
pub(super) struct PortWalk {
    sources: Range<u16>,
    destinations: Range<u16>,
    source: u16,
    destination: u16,
}

impl PortWalk {
    pub(super) fn new(sources: Range<u16>, destinations: Range<u16>) -> Self {
        Self {
            source: sources.start,
            destination: destinations.start,
            sources,
            destinations,
        }
    }

    /// How many distinct pairs the walk has.
    pub(super) fn len(&self) -> usize {
        self.sources.len() * self.destinations.len()
    }
}

impl Iterator for PortWalk {
    type Item = (u16, u16);

    fn next(&mut self) -> Option<(u16, u16)> {
        let pair = (self.source, self.destination);
        self.destination += 1;
        if self.destination == self.destinations.end {
            self.destination = self.destinations.start;
            self.source += 1;
            if self.source == self.sources.end {
                self.source = self.sources.start;
            }
        }
        Some(pair)
    }
}

/// A raw packet socket bound to one interface of the calling thread's
/// network namespace.
pub(super) struct Injector {
    socket: OwnedFd,
    ifindex: i32,
}

impl Injector {
    /// Opens the socket on `interface` (looked up in the calling thread's
    /// namespace).
    pub(super) fn open(interface: &str) -> anyhow::Result<Self> {
        let name = std::ffi::CString::new(interface)?;
        // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        ensure!(ifindex != 0, "no interface {interface}");
        // SAFETY: plain socket(2); the fd is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        ensure!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a new socket nobody else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        ensure!(
            rc == 0,
            "PACKET_QDISC_BYPASS: {}",
            std::io::Error::last_os_error()
        );
        Ok(Self {
            socket,
            ifindex: i32::try_from(ifindex).context("ifindex")?,
        })
    }

    /// Sends `frames` in one `sendmmsg`; returns how many went out.
    pub(super) fn send_batch(&self, frames: &[[u8; FRAME_LEN]]) -> usize {
        // SAFETY: zeroed sockaddr_ll is a valid value; the fields set below
        // address the interface this socket is for.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = self.ifindex;
        address.sll_halen = 6;
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|frame| libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                // SAFETY: zeroed msghdr is valid; pointers set below stay
                // alive until sendmmsg returns.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                header.msg_name = (&raw mut address).cast();
                header.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                header.msg_iov = iovec;
                header.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: header,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: `messages` holds valid headers pointing at `iovecs`,
        // `frames` and `address`, all alive for the call; the kernel only
        // reads them (and writes msg_len).
        let sent = unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                messages.as_mut_ptr(),
                u32::try_from(messages.len()).unwrap_or(u32::MAX),
                0,
            )
        };
        usize::try_from(sent).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses() -> Addresses {
        Addresses {
            source_mac: [2, 0, 0, 0, 0, 1],
            gateway_mac: [2, 0, 0, 0, 0, 2],
            source: Ipv4Addr::new(10, 244, 1, 10),
            destination: Ipv4Addr::new(203, 0, 113, 9),
        }
    }

    #[test]
    fn a_frame_is_a_valid_udp_datagram() {
        let frame = udp_frame(&addresses(), 1024, 40_000);
        assert_eq!(&frame[0..6], &[2, 0, 0, 0, 0, 2], "to the gateway");
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        // A header whose checksum is right sums to 0xffff, i.e. checks to 0.
        assert_eq!(ipv4_checksum(&frame[14..34]), 0);
        assert_eq!(&frame[26..30], &[10, 244, 1, 10]);
        assert_eq!(&frame[30..34], &[203, 0, 113, 9]);
        assert_eq!(u16::from_be_bytes([frame[34], frame[35]]), 1024);
        assert_eq!(u16::from_be_bytes([frame[36], frame[37]]), 40_000);
        // Another port pair changes nothing else.
        let other = udp_frame(&addresses(), 2000, 40_001);
        let differing: Vec<usize> = (0..FRAME_LEN).filter(|&i| frame[i] != other[i]).collect();
        assert!(
            differing.iter().all(|i| (34..38).contains(i)),
            "{differing:?}"
        );
    }

    #[test]
    fn the_walk_repeats_no_pair_before_its_length() {
        let walk = PortWalk::new(1024..1030, 40_000..40_004);
        let length = walk.len();
        let pairs: Vec<(u16, u16)> = walk.take(length + 1).collect();
        let distinct: std::collections::BTreeSet<_> = pairs[..length].iter().collect();
        assert_eq!(distinct.len(), length);
        assert_eq!(pairs[length], pairs[0], "then it starts over");
    }
}
