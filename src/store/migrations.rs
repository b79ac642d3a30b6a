//! Versioned schema migrations, applied in order and recorded in
//! `PRAGMA user_version`. Never edit a released migration: add one.

pub const MIGRATIONS: &[&str] = &[
    // 1: boards, their steps, the certificate ledger, overrides.
    r#"
CREATE TABLE boards (
    id            INTEGER PRIMARY KEY,
    station       TEXT NOT NULL,
    slot          INTEGER NOT NULL,
    guid          TEXT,
    hw_revision   TEXT,
    fw_version    TEXT,
    mac           TEXT,
    operator      TEXT,
    status        TEXT NOT NULL CHECK (status IN ('in_progress', 'provisioned', 'failed')),
    step          TEXT NOT NULL,
    error_code    TEXT,
    error         TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE INDEX boards_guid ON boards (guid);
CREATE INDEX boards_started ON boards (started_at);
-- At most one unfinished board per slot: the one a restart resumes.
CREATE UNIQUE INDEX boards_one_active_per_slot ON boards (slot) WHERE status = 'in_progress';

CREATE TABLE steps (
    id           INTEGER PRIMARY KEY,
    board_id     INTEGER NOT NULL REFERENCES boards (id),
    step         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    ended_at     TEXT,
    duration_ms  INTEGER,
    outcome      TEXT CHECK (outcome IN ('ok', 'failed', 'interrupted')),
    error_code   TEXT,
    error        TEXT
);
CREATE INDEX steps_board ON steps (board_id);

-- The ledger: every certificate the station signed, written before any
-- byte of it leaves the station.
CREATE TABLE certificates (
    serial              TEXT PRIMARY KEY,
    guid                TEXT NOT NULL,
    board_id            INTEGER NOT NULL REFERENCES boards (id),
    fingerprint_sha256  TEXT NOT NULL UNIQUE,
    pem                 TEXT NOT NULL,
    not_before          TEXT NOT NULL,
    not_after           TEXT NOT NULL,
    station             TEXT NOT NULL,
    slot                INTEGER NOT NULL,
    operator            TEXT,
    issued_at           TEXT NOT NULL,
    override_used       INTEGER NOT NULL DEFAULT 0,
    -- issued: signed and recorded; installed: proven on the board;
    -- abandoned: the board failed before proving it.
    state               TEXT NOT NULL CHECK (state IN ('issued', 'installed', 'abandoned'))
);
CREATE INDEX certificates_guid ON certificates (guid);

-- A supervisor's permission for one more certificate for a GUID; used up
-- by the issuance it allows.
CREATE TABLE overrides (
    guid        TEXT PRIMARY KEY,
    granted_by  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    granted_at  TEXT NOT NULL
);
"#,
    // 2: the DPS enrollment outbox, written in the transaction that
    // completes a board.
    r#"
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    guid             TEXT NOT NULL,
    board_id         INTEGER NOT NULL REFERENCES boards (id),
    -- The enrollment exactly as it is sent, every time it is sent.
    body             TEXT NOT NULL,
    -- pending: to send; enrolled: DPS holds it; parked: needs a person.
    state            TEXT NOT NULL CHECK (state IN ('pending', 'enrolled', 'parked')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    etag             TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX outbox_state ON outbox (state, id);
CREATE INDEX outbox_guid ON outbox (guid);

-- Counts supervisor retries, so that an uploader paused by a credential
-- failure notices a retry made from another process.
CREATE TABLE outbox_control (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    retries  INTEGER NOT NULL
);
INSERT INTO outbox_control (id, retries) VALUES (1, 0);
"#,
    // 3: the audit trail, append-only and hash-chained.
    r#"
CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    -- Who: a user, or "station" for what the station does by itself.
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT,
    -- JSON with the particulars.
    detail     TEXT NOT NULL,
    -- SHA-256 of the previous row's hash and this row's fields: an edited
    -- or deleted row breaks the chain (`station audit verify`).
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"#,
    // 4: people and API tokens.
    r#"
CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    role           TEXT NOT NULL CHECK (role IN ('operator', 'supervisor', 'admin')),
    -- What the badge scanner types; unique among users that have one.
    badge          TEXT UNIQUE,
    -- argon2 PHC strings; never the PIN or password itself.
    pin_hash       TEXT,
    password_hash  TEXT,
    created_at     TEXT NOT NULL,
    disabled_at    TEXT
);

CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('operator', 'supervisor', 'admin')),
    -- SHA-256 of the token (tokens are 256 random bits; the token itself is
    -- shown once and never stored).
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
"#,
    // 5: sign-in sessions of the web UI.
    r#"
CREATE TABLE sessions (
    -- SHA-256 of the cookie value; the value itself is never stored.
    token_hash  TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    -- Sent back with every state-changing form or request.
    csrf        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    last_seen   TEXT NOT NULL
);
"#,
    // 6: the work order stamped on each board; station settings that
    // outlive a restart (the current work order).
    r#"
ALTER TABLE boards ADD COLUMN work_order TEXT;
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT
);
"#,
    // 7: label print jobs (printed by the label worker, never holding up
    // the line) and scan-back checks of printed labels.
    r#"
