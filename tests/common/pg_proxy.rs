//! A loopback TCP proxy in front of a test's PostgreSQL server that can lose
//! the answer to a `COMMIT`: the server commits, the client never hears so
//! and sees its connection drop. That is the "did my commit happen?" case a
//! client must settle by reading back.
//!
//! The client→server stream is parsed as PostgreSQL frontend messages (one
//! type byte, then a 4-byte big-endian length counting itself; the first
//! messages of a connection — startup, SSLRequest, GSSENCRequest — have no
//! type byte), so a simple-query `COMMIT` is recognised even when split
//! across reads or sent together with other messages.

#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// How long the proxy lets the server work on a COMMIT whose answer it
/// drops before it closes the connection.
const COMMIT_GRACE: Duration = Duration::from_millis(300);

pub struct LostCommitProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    armed: AtomicBool,
    fired: AtomicUsize,
    /// The tasks of live connections; aborting one closes both sockets.
    conns: Mutex<Vec<AbortHandle>>,
}

impl LostCommitProxy {
    /// Listens on a free loopback port and relays each connection to
    /// `127.0.0.1:upstream_port`.
    pub async fn start(upstream_port: u16) -> LostCommitProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let task = tokio::spawn(relay(client, upstream_port, shared.clone()));
                    let mut conns = shared.conns.lock().unwrap();
                    conns.retain(|c| !c.is_finished());
                    conns.push(task.abort_handle());
                }
            }
        });
        LostCommitProxy {
            port,
            shared,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next simple-query `COMMIT` goes to the server, but its answer is
    /// not relayed: the connection is closed after [`COMMIT_GRACE`]. Once.
    pub fn arm(&self) {
        self.shared.armed.store(true, Ordering::SeqCst);
    }

    /// How many COMMIT answers the proxy has dropped.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Closes every live connection at once, as a network drop would.
    pub fn cut_all(&self) {
        for conn in self.shared.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

impl Drop for LostCommitProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

/// Relays one connection until either side closes (or a COMMIT's answer is
/// dropped). Returning drops, and so closes, both sockets.
async fn relay(mut client: TcpStream, upstream_port: u16, shared: Arc<Shared>) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
        return;
    };
    let mut frontend = Frontend::default();
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_server = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = client.read(&mut from_client) => {
                let Ok(n @ 1..) = n else { return };
                let chunk = &from_client[..n];
                let commit = frontend.feed(chunk);
                if server.write_all(chunk).await.is_err() {
                    return;
                }
                if commit > 0 && shared.armed.swap(false, Ordering::SeqCst) {
                    // Let the server answer (and commit), but drop it.
                    let _ = tokio::time::timeout(COMMIT_GRACE, async {
                        while let Ok(1..) = server.read(&mut from_server).await {}
                    })
                    .await;
                    shared.fired.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            n = server.read(&mut from_server) => {
                let Ok(n @ 1..) = n else { return };
                if client.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Splits a client→server byte stream into PostgreSQL frontend messages.
#[derive(Default)]
pub struct Frontend {
    /// Bytes of a message not complete yet.
    pending: Vec<u8>,
    /// Past the startup message: messages now start with a type byte.
    started: bool,
}

/// Request codes sent, untyped, before the startup message.
const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;

impl Frontend {
    /// Takes the next bytes from the client; returns how many simple-query
    /// `COMMIT` messages they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        self.pending.extend_from_slice(bytes);
        let mut commits = 0;
        loop {
            // Untyped: length + payload. Typed: type byte, then the same.
            let at = usize::from(self.started);
            let Some(len) = self.pending.get(at..at + 4) else {
                break;
            };
            let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
            let total = at + len.max(4);
            if self.pending.len() < total {
                break;
            }
            let message: Vec<u8> = self.pending.drain(..total).collect();
            if !self.started {
                let code = message
                    .get(4..8)
                    .map(|c| u32::from_be_bytes(c.try_into().unwrap()));
                // Anything but an SSL/GSS request is the startup message
                // (or a CancelRequest, after which the connection ends).
                self.started = !matches!(code, Some(SSL_REQUEST | GSSENC_REQUEST));
            } else if message[0] == b'Q' && is_commit(&message[5..]) {
                commits += 1;
            }
        }
        commits
    }
}

/// Whether a simple query's text (NUL-terminated) is a bare COMMIT.
fn is_commit(text: &[u8]) -> bool {
    let text = text.strip_suffix(&[0]).unwrap_or(text);
    let text = String::from_utf8_lossy(text);
    let text = text.trim().trim_end_matches(';').trim();
    text.eq_ignore_ascii_case("COMMIT")
}
