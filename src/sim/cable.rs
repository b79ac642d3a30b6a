//! A noisy serial cable for tests and benchmarks: it joins two
//! pseudo-terminals, carries each byte at the pace of a real line (10 bits
//! a byte at the baud rate: start bit, 8 data bits, stop bit) and, from a
//! seed, corrupts (one bit flipped), drops or stalls bytes at the rates it
//! is given, both ways. It is a cable: it knows nothing of the protocol,
//! and damages a frame's line end as readily as its checksum.
//!
//! ```text
//! station ── /dev/pts/B ══ cable ══ /dev/pts/A ── simulated board
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How the cable treats bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CableOptions {
    /// The line's speed: a byte takes 10 / baud seconds.
    pub baud: u32,
    /// Chance per byte of one bit flipped.
    pub corrupt: f64,
    /// Chance per byte of it being lost.
    pub drop: f64,
    /// Chance per byte of the line pausing for `stall_time` before it.
    pub stall: f64,
    pub stall_time: Duration,
    /// The same seed damages the same bytes of the same traffic.
    pub seed: u64,
}

impl Default for CableOptions {
    fn default() -> Self {
        CableOptions {
            baud: 115_200,
            corrupt: 0.0,
            drop: 0.0,
            stall: 0.0,
            stall_time: Duration::from_millis(50),
            seed: 1,
        }
    }
}

/// What the cable did, both ways together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CableCounts {
    pub bytes: u64,
    pub corrupted: u64,
    pub dropped: u64,
    pub stalled: u64,
}

#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    corrupted: AtomicU64,
    dropped: AtomicU64,
    stalled: AtomicU64,
}

/// SplitMix64: small, seeded, and good enough to scatter line noise.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A running cable. Dropping it cuts the cable.
pub struct NoisyCable {
    /// The station's end, like `/dev/pts/9`.
    pub device: String,
    counters: Arc<Counters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NoisyCable {
    /// Opens `board_device` (the board's pseudo-terminal, as a station
    /// would) and a new pseudo-terminal pair whose far end, [`Self::device`],
    /// the station opens instead; carries bytes between them.
    pub fn connect(board_device: &str, opts: CableOptions) -> std::io::Result<NoisyCable> {
        use tokio_serial::{SerialPort, SerialPortBuilderExt};
        let board = tokio_serial::new(board_device, opts.baud)
            .open_native_async()
            .map_err(std::io::Error::other)?;
        let (master, slave) = tokio_serial::SerialStream::pair().map_err(std::io::Error::other)?;
        let device = slave
            .name()
            .ok_or_else(|| std::io::Error::other("the pseudo-terminal has no name"))?;
        let counters = Arc::new(Counters::default());
        let (board_rd, board_wr) = tokio::io::split(board);
        let (station_rd, station_wr) = tokio::io::split(master);
        let to_board = tokio::spawn(carry(
            station_rd,
            board_wr,
            opts,
            Rng(opts.seed),
            counters.clone(),
            Some(slave),
        ));
        let to_station = tokio::spawn(carry(
            board_rd,
            station_wr,
            opts,
            Rng(opts.seed ^ 0xD1B5_4A32_D192_ED03),
            counters.clone(),
            None,
        ));
        Ok(NoisyCable {
            device,
            counters,
            tasks: vec![to_board, to_station],
        })
    }

    /// What the cable has done so far.
    pub fn counts(&self) -> CableCounts {
        let c = &self.counters;
        CableCounts {
            bytes: c.bytes.load(Ordering::Relaxed),
            corrupted: c.corrupted.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            stalled: c.stalled.load(Ordering::Relaxed),
        }
    }
}

impl Drop for NoisyCable {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One way of the cable. `_keep` holds the station end's slave open so
/// the line does not hang up between the station's connections.
async fn carry<R, W>(
    mut rd: R,
    mut wr: W,
    opts: CableOptions,
    mut rng: Rng,
    counters: Arc<Counters>,
    _keep: Option<tokio_serial::SerialStream>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let byte_time = Duration::from_secs_f64(10.0 / f64::from(opts.baud.max(1)));
    // When the wire is free for the next byte.
    let mut wire = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            // A pseudo-terminal whose other side is closed (the station
            // between two connections) reads EIO: wait for it.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(_) => return,
        };
        wire = wire.max(Instant::now());
        // Each byte with the time its last bit arrives.
        let mut out: Vec<(u8, Instant)> = Vec::with_capacity(n);
        for &b in &buf[..n] {
            counters.bytes.fetch_add(1, Ordering::Relaxed);
            if rng.chance(opts.stall) {
                counters.stalled.fetch_add(1, Ordering::Relaxed);
                wire += opts.stall_time;
            }
            // A lost byte took its time on the wire all the same.
            wire += byte_time;
            if rng.chance(opts.drop) {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let b = if rng.chance(opts.corrupt) {
                counters.corrupted.fetch_add(1, Ordering::Relaxed);
                b ^ (1 << (rng.next() % 8))
            } else {
                b
            };
            out.push((b, wire));
        }
        // Delivered in groups of about a millisecond, each when its last
        // byte would have arrived.
        let mut i = 0;
        while i < out.len() {
            let start = out[i].1;
            let mut j = i;
            while j + 1 < out.len() && out[j + 1].1 <= start + Duration::from_millis(1) {
                j += 1;
            }
            tokio::time::sleep_until(out[j].1).await;
            let group: Vec<u8> = out[i..=j].iter().map(|(b, _)| *b).collect();
            if wr.write_all(&group).await.is_err() || wr.flush().await.is_err() {
                // The far end is gone for now: what was on the wire is lost.
                break;
            }
            i = j + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_noise_is_seeded_and_at_its_rate() {
        let count = |seed| {
            let mut r = Rng(seed);
            (0..1_000_000).filter(|_| r.chance(1e-3)).count()
        };
        assert_eq!(count(7), count(7));
        let n = count(7);
        assert!((800..1200).contains(&n), "{n} hits in a million at 1e-3");
        assert!(!Rng(1).chance(0.0));
    }
}