CREATE TABLE labels (
    id            INTEGER PRIMARY KEY,
    -- The board's GUID; the all-zero GUID for a test label.
    guid          TEXT NOT NULL,
    board_id      INTEGER REFERENCES boards (id),
    kind          TEXT NOT NULL CHECK (kind IN ('board', 'reprint', 'test')),
    state         TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'printed', 'cancelled')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    requested_by  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    printed_at    TEXT
);
CREATE INDEX labels_pending ON labels (state, id);
CREATE INDEX labels_guid ON labels (guid);
CREATE TABLE label_scans (
    id          INTEGER PRIMARY KEY,
    slot        INTEGER NOT NULL,
    -- The GUID of the board in the slot, and what the scanner read.
    expected    TEXT NOT NULL,
    scanned     TEXT NOT NULL,
    matched     INTEGER NOT NULL,
    scanned_by  TEXT NOT NULL,
    scanned_at  TEXT NOT NULL
);
"#,
    // 8: TPM slots: the endorsement key of a board's TPM (for a DPS
    // enrollment with TPM attestation), and the public key the station had
    // it make (so that a retry recognises its own key at the handle).
    r#"
ALTER TABLE boards ADD COLUMN tpm_ek TEXT;
ALTER TABLE boards ADD COLUMN tpm_key TEXT;
"#,
    // 9: QA reports join a board record to its certificate, upload and
    // label.
    r#"
CREATE INDEX certificates_board ON certificates (board_id);
CREATE INDEX outbox_board ON outbox (board_id);
CREATE INDEX labels_board ON labels (board_id);
"#,
    // 10: revoked certificates, for the CRL. Rows are never changed or
    // removed: a revocation is for good.
    r#"
CREATE TABLE revocations (
    serial      TEXT PRIMARY KEY REFERENCES certificates (serial),
    revoked_at  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_by  TEXT NOT NULL
);
CREATE TRIGGER revocations_no_update BEFORE UPDATE ON revocations
BEGIN SELECT RAISE(ABORT, 'a revocation is never changed'); END;
CREATE TRIGGER revocations_no_delete BEFORE DELETE ON revocations
BEGIN SELECT RAISE(ABORT, 'a revocation is never removed'); END;
"#,
    // 11: the device lifecycle after the line. The `activator` role (the
    // machine builder's staff): SQLite cannot change a CHECK, so the two
    // tables with roles are rebuilt (the migration runs with foreign keys
    // off, then checks them). Overrides say whether an admin granted them
    // (a revoked device needs one). Device actions are an outbox of their
    // own, kept as the device's history; the DPS enrollment as last seen;
    // revoked devices, for good.
    r#"
CREATE TABLE users_v11 (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    role           TEXT NOT NULL CHECK (role IN ('activator', 'operator', 'supervisor', 'admin')),
    badge          TEXT UNIQUE,
    pin_hash       TEXT,
    password_hash  TEXT,
    created_at     TEXT NOT NULL,
    disabled_at    TEXT
);
INSERT INTO users_v11 (id, name, role, badge, pin_hash, password_hash, created_at, disabled_at)
    SELECT id, name, role, badge, pin_hash, password_hash, created_at, disabled_at FROM users;
DROP TABLE users;
ALTER TABLE users_v11 RENAME TO users;

CREATE TABLE api_tokens_v11 (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('activator', 'operator', 'supervisor', 'admin')),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
INSERT INTO api_tokens_v11 (id, name, role, token_hash, created_at, revoked_at)
    SELECT id, name, role, token_hash, created_at, revoked_at FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_v11 RENAME TO api_tokens;

ALTER TABLE overrides ADD COLUMN by_admin INTEGER NOT NULL DEFAULT 0;

