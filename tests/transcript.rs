//! A recorded jig session (`fixtures/jig-session-v1.txt`) replayed through
//! the frame decoder, the message parsers and the station's checks: the
//! wire format and the documentation's example cannot drift from the code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use station::ca::{check_csr, verify_key_proof};
use station::jig::frame::{Decoded, Decoder, Frame, Kind};
use station::jig::protocol::{
    CAP_SETTINGS, JigEvent, JigStatus, Request, parse_caps, parse_chain, parse_csr, parse_identity,
    parse_settings, parse_signature,
};
use x509_parser::prelude::{FromDer, X509Certificate};

fn session() -> (Vec<u8>, Vec<Decoded>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/jig-session-v1.txt");
    let bytes = std::fs::read(path).unwrap();
    // Fed in small, odd pieces, as a serial line delivers it.
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(7) {
        d.feed(chunk, &mut out);
    }
    assert_eq!(d.pending(), 0);
    (bytes, out)
}

fn frames(items: &[Decoded]) -> Vec<Frame> {
    items
        .iter()
        .filter_map(|d| match d {
            Decoded::Frame(f) => Some(f.clone()),
            Decoded::Comment(_) => None,
            Decoded::Error(e) => panic!("damaged frame in the fixture: {e}"),
        })
        .collect()
}

fn answer(frames: &[Frame], id: u16) -> &Frame {
    frames
        .iter()
        .find(|f| f.kind == Kind::Response && f.id == id && f.verb == "OK")
        .unwrap()
}

#[test]
fn every_line_decodes_and_encodes_back_to_the_same_bytes() {
    let (bytes, items) = session();
    let fs = frames(&items);
    assert_eq!(fs.len(), 30);
    let text = String::from_utf8(bytes).unwrap();
    let wire: Vec<&str> = text
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for (f, line) in fs.iter().zip(wire) {
        assert_eq!(
            String::from_utf8(f.encode()).unwrap(),
            format!("{line}\r\n")
        );
    }
    let requests: Vec<&str> = fs
        .iter()
        .filter(|f| f.kind == Kind::Request)
        .map(|f| f.verb.as_str())
        .collect();
    assert_eq!(
        requests,
        [
            "STATUS",
            "STATUS",
            "HELLO",
            "IDENT",
            "KEYGEN",
            "STORE",
            "READCERT",
            "SIGN",
            "SETTINGS",
            "READSETTINGS",
            "FINISH",
            "STATUS"
        ]
    );
    for f in &fs {
        match f.kind {
            Kind::Request => {
                Request::from_frame(f).unwrap();
            }
            Kind::Event => {
                JigEvent::from_frame(f).unwrap();
            }
            Kind::Response => {}
        }
    }
}

#[test]
fn the_recorded_session_passes_the_stations_checks() {
    let (_, items) = session();
    let fs = frames(&items);
    let find = |verb: &str| {
        fs.iter()
            .find(|f| f.kind == Kind::Request && f.verb == verb)
            .unwrap()
    };

    let status = JigStatus::from_answer(answer(&fs, find("FINISH").id + 1)).unwrap();
    assert!(status.present && status.done == Some(true));

    let id = parse_identity(answer(&fs, find("IDENT").id)).unwrap();
    let csr = parse_csr(answer(&fs, find("KEYGEN").id)).unwrap();
    let checked = check_csr(&csr, &id.guid).expect("the recorded CSR passes intake");

    let Request::Store { chain } = Request::from_frame(find("STORE")).unwrap() else {
        panic!()
    };
    assert_eq!(chain.len(), 2);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let (_, ca) = X509Certificate::from_der(&chain[1]).unwrap();
    leaf.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        checked.spki_der.as_slice(),
        "issued for the CSR's key"
    );
    assert_eq!(
        parse_chain(answer(&fs, find("READCERT").id)).unwrap(),
        chain
    );

    let Request::Sign { nonce } = Request::from_frame(find("SIGN")).unwrap() else {
        panic!()
    };
    let sig = parse_signature(answer(&fs, find("SIGN").id)).unwrap();
    assert!(verify_key_proof(&chain[0], &nonce, &sig));
    let mut other = nonce;
    other[0] ^= 1;
    assert!(
        !verify_key_proof(&chain[0], &other, &sig),
        "the proof is bound to the nonce"
    );

    // The board announced the settings, took them and read them back as
    // sent, with the GUID as registration id.
    assert!(parse_caps(answer(&fs, find("HELLO").id)).contains(&CAP_SETTINGS.to_string()));
    let Request::Settings(sent) = Request::from_frame(find("SETTINGS")).unwrap() else {
        panic!()
    };
    assert_eq!(sent.registration_id, id.guid.to_string());
    assert_eq!(sent.id_scope, "0ne00A1B2C3");
    assert_eq!(sent.endpoint, "global.azure-devices-provisioning.net");
    assert_eq!(sent.attestation, "x509");
    assert_eq!(
        parse_settings(answer(&fs, find("READSETTINGS").id)).unwrap(),
        sent
    );
}
