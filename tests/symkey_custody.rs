//! The master key for symmetric-key devices in its two custodies:
//!
//! - in a PKCS#11 token (SoftHSM): `station symkey init` makes it in the
//!   token, device keys come out of it by HMAC and the key itself cannot be
//!   read, wrapped or given as group keys; a wrong PIN, a missing token and
//!   a missing key are named;
//! - in a file: encrypted with the CA passphrase, mode 0600, refused when
//!   others can read it or the passphrase is wrong; its derivations match
//!   an HMAC-SHA256 other than the station's and DPS's group derivation.
//!
//! SoftHSM reads where its tokens are from `SOFTHSM2_CONF` only, and a test
//! may not change its own environment, so the PKCS#11 test runs itself
//! again as a child process with a fresh token folder in that variable (as
//! `tests/ca_pkcs11.rs` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::config_text;
use common::root::{station, text};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hmac::Mac;
use station::config::Config;
use station::symkey::MasterKey;

use common::softhsm::MODULE;
const TOKEN: &str = "station";
const PIN: &str = "5678";
const KEY_LABEL: &str = "device-master";

fn in_softhsm(name: &str) -> bool {
    common::softhsm::in_softhsm(name, TOKEN, PIN)
}

fn write_config(dir: &Path, name: &str, section: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, config_text(&[], 300) + section).unwrap();
    path
}

fn pkcs11_section(token: &str, pin_file: bool) -> String {
    format!(
        "\n[symmetric_key]\nkey = \"pkcs11\"\n[symmetric_key.pkcs11]\nmodule = \"{MODULE}\"\ntoken_label = \"{token}\"\nkey_label = \"{KEY_LABEL}\"\n{}",
        if pin_file {
            "pin_file = \"hsm.pin\"\n"
        } else {
            ""
        }
    )
}

fn symkey(cmd: &str, cfg: &Path, env: &[(&str, &str)]) -> std::process::Output {
    station(&["symkey", cmd, "--config", cfg.to_str().unwrap()], env)
}

/// The value after `id:` in `symkey init/show` output.
fn printed_id(said: &str) -> String {
    said.lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no id in {said}"))
}

fn other_hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

