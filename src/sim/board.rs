//! One simulated board: its identity, its key and what it has stored.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PublicKeyData, SignatureAlgorithm, SigningKey,
};

use super::{Fault, SimOptions};
use crate::core::settings::ProvisioningSettings;
use crate::ids::{Guid, Mac};
use crate::jig::frame::Frame;
use crate::jig::protocol::{BoardIdentity, NONCE_LEN, identity_args, key_proof_message};

/// What a test may check about a board the simulator ran.
#[derive(Debug, Clone)]
pub struct ObservedBoard {
    pub guid: Guid,
    /// The board's public key as a SubjectPublicKeyInfo (DER), if it made one.
    pub public_key_spki: Option<Vec<u8>>,
    /// The certificate chain the board stored (DER).
    pub stored: Vec<Vec<u8>>,
    /// Every nonce the board signed, with its signature.
    pub signatures: Vec<([u8; NONCE_LEN], Vec<u8>)>,
    /// The private key the station sent with `KEYLOAD`, if it sent one (a
    /// test looks for it where it must not be).
    pub loaded_key: Option<[u8; 32]>,
    /// The symmetric key the station sent with `KEYSET`, if any.
    pub symmetric_key: Option<[u8; 32]>,
    /// The provisioning settings the board keeps (`SETTINGS`).
    pub settings: Option<ProvisioningSettings>,
    /// Every FINISH result the jig got for this board (`true`: pass).
    pub finishes: Vec<bool>,
    /// The offset of every STORE piece the board received, repeats
    /// included, in order.
    pub pieces: Vec<usize>,
}

/// The board's key: made by the board, or loaded from the station.
enum BoardKey {
    Made(KeyPair),
    Loaded(p256::ecdsa::SigningKey),
}

pub struct Board {
    identity: BoardIdentity,
    key: Option<BoardKey>,
    pub stored: Vec<Vec<u8>>,
    signatures: Vec<([u8; NONCE_LEN], Vec<u8>)>,
    pub symmetric_key: Option<[u8; 32]>,
    pub settings: Option<ProvisioningSettings>,
    /// Every FINISH result the jig got for this board, in order.
    pub finishes: Vec<bool>,
    /// A chain arriving in pieces: its announced size and the text so
    /// far. Stored only when complete.
    pub receiving: Option<(usize, String)>,
    pub pieces: Vec<usize>,
}

impl Board {
    /// Takes one piece of a chain; the chain once its last piece is in.
    /// A piece that does not follow the one before (another size, a gap,
    /// an overlap) is refused, and a piece at offset 0 starts afresh: a
    /// chain is never kept from a partial or mixed transfer.
    pub fn take_piece(
        &mut self,
        offset: usize,
        size: usize,
        data: &str,
    ) -> Result<Option<Vec<Vec<u8>>>, String> {
        self.pieces.push(offset);
        if size > crate::jig::protocol::MAX_CHAIN_TEXT {
            return Err(format!("a chain of {size} bytes is too large"));
        }
        if offset == 0 {
            self.receiving = Some((size, String::new()));
        }
        let Some((want, text)) = self.receiving.as_mut() else {
            return Err(format!(
                "a piece at offset {offset} without the pieces before it"
            ));
        };
        if *want != size || text.len() != offset || offset + data.len() > size {
            let have = text.len();
            self.receiving = None;
            return Err(format!(
                "a piece at offset {offset} of {size} bytes does not follow the {have} bytes received"
            ));
        }
        text.push_str(data);
        if text.len() < size {
            return Ok(None);
        }
        let text = self.receiving.take().map(|(_, t)| t).unwrap_or_default();
        crate::jig::protocol::decode_chain(&text)
            .map(Some)
            .map_err(|e| format!("the chain is not base64: {e}"))
    }

    pub fn new(guid: Guid, opts: &SimOptions) -> Board {
        let r: [u8; 4] = crate::random::bytes();
        Board {
            identity: BoardIdentity {
                guid,
                hw_revision: opts.hw_revision.clone(),
                fw_version: opts.fw_version.clone(),
                // Locally administered unicast address.
                mac: Mac::new([0x02, 0x00, r[0], r[1], r[2], r[3]]),
            },
            key: None,
            stored: Vec::new(),
            signatures: Vec::new(),
            symmetric_key: None,
            settings: None,
            finishes: Vec::new(),
            receiving: None,
            pieces: Vec::new(),
        }
    }

    pub fn identify(&self, f: Frame) -> Frame {
        identity_args(&self.identity, f)
    }

    /// Makes a new key and a CSR for it; faults make either wrong on purpose.
    pub fn keygen(&mut self, fault: Option<&Fault>) -> Result<Vec<u8>, String> {
        let alg: &'static SignatureAlgorithm = if fault == Some(&Fault::NotP256) {
            &PKCS_ECDSA_P384_SHA384
        } else {
            &PKCS_ECDSA_P256_SHA256
        };
        let key = KeyPair::generate_for(alg).map_err(|e| e.to_string())?;
        let cn = if fault == Some(&Fault::WrongGuid) {
            Guid::from_bytes(crate::random::bytes()).to_string()
        } else {
            self.identity.guid.to_string()
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let csr = if fault == Some(&Fault::WrongKey) {
            let other = KeyPair::generate_for(alg).map_err(|e| e.to_string())?;
            params.serialize_request(&Mismatched {
                public: &key,
                signer: &other,
            })
        } else {
            params.serialize_request(&key)
        }
        .map_err(|e| e.to_string())?;
        self.key = Some(BoardKey::Made(key));
        Ok(csr.der().to_vec())
    }

