//! The kernel's connection tracking table, through ctnetlink: list the
//! entries (`conntrack -L`), delete one (`conntrack -D`), and the
//! table-wide counters of `/proc/net/stat/nf_conntrack` and its size.
//!
//! The netfilter message types come from `netlink-packet-netfilter`; this
//! module only sends requests on a `NETLINK_NETFILTER` socket and reads the
//! multipart answers.

use std::{fs, io, net::IpAddr};

use netlink_packet_core_netfilter::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{
        ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Status, Tuple,
    },
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use thiserror::Error;

/// One direction of a tracked connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// Source address.
    pub source: IpAddr,
    /// Destination address.
    pub destination: IpAddr,
    /// Source port (0 for protocols without ports).
    pub source_port: u16,
    /// Destination port (0 for protocols without ports).
    pub destination_port: u16,
}

/// One conntrack entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, ...).
    pub protocol: u8,
    /// As the connection's first packet was sent.
    pub original: Flow,
    /// As the answers come back; with source NAT, its destination is the
    /// translated source.
    pub reply: Flow,
    /// Whether source NAT applies (`IPS_SRC_NAT`).
    pub source_nat: bool,
}

/// Errors talking to conntrack.
#[derive(Debug, Error)]
pub enum ConntrackError {
    /// The netlink socket failed.
    #[error("conntrack netlink socket")]
    Socket(#[source] io::Error),
    /// The kernel refused a request.
    #[error("conntrack refused the request: {0}")]
    Refused(io::Error),
    /// An answer could not be read.
    #[error("unreadable conntrack answer: {0}")]
    Decode(String),
    /// A /proc or /proc/sys file could not be read.
    #[error("cannot read {path}")]
    Proc {
        /// The file.
        path: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn protocol_number(protocol: &Protocol) -> u8 {
    match protocol {
        Protocol::Icmp => 1,
        Protocol::Igmp => 2,
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Dccp => 33,
        Protocol::IpIp => 94,
        Protocol::Gre => 47,
        Protocol::Ipv6Icmp => 58,
        Protocol::L2tp => 115,
        Protocol::Sctp => 132,
        Protocol::Other(number) => *number,
        _ => 0,
    }
}

fn protocol_of(number: u8) -> Protocol {
    match number {
        1 => Protocol::Icmp,
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        58 => Protocol::Ipv6Icmp,
        132 => Protocol::Sctp,
        other => Protocol::Other(other),
    }
}

/// A flow and protocol from a CTA_TUPLE_* attribute.
fn flow_of(tuples: &[Tuple]) -> Option<(Flow, u8)> {
    let (mut source, mut destination) = (None, None);
    let (mut source_port, mut destination_port, mut protocol) = (0, 0, 0);
    for tuple in tuples {
        match tuple {
            Tuple::Ip(parts) => {
                for part in parts {
                    match part {
                        IPTuple::SourceAddress(address) => source = Some(*address),
                        IPTuple::DestinationAddress(address) => destination = Some(*address),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(parts) => {
                for part in parts {
                    match part {
                        ProtoTuple::Protocol(number) => protocol = protocol_number(number),
                        ProtoTuple::SourcePort(port) => source_port = *port,
                        ProtoTuple::DestinationPort(port) => destination_port = *port,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        Flow {
            source: source?,
            destination: destination?,
            source_port,
            destination_port,
        },
        protocol,
    ))
}

fn entry_of(attributes: &[ConntrackAttribute]) -> Option<Entry> {
    let (mut original, mut reply, mut status) = (None, None, Status::empty());
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(tuples) => original = flow_of(tuples),
            ConntrackAttribute::CtaTupleReply(tuples) => reply = flow_of(tuples),
            ConntrackAttribute::CtaStatus(bits) => status = *bits,
            _ => {}
        }
    }
    let (original, protocol) = original?;
    let (reply, _) = reply?;
    Some(Entry {
        protocol,
        original,
        reply,
        source_nat: status.contains(Status::SrcNat),
    })
}

/// A ctnetlink socket in the caller's network namespace.
pub struct Conntrack {
    socket: Socket,
    sequence: u32,
}

impl Conntrack {
    /// Opens the socket.
    ///
    /// # Errors
    /// When netlink sockets are not available (no CAP_NET_ADMIN needed to
    /// open, but to list the table).
    pub fn open() -> Result<Self, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Socket)?;
        socket.bind_auto().map_err(ConntrackError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(ConntrackError::Socket)?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    fn request(
        &mut self,
        message: ConntrackMessage,
        family: NetfilterProtoFamily,
        flags: u16,
    ) -> Result<Vec<Entry>, ConntrackError> {
        self.sequence += 1;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(family, 0, 0),
                message,
            )),
        );
        packet.finalize();
        let mut buffer = vec![0; packet.header.length as usize];
        packet.serialize(&mut buffer);
        self.socket
            .send(&buffer, 0)
            .map_err(ConntrackError::Socket)?;
        let mut entries = Vec::new();
        loop {
            let (bytes, _) = self
                .socket
                .recv_from_full()
                .map_err(ConntrackError::Socket)?;
            let mut offset = 0;
            while offset < bytes.len() {
                let reply = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes[offset..])
                    .map_err(|err| ConntrackError::Decode(err.to_string()))?;
                let length = reply.header.length as usize;
                if length == 0 {
                    return Err(ConntrackError::Decode("zero-length netlink message".into()));
                }
                offset += length;
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(entries),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            // The acknowledgement of a request without answers.
                            None => Ok(entries),
                            Some(code) => Err(ConntrackError::Refused(
                                io::Error::from_raw_os_error(-code.get()),
                            )),
                        };
                    }
                    NetlinkPayload::InnerMessage(message) => {
                        if let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)) =
                            message.inner
                            && let Some(entry) = entry_of(&attributes)
                        {
                            entries.push(entry);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Every entry of the table, IPv4 and IPv6.
    ///
    /// # Errors
    /// The socket fails or the kernel refuses (no CAP_NET_ADMIN).
    pub fn list(&mut self) -> Result<Vec<Entry>, ConntrackError> {
        let mut entries = self.request(
            ConntrackMessage::Get(Vec::new()),
            NetfilterProtoFamily::IPv4,
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        entries.extend(self.request(
            ConntrackMessage::Get(Vec::new()),
            NetfilterProtoFamily::IPv6,
            NLM_F_REQUEST | NLM_F_DUMP,
        )?);
        Ok(entries)
    }

    /// Deletes the entry whose original direction is `flow`. An entry that
    /// is already gone is not an error.
    ///
    /// # Errors
    /// The socket fails or the kernel refuses.
    pub fn delete(&mut self, protocol: u8, flow: &Flow) -> Result<(), ConntrackError> {
        let tuple = vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(flow.source),
                IPTuple::DestinationAddress(flow.destination),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(protocol_of(protocol)),
                ProtoTuple::SourcePort(flow.source_port),
                ProtoTuple::DestinationPort(flow.destination_port),
            ]),
        ];
        let family = if flow.source.is_ipv4() {
            NetfilterProtoFamily::IPv4
        } else {
            NetfilterProtoFamily::IPv6
        };
        match self.request(
            ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
            family,
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            Err(ConntrackError::Refused(err)) if err.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// The table-wide counters of `/proc/net/stat/nf_conntrack`, summed over
/// the CPUs, by name (`insert_failed`, `drop`, `early_drop`, ...).
///
/// # Errors
/// The file cannot be read.
pub fn statistics() -> Result<Vec<(String, u64)>, ConntrackError> {
    const PATH: &str = "/proc/net/stat/nf_conntrack";
    let text =
        fs::read_to_string(PATH).map_err(|source| ConntrackError::Proc { path: PATH, source })?;
    Ok(parse_statistics(&text))
}

/// Entries in use and the table's size (`nf_conntrack_count`, `_max`).
///
/// # Errors
/// The files cannot be read.
pub fn usage() -> Result<(u64, u64), ConntrackError> {
    let read = |path: &'static str| -> Result<u64, ConntrackError> {
        let text =
            fs::read_to_string(path).map_err(|source| ConntrackError::Proc { path, source })?;
        text.trim()
            .parse()
            .map_err(|_| ConntrackError::Decode(format!("{path}: {text:?}")))
    };
    Ok((
        read("/proc/sys/net/netfilter/nf_conntrack_count")?,
        read("/proc/sys/net/netfilter/nf_conntrack_max")?,
    ))
}

fn parse_statistics(text: &str) -> Vec<(String, u64)> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    let mut sums = vec![0u64; names.len()];
    for line in lines {
        for (sum, value) in sums.iter_mut().zip(line.split_whitespace()) {
            *sum += u64::from_str_radix(value, 16).unwrap_or(0);
        }
    }
    names
        .into_iter()
        .zip(sums)
        // `entries` repeats the global count on every CPU's line.
        .filter(|(name, _)| *name != "entries")
        .map(|(name, sum)| (name.to_owned(), sum))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_summed_over_cpus_from_hex() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    00000005  00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 0000000a 00000002 00000000 00000000  00000000 00000000 00000000 00000003\n\
                    00000005  00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000006 00000000 00000000 00000000  00000000 00000000 00000000 00000000\n";
        let stats = parse_statistics(text);
        let get = |name: &str| stats.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(get("insert_failed"), Some(16));
        assert_eq!(get("drop"), Some(2));
        assert_eq!(get("clashres"), Some(2));
        assert_eq!(get("search_restart"), Some(3));
        assert_eq!(get("entries"), None);
    }
}
