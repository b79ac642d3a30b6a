//! The real TPM backend against swtpm: one simulator per test, reached
//! through the same TCTI strings a station uses, and checked where it
//! matters against tpm2-tools, an independent TSS client.

#![cfg(feature = "tpm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::swtpm::Swtpm;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use station::ca::CaSigner;
use station::tpm::esapi::EsapiTpm;
use station::tpm::{BoardTpm, NvArea, TpmError, TpmSlot};

const KEY_HANDLE: u32 = 0x8101_0001;
const NV_INDEX: u32 = 0x0150_0001;

fn slot(tcti: &str) -> TpmSlot {
    TpmSlot {
        tcti: tcti.to_string(),
        key_handle: KEY_HANDLE,
        cert_nv_index: NV_INDEX,
        settings_nv_index: 0x0150_0002,
    }
}

fn open(tpm: &Swtpm) -> EsapiTpm {
    EsapiTpm::open(&slot(&tpm.tcti())).unwrap()
}

fn sha256(msg: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, msg)
        .as_ref()
        .try_into()
        .unwrap()
}

fn verify(point: &[u8], digest: &[u8; 32], der: &[u8]) {
    let key = VerifyingKey::from_sec1_bytes(point).unwrap();
    let signature = Signature::from_der(der).unwrap();
    key.verify_prehash(digest, &signature)
        .expect("the TPM's signature verifies with its public key");
}

