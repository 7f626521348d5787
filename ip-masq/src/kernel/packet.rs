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

/// TCP flags of a connection's first segment.
pub const TCP_SYN: u8 = 0x02;
/// TCP flags of a mid-stream segment.
pub const TCP_ACK: u8 = 0x10;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPV6_HOP_BY_HOP: u8 = 0;

fn tcp_header(frame: &mut Vec<u8>, flags: u8) {
    frame.extend_from_slice(&40000u16.to_be_bytes()); // source port
    frame.extend_from_slice(&443u16.to_be_bytes()); // destination port
    frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]); // seq, ack
    frame.extend_from_slice(&[0x50, flags]); // data offset 5, flags
    frame.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
}

fn udp_header(frame: &mut Vec<u8>) {
    frame.extend_from_slice(&40000u16.to_be_bytes());
    frame.extend_from_slice(&53u16.to_be_bytes());
    frame.extend_from_slice(&8u16.to_be_bytes()); // length
    frame.extend_from_slice(&[0, 0]); // checksum
}

/// How the IP header of a test frame is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpShape {
    /// IPv4 option words after the 20-byte header (IHL 5 + this).
    pub ipv4_option_words: u8,
    /// The IPv4 fragment field (flags and offset): `0x2000` is a first
    /// fragment ("more fragments"), `0x0001` a later one.
    pub ipv4_fragment: u16,
    /// An IPv6 hop-by-hop options header before the transport header.
    pub ipv6_hop_by_hop: bool,
}

/// An Ethernet + IP frame to `destination` carrying `transport` (the
/// protocol number and its header), padded to 64 bytes.
fn ip_frame(destination: IpAddr, shape: IpShape, protocol: u8, transport: &[u8]) -> Vec<u8> {
    let mut frame = match destination {
        IpAddr::V4(destination) => {
            let options = usize::from(shape.ipv4_option_words) * 4;
            let total = 20 + options + transport.len();
            let mut frame = ethernet(ETH_P_IPV4);
            frame.push(0x40 | (5 + shape.ipv4_option_words)); // version 4, IHL
            frame.push(0); // DSCP
            frame.extend_from_slice(&u16::try_from(total).expect("short").to_be_bytes());
            frame.extend_from_slice(&[0, 0]); // id
            frame.extend_from_slice(&shape.ipv4_fragment.to_be_bytes());
            frame.extend_from_slice(&[64, protocol, 0, 0]); // TTL, protocol, checksum
            frame.extend_from_slice(&PROBE_SOURCE_V4);
            frame.extend_from_slice(&destination.octets());
            // No-operation options.
            frame.resize(frame.len() + options, 1);
            frame
        }
        IpAddr::V6(destination) => {
            let extension = if shape.ipv6_hop_by_hop { 8 } else { 0 };
            let mut frame = ethernet(ETH_P_IPV6);
            frame.extend_from_slice(&[0x60, 0, 0, 0]); // version 6
            frame.extend_from_slice(
                &u16::try_from(extension + transport.len())
                    .expect("short")
                    .to_be_bytes(),
            );
            let next = if shape.ipv6_hop_by_hop {
                IPV6_HOP_BY_HOP
            } else {
                protocol
            };
            frame.extend_from_slice(&[next, 64]); // next header, hop limit
            frame.extend_from_slice(&PROBE_SOURCE_V6);
            frame.extend_from_slice(&destination.octets());
            if shape.ipv6_hop_by_hop {
                // Next header, length 0 (8 bytes), a PadN option.
                frame.extend_from_slice(&[protocol, 0, 1, 4, 0, 0, 0, 0]);
            }
            frame
        }
    };
    frame.extend_from_slice(transport);
    frame.resize(frame.len().max(64), 0);
    frame
}

/// A TCP segment with `flags` to `destination`, its IP header shaped by
/// `shape`.
pub fn tcp_to(destination: IpAddr, flags: u8, shape: IpShape) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp_header(&mut tcp, flags);
    ip_frame(destination, shape, IPPROTO_TCP, &tcp)
}

/// A UDP datagram to `destination`.
pub fn udp_to(destination: IpAddr) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8);
    udp_header(&mut udp);
    ip_frame(destination, IpShape::default(), IPPROTO_UDP, &udp)
}

/// `frame` with an 802.1Q tag (VLAN 100) in it, as a frame whose tag the
/// kernel did not take out arrives (the inner tag of QinQ).
pub fn vlan_tagged(frame: &[u8]) -> Vec<u8> {
    let mut tagged = frame[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 100]);
    tagged.extend_from_slice(&frame[12..]);
    tagged
}

/// A 64-byte Ethernet + IPv4/IPv6 + TCP SYN frame (IPv6 needs 74 bytes for
/// its longer header) addressed to `destination`.
pub fn tcp_syn_to(destination: IpAddr) -> Vec<u8> {
    tcp_to(destination, TCP_SYN, IpShape::default())
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
    fn shapes_put_the_tcp_flags_where_the_headers_say() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let plain = tcp_to(v4, TCP_ACK, IpShape::default());
        assert_eq!(plain[14] & 0x0f, 5);
        assert_eq!(plain[14 + 20 + 13], TCP_ACK);
        let options = tcp_to(
            v4,
            TCP_SYN,
            IpShape {
                ipv4_option_words: 2,
                ..IpShape::default()
            },
        );
        assert_eq!(options[14] & 0x0f, 7);
        assert_eq!(&options[30..34], &[10, 0, 0, 1]);
        assert_eq!(options[14 + 28 + 13], TCP_SYN);
        let fragment = tcp_to(
            v4,
            TCP_ACK,
            IpShape {
                ipv4_fragment: 0x2000,
                ..IpShape::default()
            },
        );
        assert_eq!(&fragment[20..22], &[0x20, 0]);
        let v6 = tcp_to(
            "2001:db8::1".parse().unwrap(),
            TCP_ACK,
            IpShape {
                ipv6_hop_by_hop: true,
                ..IpShape::default()
            },
        );
        assert_eq!(v6[14 + 6], 0, "hop-by-hop first");
        assert_eq!(v6[14 + 40], 6, "then TCP");
        assert_eq!(v6[14 + 48 + 13], TCP_ACK);
        assert_eq!(udp_to(v4)[23], 17);
    }

    #[test]
    fn a_vlan_tag_goes_before_the_ethertype() {
        let frame = tcp_syn_to("10.0.0.1".parse().unwrap());
        let tagged = vlan_tagged(&frame);
        assert_eq!(&tagged[12..18], &[0x81, 0x00, 0x00, 100, 0x08, 0x00]);
        assert_eq!(&tagged[34..38], &[10, 0, 0, 1]);
    }

    #[test]
    fn arp_is_not_ip() {
        assert_eq!(&arp_request()[12..14], &ETH_P_ARP);
    }
}
