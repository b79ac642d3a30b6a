//! The verdicts on what the store knows, as pure functions of the facts
//! it returns: whether a GUID may be given a certificate ([`review`]), and
//! whether the board that identified itself is the one an adopted record
//! belongs to ([`visitor`]). The store gathers facts; it decides nothing.

use super::{IssuedCert, Review};
use crate::ids::{Guid, Serial};

/// What the store holds about a GUID and the record being provisioned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewFacts {
    /// This very record is provisioned (its enrollment and label queued)
    /// but the jig never acknowledged FINISH: `Some(serial)`, the serial
    /// `None` for a symmetric-key device.
    pub untold: Option<Option<Serial>>,
    /// This record's certificate for the GUID, issued and not yet
    /// installed (an interrupted attempt; the chain holds the leaf only).
    pub interrupted: Option<IssuedCert>,
    /// When the device was revoked.
    pub revoked_at: Option<String>,
    /// When the device was retired.
    pub retired_at: Option<String>,
    /// A live installed certificate for the GUID: its serial and when it
    /// was issued.
    pub held: Option<(Serial, String)>,
    /// When a provisioned record of the GUID was given a symmetric key.
    pub keyed_at: Option<String>,
    /// A supervisor or admin allowed one more certificate.
    pub override_granted: bool,
    /// That permission came from an admin (it also lifts a revocation or
    /// a retirement).
    pub override_by_admin: bool,
}

/// What stands between the GUID and a new certificate.
pub fn review(f: &ReviewFacts) -> Review {
    if let Some(serial) = &f.untold {
        return Review::Untold {
            serial: serial.clone(),
        };
    }
    if let Some(cert) = &f.interrupted {
        return Review::Resume(cert.clone());
    }
    let admin = Review::Fresh {
        override_granted: true,
    };
    // A revoked or retired device gets a certificate again only if an
    // admin allowed it.
    if let Some(revoked_at) = &f.revoked_at {
        return if f.override_by_admin {
            admin
        } else {
            Review::Revoked {
                revoked_at: revoked_at.clone(),
            }
        };
    }
    if let Some(retired_at) = &f.retired_at {
        return if f.override_by_admin {
            admin
        } else {
            Review::Retired {
                retired_at: retired_at.clone(),
            }
        };
    }
    // A symmetric-key device has no certificate: its key record on a
    // provisioned board says the same.
    if let (Some(keyed_at), None) = (&f.keyed_at, &f.held) {
        return if f.override_granted {
            admin
        } else {
            Review::AlreadyKeyed {
                keyed_at: keyed_at.clone(),
            }
        };
    }
    match &f.held {
        Some((serial, issued_at)) if !f.override_granted => Review::AlreadyProvisioned {
            serial: serial.clone(),
            issued_at: issued_at.clone(),
        },
        Some(_) => admin,
        None => Review::Fresh {
            override_granted: false,
        },
    }
}

/// The record a visit adopted (this slot's unfinished attempt, or its
/// provisioned record whose jig was never told), before the board in the
/// jig identified itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFacts {
    /// The GUID recorded on it, if it got that far.
    pub guid: Option<Guid>,
    /// It is provisioned already.
    pub provisioned: bool,
}

/// Who is in the jig, against the adopted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visitor {
    /// The record's own board, or a new record: record the identity on it.
    Same,
    /// Another board than the record's (swapped while the station was
    /// down, or after its FINISH failed): the identity goes on a new
    /// record. `fail_old`: the old record was unfinished, and is closed
    /// as failed; a provisioned one stands.
    Swapped { fail_old: bool },
}

/// Whether the board that identified itself is the record's.
pub fn visitor(record: &RecordFacts, identified: &Guid) -> Visitor {
    match &record.guid {
        Some(g) if g != identified => Visitor::Swapped {
            fail_old: !record.provisioned,
        },
        _ => Visitor::Same,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(s: &str) -> Serial {
        Serial(s.into())
    }

    #[test]
    fn each_fact_decides_in_its_order() {
        let held = Some((serial("aa"), "2026-01-01T00:00:00.000Z".to_string()));
        let fresh = ReviewFacts::default();
        assert_eq!(
            review(&fresh),
            Review::Fresh {
                override_granted: false
            }
        );
        let untold = ReviewFacts {
            untold: Some(Some(serial("aa"))),
            held: held.clone(),
            ..fresh.clone()
        };
        assert_eq!(
            review(&untold),
            Review::Untold {
                serial: Some(serial("aa"))
            },
            "its own record first: not 'already provisioned'"
        );
        let cert = IssuedCert {
            serial: serial("bb"),
            chain: vec![vec![1]],
        };
        let resume = ReviewFacts {
            interrupted: Some(cert.clone()),
            revoked_at: Some("r".into()),
            ..fresh.clone()
        };
        assert_eq!(review(&resume), Review::Resume(cert));
        let revoked = ReviewFacts {
            revoked_at: Some("r".into()),
            override_granted: true,
            ..fresh.clone()
        };
        assert_eq!(
            review(&revoked),
            Review::Revoked {
                revoked_at: "r".into()
            },
            "a supervisor's override does not lift a revocation"
        );
        let by_admin = ReviewFacts {
            override_by_admin: true,
            ..revoked.clone()
        };
        assert!(matches!(
            review(&by_admin),
            Review::Fresh {
                override_granted: true
            }
        ));
        let retired = ReviewFacts {
            retired_at: Some("t".into()),
            ..fresh.clone()
        };
        assert_eq!(
            review(&retired),
            Review::Retired {
                retired_at: "t".into()
            }
        );
        let keyed = ReviewFacts {
            keyed_at: Some("k".into()),
            ..fresh.clone()
        };
        assert_eq!(
            review(&keyed),
            Review::AlreadyKeyed {
                keyed_at: "k".into()
            }
        );
        let provisioned = ReviewFacts {
            held: held.clone(),
            keyed_at: Some("k".into()),
            ..fresh.clone()
        };
        assert!(matches!(
            review(&provisioned),
            Review::AlreadyProvisioned { .. }
        ));
        let allowed = ReviewFacts {
            override_granted: true,
            ..provisioned
        };
        assert!(matches!(
            review(&allowed),
            Review::Fresh {
                override_granted: true
            }
        ));
    }

    #[test]
    fn a_swapped_board_gets_a_record_of_its_own() {
        let a: Guid = "11111111-2222-4333-8444-555555555555".parse().unwrap();
        let b: Guid = "66666666-7777-4888-8999-aaaaaaaaaaaa".parse().unwrap();
        assert_eq!(visitor(&RecordFacts::default(), &a), Visitor::Same);
        let unfinished = RecordFacts {
            guid: Some(a.clone()),
            provisioned: false,
        };
        assert_eq!(visitor(&unfinished, &a), Visitor::Same);
        assert_eq!(
            visitor(&unfinished, &b),
            Visitor::Swapped { fail_old: true }
        );
        let untold = RecordFacts {
            guid: Some(a.clone()),
            provisioned: true,
        };
        assert_eq!(
            visitor(&untold, &b),
            Visitor::Swapped { fail_old: false },
            "a provisioned record stands"
        );
        assert_eq!(visitor(&untold, &a), Visitor::Same);
    }
}