#[test]
fn the_master_key_in_a_pkcs11_token_derives_device_keys_and_never_leaves_it() {
    if !in_softhsm("the_master_key_in_a_pkcs11_token_derives_device_keys_and_never_leaves_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "station.toml", &pkcs11_section(TOKEN, true));
    let pin_file = dir.path().join("hsm.pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Mistakes first; none of them makes a key.
    let out = symkey("show", &cfg, &[]);
    let said = text(&out);
    assert!(!out.status.success());
    assert!(
        said.contains("there is no key labelled \"device-master\"")
            && said.contains("station symkey init"),
        "{said}"
    );
    let said = text(&symkey("init", &cfg, &[("STATION_CA_PIN", "0000")]));
    assert!(
        said.contains("the token refused the PIN")
            && said.contains("[symmetric_key.pkcs11] pin_file"),
        "{said}"
    );
    let wrong_token = write_config(
        dir.path(),
        "wrong-token.toml",
        &pkcs11_section("no-such-token", true),
    );
    let said = text(&symkey("init", &wrong_token, &[]));
    assert!(
        said.contains("no such token")
            && said.contains(&format!("{TOKEN:?}"))
            && said.contains("check [symmetric_key.pkcs11] token_label"),
        "{said}"
    );
    let no_pin = write_config(dir.path(), "no-pin.toml", &pkcs11_section(TOKEN, false));
    let said = text(&symkey("init", &no_pin, &[]));
    assert!(
        said.contains("needs its user PIN") && said.contains("STATION_CA_PIN"),
        "{said}"
    );
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = text(&symkey("init", &cfg, &[]));
    assert!(said.contains("chmod 600"), "{said}");
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let no_section = write_config(dir.path(), "none.toml", "");
    let said = text(&symkey("show", &no_section, &[]));
    assert!(said.contains("has no [symmetric_key] section"), "{said}");

    // init makes it in the token, once.
    let out = symkey("init", &cfg, &[]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("key:    PKCS#11 token \"station\", key \"device-master\"")
            && said.contains("never leaves the token"),
        "{said}"
    );
    let id = printed_id(&said);
    assert_eq!(id.len(), 16, "{said}");
    let out = symkey("init", &cfg, &[]);
    let said = text(&out);
    assert!(!out.status.success());
    assert!(
        said.contains("already exists") && said.contains("never replaces a master key"),
        "{said}"
    );
    let out = symkey("show", &cfg, &[]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_eq!(printed_id(&said), id, "the same key: {said}");
    assert!(!dir.path().join("data/keys").exists(), "no key file");

    // Device keys come out of the token, the same every time, one per id.
    let config = Config::load(&cfg).unwrap();
    let sk = config.symmetric_key.as_ref().unwrap();
    let master = MasterKey::open(sk, false).unwrap();
    assert_eq!(master.id().unwrap(), id);
    assert!(master.describe().starts_with("PKCS#11 token"));
    let a = master.derive("dev-0001").unwrap();
    let again = MasterKey::open(sk, false).unwrap();
    assert_eq!(a.as_bytes(), again.derive("dev-0001").unwrap().as_bytes());
    drop(again);
    let b = master.derive("dev-0002").unwrap();
    assert_ne!(a.as_bytes(), b.as_bytes());
    let a2 = master.derive_secondary("dev-0001").unwrap();
    assert_ne!(a.as_bytes(), a2.as_bytes());
    assert_eq!(
        a2.as_bytes(),
        master.derive_secondary("dev-0001").unwrap().as_bytes()
    );
    assert_eq!(B64.decode(a.to_base64().as_str()).unwrap(), a.as_bytes());
    let nonce = station::random::bytes::<16>();
    let proof = a.proof(&nonce);
    assert!(a.verify_proof(&nonce, &proof));
    assert!(!b.verify_proof(&nonce, &proof));
    assert_eq!(format!("{a:?}"), "DeviceKey([redacted])");
    let e = master.derive("bad id!").unwrap_err().to_string();
    assert!(e.contains("is not a DPS registration id"), "{e}");

    // No group keys from a token.
    let e = master.group_keys().unwrap_err().to_string();
    assert!(
        e.contains("never leaves it") && e.contains("[symmetric_key] key = \"file\""),
        "{e}"
    );

    // Try to get the key out of the token: its value is refused, and so is
    // wrapping it under a key of our own.
    let ctx = Pkcs11::new(MODULE).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("{e}"),
    }
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("{e}"),
    }
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
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
        "the token gives out the key's value: {info:?}"
    );
    let values = session
        .get_attributes(key, &[AttributeType::Value])
        .unwrap();
    assert!(
        !values.iter().any(|a| matches!(a, Attribute::Value(_))),
        "the key's value came out"
    );
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Token,
                AttributeType::Sign,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
            ],
        )
        .unwrap();
    assert_eq!(attrs.len(), 8, "{attrs:?}");
    for a in &attrs {
        match a {
            Attribute::KeyType(k) => assert_eq!(*k, KeyType::GENERIC_SECRET),
            Attribute::ValueLen(n) => assert_eq!(u64::from(*n), 32),
            Attribute::Token(v)
            | Attribute::Sign(v)
            | Attribute::Sensitive(v)
            | Attribute::NeverExtractable(v)
            | Attribute::AlwaysSensitive(v) => assert!(*v, "{a:?}"),
            Attribute::Extractable(v) => assert!(!*v, "{a:?}"),
            other => panic!("{other:?}"),
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
    match session.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key) {
        Err(P11Error::Pkcs11(RvError::KeyUnextractable, _)) => {}
        other => panic!("wrapping the master key should be refused: {other:?}"),
    }
    // The token's HMAC with the key is the device key.
    let mac = session
        .sign(&Mechanism::Sha256Hmac, key, b"dev-0001")
        .unwrap();
    assert_eq!(mac.as_slice(), a.as_bytes());
}

