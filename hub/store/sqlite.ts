// The default Store: one SQLite file (node:sqlite), shared by the hub server and admin CLI
// commands running in other processes at the same time.
//
// Concurrency and atomicity: every write method is exactly one BEGIN IMMEDIATE ... COMMIT
// transaction (ROLLBACK on any error) and does all of its work synchronously inside it, so no other
// callback of this process can interleave and the write lock is held for microseconds. BEGIN
// IMMEDIATE takes the write lock up front: two processes never both read the audit head and then
// both append after it, and no deferred transaction has to be upgraded (the classic SQLITE_BUSY
// deadlock). A writer that finds the lock taken waits up to busy_timeout (5 s) — synchronously,
// which is acceptable because every transaction here is short. Reads are single statements, each
// of which sees one consistent snapshot.
//
// Audit: methods that change state append their audit entry in the same transaction, hashed onto
// the head row read inside that transaction (hub/audit/chain.ts), so the chain has no forks and
// no state change exists without its entry. For node-scoped writes (enroll, renew, revoke,
// publish) an AuditInput whose nodeId/org is left undefined gets the node's id/org.
//
// Details the Store contract leaves open: enrollNode sets lastSeenAt to the enrollment time and a
// pending Flower registration's nextAttemptAt to the enrollment time (due at once);
// recordStatus/touchNode throw NOT_FOUND for an unknown node and never move lastSeenAt backwards;
// times must be integer milliseconds (TypeError otherwise); listNodes is ordered by createdAt, id.
import { DatabaseSync, type SQLInputValue, type SQLOutputValue, type StatementSync } from 'node:sqlite';
import { ErrorCodes, SepalError } from '../errors.ts';
import { auditHash, canonicalJson, GENESIS_HASH, isAuditEvent } from '../audit/chain.ts';
import { applyMigrations, currentVersion, latestVersion } from './migrations.ts';
import type {
  AuditEntry, AuditEvent, AuditInput, CertAcceptance, CertKind, CertRecord, EnrollmentClaim, EnrollmentTokenRecord,
  FlowerRegistration, FlowerState, FlowerWork, ManifestBuilder, ManifestRecord, NewCert, NewEnrollmentToken, NewNode,
  NodeRecord, NodeState, SigningKeyRecord, Store,
} from './store.ts';
import { timingSafeEqual } from 'node:crypto';

type Row = readonly SQLOutputValue[];

