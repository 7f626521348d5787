//! The external hosts: listeners in the external namespace that answer
//! each connection with the source address they saw, and record it with
//! its time, so a test can tell which decision every connection got and
//! when a change took effect.

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use super::EXTERNAL_NETNS;
use crate::netns::enter_netns;

/// One accepted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub at: SystemTime,
    /// The address the client connected to.
    pub destination: IpAddr,
    /// The source address it arrived from.
    pub source: IpAddr,
}

/// Listeners on the external addresses; stops on drop.
pub struct External {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The port the external listeners use.
pub const EXTERNAL_PORT: u16 = 8080;

impl External {
    /// Listens on `EXTERNAL_PORT` of each address, inside the external
    /// namespace.
    ///
    /// # Errors
    /// When a listener cannot be bound.
    pub fn start(addresses: &[IpAddr]) -> io::Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for address in addresses {
            let address = SocketAddr::new(*address, EXTERNAL_PORT);
            let (tx, rx) = std::sync::mpsc::channel();
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                enter_netns(&Path::new("/run/netns").join(EXTERNAL_NETNS));
                let listener = bind(address);
                let listener = match listener {
                    Ok(listener) => {
                        let _ = tx.send(Ok(()));
                        listener
                    }
                    Err(err) => {
                        let _ = tx.send(Err(err));
                        return;
                    }
                };
                serve(&listener, address.ip(), &seen, &stop);
            }));
            rx.recv().map_err(io::Error::other)??;
        }
        Ok(Self {
            port: EXTERNAL_PORT,
            seen,
            stop,
            threads,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every connection so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Connections accepted at or after `since`.
    pub fn seen_since(&self, since: SystemTime) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.at >= since).collect()
    }
}

fn bind(address: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(socket)
}

fn serve(
    listener: &socket2::Socket,
    destination: IpAddr,
    seen: &Mutex<Vec<Seen>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => panic!("accept on {destination}: {err}"),
        };
        let Some(peer) = peer.as_socket() else {
            continue;
        };
        seen.lock().expect("lock").push(Seen {
            at: SystemTime::now(),
            destination,
            source: peer.ip(),
        });
        let mut stream: std::net::TcpStream = stream.into();
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = stream.write_all(format!("{}\n", peer.ip()).as_bytes());
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Read until the client closes, so the client side ends the
        // connection and this side keeps no TIME_WAIT.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut sink = [0u8; 64];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    }
}

impl Drop for External {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
