//! The CA key in a PKCS#11 token (SoftHSM): `station ca request` makes it
//! in the token, the offline root signs the station's intermediate, and
//! the station signs device certificates and its CRL through the token.
//! The test then tries to get the private key out of the token, and fails.
//!
//! SoftHSM reads where its tokens are from `SOFTHSM2_CONF` only, and a
//! test may not change its own environment (unsafe code is denied), so
//! each test here runs itself again as a child process with a fresh
//! token folder in that variable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::root::{Root, openssl, station, text};
use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use station::ca::CaSigner;

use common::softhsm::MODULE;
const TOKEN: &str = "station-ca";
const PIN: &str = "5678";
const KEY_LABEL: &str = "station-ca-key";

fn in_softhsm(name: &str) -> bool {
    common::softhsm::in_softhsm(name, TOKEN, PIN)
}

/// A configuration whose CA key is in the SoftHSM token, the PIN in a
/// file beside it.
fn pkcs11_config(dir: &Path, token: &str, name: &str) -> PathBuf {
    let text = config_text(&["/dev/null".into()], 300)
        .replace("key = \"file\"", "key = \"pkcs11\"")
        + &format!(
            "\n[ca.pkcs11]\nmodule = \"{MODULE}\"\ntoken_label = \"{token}\"\nkey_label = \"{KEY_LABEL}\"\npin_file = \"hsm.pin\"\n"
        );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn request(cfg: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let csr = cfg.with_file_name("station.csr");
    station(
        &[
            "ca",
            "request",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            csr.to_str().unwrap(),
        ],
        env,
    )
}

#[test]
fn the_ca_key_in_a_pkcs11_token_signs_leaves_and_the_crl_and_cannot_be_exported() {
    if !in_softhsm("the_ca_key_in_a_pkcs11_token_signs_leaves_and_the_crl_and_cannot_be_exported") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    let cfg = pkcs11_config(dir.path(), TOKEN, "station.toml");
    let pin_file = dir.path().join("hsm.pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();

    // Mistakes first; none of them makes a key.
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = text(&request(&cfg, &[]));
    assert!(said.contains("chmod 600"), "{said}");
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let said = text(&request(&cfg, &[("STATION_CA_PIN", "0000")]));
    assert!(said.contains("the token refused the PIN"), "{said}");
    let wrong_token = pkcs11_config(dir.path(), "no-such-token", "wrong-token.toml");
    let said = text(&request(&wrong_token, &[]));
    assert!(
        said.contains("no such token") && said.contains(TOKEN),
        "the message lists the tokens there are: {said}"
    );
    let said = text(&station(
        &["ca", "show", "--config", cfg.to_str().unwrap()],
        &[],
    ));
    assert!(said.contains("station ca request"), "no key yet: {said}");

    // The request makes the key in the token, then uses it.
    let out = request(&cfg, &[]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("made the CA key: PKCS#11 key \"station-ca-key\" in token \"station-ca\""),
        "{said}"
    );
    let said = text(&request(&cfg, &[]));
    assert!(said.contains("using the CA key: PKCS#11"), "{said}");
    assert!(
        !dir.path().join("data/ca/ca.key").exists(),
        "no key file is written"
    );

    let intermediate = root.sign(&cfg.with_file_name("station.csr"), 365, "intermediate");
    let out = station(
        &[
            "ca",
            "install",
            intermediate.to_str().unwrap(),
            "--root",
            root.cert.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&station(
        &["ca", "show", "--config", cfg.to_str().unwrap()],
        &[],
    ));
    assert!(said.contains("key:         PKCS#11 key"), "{said}");
    assert!(said.contains("station intermediate"), "{said}");

    // The station signs device certificates through the token; openssl
    // verifies them with the root and the intermediate.
    let config = station::config::Config::load(&cfg).unwrap();
    let ca = station::custody::load_ca(&config, false).unwrap();
    assert!(
        ca.describe().starts_with("PKCS#11 key"),
        "{}",
        ca.describe()
    );
    for n in 1..=3u32 {
        let guid = format!("0a1b2c3d-0000-4000-8000-{n:012x}");
        let (_, csr) = board_csr(&guid);
        let checked = station::ca::check_csr(&csr, &guid.parse().unwrap()).unwrap();
        let leaf =
            station::ca::issue_leaf(&ca, &checked, time::OffsetDateTime::now_utc(), 365).unwrap();
        let path = dir.path().join(format!("leaf{n}.pem"));
        std::fs::write(&path, &leaf.pem).unwrap();
        let (ok, said) = root.verify(&intermediate, &path, None);
        assert!(ok, "{said}");
    }
    drop(ca);

    // The CRL, signed through the token.
    let crl = dir.path().join("crl.der");
    let out = station(
        &[
            "ca",
            "crl",
            "--out",
            crl.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        crl.to_str().unwrap(),
        "-noout",
        "-CAfile",
        intermediate.to_str().unwrap(),
    ]));
    assert!(said.contains("verify OK"), "{said}");

    // A running station with its CA key in the token provisions a board
    // whose certificate verifies with the root and the intermediate.
    let leaf = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(provision_one(&cfg, dir.path()));
    let leaf_path = dir.path().join("served-leaf.pem");
    std::fs::write(&leaf_path, leaf).unwrap();
    let (ok, said) = root.verify(&intermediate, &leaf_path, None);
    assert!(ok, "{said}");

    // Try to get the private key out of the token: its value is refused,
    // and so is wrapping it under a key of our own.
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(KEY_LABEL.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let key = keys[0];
    let info = session
        .get_attribute_info(key, &[AttributeType::Value])
        .unwrap();
    assert!(
        matches!(info[0], AttributeInfo::Sensitive),
        "the token gives out the private value: {info:?}"
    );
    let values = session
        .get_attributes(key, &[AttributeType::Value])
        .unwrap();
    assert!(
        !values.iter().any(|a| matches!(a, Attribute::Value(_))),
        "the private value came out"
    );
    let flags = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
            ],
        )
        .unwrap();
    for a in &flags {
        match a {
            Attribute::Sensitive(v)
            | Attribute::NeverExtractable(v)
            | Attribute::AlwaysSensitive(v) => {
                assert!(*v, "{a:?}")
            }
            Attribute::Extractable(v) => assert!(!*v, "{a:?}"),
            _ => {}
        }
    }
    let wrapping = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key);
    match wrapped {
        Err(P11Error::Pkcs11(RvError::KeyUnextractable, _)) => {}
        other => panic!("wrapping the CA key should be refused: {other:?}"),
    }
}