/// Runs a tpm2-tools command against `tpm` (only while no EsapiTpm holds
/// it: a TPM serves one client at a time); panics if it fails, else
/// returns what it printed.
fn tpm2(tpm: &Swtpm, tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        // libtss2's ERROR lines for failures the tools handle themselves.
        .env("TSS2_LOG", "all+NONE")
        .current_dir(tpm.state_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (install tpm2-tools): {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The transient objects loaded in `tpm`, as tpm2_getcap lists them.
fn transients(tpm: &Swtpm) -> String {
    tpm2(tpm, "tpm2_getcap", &["handles-transient"])
        .trim()
        .to_string()
}

#[test]
fn key_is_created_once_persisted_and_signs() {
    let sim = Swtpm::start();
    let tpm = open(&sim);
    let point = tpm.create_key().unwrap();
    assert_eq!(point.len(), 65);
    assert_eq!(point[0], 0x04);
    assert_eq!(tpm.public_key().unwrap(), point);

    for i in 0..16u32 {
        let digest = sha256(format!("board message {i}").as_bytes());
        verify(&point, &digest, &tpm.sign_digest(&digest).unwrap());
    }

    let again = tpm.create_key().unwrap_err();
    assert_eq!(again, TpmError::HandleInUse { handle: KEY_HANDLE });
    assert!(again.to_string().contains("0x81010001"), "{again}");
    assert_eq!(tpm.public_key().unwrap(), point, "the first key is kept");

    // The key is persistent: a new client (a restarted station) finds it.
    drop(tpm);
    let tpm = open(&sim);
    assert_eq!(tpm.public_key().unwrap(), point);
    let digest = sha256(b"after reopening");
    verify(&point, &digest, &tpm.sign_digest(&digest).unwrap());
    drop(tpm);

    // Seen by tpm2-tools: the key at its handle, no transient left over.
    let persistent = tpm2(&sim, "tpm2_getcap", &["handles-persistent"]);
    assert!(persistent.contains("0x81010001"), "{persistent}");
    assert_eq!(transients(&sim), "");
}

#[test]
fn signing_without_a_key_says_so() {
    let sim = Swtpm::start();
    let tpm = open(&sim);
    match tpm.sign_digest(&sha256(b"x")).unwrap_err() {
        TpmError::Failed { what, reason } => {
            assert!(what.contains("0x81010001"), "{what}");
            assert!(reason.contains("never created"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn certificate_chain_round_trips_through_nv() {
    let sim = Swtpm::start();
    // More than one NV buffer (1,024 bytes on swtpm).
    let chain: Vec<u8> = (0..1100u32).map(|i| (i * 7 % 251) as u8).collect();
    {
        let tpm = open(&sim);
        tpm.write_nv(NvArea::Chain, &chain).unwrap();
        assert_eq!(tpm.read_nv(NvArea::Chain).unwrap(), chain);
        // A resumed board writes the same chain again.
        tpm.write_nv(NvArea::Chain, &chain).unwrap();
        let mut other = chain.clone();
        other[1099] ^= 1;
        let e = tpm.write_nv(NvArea::Chain, &other).unwrap_err();
        assert_eq!(e, TpmError::NvIndexDefined { index: NV_INDEX });
        assert!(e.to_string().contains("0x01500001"), "{e}");
        assert_eq!(
            tpm.read_nv(NvArea::Chain).unwrap(),
            chain,
            "the first chain is kept"
        );
    }
    assert_eq!(transients(&sim), "");

    // Another TSS client finds the same bytes at the index.
    tpm2(
        &sim,
        "tpm2_nvread",
        &["0x01500001", "-C", "o", "-o", "nv.bin"],
    );
    assert_eq!(
        std::fs::read(sim.state_dir().join("nv.bin")).unwrap(),
        chain
    );

    // A chain larger than an NV index can hold (2,048 bytes on swtpm).
    let big = EsapiTpm::open(&TpmSlot {
        cert_nv_index: 0x0150_0004,
        ..slot(&sim.tcti())
    })
    .unwrap();
    match big.write_nv(NvArea::Chain, &[0u8; 3000]).unwrap_err() {
        TpmError::Failed { reason, .. } => assert!(reason.contains("2048"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(big.read_nv(NvArea::Chain).is_err(), "nothing was defined");
}

#[test]
fn reading_an_undefined_index_says_so() {
    let sim = Swtpm::start();
    match open(&sim).read_nv(NvArea::Chain).unwrap_err() {
        TpmError::Failed { reason, .. } => assert!(reason.contains("not defined"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ek_public_is_the_standard_rsa_ek_as_tpm2_tools_sees_it() {
    let sim = Swtpm::start();
    let ek = {
        let tpm = open(&sim);
        let ek = tpm.ek_public().unwrap();
        assert_eq!(
            usize::from(u16::from_be_bytes([ek[0], ek[1]])),
            ek.len() - 2
        );
        // TPMT_PUBLIC starts with the type (RSA) and name algorithm (SHA-256).
        assert_eq!(ek[2..6], [0x00, 0x01, 0x00, 0x0b]);
        assert_eq!(
            tpm.ek_public().unwrap(),
            ek,
            "the EK is derived, not random"
        );
        ek
    };
    tpm2(
        &sim,
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
    );
    let theirs = std::fs::read(sim.state_dir().join("ek.pub")).unwrap();
    assert_eq!(ek, theirs, "tpm2_createek writes the same TPM2B_PUBLIC");
}

#[test]
fn transient_objects_left_by_a_dead_client_are_flushed() {
    let sim = Swtpm::start();
    // Without a resource manager each of these stays loaded in the TPM,
    // which has room for three objects.
    for _ in 0..3 {
        tpm2(
            &sim,
            "tpm2_createek",
            &["-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
        );
    }
    let tpm = open(&sim);
    assert_eq!(tpm.create_key().unwrap().len(), 65);
}

#[test]
fn a_vanished_tpm_is_unreachable_and_is_reconnected() {
    let mut sim = Swtpm::start();
    let tpm = open(&sim);
    let point = tpm.create_key().unwrap();
    let digest = sha256(b"before");
    verify(&point, &digest, &tpm.sign_digest(&digest).unwrap());

    sim.stop();
    for _ in 0..2 {
        let e = tpm.sign_digest(&digest).unwrap_err();
        assert!(matches!(e, TpmError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains(&sim.tcti()), "{e}");
    }

    // The board is back (same TPM state): the next call reconnects.
    sim.restart();
    let digest = sha256(b"after");
    verify(&point, &digest, &tpm.sign_digest(&digest).unwrap());
}

#[test]
fn nothing_listening_is_unreachable() {
    let port = common::free_port();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let e = EsapiTpm::open(&slot(&tcti)).unwrap_err();
    assert!(matches!(e, TpmError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&tcti), "{e}");
}

#[test]
fn a_tcti_that_would_silently_reach_another_tpm_is_refused() {
    let e = EsapiTpm::open(&slot("swtpm:path=/run/board1.sock")).unwrap_err();
    assert!(matches!(e, TpmError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("host= and port="), "{e}");
}

// ---- the station with TPM slots, each board's TPM a swtpm ----

fn tpm_slot(tcti: &str) -> String {
    format!("keygen = \"tpm\"\ntcti = \"{tcti}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_in_tpm_slots_are_provisioned_through_their_tpms() {
    use base64::Engine;
    let tpms = [Swtpm::start(), Swtpm::start()];
    let fake = common::fake_dps::FakeDps::start().await;
    let tctis: Vec<String> = tpms.iter().map(Swtpm::tcti).collect();
    let st = common::TestStation::start_slots(
        vec![common::quick_board(), common::quick_board()],
        2000,
        &|i| tpm_slot(&tctis[i]),
        &(common::dps_section(&fake, 6000) + "attestation = \"tpm\"\nid_scope = \"0ne00TPM001\"\n"),
        |_| (),
    )
    .await;
    let boards = st
        .wait_finished(2, std::time::Duration::from_secs(60))
        .await;
    for b in &boards {
        assert_eq!(b["status"], "provisioned", "{b:#}");
    }
    // Each board's record, checked against its own TPM.
    for (i, sim) in tpms.iter().enumerate() {
        let b = boards.iter().find(|b| b["slot"] == i + 1).unwrap();
        let guid = b["guid"].as_str().unwrap();
        let ledger = st.ledger(guid);
        assert_eq!(ledger.len(), 1);
        let leaf = station::ca::pem_to_der(&ledger[0].pem).unwrap();
        let tpm = open(sim);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            tpm.public_key().unwrap().as_slice(),
            "the certificate is for the key persisted in the TPM"
        );
        let nonce: [u8; 32] = station::random::bytes();
        let message = station::jig::protocol::key_proof_message(&nonce);
        let sig = tpm.sign_digest(&sha256(&message)).unwrap();
        assert!(
            station::ca::verify_key_proof(&leaf, &nonce, &sig),
            "a TPM signature over a station nonce verifies with the certificate"
        );
        let nv = tpm.read_nv(NvArea::Chain).unwrap();
        assert_eq!(
            nv,
            [leaf.clone(), st.ca().certificate_der().to_vec()].concat(),
            "the NV index holds the chain"
        );
        // The settings NV index holds the provisioning settings, read
        // here through the esapi backend, and the record says the same.
        let settings = tpm.read_nv(NvArea::Settings).unwrap();
        assert_eq!(
            String::from_utf8(settings).unwrap(),
            format!(
                "endpoint=global.azure-devices-provisioning.net\nscope=0ne00TPM001\nregid={guid}\natt=tpm\n"
            )
        );
        assert_eq!(b["settings"]["id_scope"], "0ne00TPM001", "{b:#}");
        // The enrollment DPS got carries this TPM's EK as a TPM2B_PUBLIC.
        let ek = tpm.ek_public().unwrap();
        assert_eq!(
            usize::from(u16::from_be_bytes([ek[0], ek[1]])),
            ek.len() - 2
        );
        drop(tpm);
        let mut sent = None;
        for _ in 0..100 {
            sent = fake.with(|s| s.enrollments.get(guid).map(|e| e.body.clone()));
            if sent.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let body = sent.expect("enrolled in DPS");
        assert_eq!(body["attestation"]["type"], "tpm");
        let sent_ek = base64::engine::general_purpose::STANDARD
            .decode(
                body["attestation"]["tpm"]["endorsementKey"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(sent_ek, ek, "the EK sent is the TPM's");
        assert_eq!(body["registrationId"], guid);
        assert_eq!(body["provisioningStatus"], "disabled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_fault_fails_that_board_with_a_clear_message() {
    let mut gone = Swtpm::start();
    let taken = Swtpm::start();
    // Someone else's data in the certificate NV index.
    {
        let tpm = open(&taken);
        tpm.write_nv(NvArea::Chain, b"somebody else's data")
            .unwrap();
    }
    let later = station::sim::SimOptions {
        first_insert_after: std::time::Duration::from_millis(1500),
        ..common::quick_board()
    };
    let tctis = [gone.tcti(), taken.tcti()];
    let st = common::TestStation::start_slots(
        vec![later.clone(), later],
        2000,
        &|i| tpm_slot(&tctis[i]),
        "",
        |_| (),
    )
    .await;
    // The first board's TPM goes away while its board is being
    // provisioned: as soon as the slot reaches a step that uses the TPM.
    let mut seen = None;
    for _ in 0..2000 {
        let (_, slots) = st.get("/api/v1/slots").await;
        let step = slots[0]["step"].as_str().map(str::to_string);
        if matches!(
            step.as_deref(),
            Some("keygen" | "issue" | "store" | "readback" | "prove")
        ) {
            seen = step;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    gone.stop();
    let seen = seen.expect("slot 1 reached its key step");
    let boards = st
        .wait_finished(2, std::time::Duration::from_secs(60))
        .await;
    let slot = |n: u64| boards.iter().find(|b| b["slot"] == n).unwrap().clone();

    let unreachable = slot(1);
    assert_eq!(
        unreachable["error_code"], "tpm_unreachable",
        "{unreachable:#}"
    );
    let msg = unreachable["error"].as_str().unwrap();
    assert!(
        msg.contains(&tctis[0]) && msg.contains("cannot be reached"),
        "{msg} (stopped at {seen})"
    );
    // Whenever the TPM went, every certificate issued is on record, and
    // none counts as installed.
    for c in st.ledger(unreachable["guid"].as_str().unwrap()) {
        assert_eq!(c.state, "abandoned", "stopped at {seen}");
    }

    let defined = slot(2);
    assert_eq!(defined["error_code"], "tpm_nv_defined", "{defined:#}");
    assert!(
        defined["error"]
            .as_str()
            .unwrap()
            .contains("tpm2_nvundefine 0x01500001")
    );
    let ledger = st.ledger(defined["guid"].as_str().unwrap());
    assert_eq!(
        ledger.len(),
        1,
        "the certificate issued before the fault is on record"
    );
    assert_eq!(ledger[0].state, "abandoned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_tpm_boards_each_bring_a_fresh_swtpm() {
    let extra = "\n[[slot]]\nid = 1\nlink = \"simulated\"\nkeygen = \"tpm\"\n\n[demo]\nkeygen_ms = 20\nflash_bytes_per_sec = 0\ntest_ms = 20\ndwell_ms = 50\npause_ms = 50\n";
    let st = common::TestStation::start_with(vec![], 2000, extra, |_| ()).await;
    assert_eq!(st.app.sim_tpms.len(), 1, "one swtpm for the slot");
    let boards = st
        .wait_finished(3, std::time::Duration::from_secs(60))
        .await;
    let mut guids: Vec<&str> = boards.iter().map(|b| b["guid"].as_str().unwrap()).collect();
    for b in &boards {
        assert_eq!(b["status"], "provisioned", "{b:#}");
    }
    guids.sort();
    guids.dedup();
    assert_eq!(guids.len(), boards.len(), "a new board each time");
    // Each with its own TPM key: the certificates' keys all differ.
    let mut keys: Vec<Vec<u8>> = guids
        .iter()
        .map(|g| {
            let pem = &st.ledger(g)[0].pem;
            let der = station::ca::pem_to_der(pem).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            cert.public_key().raw.to_vec()
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), boards.len(), "each with its own TPM key");
}

#[test]
fn station_check_names_each_tpm_slot() {
    let live = Swtpm::start();
    let mut dead = Swtpm::start();
    dead.stop();
    let tctis = [live.tcti(), dead.tcti()];
    let devices = ["/dev/no-jig-1".to_string(), "/dev/no-jig-2".to_string()];
    let (dir, _cfg) = common::prepare_slots(&devices, 500, &|i| tpm_slot(&tctis[i]), "");
    let out = Command::new(common::station_bin())
        .args(["check", "--config"])
        .arg(dir.path().join("station.toml"))
        .env("TSS2_LOG", "all+NONE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains(&format!("ok       slot 1: TPM {} answers", tctis[0])),
        "{text}"
    );
    assert!(
        text.contains("PROBLEM  slot 2: the board's TPM") && text.contains("cannot be reached"),
        "{text}"
    );
}

#[test]
fn the_nv_index_can_be_cleared_for_a_new_chain() {
    let sim = Swtpm::start();
    let tpm = open(&sim);
    tpm.write_nv(NvArea::Chain, b"first chain").unwrap();
    assert!(matches!(
        tpm.write_nv(NvArea::Chain, b"second chain, longer"),
        Err(TpmError::NvIndexDefined { .. })
    ));
    tpm.clear_nv(NvArea::Chain).unwrap();
    assert!(tpm.read_nv(NvArea::Chain).is_err(), "undefined");
    tpm.clear_nv(NvArea::Chain).unwrap();
    tpm.write_nv(NvArea::Chain, b"second chain, longer")
        .unwrap();
    assert_eq!(tpm.read_nv(NvArea::Chain).unwrap(), b"second chain, longer");
}