interface PendingRenewal {
  readonly cert: NewCert;
  readonly audit: AuditInput;
  readonly now: number;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

const NODE_COLS = 'id, org, name, state, created_at, revoked_at, facts, flower_public_key, last_seen_at, manifest_version, cert_serial, cert_not_after, status, '
  + 'flower_state, flower_node_id, flower_attempts, flower_last_error, flower_last_error_message, flower_next_attempt_at, flower_since';
/** The Flower registration columns, the tail of NODE_COLS (see flowerAt). */
const FLOWER_COLS = 'flower_state, flower_node_id, flower_attempts, flower_last_error, flower_last_error_message, flower_next_attempt_at, flower_since';
const CERT_COLS = 'serial, node_id, org, kind, not_before, not_after, fingerprint, der, issued_at, revoked_at';
const AUDIT_COLS = 'seq, at, event, actor, node_id, org, reason, detail, prev_hash, hash';
const prefixed = (alias: string, cols: string): string => cols.split(', ').map((c) => `${alias}.${c}`).join(', ');

// SQLite extended result codes for a violated PRIMARY KEY / UNIQUE constraint.
const SQLITE_CONSTRAINT_PRIMARYKEY = 1555;
const SQLITE_CONSTRAINT_UNIQUE = 2067;

function isUniqueViolation(e: unknown): boolean {
  const code = (e as { errcode?: unknown } | null)?.errcode;
  return code === SQLITE_CONSTRAINT_PRIMARYKEY || code === SQLITE_CONSTRAINT_UNIQUE;
}

/** Runs fn now (synchronously) and hands its result or exception to the caller as a promise. */
function settle<T>(fn: () => T): Promise<T> {
  return new Promise<T>((resolve) => { resolve(fn()); });
}

// Statements are prepared with returnArrays, so rows are positional arrays (cheaper than objects
// and unambiguous for joins). STRICT tables guarantee the column types the mappers below assume.
function getRow(st: StatementSync, ...args: SQLInputValue[]): Row | undefined {
  return st.get(...args) as unknown as Row | undefined;
}
function allRows(st: StatementSync, ...args: SQLInputValue[]): Row[] {
  return st.all(...args) as unknown as Row[];
}

const TOKEN_COLS = 'id, secret_hash, org, created_at, expires_at, uses_left, uses_total, revoked_at, created_by';

function tokenAt(r: Row): EnrollmentTokenRecord {
  return {
    id: r[0] as string,
    org: r[2] as string,
    createdAt: r[3] as number,
    expiresAt: r[4] as number,
    usesLeft: r[5] as number,
    usesTotal: r[6] as number,
    revokedAt: r[7] as number | null,
    createdBy: r[8] as string,
  };
}

/** Constant-time comparison of two hex digests. */
function hashesEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

function nodeAt(r: Row, i: number): NodeRecord {
  return {
    id: r[i] as string,
    org: r[i + 1] as string,
    name: r[i + 2] as string,
    state: r[i + 3] as NodeState,
    createdAt: r[i + 4] as number,
    revokedAt: r[i + 5] as number | null,
    facts: r[i + 6] as string | null,
    flowerPublicKey: r[i + 7] as string | null,
    lastSeenAt: r[i + 8] as number | null,
    manifestVersion: r[i + 9] as number,
    certSerial: r[i + 10] as string | null,
    certNotAfter: r[i + 11] as number | null,
    status: r[i + 12] as string | null,
    flower: flowerAt(r, i + 13),
  };
}

function flowerAt(r: Row, i: number): FlowerRegistration | null {
  const state = r[i] as FlowerState | null;
  if (state === null) return null;
  return {
    state,
    flowerNodeId: r[i + 1] as string | null,
    attempts: r[i + 2] as number,
    lastError: r[i + 3] as string | null,
    lastErrorMessage: r[i + 4] as string | null,
    nextAttemptAt: r[i + 5] as number | null,
    since: r[i + 6] as number,
  };
}

/** A Flower node id as the store keeps it: canonical decimal of a non-zero uint64. */
function checkFlowerNodeId(id: string): void {
  if (typeof id !== 'string' || !/^[1-9][0-9]{0,19}$/.test(id) || BigInt(id) > 0xffff_ffff_ffff_ffffn) {
    throw new TypeError(`Flower node id must be the decimal text of a non-zero uint64, got ${String(id)}`);
  }
}

/** Operator-facing error text is kept short. */
const MAX_ERROR_MESSAGE = 500;

function certAt(r: Row, i: number): CertRecord {
  const der = r[i + 7] as Uint8Array;
  return {
    serial: r[i] as string,
    nodeId: r[i + 1] as string,
    org: r[i + 2] as string,
    kind: r[i + 3] as CertKind,
    notBefore: r[i + 4] as number,
    notAfter: r[i + 5] as number,
    fingerprint: r[i + 6] as string,
    der: Buffer.from(der.buffer, der.byteOffset, der.byteLength), // a view, no copy
    issuedAt: r[i + 8] as number,
    revokedAt: r[i + 9] as number | null,
  };
}

function auditAt(r: Row): AuditEntry {
  return {
    seq: r[0] as number,
    at: r[1] as number,
    event: r[2] as AuditEvent,
    actor: r[3] as string,
    nodeId: r[4] as string | null,
    org: r[5] as string | null,
    reason: r[6] as string | null,
    detail: r[7] as string,
    prevHash: r[8] as string,
    hash: r[9] as string,
  };
}

function manifestAt(r: Row): ManifestRecord {
  return {
    nodeId: r[0] as string,
    version: r[1] as number,
    kid: r[2] as string,
    jws: r[3] as string,
    issuedAt: r[4] as number,
    expiresAt: r[5] as number,
  };
}

function prepareAll(db: DatabaseSync) {
  const q = (sql: string): StatementSync => db.prepare(sql, { returnArrays: true });
  return {
    begin: q('BEGIN IMMEDIATE'),
    commit: q('COMMIT'),
    rollback: q('ROLLBACK'),

    nodeGet: q(`SELECT ${NODE_COLS} FROM nodes WHERE id = ?`),
    nodeBrief: q('SELECT state, org, manifest_version FROM nodes WHERE id = ?'),
    nodesAll: q(`SELECT ${NODE_COLS} FROM nodes ORDER BY created_at, id`),
    nodesByOrg: q(`SELECT ${NODE_COLS} FROM nodes WHERE org = ? ORDER BY created_at, id`),
    nodeInsert: q(`INSERT INTO nodes (id, org, name, state, created_at, facts, flower_public_key, last_seen_at, cert_serial, cert_not_after,
                     flower_state, flower_next_attempt_at, flower_since)
                   VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
    nodeByFlowerKey: q('SELECT id FROM nodes WHERE flower_public_key = ? AND id <> ? LIMIT 1'),
    nodeSetCert: q('UPDATE nodes SET cert_serial = ?, cert_not_after = ? WHERE id = ?'),
    nodeRevoke: q(`UPDATE nodes SET state = 'revoked', revoked_at = ? WHERE id = ? AND state = 'active'`),
    nodeStatus: q('UPDATE nodes SET status = ?, last_seen_at = max(coalesce(last_seen_at, 0), ?) WHERE id = ?'),
    nodeTouch: q('UPDATE nodes SET last_seen_at = max(coalesce(last_seen_at, 0), ?) WHERE id = ?'),
    nodeSetManifestVersion: q('UPDATE nodes SET manifest_version = ? WHERE id = ?'),

    flowerGet: q(`SELECT ${FLOWER_COLS}, org, state FROM nodes WHERE id = ?`),
    flowerDue: q(`SELECT id, org, flower_state, flower_public_key, flower_node_id, flower_attempts FROM nodes
                  WHERE flower_state IN ('pending', 'unregister-pending') AND flower_next_attempt_at <= ?
                  ORDER BY flower_next_attempt_at, id LIMIT ?`),
    flowerNext: q(`SELECT min(flower_next_attempt_at) FROM nodes WHERE flower_state IN ('pending', 'unregister-pending')`),
    flowerByNodeId: q(`SELECT ${NODE_COLS} FROM nodes WHERE flower_node_id = ? AND flower_state IN ('registered', 'unregister-pending')`),
    // Every state change resets attempts and the last error and stamps flower_since.
    flowerSet: q(`UPDATE nodes SET flower_state = ?, flower_node_id = ?, flower_attempts = 0, flower_last_error = ?,
                    flower_last_error_message = ?, flower_next_attempt_at = ?, flower_since = ? WHERE id = ?`),
    flowerRetry: q(`UPDATE nodes SET flower_attempts = flower_attempts + 1, flower_last_error = ?, flower_last_error_message = ?,
                      flower_next_attempt_at = ? WHERE id = ? AND flower_state = ?`),
    // Revocation: a registered key (or one whose registration may have reached the SuperLink) is
    // to be removed; anything else has nothing on the SuperLink.
    flowerOnRevoke: q(`UPDATE nodes SET flower_state = 'unregister-pending', flower_attempts = 0, flower_last_error = NULL,
                         flower_last_error_message = NULL, flower_next_attempt_at = ?, flower_since = ?
                       WHERE id = ? AND flower_state IN ('pending', 'registered')`),

    certInsert: q(`INSERT INTO certs (${CERT_COLS}, issuer_key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)`),
    certLastExpiryForIssuer: q('SELECT max(not_after) FROM certs WHERE issuer_key_id = ? OR issuer_key_id IS NULL'),
    certGet: q(`SELECT ${CERT_COLS} FROM certs WHERE serial = ?`),
    certAccept: q(`SELECT ${prefixed('c', CERT_COLS)}, ${prefixed('n', NODE_COLS)}
                   FROM certs c LEFT JOIN nodes n ON n.id = c.node_id WHERE c.serial = ?`),
    certsRevokeByNode: q('UPDATE certs SET revoked_at = ? WHERE node_id = ? AND revoked_at IS NULL RETURNING serial'),
    crl: q('SELECT serial, revoked_at, not_after FROM certs WHERE revoked_at IS NOT NULL AND not_after >= ? ORDER BY serial'),

    manifestInsert: q('INSERT INTO manifests (node_id, version, kid, jws, issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)'),
    manifestLatest: q('SELECT node_id, version, kid, jws, issued_at, expires_at FROM manifests WHERE node_id = ? ORDER BY version DESC LIMIT 1'),
    manifestLastExpiryForKid: q('SELECT max(expires_at) FROM manifests WHERE kid = ?'),

    keyRetireActive: q('UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL'),
    keyInsert: q('INSERT INTO signing_keys (kid, public_jwk, created_at, retired_at) VALUES (?, ?, ?, NULL)'),
    keysAll: q('SELECT kid, public_jwk, created_at, retired_at FROM signing_keys ORDER BY created_at, rowid'),

    orgManifestSet: q(`INSERT INTO org_manifests (org, body, updated_at) VALUES (?, ?, ?)
                       ON CONFLICT (org) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at`),
    orgManifestGet: q('SELECT body FROM org_manifests WHERE org = ?'),
    tokenInsert: q(`INSERT INTO enrollment_tokens (id, secret_hash, org, created_at, expires_at, uses_left, uses_total, created_by)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
    tokenGet: q(`SELECT ${TOKEN_COLS} FROM enrollment_tokens WHERE id = ?`),
    tokensAll: q(`SELECT ${TOKEN_COLS} FROM enrollment_tokens ORDER BY created_at, id`),
    tokensByOrg: q(`SELECT ${TOKEN_COLS} FROM enrollment_tokens WHERE org = ? ORDER BY created_at, id`),
    tokenUse: q('UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = ? AND uses_left > 0'),
    tokenRevoke: q('UPDATE enrollment_tokens SET revoked_at = ? WHERE id = ?'),
    usedTokenInsert: q('INSERT INTO used_token_ids (issuer, jti, expires_at) VALUES (?, ?, ?)'),
    usedTokenPurge: q('DELETE FROM used_token_ids WHERE expires_at < ?'),

    auditHead: q('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1'),
    auditInsert: q(`INSERT INTO audit (${AUDIT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
    auditRead: q(`SELECT ${AUDIT_COLS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?`),
  };
}

type Statements = ReturnType<typeof prepareAll>;

function checkTime(now: number): void {
  if (!Number.isSafeInteger(now)) throw new TypeError(`time must be integer Unix milliseconds, got ${now}`);
}

export class SqliteStore implements Store {
  readonly #db: DatabaseSync;
  readonly #s: Statements;
  readonly #renewals: PendingRenewal[] = [];
  /** The audit head inside the open transaction (null outside one). */
  #head: { seq: number; hash: string } | null = null;

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#s = prepareAll(db);
  }

  /**
   * Opens (creating if needed) the store file and applies pending migrations. With readonly the
   * file must exist with an up-to-date schema; write methods then fail.
   */
  static open(path: string, opts: { readonly?: boolean } = {}): SqliteStore {
    const readonly = opts.readonly ?? false;
    // timeout = busy_timeout: how long a connection waits for another connection's write lock.
    const db = new DatabaseSync(path, { readOnly: readonly, timeout: 5000, enableForeignKeyConstraints: true });
    try {
      db.exec('PRAGMA busy_timeout = 5000');
      db.exec('PRAGMA foreign_keys = ON');
      if (!readonly) {
        // WAL: readers never block the writer or each other, across processes. Persistent in the
        // file, so setting it once suffices; it is repeated on every open for a fresh file.
        db.exec('PRAGMA journal_mode = WAL');
      }
      // synchronous=NORMAL in WAL mode: a commit appends to the WAL without fsync; the WAL is
      // fsynced at checkpoints. Every transaction is still atomic and the file is consistent after
      // any crash — a killed process loses nothing (its commits are in the OS page cache), and a
      // power cut or kernel panic can only roll the database back to an earlier commit boundary,
      // i.e. drop the last few whole transactions (each with its audit entry, so the hash chain
      // stays valid). What that can lose is a certificate already handed to a node; the node then
      // presents an unknown serial and must enroll again. FULL would fsync every commit, costing
      // throughput on the renewal hot path for little benefit.
      db.exec('PRAGMA synchronous = NORMAL');
      // Checkpoint less often than the default 1000 pages: hot pages (node rows, index roots) are
      // then copied into the database once per checkpoint instead of many times; measured +5 % on
      // the renewal path. journal_size_limit shrinks the WAL file back after a checkpoint.
      db.exec('PRAGMA wal_autocheckpoint = 16384');
      db.exec('PRAGMA journal_size_limit = 67108864');
      if (readonly) {
        const have = currentVersion(db);
        if (have !== latestVersion()) {
          throw new SepalError(ErrorCodes.DATA_DIR_INVALID,
            `store schema version is ${have}, this Sepal expects ${latestVersion()}; open it read-write once to migrate`);
        }
      } else {
        applyMigrations(db);
      }
      return new SqliteStore(db);
    } catch (e) {
      db.close();
      throw e;
    }
  }

  migrate(): Promise<void> {
    return settle(() => { applyMigrations(this.#db); });
  }

  close(): Promise<void> {
    return settle(() => {
      this.#flushRenewals();
      if (this.#db.isOpen) this.#db.close();
    });
  }

  // ---- transactions and the audit chain -------------------------------------------------------

  #tx<T>(fn: () => T): T {
    this.#s.begin.run();
    try {
      const result = fn();
      this.#s.commit.run();
      return result;
    } catch (e) {
      if (this.#db.isTransaction) {
        try { this.#s.rollback.run(); } catch { /* keep the original error */ }
      }
      throw e;
    } finally {
      this.#head = null;
    }
  }

  /** Appends one audit entry; must run inside #tx. */
  #appendInTx(input: AuditInput, now: number, nodeId: string | null = null, org: string | null = null): AuditEntry {
    checkTime(now);
    if (!isAuditEvent(input.event)) throw new TypeError(`unknown audit event ${String(input.event)}`);
    if (typeof input.actor !== 'string' || input.actor === '') throw new TypeError('audit actor must be a non-empty string');
    // The head is read once per transaction (we hold the write lock until COMMIT, so nobody else
    // can append meanwhile) and carried forward: a batch of renewals reads it once, not per row.
    if (this.#head === null) {
      const row = getRow(this.#s.auditHead);
      this.#head = row === undefined ? { seq: 0, hash: GENESIS_HASH } : { seq: row[0] as number, hash: row[1] as string };
    }
    const prevHash = this.#head.hash;
    const fields = {
      seq: this.#head.seq + 1,
      at: now,
      event: input.event,
      actor: input.actor,
      nodeId: input.nodeId === undefined ? nodeId : input.nodeId,
      org: input.org === undefined ? org : input.org,
      reason: input.reason ?? null,
      detail: canonicalJson(input.detail ?? {}),
    };
    const hash = auditHash(prevHash, fields);
    this.#s.auditInsert.run(fields.seq, fields.at, fields.event, fields.actor, fields.nodeId, fields.org, fields.reason,
      fields.detail, prevHash, hash);
    this.#head = { seq: fields.seq, hash };
    return { ...fields, prevHash, hash };
  }

  #insertCert(cert: NewCert, now: number): void {
    try {
      this.#s.certInsert.run(cert.serial, cert.nodeId, cert.org, cert.kind, cert.notBefore, cert.notAfter, cert.fingerprint,
        cert.der, now, cert.issuerKeyId ?? null);
    } catch (e) {
      if (isUniqueViolation(e)) throw new SepalError(ErrorCodes.ALREADY_EXISTS, `certificate serial ${cert.serial} already recorded`);
      throw e;
    }
  }

  // ---- nodes and certificates -----------------------------------------------------------------

  enrollNode(node: NewNode, cert: NewCert, audit: AuditInput, now: number, claim: EnrollmentClaim = { kind: 'none' }): Promise<NodeRecord> {
    return settle(() => {
      checkTime(now);
      if (cert.nodeId !== node.id || cert.org !== node.org) throw new TypeError('enrollment certificate belongs to another node');
      if (cert.kind !== 'enroll') throw new TypeError(`enrollNode needs an 'enroll' certificate, got '${cert.kind}'`);
      return this.#tx(() => {
        this.#consumeClaim(claim, node.org, now);
        try {
          const hasKey = node.flowerPublicKey !== null;
          this.#s.nodeInsert.run(node.id, node.org, node.name, now, node.facts, node.flowerPublicKey, now, cert.serial, cert.notAfter,
            hasKey ? 'pending' : null, hasKey ? now : null, hasKey ? now : null);
        } catch (e) {
          if (isUniqueViolation(e)) throw new SepalError(ErrorCodes.ALREADY_EXISTS, `node ${node.id} already exists`);
          throw e;
        }
        // Flower refuses a key it has seen before, even after unregistering it: a node enrolling
        // again needs a new key. The other node is not named (it may be another organisation's).
        if (node.flowerPublicKey !== null && getRow(this.#s.nodeByFlowerKey, node.flowerPublicKey, node.id) !== undefined) {
          throw new SepalError(ErrorCodes.FLOWER_KEY_INVALID, 'this Flower public key is already enrolled; Flower accepts a key once, so enroll with a new one');
        }
        this.#insertCert(cert, now);
        this.#appendInTx(audit, now, node.id, node.org);
        return nodeAt(getRow(this.#s.nodeGet, node.id)!, 0);
      });
    });
  }

  /** Takes the credential's one use inside the enrollment transaction (see Store.enrollNode). */
  #consumeClaim(claim: EnrollmentClaim, org: string, now: number): void {
    if (claim.kind === 'none') return;
    if (claim.kind === 'oidc') {
      this.#s.usedTokenPurge.run(now);
      try {
        this.#s.usedTokenInsert.run(claim.issuer, claim.jti, claim.expiresAt);
      } catch (e) {
        if (isUniqueViolation(e)) throw new SepalError(ErrorCodes.TOKEN_REPLAYED, 'this access token was already used to enroll');
        throw e;
      }
      return;
    }
    const row = getRow(this.#s.tokenGet, claim.id);
    // Unknown id and wrong secret look the same from outside.
    if (row === undefined || !hashesEqual(row[1] as string, claim.secretHash)) {
      throw new SepalError(ErrorCodes.ENROLLMENT_TOKEN_INVALID, 'unknown enrollment token');
    }
    const t = tokenAt(row);
    if (t.revokedAt !== null) throw new SepalError(ErrorCodes.ENROLLMENT_TOKEN_REVOKED, `enrollment token ${t.id} was revoked`);
    if (now >= t.expiresAt) throw new SepalError(ErrorCodes.ENROLLMENT_TOKEN_EXPIRED, `enrollment token ${t.id} expired`);
    if (t.usesLeft <= 0) throw new SepalError(ErrorCodes.ENROLLMENT_TOKEN_EXHAUSTED, `enrollment token ${t.id} is used up`);
    if (t.org !== org) throw new SepalError(ErrorCodes.ORG_MISMATCH, `enrollment token ${t.id} is for another organisation`);
    this.#s.tokenUse.run(t.id);
  }

  // ---- organisation manifests ---------------------------------------------------------------

  setOrgManifest(org: string, bodyJson: string, now: number): Promise<void> {
    return settle(() => {
      checkTime(now);
      this.#tx(() => { this.#s.orgManifestSet.run(org, bodyJson, now); });
    });
  }

  getOrgManifest(org: string): Promise<string | null> {
    return settle(() => {
      const r = getRow(this.#s.orgManifestGet, org);
      return r === undefined ? null : r[0] as string;
    });
  }

  // ---- enrollment tokens ----------------------------------------------------------------------

  createEnrollmentToken(token: NewEnrollmentToken, audit: AuditInput, now: number): Promise<EnrollmentTokenRecord> {
    return settle(() => {
      checkTime(now);
      checkTime(token.expiresAt);
      if (!Number.isSafeInteger(token.uses) || token.uses < 1) throw new TypeError('uses must be a positive integer');
      return this.#tx(() => {
        try {
          this.#s.tokenInsert.run(token.id, token.secretHash, token.org, now, token.expiresAt, token.uses, token.uses, token.createdBy);
        } catch (e) {
          if (isUniqueViolation(e)) throw new SepalError(ErrorCodes.ALREADY_EXISTS, `enrollment token ${token.id} already exists`);
          throw e;
        }
        this.#appendInTx(audit, now, null, token.org);
        return tokenAt(getRow(this.#s.tokenGet, token.id)!);
      });
    });
  }

  listEnrollmentTokens(filter: { readonly org?: string } = {}): Promise<EnrollmentTokenRecord[]> {
    return settle(() => (filter.org === undefined ? allRows(this.#s.tokensAll) : allRows(this.#s.tokensByOrg, filter.org)).map(tokenAt));
  }

  getEnrollmentToken(id: string): Promise<EnrollmentTokenRecord | null> {
    return settle(() => {
      const r = getRow(this.#s.tokenGet, id);
      return r === undefined ? null : tokenAt(r);
    });
  }

  revokeEnrollmentToken(id: string, audit: AuditInput, now: number): Promise<boolean> {
    return settle(() => {
      checkTime(now);
      return this.#tx(() => {
        const r = getRow(this.#s.tokenGet, id);
        if (r === undefined) throw new SepalError(ErrorCodes.NOT_FOUND, `no enrollment token ${id}`);
        const t = tokenAt(r);
        if (t.revokedAt !== null) return false;
        this.#s.tokenRevoke.run(now, id);
        this.#appendInTx(audit, now, null, t.org);
        return true;
      });
    });
  }

  /**
   * Group commit: renewals that arrive in the same event-loop turn are written in one transaction
   * (the renewal hot path is dominated by BEGIN/COMMIT otherwise). Each renewal is still all or
   * nothing: a node-state refusal writes nothing for that renewal and does not touch the others;
   * any other failure rolls the batch back and each renewal is retried in a transaction of its own.
   */
  recordRenewal(cert: NewCert, audit: AuditInput, now: number): Promise<void> {
    try {
      checkTime(now);
      if (cert.kind !== 'renew') throw new TypeError(`recordRenewal needs a 'renew' certificate, got '${cert.kind}'`);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new TypeError(String(e)));
    }
    return new Promise((resolve, reject) => {
      this.#renewals.push({ cert, audit, now, resolve, reject });
      if (this.#renewals.length === 1) setImmediate(() => this.#flushRenewals());
    });
  }

  /** One renewal inside an open transaction; a refusal is returned before anything is written. */
  #renewInTx(r: PendingRenewal): SepalError | null {
    const node = getRow(this.#s.nodeBrief, r.cert.nodeId);
    if (node === undefined) return new SepalError(ErrorCodes.NOT_FOUND, `node ${r.cert.nodeId} not found`);
    if (node[0] !== 'active') return new SepalError(ErrorCodes.NODE_REVOKED, `node ${r.cert.nodeId} is revoked`);
    if (node[1] !== r.cert.org) throw new TypeError(`certificate org ${r.cert.org} is not the node's org`);
    this.#insertCert(r.cert, r.now);
    this.#s.nodeSetCert.run(r.cert.serial, r.cert.notAfter, r.cert.nodeId);
    this.#appendInTx(r.audit, r.now, r.cert.nodeId, r.cert.org);
    return null;
  }

  #flushRenewals(): void {
    const batch = this.#renewals.splice(0);
    if (batch.length === 0) return;
    let outcomes: Array<SepalError | null>;
    try {
      outcomes = this.#tx(() => batch.map((r) => this.#renewInTx(r)));
    } catch {
      for (const r of batch) {
        try {
          const refusal = this.#tx(() => this.#renewInTx(r));
          if (refusal === null) r.resolve();
          else r.reject(refusal);
        } catch (e) {
          r.reject(e as Error);
        }
      }
      return;
    }
    batch.forEach((r, i) => {
      const refusal = outcomes[i];
      if (refusal === null || refusal === undefined) r.resolve();
      else r.reject(refusal);
    });
  }

  getNode(id: string): Promise<NodeRecord | null> {
    return settle(() => {
      const r = getRow(this.#s.nodeGet, id);
      return r === undefined ? null : nodeAt(r, 0);
    });
  }

  listNodes(filter: { readonly org?: string } = {}): Promise<NodeRecord[]> {
    return settle(() => {
      const rows = filter.org === undefined ? allRows(this.#s.nodesAll) : allRows(this.#s.nodesByOrg, filter.org);
      return rows.map((r) => nodeAt(r, 0));
    });
  }

  getCert(serial: string): Promise<CertRecord | null> {
    return settle(() => {
      const r = getRow(this.#s.certGet, serial);
      return r === undefined ? null : certAt(r, 0);
    });
  }

  lastCertExpiryForIssuer(issuerKeyId: string): Promise<number | null> {
    return settle(() => {
      const v = getRow(this.#s.certLastExpiryForIssuer, issuerKeyId.toLowerCase())?.[0];
      return typeof v === 'number' ? v : null;
    });
  }

  certAcceptance(serial: string): Promise<CertAcceptance> {
    return settle(() => {
      const r = getRow(this.#s.certAccept, serial);
      if (r === undefined) return { cert: null, node: null };
      return { cert: certAt(r, 0), node: r[10] === null ? null : nodeAt(r, 10) };
    });
  }

  revokeNode(nodeId: string, audit: AuditInput, now: number): Promise<string[]> {
    return settle(() => {
      checkTime(now);
      return this.#tx(() => {
        const node = getRow(this.#s.nodeBrief, nodeId);
        if (node === undefined) throw new SepalError(ErrorCodes.NOT_FOUND, `node ${nodeId} not found`);
        const wasActive = Number(this.#s.nodeRevoke.run(now, nodeId).changes) > 0;
        const serials = allRows(this.#s.certsRevokeByNode, now, nodeId).map((r) => r[0] as string).sort();
        if (!wasActive && serials.length === 0) return [];
        if (wasActive) this.#s.flowerOnRevoke.run(now, now, nodeId);
        this.#appendInTx(audit, now, nodeId, node[1] as string);
        return serials;
      });
    });
  }

  listRevokedCerts(now: number): Promise<Array<{ serial: string; revokedAt: number; notAfter: number }>> {
    return settle(() => allRows(this.#s.crl, now).map((r) => ({
      serial: r[0] as string, revokedAt: r[1] as number, notAfter: r[2] as number,
    })));
  }

  recordStatus(nodeId: string, statusJson: string, now: number): Promise<void> {
    return settle(() => {
      checkTime(now);
      this.#tx(() => {
        if (Number(this.#s.nodeStatus.run(statusJson, now, nodeId).changes) === 0) {
          throw new SepalError(ErrorCodes.NOT_FOUND, `node ${nodeId} not found`);
        }
      });
    });
  }

  touchNode(nodeId: string, now: number): Promise<void> {
    return settle(() => {
      checkTime(now);
      this.#tx(() => {
        if (Number(this.#s.nodeTouch.run(now, nodeId).changes) === 0) {
          throw new SepalError(ErrorCodes.NOT_FOUND, `node ${nodeId} not found`);
        }
      });
    });
  }

  // ---- Flower registration --------------------------------------------------------------------

  dueFlowerWork(now: number, limit: number): Promise<FlowerWork[]> {
    return settle(() => {
      checkTime(now);
      if (!Number.isSafeInteger(limit) || limit < 1) throw new TypeError(`limit must be a positive integer, got ${limit}`);
      return allRows(this.#s.flowerDue, now, limit).map((r) => ({
        nodeId: r[0] as string,
        org: r[1] as string,
        state: r[2] as 'pending' | 'unregister-pending',
        flowerPublicKey: r[3] as string,
        flowerNodeId: r[4] as string | null,
        attempts: r[5] as number,
      }));
    });
  }

  nextFlowerAttemptAt(): Promise<number | null> {
    return settle(() => (getRow(this.#s.flowerNext)?.[0] ?? null) as number | null);
  }

  nodeByFlowerId(flowerNodeId: string): Promise<NodeRecord | null> {
    return settle(() => {
      const r = getRow(this.#s.flowerByNodeId, flowerNodeId);
      return r === undefined ? null : nodeAt(r, 0);
    });
  }

  /** The registration, org and node state inside a transaction; null for an unknown node. */
  #flowerInTx(nodeId: string): { reg: FlowerRegistration | null; org: string; nodeState: NodeState } | null {
    const r = getRow(this.#s.flowerGet, nodeId);
    return r === undefined ? null : { reg: flowerAt(r, 0), org: r[7] as string, nodeState: r[8] as NodeState };
  }

  /** Sets a new state (a transition) and appends its audit entry; returns the new registration. */
  #flowerTransition(nodeId: string, org: string, to: { state: FlowerState; flowerNodeId: string | null; error?: { code: string; message: string }; nextAttemptAt: number | null },
    audit: AuditInput, now: number): FlowerRegistration {
    this.#s.flowerSet.run(to.state, to.flowerNodeId, to.error?.code ?? null, to.error?.message.slice(0, MAX_ERROR_MESSAGE) ?? null,
      to.nextAttemptAt, now, nodeId);
    this.#appendInTx(audit, now, nodeId, org);
    return this.#flowerInTx(nodeId)!.reg!;
  }

  recordFlowerRegistered(nodeId: string, flowerNodeId: string, audit: AuditInput, now: number): Promise<FlowerRegistration | null> {
    return settle(() => {
      checkTime(now);
      checkFlowerNodeId(flowerNodeId);
      return this.#tx(() => {
        const cur = this.#flowerInTx(nodeId);
        const state = cur?.reg?.state;
        if (cur === null || (state !== 'pending' && state !== 'unregister-pending')) return null;
        const known = cur.reg?.flowerNodeId ?? null;
        if (known !== null && known !== flowerNodeId) throw new TypeError(`node ${nodeId} is Flower node ${known}, not ${flowerNodeId}`);
        // Revoked while the call was in flight: keep the id so the registrar removes it next.
        const to = state === 'pending'
          ? { state: 'registered' as const, flowerNodeId, nextAttemptAt: null }
          : { state: 'unregister-pending' as const, flowerNodeId, nextAttemptAt: now };
        try {
          return this.#flowerTransition(nodeId, cur.org, to, audit, now);
        } catch (e) {
          if (isUniqueViolation(e)) throw new SepalError(ErrorCodes.ALREADY_EXISTS, `Flower node ${flowerNodeId} is already another node's`);
          throw e;
        }
      });
    });
  }

  recordFlowerUnregistered(nodeId: string, flowerNodeId: string | null, audit: AuditInput, now: number): Promise<FlowerRegistration | null> {
    return settle(() => {
      checkTime(now);
      if (flowerNodeId !== null) checkFlowerNodeId(flowerNodeId);
      return this.#tx(() => {
        const cur = this.#flowerInTx(nodeId);
        if (cur?.reg?.state !== 'unregister-pending') return null;
        const known = cur.reg.flowerNodeId;
        if (known !== null && flowerNodeId !== null && known !== flowerNodeId) {
          throw new TypeError(`node ${nodeId} is Flower node ${known}, not ${flowerNodeId}`);
        }
        return this.#flowerTransition(nodeId, cur.org, { state: 'unregistered', flowerNodeId: known ?? flowerNodeId, nextAttemptAt: null }, audit, now);
      });
    });
  }

  recordFlowerFailed(nodeId: string, error: { readonly code: string; readonly message: string }, audit: AuditInput, now: number): Promise<FlowerRegistration | null> {
    return settle(() => {
      checkTime(now);
      return this.#tx(() => {
        const cur = this.#flowerInTx(nodeId);
        if (cur?.reg?.state !== 'pending') return null;
        return this.#flowerTransition(nodeId, cur.org, { state: 'failed', flowerNodeId: null, error, nextAttemptAt: null }, audit, now);
      });
    });
  }

  recordFlowerRetry(nodeId: string, state: 'pending' | 'unregister-pending', error: { readonly code: string; readonly message: string },
    nextAttemptAt: number, now: number): Promise<FlowerRegistration | null> {
    return settle(() => {
      checkTime(now);
      checkTime(nextAttemptAt);
      return this.#tx(() => {
        const changed = Number(this.#s.flowerRetry.run(error.code, error.message.slice(0, MAX_ERROR_MESSAGE), nextAttemptAt, nodeId, state).changes);
        return changed === 0 ? null : this.#flowerInTx(nodeId)!.reg;
      });
    });
  }

  retryFlowerRegistration(nodeId: string, audit: AuditInput, now: number): Promise<FlowerRegistration> {
    return settle(() => {
      checkTime(now);
      return this.#tx(() => {
        const cur = this.#flowerInTx(nodeId);
        if (cur === null) throw new SepalError(ErrorCodes.NOT_FOUND, `node ${nodeId} not found`);
        if (cur.nodeState !== 'active') throw new SepalError(ErrorCodes.INVALID_ARGUMENT, `node ${nodeId} is revoked`);
        if (cur.reg?.state !== 'failed') {
          throw new SepalError(ErrorCodes.INVALID_ARGUMENT, `node ${nodeId}: only a failed Flower registration can be retried (it is ${cur.reg?.state ?? 'absent: the node has no Flower key'})`);
        }
        return this.#flowerTransition(nodeId, cur.org, { state: 'pending', flowerNodeId: null, nextAttemptAt: now }, audit, now);
      });
    });
  }

  // ---- manifests ------------------------------------------------------------------------------

  publishManifests(
    nodeIds: readonly string[],
    build: ManifestBuilder,
    audit: (nodeId: string, org: string, version: number) => AuditInput,
    now: number,
  ): Promise<ManifestRecord[]> {
    return settle(() => {
      checkTime(now);
      return this.#tx(() => {
        const out: ManifestRecord[] = [];
        const done = new Set<string>();
        for (const nodeId of nodeIds) {
          if (done.has(nodeId)) continue; // one version per node per call
          done.add(nodeId);
          const node = getRow(this.#s.nodeBrief, nodeId);
          if (node === undefined) throw new SepalError(ErrorCodes.NOT_FOUND, `node ${nodeId} not found`);
          if (node[0] !== 'active') continue;
          const org = node[1] as string;
          const version = (node[2] as number) + 1;
          const built = build(nodeId, org, version);
          if (typeof (built as { then?: unknown }).then === 'function') {
            throw new TypeError('ManifestBuilder must be synchronous (it runs inside the transaction)');
          }
          this.#s.manifestInsert.run(nodeId, version, built.kid, built.jws, now, built.expiresAt);
          this.#s.nodeSetManifestVersion.run(version, nodeId);
          this.#appendInTx(audit(nodeId, org, version), now, nodeId, org);
          out.push({ nodeId, version, kid: built.kid, jws: built.jws, issuedAt: now, expiresAt: built.expiresAt });
        }
        return out;
      });
    });
  }

  latestManifest(nodeId: string): Promise<ManifestRecord | null> {
    return settle(() => {
      const r = getRow(this.#s.manifestLatest, nodeId);
      return r === undefined ? null : manifestAt(r);
    });
  }

  lastManifestExpiryForKey(kid: string): Promise<number | null> {
    return settle(() => (getRow(this.#s.manifestLastExpiryForKid, kid)?.[0] ?? null) as number | null);
  }

  // ---- signing keys ---------------------------------------------------------------------------

  addSigningKey(key: { readonly kid: string; readonly publicJwk: string }, audit: AuditInput, now: number): Promise<void> {
    return settle(() => {
      checkTime(now);
      this.#tx(() => {
        this.#s.keyRetireActive.run(now);
        try {
          this.#s.keyInsert.run(key.kid, key.publicJwk, now);
        } catch (e) {
          if (isUniqueViolation(e)) throw new SepalError(ErrorCodes.ALREADY_EXISTS, `signing key ${key.kid} already exists`);
          throw e;
        }
        this.#appendInTx(audit, now);
      });
    });
  }

  listSigningKeys(): Promise<SigningKeyRecord[]> {
    return settle(() => allRows(this.#s.keysAll).map((r) => ({
      kid: r[0] as string, publicJwk: r[1] as string, createdAt: r[2] as number, retiredAt: r[3] as number | null,
    })));
  }

  // ---- audit ----------------------------------------------------------------------------------

  appendAudit(entry: AuditInput, now: number): Promise<AuditEntry> {
    return settle(() => this.#tx(() => this.#appendInTx(entry, now)));
  }

  readAudit(afterSeq: number, limit: number): Promise<AuditEntry[]> {
    return settle(() => {
      if (!Number.isSafeInteger(limit) || limit < 0) throw new TypeError(`limit must be a non-negative integer, got ${limit}`);
      if (limit === 0) return []; // LIMIT 0 would do, but never pass SQLite's "LIMIT -1 = all"
      return allRows(this.#s.auditRead, afterSeq, limit).map(auditAt);
    });
  }

  auditHead(): Promise<number> {
    return settle(() => (getRow(this.#s.auditHead)?.[0] ?? 0) as number);
  }

  /**
   * The whole log (or the part after afterSeq) in seq order, read in pages of batchSize by seq,
   * so memory stays flat and no read snapshot is held open across the walk: pair it with
   * verifyAuditChain for `audit verify` on millions of rows. Entries appended during the walk
   * are included up to the point the last page is read.
   */
  *iterateAudit(afterSeq = 0, batchSize = 1000): Generator<AuditEntry, void, undefined> {
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new TypeError('batchSize must be a positive integer');
    let after = afterSeq;
    for (;;) {
      const rows = allRows(this.#s.auditRead, after, batchSize);
      for (const r of rows) {
        const e = auditAt(r);
        after = e.seq;
        yield e;
      }
      if (rows.length < batchSize) return;
    }
  }
}
