//! Symmetric-key devices against the strict fake DPS, with the station's
//! own DPS client and master key: an individual enrollment with the keys
//! the station derives, then a device signing its SAS with its key (and not
//! with a wrong key, policy, expiry or body); `disabled` until the station
//! enables the enrollment with `If-Match`; a GET hides the keys and the
//! attestation mechanism call gives them, and an enrollment PUT back
//! without its keys gets new ones (so the device no longer registers);
//! enrollment groups whose keys give the same device keys; the key checks
//! and the client's error mapping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::device_client::{Sas, register_symmetric_key};
use common::fake_dps::{FakeDps, ID_SCOPE, device_key_from_group, stored_keys};
use serde_json::{Value, json};
use station::config::{SymKeyBackend, SymKeyConfig};
use station::dps::{ConnectionString, DpsClient, DpsError, HttpDps};
use station::symkey::MasterKey;

const ID: &str = "0a1b2c3d-0000-4000-8000-000000000001";
const HUB: &str = "hub-a.azure-devices.net";

fn client(fake: &FakeDps) -> HttpDps {
    HttpDps::new(
        &fake.endpoint(),
        ConnectionString::parse(&fake.connection_string()).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap()
}

/// A master key in a file of a temporary folder.
fn master(dir: &std::path::Path) -> MasterKey {
    let cfg = SymKeyConfig {
        backend: SymKeyBackend::File,
        key_file: "master.key".into(),
        data_dir: dir.to_path_buf(),
        config_dir: dir.to_path_buf(),
        passphrase_file: None,
    };
    MasterKey::open(&cfg, true).unwrap()
}

fn enrollment(id: &str, primary: &str, secondary: &str, status: &str) -> Value {
    json!({
        "registrationId": id,
        "deviceId": id,
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}},
        "capabilities": {"iotEdge": false},
        "provisioningStatus": status,
    })
}

/// The device registers with `key` (base64), signing as `sas` says.
async fn register(fake: &FakeDps, id: &str, key: &str, sas: &Sas) -> Result<Value, String> {
    register_symmetric_key(
        fake.device_endpoint(),
        &fake.device_server_ca(),
        ID_SCOPE,
        id,
        key,
        sas,
    )
    .await
}

