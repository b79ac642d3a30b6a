//! A fake Zebra-class label printer on its raw TCP port (loopback): answers
//! `~HS` with whatever status the test sets (or, as newer firmware does
//! while out of media or with the head open, with nothing), parses every
//! label format it receives, and "prints" it only when it could: a format
//! sent while the printer has a problem is a station fault it records.
//!
//! Its ZPL reading is written here, apart from the station's, so that it
//! checks the station rather than agreeing with it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the printer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ready,
    PaperOut,
    HeadOpen,
    Paused,
    RibbonOut,
    /// Says nothing to `~HS`.
    Silent,
}

/// One printed label, as read from its ZPL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Printed {
    /// Field data of `^BX` (DataMatrix) fields, `^FH` escapes undone.
    pub datamatrix: Vec<String>,
    /// Field data of the other fields.
    pub text: Vec<String>,
    pub zpl: String,
}

#[derive(Debug)]
pub struct ZebraState {
    pub status: Status,
    pub printed: Vec<Printed>,
    /// `~HS` requests answered or ignored.
    pub status_requests: usize,
    /// What the station did wrong: malformed ZPL, a label sent to a printer
    /// that had said it could not print.
    pub faults: Vec<String>,
}

pub struct FakeZebra {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<ZebraState>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeZebra {
    pub async fn start(status: Status) -> FakeZebra {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut z = FakeZebra {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new(ZebraState {
                status,
                printed: Vec::new(),
                status_requests: 0,
                faults: Vec::new(),
            })),
            task: None,
        };
        z.serve(listener);
        z
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(connection(sock, state.clone()));
            }
        }));
    }

    /// Refuses connections (switched off) until [`FakeZebra::restart`].
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        for _ in 0..50 {
            if let Ok(l) = tokio::net::TcpListener::bind(self.addr).await {
                self.serve(l);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot listen on {} again", self.addr);
    }

    pub fn set(&self, status: Status) {
        self.state.lock().unwrap().status = status;
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut ZebraState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn printed(&self) -> Vec<Printed> {
        self.with(|s| s.printed.clone())
    }

    pub fn faults(&self) -> Vec<String> {
        self.with(|s| s.faults.clone())
    }

    /// The `[printer]` section for a station printing here.
    pub fn section(&self) -> String {
        format!(
            "\n[printer]\nbackend = \"tcp\"\naddress = \"{}\"\ntimeout_ms = 500\nretry_max_seconds = 1\n",
            self.addr
        )
    }
}

impl Drop for FakeZebra {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The three `~HS` strings for a status (ZPL II guide, `~HS`).
fn host_status(s: Status) -> String {
    let (paper, pause, head, ribbon) = match s {
        Status::PaperOut => (1, 0, 0, 0),
        Status::Paused => (0, 1, 0, 0),
        Status::HeadOpen => (0, 0, 1, 0),
        Status::RibbonOut => (0, 0, 0, 1),
        _ => (0, 0, 0, 0),
    };
    format!(
        "\x02030,{paper},{pause},0240,000,0,0,0,000,0,0,0\x03\r\n\x02001,0,{head},{ribbon},1,2,6,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n"
    )
}

async fn connection(mut sock: tokio::net::TcpStream, state: Arc<Mutex<ZebraState>>) {
    let mut pending = String::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match sock.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        // Host status requests are answered at once, wherever they are.
        while let Some(at) = pending.find("~HS") {
            pending.replace_range(at..at + 3, "");
            let status = {
                let mut s = state.lock().unwrap();
                s.status_requests += 1;
                s.status
            };
            if status != Status::Silent {
                let _ = sock.write_all(host_status(status).as_bytes()).await;
            }
        }
        // Complete formats are printed.
        while let Some(end) = pending.find("^XZ") {
            let format: String = pending.drain(..end + 3).collect();
            take_format(format.trim(), &state);
        }
    }
    let rest = pending.trim();
    if !rest.is_empty() {
        state
            .lock()
            .unwrap()
            .faults
            .push(format!("a format was cut off: {rest:?}"));
    }
}

fn take_format(format: &str, state: &Arc<Mutex<ZebraState>>) {
    let mut s = state.lock().unwrap();
    if s.status != Status::Ready {
        let status = s.status;
        s.faults
            .push(format!("a label was sent while the printer was {status:?}"));
        return;
    }
    match parse(format) {
        Ok(p) => s.printed.push(p),
        Err(e) => s.faults.push(format!("{e}: {format:?}")),
    }
}

/// Reads a format strictly: `^XA` first, `^XZ` last, every field closed by
/// `^FS`, `^FH` escapes well formed.
fn parse(format: &str) -> Result<Printed, String> {
    let body = format
        .strip_prefix("^XA")
        .and_then(|f| f.strip_suffix("^XZ"))
        .ok_or("a format must start with ^XA and end with ^XZ")?;
    let mut out = Printed {
        datamatrix: Vec::new(),
        text: Vec::new(),
        zpl: format.to_string(),
    };
    let (mut hex, mut dm, mut graphic, mut data): (bool, bool, bool, Option<String>) =
        (false, false, false, None);
    for cmd in body.split('^').skip(1) {
        let cmd = cmd.trim_end_matches(['\r', '\n']);
        let name = cmd
            .get(..2)
            .ok_or_else(|| format!("a command too short: ^{cmd}"))?;
        let arg = &cmd[2..];
        match name {
            "FH" => hex = true,
            "BX" => dm = true,
            "FD" => data = Some(if hex { unhex(arg)? } else { arg.to_string() }),
            // Graphic fields have no field data.
            "GB" | "GC" | "GD" | "GE" => graphic = true,
            "FS" if graphic && data.is_none() => graphic = false,
            "FS" => {
                let d = data.take().ok_or("^FS without ^FD")?;
                if dm {
                    out.datamatrix.push(d);
                } else {
                    out.text.push(d);
                }
                hex = false;
                dm = false;
            }
            _ if data.is_some() => {
                return Err(format!("field data not closed by ^FS before ^{name}"));
            }
            _ => {}
        }
    }
    if data.is_some() {
        return Err("field data not closed by ^FS".into());
    }
    Ok(out)
}

fn unhex(s: &str) -> Result<String, String> {
    let mut bytes = Vec::new();
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b == b'_' {
            let h: Vec<u8> = it.by_ref().take(2).collect();
            let h = std::str::from_utf8(&h).map_err(|_| "bad ^FH escape")?;
            bytes.push(u8::from_str_radix(h, 16).map_err(|_| format!("bad ^FH escape _{h}"))?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).map_err(|_| "^FH escapes are not UTF-8".to_string())
}
