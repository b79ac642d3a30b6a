use super::*;
use crate::ids::Guid;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

fn guid() -> Guid {
    "0a1b2c3d-0000-4000-8000-00000000abcd".parse().unwrap()
}

fn board_csr(cn: &str, alg: &'static rcgen::SignatureAlgorithm) -> (rcgen::KeyPair, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    let der = p.serialize_request(&key).unwrap().der().to_vec();
    (key, der)
}

fn test_ca(dir: &std::path::Path) -> FactoryCa {
    FactoryCa::init(
        &dir.join("ca.pem"),
        &dir.join("ca.key"),
        "Test Factory CA",
        3650,
        false,
    )
    .unwrap()
}

#[test]
fn leaf_follows_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path());
    let (key, csr) = board_csr(guid().as_str(), &rcgen::PKCS_ECDSA_P256_SHA256);
    let checked = check_csr(&csr, &guid()).unwrap();
    let now = OffsetDateTime::now_utc();
    let leaf = issue_leaf(&ca, &checked, now, 365).unwrap();

    let (_, cert) = X509Certificate::from_der(&leaf.der).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(ca.certificate_der()).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        guid().as_str()
    );
    assert_eq!(
        cert.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
    );
    assert_eq!(serial_string(cert.raw_serial()), leaf.serial);
    assert!(cert.raw_serial().len() >= 15, "serial too short");
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.10045.4.3.2"
    );
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86400;
    assert_eq!(days, 365);

    let mut seen = Vec::new();
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::KeyUsage(ku) => {
                assert!(ext.critical, "KeyUsage must be critical");
                assert!(ku.digital_signature());
                assert!(!ku.key_cert_sign());
                seen.push("ku");
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                assert!(eku.client_auth && !eku.server_auth);
                seen.push("eku");
            }
            ParsedExtension::BasicConstraints(bc) => {
                assert!(!bc.ca);
                seen.push("bc");
            }
            ParsedExtension::SubjectKeyIdentifier(_) => seen.push("ski"),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                let ca_ski = ca_cert
                    .extensions()
                    .iter()
                    .find_map(|e| match e.parsed_extension() {
                        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                        _ => None,
                    })
                    .unwrap();
                assert_eq!(aki.key_identifier.as_ref().unwrap().0, ca_ski.as_slice());
                seen.push("aki");
            }
            other => panic!("unexpected extension {other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, ["aki", "bc", "eku", "ku", "ski"]);
    assert_eq!(leaf.fingerprint, fingerprint(&leaf.der));
    assert!(leaf.pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
}

#[test]
fn serials_differ() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path());
    let (_, csr) = board_csr(guid().as_str(), &rcgen::PKCS_ECDSA_P256_SHA256);
    let checked = check_csr(&csr, &guid()).unwrap();
    let now = OffsetDateTime::now_utc();
    let a = issue_leaf(&ca, &checked, now, 1).unwrap();
    let b = issue_leaf(&ca, &checked, now, 1).unwrap();
    assert_ne!(a.serial, b.serial);
}

#[test]
fn csr_refusals() {
    let (_, other_guid) = board_csr(
        "0a1b2c3d-0000-4000-8000-000000000000",
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    assert_eq!(
        check_csr(&other_guid, &guid()).unwrap_err().code(),
        "csr_wrong_guid"
    );

    let (_, p384) = board_csr(guid().as_str(), &rcgen::PKCS_ECDSA_P384_SHA384);
    let e = check_csr(&p384, &guid()).unwrap_err();
    assert_eq!(e.code(), "csr_not_p256");
    assert!(e.to_string().contains("P-384"), "{e}");

    let (_, ed) = board_csr(guid().as_str(), &rcgen::PKCS_ED25519);
    assert_eq!(check_csr(&ed, &guid()).unwrap_err().code(), "csr_not_p256");

    let (_, mut good) = board_csr(guid().as_str(), &rcgen::PKCS_ECDSA_P256_SHA256);
    let n = good.len();
    good[n - 5] ^= 0x01; // inside the signature
    assert_eq!(
        check_csr(&good, &guid()).unwrap_err().code(),
        "csr_bad_signature"
    );

    assert_eq!(
        check_csr(b"not a csr", &guid()).unwrap_err().code(),
        "csr_unreadable"
    );
}

#[test]
fn key_file_open_to_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    test_ca(dir.path());
    let key = dir.path().join("ca.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let e = FactoryCa::load(&dir.path().join("ca.pem"), &key)
        .err()
        .unwrap();
    assert!(e.to_string().contains("chmod 600"), "{e}");
}

#[test]
fn init_does_not_overwrite_and_mismatch_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    test_ca(dir.path());
    let e = FactoryCa::init(
        &dir.path().join("ca.pem"),
        &dir.path().join("ca.key"),
        "x",
        1,
        false,
    )
    .err()
    .unwrap();
    assert!(matches!(e, CaError::Exists { .. }));
    let other = tempfile::tempdir().unwrap();
    test_ca(other.path());
    let e = FactoryCa::load(&other.path().join("ca.pem"), &dir.path().join("ca.key"))
        .err()
        .unwrap();
    assert!(matches!(e, CaError::Mismatch { .. }), "{e}");
}

#[test]
fn an_expired_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = p.self_signed(&key).unwrap();
    let (cp, kp) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    std::fs::write(&cp, cert.pem()).unwrap();
    std::fs::write(&kp, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&kp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let e = FactoryCa::load(&cp, &kp).err().unwrap();
    assert!(matches!(e, CaError::NotValidNow { .. }), "{e}");
    assert!(e.to_string().contains("renew it"), "{e}");
}

#[test]
fn scripted_ca_fails_then_signs() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ScriptedCa::new(test_ca(dir.path()), vec!["HSM did not answer".into()]);
    let (_, csr) = board_csr(guid().as_str(), &rcgen::PKCS_ECDSA_P256_SHA256);
    let checked = check_csr(&csr, &guid()).unwrap();
    let now = OffsetDateTime::now_utc();
    assert!(
        issue_leaf(&ca, &checked, now, 1)
            .unwrap_err()
            .to_string()
            .contains("HSM")
    );
    assert!(issue_leaf(&ca, &checked, now, 1).is_ok());
}

#[test]
fn an_encrypted_key_file_needs_its_passphrase_and_openssl_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let ca = FactoryCa::init_with(&cert, &key, "T", 10, false, Some(b"s3cret pass")).unwrap();
    assert!(ca.sealed());
    assert!(ca.describe().contains("(encrypted)"));
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(
        text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{text}"
    );

    let e = FactoryCa::load(&cert, &key).err().unwrap().to_string();
    assert!(
        e.contains("it is encrypted") && e.contains("STATION_CA_PASSPHRASE"),
        "{e}"
    );
    let e = FactoryCa::load_with(&cert, &key, Some(b"wrong"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("passphrase does not open it"), "{e}");
    let again = FactoryCa::load_with(&cert, &key, Some(b"s3cret pass")).unwrap();
    assert_eq!(again.certificate_der(), ca.certificate_der());

    // Standard encrypted PKCS#8: openssl opens it with the passphrase.
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-in"])
        .arg(&key)
        .args(["-passin", "pass:s3cret pass", "-noout", "-text"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("NIST CURVE: P-256"));
}