CREATE TABLE device_actions (
    id          INTEGER PRIMARY KEY,
    guid        TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('activate', 'disable', 'enable', 'revoke')),
    -- JSON: for activate, the hub, tags and desired properties.
    params      TEXT NOT NULL,
    reason      TEXT,
    actor       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done', 'parked')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX device_actions_state ON device_actions (state, id);
CREATE INDEX device_actions_guid ON device_actions (guid, id);

CREATE TABLE device_dps (
    guid                 TEXT PRIMARY KEY,
    provisioning_status  TEXT,
    etag                 TEXT,
    -- The enrollment JSON as DPS last returned it.
    enrollment           TEXT NOT NULL,
    seen_at              TEXT NOT NULL
);

-- A device is revoked with the certificate it held; after an admin's
-- override it may get a new certificate, which is not revoked.
CREATE TABLE device_revocations (
    serial      TEXT PRIMARY KEY REFERENCES certificates (serial),
    guid        TEXT NOT NULL,
    revoked_at  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_by  TEXT NOT NULL
);
CREATE INDEX device_revocations_guid ON device_revocations (guid);
-- The device page reads the audit rows about one GUID.
CREATE INDEX audit_subject ON audit (subject, id);
CREATE TRIGGER device_revocations_no_update BEFORE UPDATE ON device_revocations
BEGIN SELECT RAISE(ABORT, 'a revocation is never changed'); END;
CREATE TRIGGER device_revocations_no_delete BEFORE DELETE ON device_revocations
BEGIN SELECT RAISE(ABORT, 'a revocation is never removed'); END;
"#,
    // 12: the plant feed. Every change to a record the plant database
    // keeps is noted here by a trigger, in the transaction that makes it,
    // while forwarding is on (`plant_control.enabled`, set at start-up when
    // `[plant]` is configured); the forwarder sends the rows named and
    // deletes the entries the plant database has committed. AUTOINCREMENT:
    // a sequence number is never used twice, even after every entry is
    // deleted, so the plant's cursor never skips a new entry.
    r#"
CREATE TABLE plant_feed (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    kind   TEXT NOT NULL,
    row    INTEGER NOT NULL,
    -- When the change was made, in milliseconds since 1970 (the lag).
    at_ms  INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);
CREATE TABLE plant_control (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    enabled   INTEGER NOT NULL,
    -- A random name for this database, so that the plant can tell a new
    -- database under an old station id from the one it knows.
    instance  TEXT,
    -- The newest entry the plant database has committed, as far as this
    -- station knows: a plant that says less was restored from an older
    -- copy, and is sent everything again.
    acked     INTEGER NOT NULL DEFAULT 0
);
INSERT INTO plant_control (id, enabled, instance) VALUES (1, 0, NULL);
CREATE TRIGGER plant_board_ins AFTER INSERT ON boards WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('board', NEW.id); END;
CREATE TRIGGER plant_board_upd AFTER UPDATE ON boards WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('board', NEW.id); END;
CREATE TRIGGER plant_step_ins AFTER INSERT ON steps WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('step', NEW.id); END;
CREATE TRIGGER plant_step_upd AFTER UPDATE ON steps WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('step', NEW.id); END;
CREATE TRIGGER plant_certificate_ins AFTER INSERT ON certificates WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('certificate', NEW.rowid); END;
CREATE TRIGGER plant_certificate_upd AFTER UPDATE ON certificates WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('certificate', NEW.rowid); END;
CREATE TRIGGER plant_enrollment_ins AFTER INSERT ON outbox WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('enrollment', NEW.id); END;
CREATE TRIGGER plant_enrollment_upd AFTER UPDATE ON outbox WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('enrollment', NEW.id); END;
CREATE TRIGGER plant_device_action_ins AFTER INSERT ON device_actions WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('device_action', NEW.id); END;
CREATE TRIGGER plant_device_action_upd AFTER UPDATE ON device_actions WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('device_action', NEW.id); END;
CREATE TRIGGER plant_label_ins AFTER INSERT ON labels WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('label', NEW.id); END;
CREATE TRIGGER plant_label_upd AFTER UPDATE ON labels WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('label', NEW.id); END;
CREATE TRIGGER plant_revocation_ins AFTER INSERT ON revocations WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('revocation', NEW.rowid); END;
CREATE TRIGGER plant_device_revocation_ins AFTER INSERT ON device_revocations WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('device_revocation', NEW.rowid); END;
CREATE TRIGGER plant_audit_ins AFTER INSERT ON audit WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('audit', NEW.id); END;
"#,
    // 13: the device record and retirement. Device actions take `retire`
    // (SQLite cannot change a CHECK, so the table is rebuilt with its ids,
    // indexes and plant-feed triggers); a device's location, its service
    // notes, and its retirements, which triggers keep from ever being
    // changed or removed. A retirement names the board record it retired,
    // so that a device provisioned again after an admin's override is not
    // retired.
    r#"