#[test]
fn the_master_key_file_is_encrypted_private_and_derives_as_dps_does() {
    let dir = tempfile::tempdir().unwrap();
    let section = "\n[symmetric_key]\nkey = \"file\"\nkey_file = \"keys/device-master.key\"\n";
    let cfg = write_config(dir.path(), "station.toml", section);
    let key_path = dir.path().join("data/keys/device-master.key");
    let pass = [("STATION_CA_PASSPHRASE", "correct horse battery")];

    let said = text(&symkey("show", &cfg, &pass));
    assert!(
        said.contains("there is no master key file") && said.contains("station symkey init"),
        "{said}"
    );
    let out = symkey("init", &cfg, &pass);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("key:    file {} (encrypted)", key_path.display())),
        "{said}"
    );
    let id = printed_id(&said);
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The file holds the key only encrypted.
    let file_text = std::fs::read_to_string(&key_path).unwrap();
    assert!(file_text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let der = station::ca::sealed::open(&file_text, pass[0].1.as_bytes()).unwrap();
    let master = der[der.len() - 32..].to_vec();
    let raw = std::fs::read(&key_path).unwrap();
    assert!(!raw.windows(32).any(|w| w == master.as_slice()));
    assert!(!file_text.contains(&B64.encode(&master)));

    // Once only, the same key, never shown.
    let out = symkey("init", &cfg, &pass);
    assert!(!out.status.success());
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), file_text);
    let out = symkey("show", &cfg, &pass);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_eq!(printed_id(&said), id);
    assert!(!said.contains(&B64.encode(&master)) && !said.contains(&hex::encode(&master)));
    // The id is HMAC(master, "station master key id"), first 8 bytes.
    assert_eq!(
        id,
        hex::encode(&other_hmac(&master, b"station master key id")[..8])
    );

    // A wrong or missing passphrase, a file others can read.
    let said = text(&symkey(
        "show",
        &cfg,
        &[("STATION_CA_PASSPHRASE", "wrong horse")],
    ));
    assert!(said.contains("the passphrase does not open it"), "{said}");
    let said = text(&symkey("show", &cfg, &[]));
    assert!(
        said.contains("it is encrypted") && said.contains("STATION_CA_PASSPHRASE"),
        "{said}"
    );
    for open in [0o640, 0o644] {
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(open)).unwrap();
        let said = text(&symkey("show", &cfg, &pass));
        assert!(
            said.contains("can be read by others") && said.contains("chmod 600"),
            "{said}"
        );
    }
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // In this process, with the passphrase from [ca] key_passphrase_file:
    // the derivations are HMAC-SHA256 (as another library computes it) and
    // what DPS derives from the group keys.
    let pass_file = dir.path().join("ca.pass");
    std::fs::write(&pass_file, format!("{}\n", pass[0].1)).unwrap();
    std::fs::set_permissions(&pass_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text_with_file = std::fs::read_to_string(&cfg).unwrap().replace(
        "leaf_validity_days = 365",
        "leaf_validity_days = 365\nkey_passphrase_file = \"ca.pass\"",
    );
    std::fs::write(&cfg, text_with_file).unwrap();
    let config = Config::load(&cfg).unwrap();
    let m = MasterKey::open(config.symmetric_key.as_ref().unwrap(), false).unwrap();
    assert_eq!(m.id().unwrap(), id);
    let (group_primary, group_secondary) = m.group_keys().unwrap();
    assert_eq!(B64.decode(group_primary.as_str()).unwrap(), master);
    let secondary_master = other_hmac(&master, b"secondary master key");
    assert_eq!(
        B64.decode(group_secondary.as_str()).unwrap(),
        secondary_master
    );
    for reg in ["dev-0001", "0a1b2c3d-0000-4000-8000-000000000001"] {
        let k = m.derive(reg).unwrap();
        assert_eq!(k.as_bytes().as_slice(), other_hmac(&master, reg.as_bytes()));
        let dps = B64.encode(other_hmac(
            &B64.decode(group_primary.as_str()).unwrap(),
            reg.as_bytes(),
        ));
        assert_eq!(k.to_base64().as_str(), dps);
        let k2 = m.derive_secondary(reg).unwrap();
        let dps2 = B64.encode(other_hmac(
            &B64.decode(group_secondary.as_str()).unwrap(),
            reg.as_bytes(),
        ));
        assert_eq!(k2.to_base64().as_str(), dps2);
    }
}

/// A running station whose master key is in the token: two boards get
/// keys the token derived, their enrollments carry them, and a device
/// registers with the key it holds. (The key itself never leaves the
/// token: the test above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_with_its_master_key_in_a_token_provisions_symmetric_key_devices() {
    if !in_softhsm("a_station_with_its_master_key_in_a_token_provisions_symmetric_key_devices") {
        return;
    }
    use common::device_client::{Sas, register_symmetric_key};
    use common::fake_dps::{FakeDps, ID_SCOPE, stored_keys};
    let fake = FakeDps::start().await;
    let section = common::dps_section(&fake, 6000)
        + &format!("attestation = \"symmetric_key\"\nid_scope = \"{ID_SCOPE}\"\n")
        + &pkcs11_section(TOKEN, true);
    let st = common::TestStation::start_with(
        vec![common::quick_board(), common::quick_board()],
        300,
        &section,
        |cfg| {
            let sk = cfg.symmetric_key.as_ref().unwrap();
            let pin = sk.pin_path().unwrap();
            std::fs::write(&pin, PIN).unwrap();
            std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
            MasterKey::create(sk).unwrap();
        },
    )
    .await;
    let boards = st
        .wait_finished(2, std::time::Duration::from_secs(60))
        .await;
    let cfg = Config::load(&st.dir.path().join("station.toml")).unwrap();
    let master = MasterKey::open(cfg.symmetric_key.as_ref().unwrap(), false).unwrap();
    for _ in 0..100 {
        if fake.with(|s| s.enrollments.len()) == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for b in &boards {
        assert_eq!(b["status"], "provisioned", "{b:#}");
        let guid = b["guid"].as_str().unwrap();
        let derived = master.derive(guid).unwrap().to_base64();
        let (primary, _) = fake.with(|s| stored_keys(s, guid)).expect("enrolled");
        assert_eq!(primary, *derived, "the enrollment has the token's key");
        let held = st
            .sims
            .iter()
            .flat_map(|s| s.boards())
            .find(|x| x.guid.as_str() == guid)
            .and_then(|x| x.symmetric_key)
            .unwrap();
        assert_eq!(B64.encode(held), *derived, "the board holds it");
        let said = register_symmetric_key(
            fake.device_endpoint(),
            &fake.device_server_ca(),
            ID_SCOPE,
            guid,
            &derived,
            &Sas::default(),
        )
        .await
        .unwrap();
        assert_eq!(said["status"], "disabled", "{said:#}");
    }
}
