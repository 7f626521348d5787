//! Continuous TCP load for the reliability tests: a persistent listener on
//! the external host that tallies the source address of every connection it
//! accepts, and client loops in pods that open new connections back to back
//! until stopped.
//!
//! Every connection is new to conntrack, so every one is a fresh masquerade
//! decision: a single wrong decision during a reload or a restart shows up
//! as a wrong source address in the tally. Clients close with a reset after
//! the server has closed, so neither side keeps a TIME_WAIT socket and the
//! loops can run for minutes without running out of ports.

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::{Netns, enter_netns};

/// How long an idle `accept` blocks before the listener checks its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// Per-connection deadline for the client's connect and read.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed connection, so a broken path does not spin a core.
const FAILURE_BACKOFF: Duration = Duration::from_millis(20);

/// A listener that records the peer address of every connection it accepts
/// and answers with that address as text. Stops on drop.
pub struct SourceTally {
    address: SocketAddr,
    counts: Arc<Mutex<BTreeMap<IpAddr, u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl SourceTally {
    /// Listens on `destination` (an address of `server`), any free port.
    ///
    /// # Errors
    /// Fails when the socket cannot be bound in `server`.
    pub fn start(server: &Netns, destination: IpAddr) -> io::Result<Self> {
        let listener = server.enter(move || -> io::Result<socket2::Socket> {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(SocketAddr::new(destination, 0)),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.bind(&SocketAddr::new(destination, 0).into())?;
            // A deep backlog: several clients connect back to back.
            socket.listen(4096)?;
            // accept(2) honours SO_RCVTIMEO, which lets the loop see `stop`.
            socket.set_read_timeout(Some(ACCEPT_POLL))?;
            Ok(socket)
        })?;
        let address = listener
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has no inet address"))?;
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let counts = Arc::clone(&counts);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || serve(&listener, &counts, &stop))
        };
        Ok(Self {
            address,
            counts,
            stop,
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Connections accepted so far, by the source address they arrived from.
    pub fn counts(&self) -> BTreeMap<IpAddr, u64> {
        self.counts.lock().expect("tally lock").clone()
    }

    /// Connections accepted so far from `source`.
    pub fn count(&self, source: IpAddr) -> u64 {
        self.counts().get(&source).copied().unwrap_or(0)
    }

    /// Connections accepted so far.
    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }
}

impl Drop for SourceTally {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result
                    .expect("listener thread panicked")
                    .expect("listener failed");
            }
        }
    }
}

fn serve(
    listener: &socket2::Socket,
    counts: &Mutex<BTreeMap<IpAddr, u64>>,
    stop: &AtomicBool,
) -> io::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let (socket, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            // The client reset the connection before we got to it: it
            // still arrived, but its address is gone with it.
            Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(err) => return Err(err),
        };
        let peer = peer
            .as_socket()
            .ok_or_else(|| io::Error::other("peer has no inet address"))?
            .ip();
        *counts.lock().expect("tally lock").entry(peer).or_default() += 1;
        let mut stream = TcpStream::from(socket);
        // The client may already be gone; what it was seen as is recorded.
        let _ = stream.write_all(peer.to_string().as_bytes());
        // Dropping closes: our FIN goes first, the client answers with a reset.
    }
    Ok(())
}

/// What one client loop did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientReport {
    /// Connections that completed: connected, got the server's answer.
    pub completed: u64,
    /// Connections that failed, by error.
    pub failures: BTreeMap<String, u64>,
    /// What the server said it saw, by address.
    pub seen_as: BTreeMap<IpAddr, u64>,
}

impl ClientReport {
    /// Failed connections.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Completed connections the server saw from `source`.
    pub fn seen_as(&self, source: IpAddr) -> u64 {
        self.seen_as.get(&source).copied().unwrap_or(0)
    }
}

/// A thread inside a client namespace that opens one connection after the
/// other to `target` until stopped. Stops on drop.
pub struct ConnectLoop {
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<ClientReport>>,
    completed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl ConnectLoop {
    /// Starts connecting from `client` to `target`.
    pub fn start(client: &Netns, target: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(ClientReport::default()));
        let completed = Arc::new(AtomicU64::new(0));
        let netns: PathBuf = client.path();
        let thread = {
            let stop = Arc::clone(&stop);
            let report = Arc::clone(&report);
            let completed = Arc::clone(&completed);
            std::thread::spawn(move || {
                enter_netns(&netns);
                while !stop.load(Ordering::Relaxed) {
                    let outcome = connect_once(target);
                    let mut report = report.lock().expect("report lock");
                    match outcome {
                        Ok(seen) => {
                            report.completed += 1;
                            *report.seen_as.entry(seen).or_default() += 1;
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            *report.failures.entry(err.to_string()).or_default() += 1;
                            drop(report);
                            std::thread::sleep(FAILURE_BACKOFF);
                        }
                    }
                }
            })
        };
        Self {
            target,
            stop,
            report,
            completed,
            thread: Some(thread),
        }
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Connections completed so far (cheap: no lock).
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Everything so far.
    pub fn report(&self) -> ClientReport {
        self.report.lock().expect("report lock").clone()
    }

    /// Stops the loop and returns its final report.
    pub fn stop(mut self) -> ClientReport {
        self.halt();
        self.report()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result.expect("client thread panicked");
            }
        }
    }
}

impl Drop for ConnectLoop {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One connection: connect, read the address the server saw, reset.
fn connect_once(target: SocketAddr) -> io::Result<IpAddr> {
    let mut stream = TcpStream::connect_timeout(&target, CLIENT_TIMEOUT)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reply = String::new();
    let read = stream.read_to_string(&mut reply);
    // Linger 0: close with a reset, so no TIME_WAIT socket holds the port.
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    read?;
    reply
        .parse()
        .map_err(|_| io::Error::other(format!("unexpected answer {reply:?}")))
}
