//! Certificate issuance in process: CSR parse and check, signing with the
//! factory CA, and the durable ledger write, as a slot does it.
//!
//! `cargo bench --bench issuance`; figures in docs/PERFORMANCE.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use station::ca::{CaSigner, FactoryCa, check_csr, issue_leaf};
use station::ids::{Guid, SlotId};
use station::store::{BoardId, NewCertificate, Store};
use time::OffsetDateTime;

struct Fixture {
    _dir: tempfile::TempDir,
    ca: Arc<FactoryCa>,
    store: Store,
    boards: Vec<BoardId>,
    /// (GUID, CSR DER) of distinct simulated boards.
    csrs: Arc<Vec<(Guid, Vec<u8>)>>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = FactoryCa::init(
        &dir.path().join("ca.pem"),
        &dir.path().join("ca.key"),
        "Bench CA",
        30,
        false,
    )
    .unwrap();
    let store = Store::open(&dir.path().join("station.db")).unwrap();
    let now = OffsetDateTime::now_utc();
    let boards = (1..=8)
        .map(|s| store.open_board("bench", SlotId(s), now).unwrap())
        .collect();
    let csrs = (0..64u8)
        .map(|i| {
            let guid = Guid::from_bytes([i; 16]);
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let mut p = CertificateParams::default();
            p.distinguished_name = DistinguishedName::new();
            p.distinguished_name
                .push(DnType::CommonName, guid.to_string());
            (guid, p.serialize_request(&key).unwrap().der().to_vec())
        })
        .collect();
    Fixture {
        _dir: dir,
        ca: Arc::new(ca),
        store,
        boards,
        csrs: Arc::new(csrs),
    }
}

/// One issuance as the Issue step does it; `ledger` adds the durable write.
fn issue_one(ca: &dyn CaSigner, store: Option<(&Store, BoardId)>, guid: &Guid, der: &[u8]) {
    let now = OffsetDateTime::now_utc();
    let csr = check_csr(der, guid).unwrap();
    let leaf = issue_leaf(ca, &csr, now, 365).unwrap();
    if let Some((store, board)) = store {
        store
            .commit_certificate(
                board,
                &NewCertificate {
                    serial: &leaf.serial,
                    guid,
                    fingerprint: &leaf.fingerprint,
                    pem: &leaf.pem,
                    not_before: leaf.not_before,
                    not_after: leaf.not_after,
                    override_used: false,
                },
                now,
            )
            .unwrap();
    }
    black_box(leaf);
}

fn concurrent(f: &Fixture, slots: usize, iters: u64) -> Duration {
    let per = iters.div_ceil(slots as u64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..slots {
            let (ca, store, board, csrs) =
                (f.ca.clone(), f.store.clone(), f.boards[t], f.csrs.clone());
            s.spawn(move || {
                for i in 0..per {
                    let (guid, der) = &csrs[(i as usize + t * 8) % csrs.len()];
                    issue_one(ca.as_ref(), Some((&store, board)), guid, der);
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("issuance");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20).measurement_time(Duration::from_secs(8));

    let mut i = 0;
    g.bench_function("check_and_sign_only", |b| {
        b.iter(|| {
            let (guid, der) = &f.csrs[i % f.csrs.len()];
            i += 1;
            issue_one(f.ca.as_ref(), None, guid, der);
        })
    });
    let mut i = 0;
    g.bench_function("with_ledger/1_slot", |b| {
        b.iter(|| {
            let (guid, der) = &f.csrs[i % f.csrs.len()];
            i += 1;
            issue_one(f.ca.as_ref(), Some((&f.store, f.boards[0])), guid, der);
        })
    });
    g.bench_function("with_ledger/8_slots", |b| {
        b.iter_custom(|iters| concurrent(&f, 8, iters))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