/// A board's CSR (DER) with subject CN = `guid`.
fn board_csr(guid: &str) -> (rcgen::KeyPair, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, guid);
    let der = p.serialize_request(&key).unwrap().der().to_vec();
    (key, der)
}

/// Runs `station serve --demo 1` with `cfg` until one board is provisioned;
/// returns its certificate (PEM).
async fn provision_one(cfg: &Path, dir: &Path) -> String {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (out, log) = (dir.join("serve.out"), dir.join("serve.log"));
    let _child = Child(
        Command::new(station_bin())
            .args(["serve", "--demo", "1", "--listen", &listen, "--config"])
            .arg(cfg)
            .env_remove("STATION_CA_PIN")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let token = output_line(&out, &log, "the station did not start", |l| {
        l.strip_prefix("demo API token: ").map(str::to_string)
    })
    .await;
    let client = client_with_token(&token);
    for _ in 0..300 {
        if let Ok(r) = client
            .get(format!("http://{listen}/api/v1/boards"))
            .send()
            .await
        {
            let boards: Vec<serde_json::Value> = r.json().await.unwrap();
            if let Some(b) = boards.iter().find(|b| b["status"] == "provisioned") {
                let guid = b["guid"].as_str().unwrap();
                let detail: serde_json::Value = client
                    .get(format!("http://{listen}/api/v1/boards/{guid}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert!(
                    read(&log).contains("PKCS#11 key"),
                    "the station says where its CA key is: {}",
                    read(&log)
                );
                return detail["certificate_pem"].as_str().unwrap().to_string();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no board was provisioned; log:\n{}", read(&log));
}
