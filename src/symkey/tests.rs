use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::Mac;

use super::*;

/// The master key 00 01 02 … 1f, in memory.
fn known() -> MasterKey {
    MasterKey {
        inner: Inner::File(Zeroizing::new((0u8..32).collect())),
        describe: "test".into(),
    }
}

/// HMAC-SHA256 with the RustCrypto `hmac` crate, not ring.
fn other_hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

#[test]
fn known_answers() {
    let m = known();
    // Computed with Python's hmac module.
    assert_eq!(
        m.derive("my-symkey-device").unwrap().to_base64().as_str(),
        "rKJvgvDWRYyAYq2fxy/Z1qphsqPlVS2iL+qUeTShO54="
    );
    assert_eq!(
        m.derive_secondary("my-symkey-device")
            .unwrap()
            .to_base64()
            .as_str(),
        "sygGnIDabeLwPU8C6AmUqWduq+MVz1lRyRFiuECctsc="
    );
    assert_eq!(m.id().unwrap(), "550f825a67e05c88");
    let master: Vec<u8> = (0u8..32).collect();
    assert_eq!(
        m.derive("dev-0001").unwrap().as_bytes().as_slice(),
        other_hmac(&master, b"dev-0001")
    );
}

#[test]
fn group_keys_give_what_dps_derives() {
    let m = known();
    let (primary, secondary) = m.group_keys().unwrap();
    assert_eq!(
        primary.as_str(),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    );
    // DPS: base64(HMAC-SHA256(base64decode(groupKey), registrationId)).
    for id in ["dev-0001", "0a1b2c3d-0000-4000-8000-000000000001"] {
        let dps_primary = B64.encode(other_hmac(
            &B64.decode(primary.as_str()).unwrap(),
            id.as_bytes(),
        ));
        let dps_secondary = B64.encode(other_hmac(
            &B64.decode(secondary.as_str()).unwrap(),
            id.as_bytes(),
        ));
        assert_eq!(m.derive(id).unwrap().to_base64().as_str(), dps_primary);
        assert_eq!(
            m.derive_secondary(id).unwrap().to_base64().as_str(),
            dps_secondary
        );
    }
    assert_ne!(primary.as_str(), secondary.as_str());
}

#[test]
fn proofs_verify_and_nothing_secret_is_shown() {
    let m = known();
    let k = m.derive("dev-0001").unwrap();
    let nonce = b"station nonce 123";
    let mac = k.proof(nonce);
    assert!(k.verify_proof(nonce, &mac));
    assert!(!k.verify_proof(b"another nonce", &mac));
    let mut bad = mac;
    bad[0] ^= 1;
    assert!(!k.verify_proof(nonce, &bad));
    assert!(!k.verify_proof(nonce, &mac[..31]));
    assert!(!m.derive("dev-0002").unwrap().verify_proof(nonce, &mac));
    assert_eq!(format!("{k:?}"), "DeviceKey([redacted])");
    assert_eq!(format!("{m:?}"), "MasterKey(test)");
}

#[test]
fn registration_ids_dps_would_refuse_are_refused() {
    let m = known();
    for id in ["", "has space", "slash/id", "é", &"a".repeat(129)] {
        let e = m.derive(id).unwrap_err().to_string();
        assert!(e.contains("is not a DPS registration id"), "{e}");
        assert!(m.derive_secondary(id).is_err());
    }
    assert!(m.derive(&"a".repeat(128)).is_ok());
    assert!(m.derive("a:b.c_d-e").is_ok());
}

fn file_config(dir: &Path, pass_file: Option<&str>) -> SymKeyConfig {
    SymKeyConfig {
        backend: SymKeyBackend::File,
        key_file: "keys/device-master.key".into(),
        data_dir: dir.join("data"),
        config_dir: dir.to_path_buf(),
        passphrase_file: pass_file.map(Into::into),
    }
}

