//! Certificate issuance in process: CSR parse and check, signing with the
//! factory CA, and the durable ledger write, as a slot does it; then the
//! same signing with the CA key in each backend: the key file, a PKCS#11
//! token (SoftHSM) and, with `--features tpm`, a TPM (swtpm).
//!
//! `cargo bench --features tpm --bench issuance`; figures in
//! docs/PERFORMANCE.md. SoftHSM finds its tokens through `SOFTHSM2_CONF`
//! only, so the bench runs itself again with that set to a fresh token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use station::ca::pkcs11::{HsmKey, Pkcs11Spec};
#[cfg(feature = "tpm")]
use station::ca::tpm_key::{TpmCaKey, TpmCaSpec};
use station::ca::{CaKey, CaSigner, FactoryCa, check_csr, issue_leaf};
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

/// A self-signed CA whose key is `key`, its certificate in `dir`.
fn backend_ca(dir: &Path, key: CaKey, describe: String) -> FactoryCa {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, format!("Bench CA ({})", key.backend()));
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(30);
    let cert = p.self_signed(&key).unwrap();
    let path = dir.join(format!("{}.pem", key.backend()));
    std::fs::write(&path, cert.pem()).unwrap();
    FactoryCa::open(&path, key, describe, false).unwrap()
}

/// Check and sign only, and with the ledger write, for each CA backend
/// that can run here.
fn backends(c: &mut Criterion) {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let mut cas: Vec<(&str, Arc<FactoryCa>)> = vec![("file", f.ca.clone())];
    if std::env::var_os("SOFTHSM2_CONF").is_some() {
        let spec = Pkcs11Spec {
            module: SOFTHSM_MODULE.into(),
            token_label: "bench".into(),
            key_label: "bench-ca".into(),
            pin: zeroize::Zeroizing::new("5678".into()),
        };
        let (key, _) = HsmKey::open_or_create(&spec).unwrap();
        let describe = key.describe();
        cas.push((
            "pkcs11",
            Arc::new(backend_ca(dir.path(), CaKey::Pkcs11(key), describe)),
        ));
    } else {
        eprintln!("no SoftHSM token (SOFTHSM2_CONF unset): the pkcs11 case is left out");
    }
    #[cfg(feature = "tpm")]
    let _tpm = {
        let tpm = station::sim::swtpm::SimTpm::start(dir.path().join("tpm")).unwrap();
        let spec = TpmCaSpec {
            tcti: tpm.tcti(),
            handle: 0x8101_0100,
        };
        let (key, _) = TpmCaKey::open_or_create(&spec).unwrap();
        let describe = key.describe();
        cas.push((
            "tpm",
            Arc::new(backend_ca(dir.path(), CaKey::Tpm(key), describe)),
        ));
        tpm
    };
    #[cfg(not(feature = "tpm"))]
    eprintln!("built without the tpm feature: the tpm case is left out");

    let mut g = c.benchmark_group("issuance_by_backend");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, ca) in &cas {
        let mut i = 0;
        g.bench_function(format!("{name}/check_and_sign_only"), |b| {
            b.iter(|| {
                let (guid, der) = &f.csrs[i % f.csrs.len()];
                i += 1;
                issue_one(ca.as_ref(), None, guid, der);
            })
        });
        let mut i = 0;
        g.bench_function(format!("{name}/with_ledger"), |b| {
            b.iter(|| {
                let (guid, der) = &f.csrs[i % f.csrs.len()];
                i += 1;
                issue_one(ca.as_ref(), Some((&f.store, f.boards[0])), guid, der);
            })
        });
    }
    g.finish();
}

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Without `SOFTHSM2_CONF`, and with SoftHSM installed: makes a token in a
/// temporary folder and runs this bench again with the variable set;
/// returns the child's exit code. `None`: carry on in this process.
fn rerun_with_softhsm() -> Option<i32> {
    if std::env::var_os("SOFTHSM2_CONF").is_some() || !Path::new(SOFTHSM_MODULE).exists() {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).ok()?;
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .ok()?;
    let made = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "bench"])
        .args(["--so-pin", "1234", "--pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .ok()?;
    if !made.status.success() {
        eprintln!("softhsm2-util failed: the pkcs11 case is left out");
        return None;
    }
    let status = Command::new(std::env::current_exe().ok()?)
        .args(std::env::args_os().skip(1))
        .env("SOFTHSM2_CONF", &conf)
        .status()
        .ok()?;
    Some(status.code().unwrap_or(1))
}

criterion_group!(benches, bench, backends);

fn main() {
    if let Some(code) = rerun_with_softhsm() {
        std::process::exit(code);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
