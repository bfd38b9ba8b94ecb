//! A loopback TCP proxy in front of one server, for faults an interceptor cannot make:
//! answers held back while the requests go through (a slow network on the way back), and
//! connections that go silent without closing (a half-open HTTP/2 stream).
//!
//! Point only the requests under test at it (an [`Outage::to`](super::outage::Outage::to)
//! redirect): the SDK pools connections per host and port, so nothing else shares its
//! connections. Every thread it starts ends when it is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How often a blocked read looks at the proxy's switches.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Switches {
    stop: AtomicBool,
    /// Answers are held (requests still pass) while set.
    hold: AtomicBool,
    /// Every answer's bytes are passed on this many milliseconds after they came.
    delay_ms: AtomicU64,
    /// Connections numbered below this pass nothing more, either way, and stay open.
    frozen_below: AtomicU64,
    next_connection: AtomicU64,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// Bytes of answers held back so far.
    held: AtomicU64,
}

#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    switches: Arc<Switches>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards every connection to `upstream`
    /// (an `http://` endpoint on loopback).
    pub fn start(upstream: &str) -> std::io::Result<Proxy> {
        let bad =
            |why: &str| std::io::Error::new(ErrorKind::InvalidInput, format!("{upstream}: {why}"));
        let host = upstream
            .strip_prefix("http://")
            .ok_or_else(|| bad("the proxy forwards plain http only"))?
            .trim_end_matches('/');
        let upstream = host
            .to_socket_addrs()?
            .find(|a| a.ip().is_loopback())
            .ok_or_else(|| bad("the proxy forwards to loopback only"))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let switches = Arc::new(Switches::default());
        let threads = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (switches, threads) = (Arc::clone(&switches), Arc::clone(&threads));
            std::thread::spawn(move || accept_loop(&listener, upstream, &switches, &threads))
        };
        Ok(Proxy {
            addr,
            switches,
            threads,
            accept: Some(accept),
        })
    }

    /// The endpoint to send requests to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// While on, answers wait in the proxy (requests still reach the server); turned off,
    /// what waited is passed on at once.
    pub fn hold_answers(&self, on: bool) {
        self.switches.hold.store(on, Ordering::SeqCst);
    }

    /// From now on every answer reaches the client `delay` after the server sent it (a
    /// slow network or a slow server; zero: none).
    pub fn delay_answers(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.switches.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Every connection open now goes silent for good, both ways, without closing; later
    /// connections pass as before.
    pub fn freeze_open_connections(&self) {
        let next = self.switches.next_connection.load(Ordering::SeqCst);
        self.switches.frozen_below.store(next, Ordering::SeqCst);
    }

    /// Bytes of answers held back by [`hold_answers`](Proxy::hold_answers) so far.
    pub fn held_bytes(&self) -> u64 {
        self.switches.held.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.switches.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.switches.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for t in std::mem::take(&mut *self.threads.lock()) {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    upstream: SocketAddr,
    switches: &Arc<Switches>,
    threads: &Mutex<Vec<JoinHandle<()>>>,
) {
    while !switches.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(_) => return,
        };
        switches.accepted.fetch_add(1, Ordering::SeqCst);
        let id = switches.next_connection.fetch_add(1, Ordering::SeqCst);
        let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
            continue;
        };
        let streams = (
            client.try_clone(),
            server.try_clone(),
            client.set_nonblocking(false),
        );
        let (Ok(client2), Ok(server2), Ok(())) = streams else {
            continue;
        };
        let mut threads = threads.lock();
        for (from, to, answers) in [(client, server, false), (server2, client2, true)] {
            let switches = Arc::clone(switches);
            threads.push(std::thread::spawn(move || {
                pipe(from, to, id, answers, &switches);
            }));
        }
    }
}

/// Copies `from` to `to` until either closes or the proxy stops; `answers`: the server's
/// side, which [`Proxy::hold_answers`] holds back.
fn pipe(mut from: TcpStream, mut to: TcpStream, id: u64, answers: bool, switches: &Switches) {
    if from.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut held: Vec<u8> = Vec::new();
    let mut delayed: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
    while !switches.stop.load(Ordering::SeqCst) {
        let frozen = id < switches.frozen_below.load(Ordering::SeqCst);
        let hold = answers && switches.hold.load(Ordering::SeqCst);
        let delay = match switches.delay_ms.load(Ordering::SeqCst) {
            0 => None,
            ms if answers => Some(Duration::from_millis(ms)),
            _ => None,
        };
        while let Some((due, _)) = delayed.front() {
            if frozen || *due > Instant::now() {
                break;
            }
            if let Some((_, bytes)) = delayed.pop_front()
                && to.write_all(&bytes).is_err()
            {
                return;
            }
        }
        if !frozen && !hold && !held.is_empty() {
            if to.write_all(&held).is_err() {
                break;
            }
            held.clear();
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(_) if frozen => {}
            Ok(n) if hold => {
                switches.held.fetch_add(n as u64, Ordering::SeqCst);
                held.extend_from_slice(&buf[..n]);
            }
            Ok(n) if delay.is_some() || !delayed.is_empty() => {
                let due = Instant::now() + delay.unwrap_or_default();
                delayed.push_back((due, buf[..n].to_vec()));
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    if id >= switches.frozen_below.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
}
