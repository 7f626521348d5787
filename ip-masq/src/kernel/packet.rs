//! Test packets for asking the loaded classifier itself what it decides
//! (BPF_PROG_TEST_RUN): `ip-masq check --probe`, the compatibility table
//! test and the benchmarks all use them. Pure: builds bytes only.

use std::net::IpAddr;

const ETH_P_IPV4: [u8; 2] = [0x08, 0x00];
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const ETH_P_ARP: [u8; 2] = [0x08, 0x06];

/// Source address used in probe packets; the classifier ignores it.
const PROBE_SOURCE_V4: [u8; 4] = [10, 244, 1, 10];
const PROBE_SOURCE_V6: [u8; 16] = [0xfd, 0, 0x2, 0x44, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

fn ethernet(ether_type: [u8; 2]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(128);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // destination MAC
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // source MAC
    frame.extend_from_slice(&ether_type);
    frame
}

fn tcp_syn(frame: &mut Vec<u8>) {
    frame.extend_from_slice(&40000u16.to_be_bytes()); // source port
    frame.extend_from_slice(&443u16.to_be_bytes()); // destination port
    frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]); // seq, ack
    frame.extend_from_slice(&[0x50, 0x02]); // data offset 5, SYN
    frame.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
}

/// A 64-byte Ethernet + IPv4/IPv6 + TCP SYN frame (IPv6 needs 74 bytes for
/// its longer header) addressed to `destination`.
pub fn tcp_syn_to(destination: IpAddr) -> Vec<u8> {
    let mut frame = match destination {
        IpAddr::V4(destination) => {
            let mut frame = ethernet(ETH_P_IPV4);
            frame.extend_from_slice(&[0x45, 0]); // version 4, IHL 5, DSCP
            frame.extend_from_slice(&40u16.to_be_bytes()); // total length
            frame.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]); // id, DF, TTL, TCP, checksum
            frame.extend_from_slice(&PROBE_SOURCE_V4);
            frame.extend_from_slice(&destination.octets());
            frame
        }
        IpAddr::V6(destination) => {
            let mut frame = ethernet(ETH_P_IPV6);
            frame.extend_from_slice(&[0x60, 0, 0, 0]); // version 6
            frame.extend_from_slice(&20u16.to_be_bytes()); // payload length
            frame.extend_from_slice(&[6, 64]); // next header TCP, hop limit
            frame.extend_from_slice(&PROBE_SOURCE_V6);
            frame.extend_from_slice(&destination.octets());
            frame
        }
    };
    tcp_syn(&mut frame);
    frame.resize(frame.len().max(64), 0);
    frame
}

/// An ARP request: a non-IP frame the classifier must leave alone.
pub fn arp_request() -> Vec<u8> {
    let mut frame = ethernet(ETH_P_ARP);
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.resize(64, 0);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_probe_is_64_bytes_with_destination_at_offset_30() {
        let frame = tcp_syn_to("198.51.100.7".parse().unwrap());
        assert_eq!(frame.len(), 64);
        assert_eq!(&frame[12..14], &ETH_P_IPV4);
        assert_eq!(&frame[30..34], &[198, 51, 100, 7]);
        assert_eq!(frame[23], 6, "protocol TCP");
    }

    #[test]
    fn ipv6_probe_has_destination_at_offset_38() {
        let frame = tcp_syn_to("2001:db8::1".parse().unwrap());
        assert_eq!(frame.len(), 74);
        assert_eq!(&frame[12..14], &ETH_P_IPV6);
        assert_eq!(&frame[38..40], &[0x20, 0x01]);
        assert_eq!(frame[53], 1);
    }

    #[test]
    fn arp_is_not_ip() {
        assert_eq!(&arp_request()[12..14], &ETH_P_ARP);
    }
}
