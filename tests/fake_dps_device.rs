//! The fake DPS's device registration API: a device with its certificate and
//! key registers over mutual TLS and is told `disabled` before its
//! enrollment is enabled and `assigned` (to the enrollment's hub) after; one
//! without a certificate is refused. (Symmetric-key devices:
//! `tests/fake_dps_symkey.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::device_client;
use common::fake_dps::{FakeDps, ID_SCOPE, Stored};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ID: &str = "0a1b2c3d-0000-4000-8000-000000000001";

/// A device CA.
fn device_ca() -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "Test Device CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), cert.pem())
}

/// A device leaf for `cn` signed by `ca`, with a new P-256 key: (leaf PEM,
/// key PEM).
fn device_leaf(ca: &Issuer<'static, KeyPair>, cn: &str) -> (String, String) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// An X.509 individual enrollment body, as a station PUTs it.
fn enrollment(pem: &str, status: &str) -> Value {
    json!({
        "registrationId": ID,
        "deviceId": ID,
        "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}},
        "capabilities": {"iotEdge": false},
        "provisioningStatus": status,
        "initialTwin": {"tags": {"line": "test-line"}, "properties": {"desired": {}}},
    })
}

fn put_enrollment(fake: &FakeDps, body: Value, pem: &str, etag: &str) {
    fake.with(|s| {
        s.enrollments.insert(
            ID.to_ascii_lowercase(),
            Stored {
                body,
                certificate_pem: pem.to_string(),
                etag: etag.into(),
                writes: 1,
            },
        );
    });
}

fn device_requests(fake: &FakeDps) -> Vec<(String, String, u16)> {
    fake.with(|s| {
        s.log
            .iter()
            .filter(|l| l.path.contains("/registrations/"))
            .map(|l| (l.method.clone(), l.path.clone(), l.status))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_registers_disabled_then_assigned() {
    let mut fake = FakeDps::start().await;
    let (ca, ca_pem) = device_ca();
    let (leaf, key) = device_leaf(&ca, ID);
    let chain = format!("{leaf}{ca_pem}");
    put_enrollment(&fake, enrollment(&leaf, "disabled"), &leaf, "e1");

    // The endpoint and server certificate stay the same across restart().
    let endpoint = fake.device_endpoint();
    let server_ca = fake.device_server_ca();
    let register = |scope: &'static str, chain: String, key: String| {
        let server_ca = server_ca.clone();
        async move { device_client::register(endpoint, &server_ca, scope, ID, &chain, &key).await }
    };

    // Not yet activated.
    let v = register(ID_SCOPE, chain.clone(), key.clone())
        .await
        .unwrap();
    assert_eq!(v["status"], "disabled", "{v:#}");
    assert_eq!(v["registrationState"]["status"], "disabled", "{v:#}");
    assert_eq!(v["registrationState"]["registrationId"], ID);
    let op = v["operationId"].as_str().unwrap();
    let parts: Vec<&str> = op.split('.').collect();
    assert_eq!(parts.len(), 3, "{op}");
    assert_eq!(parts[0], "5");
    assert_eq!(parts[1].len(), 16);
    assert!(
        op.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    );
    let log = device_requests(&fake);
    assert_eq!(log.len(), 2, "one register and one poll: {log:?}");
    assert_eq!(log[0].0, "PUT");
    assert_eq!(log[0].1, format!("/{ID_SCOPE}/registrations/{ID}/register"));
    assert_eq!(log[0].2, 202);
    assert_eq!(log[1].0, "GET");
    assert_eq!(log[1].2, 200);
    assert!(!log[1].1.contains('?'));

    // Activated, to a chosen hub.
    let mut body = enrollment(&leaf, "enabled");
    body["allocationPolicy"] = json!("static");
    body["iotHubs"] = json!(["hub-a.azure-devices.net"]);
    put_enrollment(&fake, body, &leaf, "e2");
    let v = register(ID_SCOPE, chain.clone(), key.clone())
        .await
        .unwrap();
    assert_eq!(v["status"], "assigned", "{v:#}");
    let r = &v["registrationState"];
    assert_eq!(r["assignedHub"], "hub-a.azure-devices.net", "{v:#}");
    assert_eq!(r["deviceId"], ID);
    assert_eq!(r["status"], "assigned");
    assert_eq!(r["substatus"], "initialAssignment");
    assert_eq!(r["etag"], "e2");
    assert_eq!(r["fakeInitialTwin"]["tags"]["line"], "test-line");
    time::OffsetDateTime::parse(
        r["createdDateTimeUtc"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();

    // The leaf alone (no chain) is enough for an individual enrollment.
    let v = register(ID_SCOPE, leaf.clone(), key.clone()).await.unwrap();
    assert_eq!(v["status"], "assigned", "{v:#}");

    // Another certificate with the same CN from the same CA is refused.
    let (other, other_key) = device_leaf(&ca, ID);
    let e = register(ID_SCOPE, format!("{other}{ca_pem}"), other_key)
        .await
        .unwrap_err();
    assert!(e.contains("401"), "{e}");

    // A certificate for another id is refused too.
    let (stranger, stranger_key) = device_leaf(&ca, "0a1b2c3d-0000-4000-8000-000000000002");
    let e = register(ID_SCOPE, stranger, stranger_key)
        .await
        .unwrap_err();
    assert!(e.contains("401"), "{e}");

    // Another ID scope.
    let e = register("0ne00OTHER1", chain.clone(), key.clone())
        .await
        .unwrap_err();
    assert!(e.contains("404"), "{e}");

    // The device API comes back with the service API.
    fake.restart().await;
    let v = register(ID_SCOPE, chain.clone(), key.clone())
        .await
        .unwrap();
    assert_eq!(v["status"], "assigned", "{v:#}");
    fake.stop();
    register(ID_SCOPE, chain, key).await.unwrap_err();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_without_a_client_certificate_is_refused() {
    let fake = FakeDps::start().await;
    let (ca, _) = device_ca();
    let (leaf, _) = device_leaf(&ca, ID);
    put_enrollment(&fake, enrollment(&leaf, "enabled"), &leaf, "e1");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(
            fake.device_server_ca(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(fake.device_endpoint())
        .await
        .unwrap();
    let server_name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let answer: Result<Vec<u8>, std::io::Error> = async {
        let mut tls = connector.connect(server_name, tcp).await?;
        let body = json!({ "registrationId": ID }).to_string();
        let req = format!(
            "PUT /{ID_SCOPE}/registrations/{ID}/register?api-version=2021-06-01 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json; charset=utf-8\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(req.as_bytes()).await?;
        tls.flush().await?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await?;
        Ok(out)
    }
    .await;
    // The handshake succeeds (a symmetric-key device presents no
    // certificate either), but without a certificate or a SAS the register
    // PUT is refused.
    let said = String::from_utf8_lossy(&answer.unwrap()).to_string();
    assert!(said.starts_with("HTTP/1.1 401"), "{said}");
    assert_eq!(
        device_requests(&fake),
        vec![(
            "PUT".to_string(),
            format!("/{ID_SCOPE}/registrations/{ID}/register"),
            401
        )]
    );
    fake.with(|s| assert!(s.operations.is_empty()));
}