    /// Takes the station's key; answers its public point (uncompressed).
    pub fn load_key(&mut self, scalar: &[u8; 32]) -> Result<Vec<u8>, String> {
        let key = p256::ecdsa::SigningKey::from_slice(scalar).map_err(|e| e.to_string())?;
        let public = key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        self.key = Some(BoardKey::Loaded(key));
        Ok(public)
    }

    pub fn sign(&mut self, nonce: &[u8; NONCE_LEN]) -> Result<Vec<u8>, String> {
        let msg = key_proof_message(nonce);
        let sig = match self.key.as_ref().ok_or("no key has been made")? {
            BoardKey::Made(key) => key.sign(&msg).map_err(|e| e.to_string())?,
            BoardKey::Loaded(key) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = key.sign(&msg);
                s.to_der().as_bytes().to_vec()
            }
        };
        self.signatures.push((*nonce, sig.clone()));
        Ok(sig)
    }

    /// HMAC-SHA256 of the key-proof message under the symmetric key.
    pub fn hmac(&self, nonce: &[u8; NONCE_LEN]) -> Result<Vec<u8>, String> {
        let key = self.symmetric_key.ok_or("no symmetric key has been set")?;
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            &key_proof_message(nonce),
        );
        Ok(tag.as_ref().to_vec())
    }

    pub fn observed(&self) -> ObservedBoard {
        ObservedBoard {
            guid: self.identity.guid.clone(),
            public_key_spki: self.key.as_ref().and_then(|k| match k {
                BoardKey::Made(k) => Some(k.subject_public_key_info()),
                BoardKey::Loaded(k) => {
                    use p256::pkcs8::EncodePublicKey;
                    p256::PublicKey::from(k.verifying_key())
                        .to_public_key_der()
                        .ok()
                        .map(|d| d.as_bytes().to_vec())
                }
            }),
            loaded_key: self.key.as_ref().and_then(|k| match k {
                BoardKey::Loaded(k) => Some(k.to_bytes().into()),
                BoardKey::Made(_) => None,
            }),
            stored: self.stored.clone(),
            signatures: self.signatures.clone(),
            symmetric_key: self.symmetric_key,
            settings: self.settings.clone(),
            finishes: self.finishes.clone(),
            pieces: self.pieces.clone(),
        }
    }
}

/// Claims one key and signs with another: a CSR whose signature does not
/// verify against the key it carries.
struct Mismatched<'a> {
    public: &'a KeyPair,
    signer: &'a KeyPair,
}

impl PublicKeyData for Mismatched<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.public.der_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.public.algorithm()
    }
}

impl SigningKey for Mismatched<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer.sign(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jig::protocol::{Request, store_pieces};

    fn pieces_of(chain: &[Vec<u8>], max: usize) -> Vec<(usize, usize, String)> {
        store_pieces(chain, max)
            .into_iter()
            .map(|r| match r {
                Request::StorePiece { offset, size, data } => (offset, size, data),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn board() -> Board {
        Board::new(Guid::from_bytes([7; 16]), &SimOptions::default())
    }

    #[test]
    fn a_chain_in_pieces_is_kept_only_at_the_last() {
        let chain = vec![vec![1u8; 500], vec![2u8; 300]];
        let pieces = pieces_of(&chain, 256);
        assert!(pieces.len() > 3);
        let mut b = board();
        let (last, rest) = pieces.split_last().unwrap();
        for (o, s, d) in rest {
            assert_eq!(b.take_piece(*o, *s, d).unwrap(), None);
            assert!(b.stored.is_empty(), "nothing kept before the last piece");
        }
        assert_eq!(b.take_piece(last.0, last.1, &last.2).unwrap(), Some(chain));
    }

    #[test]
    fn a_partial_or_mixed_transfer_is_never_kept() {
        let old = vec![vec![9u8; 400]];
        let new = vec![vec![1u8; 400]];
        let (a, b_) = (pieces_of(&old, 128), pieces_of(&new, 128));
        let mut b = board();
        // Half of one transfer, then a piece out of order: refused.
        b.take_piece(a[0].0, a[0].1, &a[0].2).unwrap();
        b.take_piece(a[1].0, a[1].1, &a[1].2).unwrap();
        let e = b.take_piece(a[3].0, a[3].1, &a[3].2).unwrap_err();
        assert!(e.contains("does not follow"), "{e}");
        // After the refusal the rest of that transfer is refused too.
        assert!(b.take_piece(a[2].0, a[2].1, &a[2].2).is_err());
        // A transfer starts afresh at offset 0, and a piece of another
        // size does not join it.
        b.take_piece(b_[0].0, b_[0].1, &b_[0].2).unwrap();
        assert!(b.take_piece(b_[1].0, b_[1].1 + 1, &b_[1].2).is_err());
        // A piece without its start is refused.
        let mut c = board();
        assert!(c.take_piece(a[1].0, a[1].1, &a[1].2).is_err());
        assert_eq!(c.receiving, None);
        // An empty chain is one empty piece.
        assert_eq!(pieces_of(&[], 256), vec![(0, 0, String::new())]);
        assert_eq!(c.take_piece(0, 0, "").unwrap(), Some(Vec::new()));
    }
}
