//! A recorded jig session (`fixtures/jig-session-v1.txt`) replayed through
//! the frame decoder, the message parsers and the station's checks, and
//! one with the line capabilities (`fixtures/jig-session-v1-pieces.txt`:
//! a damaged-line notice, the chain in pieces both ways); and every
//! example frame of `docs/jig-protocol.md` decoded: the wire format and
//! the documentation cannot drift from the code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use station::ca::{check_csr, verify_key_proof};
use station::jig::frame::{Decoded, Decoder, Frame, Kind};
use station::jig::protocol::{
    CAP_SETTINGS, JigEvent, JigStatus, NOTICE, Request, decode_chain, notice, parse_caps,
    parse_chain, parse_csr, parse_identity, parse_piece, parse_settings, parse_signature,
    store_pieces,
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

/// The session with the line capabilities: notices and pieces.
fn pieces_session() -> Vec<Frame> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/jig-session-v1-pieces.txt");
    let bytes = std::fs::read(path).unwrap();
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(5) {
        d.feed(chunk, &mut out);
    }
    assert_eq!(d.pending(), 0);
    frames(&out)
}

#[test]
fn the_pieces_session_reassembles_the_chain_both_ways() {
    let fs = pieces_session();
    // HELLO offers both, the board takes both.
    let hello = &fs[0];
    assert_eq!(Request::from_frame(hello).unwrap().verb(), "HELLO");
    assert_eq!(parse_caps(hello), ["notice", "pieces"]);
    let caps = parse_caps(&fs[1]);
    assert!(caps.contains(&"notice".to_string()) && caps.contains(&"pieces".to_string()));
    // The station's HELLO is exactly that frame, with its id.
    let ours = Request::Hello {
        station: "station-01".into(),
    }
    .to_frame(hello.id);
    assert_eq!(&ours, hello);

    // A notice, then the same frame again, byte for byte.
    let nak = fs.iter().position(|f| f.verb == NOTICE).unwrap();
    assert_eq!(fs[nak], notice("crc"));
    assert_eq!(fs[nak].id, 0);
    assert_eq!(fs[nak - 1].encode(), fs[nak + 1].encode());

    // The STORE pieces, once each (the repeat aside), in order, make the
    // chain of the whole-chain session.
    let (_, v1) = session();
    let whole = frames(&v1);
    let Request::Store { chain } = Request::from_frame(
        whole
            .iter()
            .find(|f| f.kind == Kind::Request && f.verb == "STORE")
            .unwrap(),
    )
    .unwrap() else {
        panic!()
    };
    let mut text = String::new();
    let mut last_id = None;
    for f in fs
        .iter()
        .filter(|f| f.kind == Kind::Request && f.verb == "STORE")
    {
        if last_id == Some(f.id) {
            continue;
        }
        last_id = Some(f.id);
        let Request::StorePiece { offset, size, data } = Request::from_frame(f).unwrap() else {
            panic!("{f}")
        };
        assert_eq!(offset, text.len());
        assert!(data.len() <= 256);
        text.push_str(&data);
        assert!(text.len() <= size);
    }
    assert_eq!(decode_chain(&text).unwrap(), chain);
    // Read back in pieces: the same text.
    let mut back = String::new();
    for f in fs
        .iter()
        .filter(|f| f.kind == Kind::Request && f.verb == "READCERT")
    {
        let Request::ReadCertPiece { offset, max } = Request::from_frame(f).unwrap() else {
            panic!("{f}")
        };
        assert_eq!(offset, back.len());
        let (size, data) = parse_piece(answer(&fs, f.id)).unwrap();
        assert_eq!(size, text.len());
        assert_eq!(data.len(), max.min(size - offset));
        back.push_str(&data);
    }
    assert_eq!(back, text);
    // Only the last piece is slow, and it is the one the board sent BUSY for.
    let pieces = store_pieces(&chain, 256);
    assert!(pieces[..pieces.len() - 1].iter().all(|p| !p.is_slow()));
    assert!(pieces.last().unwrap().is_slow());
    let last = fs
        .iter()
        .rfind(|f| f.kind == Kind::Request && f.verb == "STORE")
        .unwrap();
    assert!(
        fs.iter()
            .any(|f| f.kind == Kind::Response && f.id == last.id && f.verb == "BUSY")
    );
    // And the pieces the station makes are the frames of the session.
    let sent: Vec<Vec<u8>> = pieces
        .iter()
        .zip(0x2Cu16..)
        .map(|(p, id)| p.to_frame(id).encode())
        .collect();
    let mut recorded: Vec<Vec<u8>> = fs
        .iter()
        .filter(|f| f.kind == Kind::Request && f.verb == "STORE")
        .map(Frame::encode)
        .collect();
    recorded.dedup();
    assert_eq!(sent, recorded);
}

/// Every frame in the protocol document's examples has a true CRC,
/// except the ones the text says arrived damaged; shortened frames (with
/// `…`) are checked in the fixtures instead.
#[test]
fn the_documents_example_frames_carry_true_crcs() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/jig-protocol.md"),
    )
    .unwrap();
    let damaged_on_purpose = ["<002C OK*CFE3"];
    let mut checked = 0;
    let mut in_code = false;
    for line in doc.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let framelike = t.len() > 6
            && [">", "<", "!"].iter().any(|k| t.starts_with(k))
            && t[1..5].bytes().all(|b| b.is_ascii_hexdigit())
            && t.contains('*');
        if !in_code || !framelike || t.contains('…') {
            continue;
        }
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(format!("{t}\r\n").as_bytes(), &mut out);
        match out.pop() {
            Some(Decoded::Frame(f)) => {
                assert!(
                    !damaged_on_purpose.contains(&t),
                    "{t} is meant to be damaged"
                );
                assert_eq!(String::from_utf8(f.encode()).unwrap(), format!("{t}\r\n"));
            }
            other => assert!(
                damaged_on_purpose.contains(&t),
                "docs/jig-protocol.md: {t}: {other:?}"
            ),
        }
        checked += 1;
    }
    assert!(checked > 40, "only {checked} frames found");
}
