// Versioned schema migrations for the SQLite store. Append new migrations at the end with the next
// version number; never edit one that has shipped. Each runs in its own BEGIN IMMEDIATE
// transaction together with its schema_migrations row, so a crash or a second process racing us
// leaves every migration either fully applied and recorded or not applied at all.
import type { DatabaseSync } from 'node:sqlite';
import { ErrorCodes, SepalError } from '../errors.ts';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

// STRICT tables make SQLite enforce the declared column types, so rows read back have the types
// the store's row mappers assume (and a non-integer timestamp is refused instead of stored).
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
      CREATE TABLE nodes (
        id                TEXT    NOT NULL PRIMARY KEY,
        org               TEXT    NOT NULL,
        name              TEXT    NOT NULL,
        state             TEXT    NOT NULL CHECK (state IN ('active', 'revoked')),
        created_at        INTEGER NOT NULL,
        revoked_at        INTEGER,
        facts             TEXT,
        flower_public_key TEXT,
        last_seen_at      INTEGER,
        manifest_version  INTEGER NOT NULL DEFAULT 0,
        cert_serial       TEXT,
        cert_not_after    INTEGER,
        status            TEXT
      ) STRICT;
      CREATE INDEX nodes_by_org ON nodes (org);

      CREATE TABLE certs (
        serial      TEXT    NOT NULL PRIMARY KEY,
        node_id     TEXT    NOT NULL REFERENCES nodes (id),
        org         TEXT    NOT NULL,
        kind        TEXT    NOT NULL CHECK (kind IN ('enroll', 'renew')),
        not_before  INTEGER NOT NULL,
        not_after   INTEGER NOT NULL,
        fingerprint TEXT    NOT NULL,
        der         BLOB    NOT NULL,
        issued_at   INTEGER NOT NULL,
        revoked_at  INTEGER
      ) STRICT;
      CREATE INDEX certs_by_node ON certs (node_id);
      -- the CRL query: only revoked certificates are in this index
      CREATE INDEX certs_revoked_by_expiry ON certs (not_after) WHERE revoked_at IS NOT NULL;

      CREATE TABLE manifests (
        node_id    TEXT    NOT NULL REFERENCES nodes (id),
        version    INTEGER NOT NULL CHECK (version > 0),
        kid        TEXT    NOT NULL,
        jws        TEXT    NOT NULL,
        issued_at  INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (node_id, version)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX manifests_by_kid ON manifests (kid, expires_at);

      CREATE TABLE signing_keys (
        kid        TEXT    NOT NULL PRIMARY KEY,
        public_jwk TEXT    NOT NULL,
        created_at INTEGER NOT NULL,
        retired_at INTEGER
      ) STRICT;
      -- at most one active (unretired) key
      CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((retired_at IS NULL)) WHERE retired_at IS NULL;

      -- seq is the rowid, so lookups and range scans by seq need no extra index.
      CREATE TABLE audit (
        seq       INTEGER NOT NULL PRIMARY KEY CHECK (seq > 0),
        at        INTEGER NOT NULL,
        event     TEXT    NOT NULL,
        actor     TEXT    NOT NULL,
        node_id   TEXT,
        org       TEXT,
        reason    TEXT,
        detail    TEXT    NOT NULL,
        prev_hash TEXT    NOT NULL,
        hash      TEXT    NOT NULL
      ) STRICT;
      -- Append-only against mistakes in our own code. Someone with write access to the file can
      -- drop these triggers; the hash chain is what detects that kind of tampering.
      CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
      CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    `,
  },
  {
    version: 2,
    name: 'enrollment credentials',
    sql: `
      -- Single-use (or n-use) enrollment tokens for unattended installs. Only a SHA-256 of the
      -- secret is stored; the id is the public half of the token.
      CREATE TABLE enrollment_tokens (
        id          TEXT    NOT NULL PRIMARY KEY,
        secret_hash TEXT    NOT NULL,
        org         TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        uses_left   INTEGER NOT NULL CHECK (uses_left >= 0),
        uses_total  INTEGER NOT NULL CHECK (uses_total > 0),
        revoked_at  INTEGER,
        created_by  TEXT    NOT NULL
      ) STRICT;

      -- jti of every OIDC access token used to enroll, kept until the token would have expired.
      CREATE TABLE used_token_ids (
        issuer     TEXT    NOT NULL,
        jti        TEXT    NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (issuer, jti)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX used_token_ids_by_expiry ON used_token_ids (expires_at);
    `,
  },
  {
    version: 3,
    name: 'organisation manifests',
    sql: `
      -- The manifest body last published to a whole organisation: what a node enrolling into that
      -- organisation gets as its first manifest.
      CREATE TABLE org_manifests (
        org        TEXT    NOT NULL PRIMARY KEY,
        body       TEXT    NOT NULL,
        updated_at INTEGER NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 4,
    name: 'flower registration',
    sql: `
      -- The node's Flower key with the SuperLink (FlowerState in store.ts). NULL state: the node
      -- has no Flower key. flower_node_id is Flower's uint64 as decimal text: SQLite integers are
      -- signed 64-bit and cannot hold every Flower id.
      ALTER TABLE nodes ADD COLUMN flower_state TEXT
        CHECK (flower_state IN ('pending', 'registered', 'unregister-pending', 'unregistered', 'failed'));
      ALTER TABLE nodes ADD COLUMN flower_node_id TEXT
        CHECK (flower_node_id IS NULL OR (length(flower_node_id) BETWEEN 1 AND 20 AND flower_node_id NOT GLOB '*[^0-9]*' AND flower_node_id NOT GLOB '0*'));
      ALTER TABLE nodes ADD COLUMN flower_attempts INTEGER NOT NULL DEFAULT 0 CHECK (flower_attempts >= 0);
      ALTER TABLE nodes ADD COLUMN flower_last_error TEXT;
      ALTER TABLE nodes ADD COLUMN flower_last_error_message TEXT;
      ALTER TABLE nodes ADD COLUMN flower_next_attempt_at INTEGER;
      ALTER TABLE nodes ADD COLUMN flower_since INTEGER;

      -- Nodes enrolled before this version: active ones with a key still need registering; the
      -- key of a revoked one was never registered by the hub, so there is nothing to undo.
      UPDATE nodes SET flower_state = 'pending', flower_next_attempt_at = 0, flower_since = created_at
        WHERE state = 'active' AND flower_public_key IS NOT NULL;

      -- the registrar's queue: only work that is still to do is in this index
      CREATE INDEX nodes_flower_due ON nodes (flower_next_attempt_at)
        WHERE flower_state IN ('pending', 'unregister-pending');
      -- one hub node per live Flower node
      CREATE UNIQUE INDEX nodes_flower_node_id ON nodes (flower_node_id)
        WHERE flower_state IN ('registered', 'unregister-pending');
      -- the duplicate-key check at enrollment (not UNIQUE: older stores may hold duplicates)
      CREATE INDEX nodes_by_flower_key ON nodes (flower_public_key) WHERE flower_public_key IS NOT NULL;
    `,
  },
  {
    version: 5,
    name: 'issuing CA per certificate',
    sql: `
      -- Which issuing CA signed the certificate (hex of its subjectKeyIdentifier), so a retired
      -- issuing CA is kept until the last certificate it signed has expired (sepal-hub ca prune).
      -- NULL: issued before this version, by the issuing CA of \`init\` (the only one then).
      ALTER TABLE certs ADD COLUMN issuer_key_id TEXT
        CHECK (issuer_key_id IS NULL OR (length(issuer_key_id) BETWEEN 2 AND 128 AND issuer_key_id NOT GLOB '*[^0-9a-f]*'));
      CREATE INDEX certs_by_issuer_expiry ON certs (issuer_key_id, not_after);
    `,
  },
];

const CREATE_SCHEMA_MIGRATIONS = `
  CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`;

export function latestVersion(migrations: readonly Migration[] = MIGRATIONS): number {
  return migrations.at(-1)?.version ?? 0;
}

function checkOrdered(migrations: readonly Migration[]): void {
  let prev = 0;
  for (const m of migrations) {
    if (!Number.isSafeInteger(m.version) || m.version <= prev) {
      throw new TypeError(`migrations must have strictly increasing positive versions (at ${m.version})`);
    }
    prev = m.version;
  }
}

/** Highest applied version, 0 for a fresh database (no schema_migrations table yet). */
export function currentVersion(db: DatabaseSync): number {
  const exists = db.prepare(`SELECT 1 AS x FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'`).get();
  if (exists === undefined) return 0;
  const row = db.prepare('SELECT max(version) AS v FROM schema_migrations').get();
  return typeof row?.['v'] === 'number' ? row['v'] : 0;
}

/**
 * Applies the migrations the database does not have yet, each in its own transaction, and returns
 * the versions applied (empty when up to date). Safe to run concurrently from several processes:
 * the version check is repeated under the write lock. Refuses a database written by a newer
 * Sepal (a version this code does not know).
 */
export function applyMigrations(db: DatabaseSync, migrations: readonly Migration[] = MIGRATIONS, now: number = Date.now()): number[] {
  checkOrdered(migrations);
  const known = latestVersion(migrations);
  const applied: number[] = [];
  inTransaction(db, () => db.exec(CREATE_SCHEMA_MIGRATIONS));
  const has = db.prepare('SELECT 1 AS x FROM schema_migrations WHERE version = ?');
  const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');

  const dbVersion = currentVersion(db);
  if (dbVersion > known) {
    throw new SepalError(ErrorCodes.DATA_DIR_INVALID,
      `store schema version ${dbVersion} is newer than this Sepal supports (${known}); upgrade Sepal`);
  }
  for (const m of migrations) {
    if (m.version <= dbVersion) continue;
    const ran = inTransaction(db, () => {
      if (has.get(m.version) !== undefined) return false; // another process got there first
      db.exec(m.sql);
      record.run(m.version, m.name, now);
      return true;
    });
    if (ran) applied.push(m.version);
  }
  return applied;
}

function inTransaction<T>(db: DatabaseSync, fn: () => T): T {
  db.exec('BEGIN IMMEDIATE');
  try {
    const result = fn();
    db.exec('COMMIT');
    return result;
  } catch (e) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw e;
  }
}
