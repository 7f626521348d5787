//! The end-to-end tests' traffic tool, run inside pods on the test node
//! (mounted from the host, so no image carries it):
//!
//! - `ipm-flows serve PORT`: answers every TCP connection with the source
//!   address it arrived from, then closes.
//! - `ipm-flows get ADDR:PORT [--bind IP]`: one connection; prints the
//!   source the server saw.
//! - `ipm-flows run --every-ms N [--bind IP] ADDR:PORT...`: opens a new
//!   connection to each target every N ms, forever, and prints once a
//!   second a JSON line with the totals so far: per target, how often the
//!   server saw the client's own address (`kept`), which other sources it
//!   saw (`translated`), and how many connections failed, with the time of
//!   the first and last failure.
//!
//! Each connection is new to conntrack, so each is a fresh masquerade
//! decision.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const TIMEOUT: Duration = Duration::from_secs(2);

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One connection: the local address it used and what the server said.
fn connect(target: SocketAddr, bind: Option<IpAddr>) -> std::io::Result<(IpAddr, String)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if let Some(bind) = bind {
        socket.bind(&SocketAddr::new(bind, 0).into())?;
    }
    socket.connect_timeout(&target.into(), TIMEOUT)?;
    let local = socket
        .local_addr()?
        .as_socket()
        .map(|a| a.ip())
        .ok_or_else(|| std::io::Error::other("no local address"))?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    // Reset instead of FIN: no TIME_WAIT on either side, so the loop can
    // run for as long as a test needs without running out of ports.
    let socket = socket2::Socket::from(stream);
    let _ = socket.set_linger(Some(Duration::ZERO));
    Ok((local, reply.trim().to_owned()))
}

#[derive(Default)]
struct Tally {
    attempts: u64,
    kept: u64,
    translated: BTreeMap<String, u64>,
    failed: u64,
    first_failure: Option<f64>,
    last_failure: Option<f64>,
    last_error: Option<String>,
}

fn serve(port: u16) -> ExitCode {
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("bind {port}: {err}");
            return ExitCode::from(2);
        }
    };
    println!("serving on {port}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if let Ok(peer) = stream.peer_addr() {
            let _ = stream.write_all(format!("{}\n", peer.ip()).as_bytes());
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.set_read_timeout(Some(TIMEOUT));
        let mut sink = [0u8; 64];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    }
    ExitCode::SUCCESS
}

fn parse_target(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|err| format!("{text}: {err}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut bind = None;
    let mut every = Duration::from_millis(20);
    let mut rest = Vec::new();
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--bind" => bind = iter.next().and_then(|v| v.parse().ok()),
            "--every-ms" => {
                every =
                    Duration::from_millis(iter.next().and_then(|v| v.parse().ok()).unwrap_or(20));
            }
            other => rest.push(other.to_owned()),
        }
    }
    match args.first().map(String::as_str) {
        Some("serve") => serve(rest.first().and_then(|p| p.parse().ok()).unwrap_or(8080)),
        Some("get") => {
            let Some(target) = rest.first().map(|t| parse_target(t)) else {
                eprintln!("usage: ipm-flows get ADDR:PORT [--bind IP]");
                return ExitCode::from(2);
            };
            let target = match target {
                Ok(target) => target,
                Err(err) => {
                    eprintln!("{err}");
                    return ExitCode::from(2);
                }
            };
            match connect(target, bind) {
                Ok((_, seen)) => {
                    println!("{seen}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("{target}: {err}");
                    ExitCode::from(1)
                }
            }
        }
        Some("run") => {
            let targets: Result<Vec<SocketAddr>, String> =
                rest.iter().map(|t| parse_target(t)).collect();
            let targets = match targets {
                Ok(targets) if !targets.is_empty() => targets,
                Ok(_) => {
                    eprintln!("usage: ipm-flows run --every-ms N [--bind IP] ADDR:PORT...");
                    return ExitCode::from(2);
                }
                Err(err) => {
                    eprintln!("{err}");
                    return ExitCode::from(2);
                }
            };
            run(&targets, bind, every)
        }
        _ => {
            eprintln!(
                "usage: ipm-flows serve PORT | get ADDR:PORT | run --every-ms N ADDR:PORT..."
            );
            ExitCode::from(2)
        }
    }
}

fn run(targets: &[SocketAddr], bind: Option<IpAddr>, every: Duration) -> ExitCode {
    let started = now();
    let mut tallies: Vec<Tally> = targets.iter().map(|_| Tally::default()).collect();
    let mut next_report = Instant::now() + Duration::from_secs(1);
    let mut next = Instant::now();
    loop {
        for (target, tally) in targets.iter().zip(tallies.iter_mut()) {
            tally.attempts += 1;
            match connect(*target, bind) {
                Ok((local, seen)) if seen == local.to_string() => tally.kept += 1,
                Ok((_, seen)) => *tally.translated.entry(seen).or_default() += 1,
                Err(err) => {
                    let at = now();
                    tally.failed += 1;
                    tally.first_failure.get_or_insert(at);
                    tally.last_failure = Some(at);
                    tally.last_error = Some(err.to_string());
                }
            }
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            let report: BTreeMap<String, serde_json::Value> = targets
                .iter()
                .zip(&tallies)
                .map(|(target, t)| {
                    (
                        target.to_string(),
                        serde_json::json!({
                            "attempts": t.attempts,
                            "kept": t.kept,
                            "translated": t.translated,
                            "failed": t.failed,
                            "firstFailure": t.first_failure,
                            "lastFailure": t.last_failure,
                            "lastError": t.last_error,
                        }),
                    )
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"started": started, "at": now(), "targets": report})
            );
        }
        next += every;
        let wait = next.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            // Behind schedule: go on at once, and do not try to catch up.
            next = Instant::now();
        } else {
            std::thread::sleep(wait);
        }
    }
}