CREATE TABLE device_actions_v13 (
    id          INTEGER PRIMARY KEY,
    guid        TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('activate', 'disable', 'enable', 'revoke', 'retire')),
    -- JSON: for activate, the hub, tags and desired properties.
    params      TEXT NOT NULL,
    reason      TEXT,
    actor       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done', 'parked')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
INSERT INTO device_actions_v13 (id, guid, action, params, reason, actor, state, attempts, last_error, created_at, updated_at)
    SELECT id, guid, action, params, reason, actor, state, attempts, last_error, created_at, updated_at FROM device_actions;
DROP TABLE device_actions;
ALTER TABLE device_actions_v13 RENAME TO device_actions;
CREATE INDEX device_actions_state ON device_actions (state, id);
CREATE INDEX device_actions_guid ON device_actions (guid, id);
CREATE TRIGGER plant_device_action_ins AFTER INSERT ON device_actions WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('device_action', NEW.id); END;
CREATE TRIGGER plant_device_action_upd AFTER UPDATE ON device_actions WHEN (SELECT enabled FROM plant_control WHERE id = 1)
BEGIN INSERT INTO plant_feed (kind, row) VALUES ('device_action', NEW.id); END;

CREATE TABLE device_locations (
    guid        TEXT PRIMARY KEY,
    site        TEXT,
    building    TEXT,
    room        TEXT,
    text        TEXT,
    updated_by  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE device_notes (
    id      INTEGER PRIMARY KEY,
    guid    TEXT NOT NULL,
    author  TEXT NOT NULL,
    at      TEXT NOT NULL,
    text    TEXT NOT NULL
);
CREATE INDEX device_notes_guid ON device_notes (guid, id);

CREATE TABLE device_retirements (
    board_id    INTEGER PRIMARY KEY REFERENCES boards (id),
    guid        TEXT NOT NULL,
    retired_at  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    retired_by  TEXT NOT NULL
);
CREATE INDEX device_retirements_guid ON device_retirements (guid);
CREATE TRIGGER device_retirements_no_update BEFORE UPDATE ON device_retirements
BEGIN SELECT RAISE(ABORT, 'a retirement is never changed'); END;
CREATE TRIGGER device_retirements_no_delete BEFORE DELETE ON device_retirements
BEGIN SELECT RAISE(ABORT, 'a retirement is never removed'); END;
-- The device lookup finds board records by work order, in any case.
CREATE INDEX boards_work_order ON boards (work_order COLLATE NOCASE);
"#,
    // 14: what a board was told about its registration (the provisioning
    // settings it read back, or why it got none), and the ledger of
    // symmetric keys: which board got a key derived under which master key
    // (never the key).
    r#"
ALTER TABLE boards ADD COLUMN settings TEXT;
ALTER TABLE boards ADD COLUMN settings_note TEXT;
CREATE TABLE device_keys (
    id INTEGER PRIMARY KEY,
    board_id INTEGER NOT NULL UNIQUE REFERENCES boards(id),
    guid TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX device_keys_guid ON device_keys (guid);
"#,
    // 15: people who sign in with their organisation's identity provider
    // (OpenID Connect): a user row (source 'oidc', no badge, PIN or
    // password; its role set again from the provider's groups at every
    // sign-in) and the identity it stands for, issuer and subject, with
    // the name or e-mail people read. No token is kept.
    r#"
ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'oidc'));
CREATE TABLE oidc_identities (
    user_id       INTEGER PRIMARY KEY REFERENCES users (id),
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    display       TEXT NOT NULL,
    last_sign_in  TEXT NOT NULL,
    UNIQUE (issuer, subject)
);
"#,
    // 16: the jig line's health in each step: how many requests were sent
    // again, and how many damaged frames went either way (damaged lines
    // from the board and the board's notices of damaged requests).
    r#"
ALTER TABLE steps ADD COLUMN resends INTEGER NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN damaged INTEGER NOT NULL DEFAULT 0;
"#,
];