// STATION_CA_PASSPHRASE is not set in unit tests (tests may not change the
// environment): the passphrase comes from the file here; the environment
// variable is tried in tests/symkey_custody.rs.
#[test]
fn the_key_file_is_encrypted_private_and_refused_when_open() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("ca.pass");
    std::fs::write(&pass, "correct horse\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = file_config(dir.path(), Some("ca.pass"));
    let path = cfg.key_path();

    let e = MasterKey::open(&cfg, false).unwrap_err().to_string();
    assert!(
        e.contains("there is no master key file") && e.contains("station symkey init"),
        "{e}"
    );
    let made = MasterKey::create(&cfg).unwrap();
    assert_eq!(
        made.describe(),
        format!("file {} (encrypted)", path.display())
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{text}"
    );
    let Inner::File(master) = &made.inner else {
        panic!("a file key")
    };
    let der = crate::ca::sealed::open(&text, b"correct horse").unwrap();
    assert!(
        der.windows(32).any(|w| w == master.as_slice()),
        "the file holds the key"
    );
    let raw = std::fs::read(&path).unwrap();
    assert!(
        !raw.windows(32).any(|w| w == master.as_slice()),
        "the raw key is not in the file"
    );
    assert!(!text.contains(&B64.encode(master.as_slice())));

    // Opened again: the same key.
    let again = MasterKey::open(&cfg, false).unwrap();
    assert_eq!(again.id().unwrap(), made.id().unwrap());
    assert_eq!(
        again.derive("dev-0001").unwrap().as_bytes(),
        made.derive("dev-0001").unwrap().as_bytes()
    );
    assert_eq!(
        MasterKey::open(&cfg, true).unwrap().id().unwrap(),
        made.id().unwrap()
    );

    // init never replaces it.
    let e = MasterKey::create(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("already exists") && e.contains("never replaces"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    // A wrong passphrase.
    std::fs::write(&pass, "wrong horse\n").unwrap();
    let e = MasterKey::open(&cfg, false).unwrap_err().to_string();
    assert!(e.contains("the passphrase does not open it"), "{e}");
    // No passphrase at all.
    let e = MasterKey::open(&file_config(dir.path(), None), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("it is encrypted") && e.contains("STATION_CA_PASSPHRASE"),
        "{e}"
    );
    std::fs::write(&pass, "correct horse\n").unwrap();

    // Others may not read it.
    for open in [0o640, 0o604] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).unwrap();
        let e = MasterKey::open(&cfg, false).unwrap_err().to_string();
        assert!(
            e.contains("can be read by others") && e.contains("chmod 600"),
            "{e}"
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Nor the passphrase file.
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = MasterKey::open(&cfg, false).unwrap_err().to_string();
    assert!(
        e.contains("CA passphrase file") && e.contains("chmod 600"),
        "{e}"
    );
}

#[test]
fn without_a_passphrase_the_file_is_plain_as_the_ca_key_may_be() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = file_config(dir.path(), None);
    let m = MasterKey::create(&cfg).unwrap();
    assert!(
        m.describe().ends_with("(NOT encrypted)"),
        "{}",
        m.describe()
    );
    let text = std::fs::read_to_string(cfg.key_path()).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
    assert_eq!(
        MasterKey::open(&cfg, false).unwrap().id().unwrap(),
        m.id().unwrap()
    );
}

#[test]
fn a_file_that_is_not_a_master_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = file_config(dir.path(), None);
    std::fs::create_dir_all(cfg.key_path().parent().unwrap()).unwrap();
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(cfg.key_path(), ca_key.serialize_pem()).unwrap();
    std::fs::set_permissions(cfg.key_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = MasterKey::open(&cfg, false).unwrap_err().to_string();
    assert!(e.contains("is not a master key"), "{e}");
    std::fs::write(cfg.key_path(), "hello").unwrap();
    let e = MasterKey::open(&cfg, false).unwrap_err().to_string();
    assert!(e.contains("not a PEM key file"), "{e}");
}