fn operations(fake: &FakeDps) -> usize {
    fake.with(|s| s.operations.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registers_with_its_derived_key_disabled_then_assigned() {
    let fake = FakeDps::start().await;
    let dps = client(&fake);
    let dir = tempfile::tempdir().unwrap();
    let m = master(dir.path());
    let primary = m.derive(ID).unwrap().to_base64();
    let secondary = m.derive_secondary(ID).unwrap().to_base64();
    dps.put(&enrollment(ID, &primary, &secondary, "disabled"))
        .await
        .unwrap();
    let ok = Sas::default();

    // Not yet enabled.
    let v = register(&fake, ID, &primary, &ok).await.unwrap();
    assert_eq!(v["status"], "disabled", "{v:#}");
    assert_eq!(v["registrationState"]["status"], "disabled", "{v:#}");
    assert_eq!(v["registrationState"]["symmetricKey"], json!({}), "{v:#}");
    assert_eq!(operations(&fake), 1);

    // Refused: another device's key, another policy, an expired token, a
    // token for another id, a body for another id. None starts an operation.
    let other = m.derive("0a1b2c3d-0000-4000-8000-000000000002").unwrap();
    let e = register(&fake, ID, &other.to_base64(), &ok)
        .await
        .unwrap_err();
    assert!(
        e.contains("HTTP 401") && e.contains("signature does not match"),
        "{e}"
    );
    let skn = Sas {
        skn: "provisioningserviceowner".into(),
        ..Sas::default()
    };
    let e = register(&fake, ID, &primary, &skn).await.unwrap_err();
    assert!(
        e.contains("HTTP 401") && e.contains("skn must be registration"),
        "{e}"
    );
    let expired = Sas {
        expires_in: -5,
        ..Sas::default()
    };
    let e = register(&fake, ID, &primary, &expired).await.unwrap_err();
    assert!(e.contains("HTTP 401") && e.contains("expired"), "{e}");
    let elsewhere = Sas {
        sr_id: Some("0a1b2c3d-0000-4000-8000-000000000002".into()),
        ..Sas::default()
    };
    let e = register(&fake, ID, &primary, &elsewhere).await.unwrap_err();
    assert!(
        e.contains("HTTP 401") && e.contains("another resource"),
        "{e}"
    );
    let body = Sas {
        body_id: Some("0a1b2c3d-0000-4000-8000-000000000002".into()),
        ..Sas::default()
    };
    let e = register(&fake, ID, &primary, &body).await.unwrap_err();
    assert!(
        e.contains("HTTP 400") && e.contains("does not match the path"),
        "{e}"
    );
    assert_eq!(operations(&fake), 1);

    // A GET hides the keys; the attestation mechanism gives them.
    let got = dps.get(ID).await.unwrap().unwrap();
    assert_eq!(got["attestation"]["type"], "symmetricKey");
    assert_eq!(got["attestation"]["symmetricKey"], json!({}), "{got:#}");
    assert!(!got.to_string().contains(primary.as_str()));
    let mech = dps.attestation_mechanism(ID).await.unwrap();
    assert_eq!(mech["type"], "symmetricKey");
    assert_eq!(mech["symmetricKey"]["primaryKey"], primary.as_str());
    assert_eq!(mech["symmetricKey"]["secondaryKey"], secondary.as_str());

    // Enabling it by PUTting back what the GET gave loses the keys: DPS
    // makes new ones, and the device can no longer register.
    let mut careless = got.clone();
    careless["provisioningStatus"] = json!("enabled");
    let etag = got["etag"].as_str().unwrap().to_string();
    dps.replace(&careless, &etag).await.unwrap();
    let (p, s) = fake.with(|s| stored_keys(s, ID)).unwrap();
    assert_ne!(p, primary.as_str());
    assert_eq!(B64.decode(&p).unwrap().len(), 64);
    assert_eq!(B64.decode(&s).unwrap().len(), 64);
    let e = register(&fake, ID, &primary, &ok).await.unwrap_err();
    assert!(e.contains("HTTP 401"), "{e}");

    // Done right: the keys put back in, with If-Match; a stale etag is
    // refused.
    let got = dps.get(ID).await.unwrap().unwrap();
    let mut body = got.clone();
    body["attestation"] = json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": primary.as_str(), "secondaryKey": secondary.as_str()}});
    body["provisioningStatus"] = json!("enabled");
    body["allocationPolicy"] = json!("static");
    body["iotHubs"] = json!([HUB]);
    match dps.replace(&body, &etag).await {
        Err(DpsError::Rejected { status: 412, .. }) => {}
        other => panic!("a stale etag must be refused: {other:?}"),
    }
    dps.replace(&body, got["etag"].as_str().unwrap())
        .await
        .unwrap();
    let v = register(&fake, ID, &primary, &ok).await.unwrap();
    assert_eq!(v["status"], "assigned", "{v:#}");
    let r = &v["registrationState"];
    assert_eq!(r["assignedHub"], HUB);
    assert_eq!(r["deviceId"], ID);
    assert_eq!(r["symmetricKey"], json!({}));
    assert!(r.get("x509").is_none(), "{v:#}");

    // The secondary key, and the Node SDK's raw `sr`, work too.
    let v = register(&fake, ID, &secondary, &ok).await.unwrap();
    assert_eq!(v["status"], "assigned", "{v:#}");
    let raw = Sas {
        encode_sr: false,
        ..Sas::default()
    };
    let v = register(&fake, ID, &primary, &raw).await.unwrap();
    assert_eq!(v["status"], "assigned", "{v:#}");

    // No such enrollment.
    match dps.attestation_mechanism("no-such-device").await {
        Err(DpsError::Rejected { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registers_with_a_key_derived_from_an_enrollment_group() {
    let fake = FakeDps::start().await;
    let dps = client(&fake);
    let dir = tempfile::tempdir().unwrap();
    let m = master(dir.path());
    let (group_primary, group_secondary) = m.group_keys().unwrap();
    let group = json!({
        "enrollmentGroupId": "station-devices",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": group_primary.as_str(), "secondaryKey": group_secondary.as_str()}},
        "provisioningStatus": "enabled",
        "allocationPolicy": "static",
        "iotHubs": [HUB],
    });
    let stored = dps
        .put_enrollment_group("station-devices", &group, None)
        .await
        .unwrap();
    let etag = stored["etag"].as_str().unwrap().to_string();

    // DPS's derivation from the group key is the station's.
    let device = m.derive(ID).unwrap().to_base64();
    assert_eq!(device_key_from_group(&group_primary, ID), device.as_str());
    let v = register(&fake, ID, &device, &Sas::default()).await.unwrap();
    assert_eq!(v["status"], "assigned", "{v:#}");
    assert_eq!(
        v["registrationState"]["symmetricKey"]["enrollmentGroupId"],
        "station-devices"
    );
    assert_eq!(v["registrationState"]["assignedHub"], HUB);
    assert_eq!(v["registrationState"]["deviceId"], ID);
    let second = m.derive_secondary(ID).unwrap().to_base64();
    let v = register(&fake, ID, &second, &Sas::default()).await.unwrap();
    assert_eq!(v["status"], "assigned", "{v:#}");

    // Another station's master key does not fit.
    let other_dir = tempfile::tempdir().unwrap();
    let stranger = master(other_dir.path()).derive(ID).unwrap().to_base64();
    let e = register(&fake, ID, &stranger, &Sas::default())
        .await
        .unwrap_err();
    assert!(e.contains("HTTP 401"), "{e}");

    // The group as read: no keys, the etag.
    let got = dps
        .get_enrollment_group("station-devices")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["etag"], etag.as_str());
    assert_eq!(got["attestation"]["symmetricKey"], json!({}), "{got:#}");
    assert!(dps.get_enrollment_group("nothing").await.unwrap().is_none());

    // Disabled with If-Match; a stale etag is refused.
    let mut disabled = group.clone();
    disabled["provisioningStatus"] = json!("disabled");
    let stored = dps
        .put_enrollment_group("station-devices", &disabled, Some(&etag))
        .await
        .unwrap();
    assert_ne!(stored["etag"], etag.as_str());
    match dps
        .put_enrollment_group("station-devices", &group, Some(&etag))
        .await
    {
        Err(DpsError::Rejected { status: 412, .. }) => {}
        other => panic!("a stale etag must be refused: {other:?}"),
    }
    let v = register(&fake, ID, &device, &Sas::default()).await.unwrap();
    assert_eq!(v["status"], "disabled", "{v:#}");

    // An individual enrollment for the device decides alone.
    let own = B64.encode(station::random::bytes::<32>());
    dps.put(&enrollment(ID, &own, &own, "enabled"))
        .await
        .unwrap();
    let e = register(&fake, ID, &device, &Sas::default())
        .await
        .unwrap_err();
    assert!(e.contains("HTTP 401"), "{e}");
    let v = register(&fake, ID, &own, &Sas::default()).await.unwrap();
    assert_eq!(v["status"], "assigned", "{v:#}");
    assert_eq!(v["registrationState"]["symmetricKey"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_keys_are_checked_and_generated_as_dps_does() {
    let fake = FakeDps::start().await;
    let dps = client(&fake);
    let b = |n: usize| B64.encode(vec![7u8; n]);
    for (primary, words) in [
        ("not base64!".to_string(), "not valid base64"),
        (b(15), "16 to 64 bytes, not 15"),
        (b(65), "16 to 64 bytes, not 65"),
    ] {
        match dps.put(&enrollment(ID, &primary, &b(32), "disabled")).await {
            Err(DpsError::Rejected {
                status: 400,
                message,
                ..
            }) => assert!(message.contains(words), "{message}"),
            other => panic!("{primary}: {other:?}"),
        }
        let group = json!({"enrollmentGroupId": "g1", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": b(32), "secondaryKey": primary}}});
        match dps.put_enrollment_group("g1", &group, None).await {
            Err(DpsError::Rejected {
                status: 400,
                message,
                ..
            }) => assert!(message.contains(words), "{message}"),
            other => panic!("{other:?}"),
        }
    }
    dps.put(&enrollment(ID, &b(16), &b(64), "disabled"))
        .await
        .unwrap();
    assert_eq!(fake.with(|s| stored_keys(s, ID)), Some((b(16), b(64))));

    // Empty or missing keys: DPS makes 64-byte ones.
    dps.put(&enrollment(ID, "", "", "disabled")).await.unwrap();
    let (p, s) = fake.with(|s| stored_keys(s, ID)).unwrap();
    assert_eq!(B64.decode(&p).unwrap().len(), 64);
    assert_eq!(B64.decode(&s).unwrap().len(), 64);
    assert_ne!(p, s);
    let mut bare = enrollment(ID, "", "", "disabled");
    bare["attestation"] = json!({"type": "symmetricKey"});
    dps.put(&bare).await.unwrap();
    let (p2, _) = fake.with(|s| stored_keys(s, ID)).unwrap();
    assert_eq!(B64.decode(&p2).unwrap().len(), 64);
    assert_ne!(p2, p);
    let group = json!({"enrollmentGroupId": "g1", "attestation": {"type": "symmetricKey", "symmetricKey": {}}});
    dps.put_enrollment_group("g1", &group, None).await.unwrap();
    let keys = fake.with(|s| s.groups["g1"].body["attestation"]["symmetricKey"].clone());
    assert_eq!(
        B64.decode(keys["primaryKey"].as_str().unwrap())
            .unwrap()
            .len(),
        64
    );

    // Bulk create checks them too.
    let result = dps
        .bulk_create(&[
            enrollment("dev-a", &b(32), &b(32), "disabled"),
            enrollment("dev-b", &b(8), &b(32), "disabled"),
        ])
        .await
        .unwrap();
    assert_eq!(result.errors.len(), 1, "{result:?}");
    assert_eq!(result.errors[0].registration_id, "dev-b");
    assert!(fake.with(|s| stored_keys(s, "dev-a")).is_some());

    // Credentials DPS does not know.
    let wrong = HttpDps::new(
        &fake.endpoint(),
        ConnectionString::parse(&format!(
            "HostName={};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={}",
            fake.addr,
            B64.encode([1u8; 32])
        ))
        .unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    for e in [
        wrong.attestation_mechanism(ID).await.unwrap_err(),
        wrong.get_enrollment_group("g1").await.unwrap_err(),
        wrong
            .put_enrollment_group("g1", &group, None)
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(e, DpsError::Unauthorized { status: 401, .. }),
            "{e:?}"
        );
    }
}
