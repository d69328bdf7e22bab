import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyAuditChain } from '../../hub/audit/chain.ts';
import { ErrorCodes, isSepalError } from '../../hub/errors.ts';
import { applyMigrations, MIGRATIONS } from '../../hub/store/migrations.ts';
import { SqliteStore } from '../../hub/store/sqlite.ts';
import { storeContractSuite } from './store.contract.ts';
import { enrolledAudit, newCert, newNode, serialFor, T0 } from './store.fixtures.ts';

const CHILD = fileURLToPath(new URL('./store.crash-child.ts', import.meta.url));

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'sepal-store-'));
}

storeContractSuite('SqliteStore', async () => {
  const dir = await tempDir();
  const store = SqliteStore.open(join(dir, 'hub.db'));
  return { store, cleanup: async () => { await store.close(); await rm(dir, { recursive: true, force: true }); } };
});

function scalar(db: DatabaseSync, sql: string): unknown {
  const row = db.prepare(sql).get();
  return row === undefined ? undefined : Object.values(row)[0];
}

/** Everything a crash must never break: chain, integrity, and that no row lacks its partner. */
async function checkConsistency(path: string): Promise<{ nodes: number; certs: number; audit: number; manifests: number }> {
  const store = SqliteStore.open(path);
  try {
    const v = verifyAuditChain(store.iterateAudit());
    expect(v).toMatchObject({ ok: true });
  } finally {
    await store.close();
  }
  const db = new DatabaseSync(path);
  try {
    expect(scalar(db, 'PRAGMA integrity_check')).toBe('ok');
    expect(db.prepare('PRAGMA foreign_key_check').all()).toEqual([]);
    // every certificate has its node (also enforced by the foreign key) and its audit entry, and back
    expect(scalar(db, 'SELECT count(*) FROM certs c LEFT JOIN nodes n ON n.id = c.node_id WHERE n.id IS NULL')).toBe(0);
    expect(scalar(db, `SELECT count(*) FROM certs c WHERE NOT EXISTS (SELECT 1 FROM audit a
      WHERE a.event IN ('node.enrolled', 'cert.renewed') AND a.node_id = c.node_id AND json_extract(a.detail, '$.serial') = c.serial)`)).toBe(0);
    expect(scalar(db, `SELECT count(*) FROM audit a WHERE a.event IN ('node.enrolled', 'cert.renewed')
      AND NOT EXISTS (SELECT 1 FROM certs c WHERE c.serial = json_extract(a.detail, '$.serial'))`)).toBe(0);
    expect(scalar(db, `SELECT count(*) FROM nodes n WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.event = 'node.enrolled' AND a.node_id = n.id)
      OR n.cert_serial NOT IN (SELECT serial FROM certs WHERE node_id = n.id)`)).toBe(0);
    // manifests and their audit entries, both ways; node.manifest_version matches
    expect(scalar(db, `SELECT count(*) FROM manifests m WHERE NOT EXISTS (SELECT 1 FROM audit a
      WHERE a.event = 'manifest.published' AND a.node_id = m.node_id AND json_extract(a.detail, '$.version') = m.version)`)).toBe(0);
    expect(scalar(db, `SELECT count(*) FROM audit a WHERE a.event = 'manifest.published' AND NOT EXISTS
      (SELECT 1 FROM manifests m WHERE m.node_id = a.node_id AND m.version = json_extract(a.detail, '$.version'))`)).toBe(0);
    expect(scalar(db, `SELECT count(*) FROM nodes n WHERE n.manifest_version <> coalesce((SELECT max(version) FROM manifests m WHERE m.node_id = n.id), 0)`)).toBe(0);
    return {
      nodes: scalar(db, 'SELECT count(*) FROM nodes') as number,
      certs: scalar(db, 'SELECT count(*) FROM certs') as number,
      audit: scalar(db, 'SELECT count(*) FROM audit') as number,
      manifests: scalar(db, 'SELECT count(*) FROM manifests') as number,
    };
  } finally {
    db.close();
  }
}

describe('SqliteStore specifics', () => {
  let dir: string;
  let path: string;
  beforeEach(async () => {
    dir = await tempDir();
    path = join(dir, 'hub.db');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function enrollOne(store: SqliteStore, id: string, now = T0): Promise<void> {
    const s = serialFor(`${id}/enroll`);
    await store.enrollNode(newNode(id), newCert(s, id, 'org-a', 'enroll'), enrolledAudit(id, 'org-a', s), now);
  }

  it('applies migrations once: reopening and migrate() are no-ops that keep the data', async () => {
    const a = SqliteStore.open(path);
    await enrollOne(a, 'n1');
    await a.migrate();
    await a.close();
    const b = SqliteStore.open(path);
    await b.migrate();
    expect(await b.getNode('n1')).toMatchObject({ id: 'n1' });
    await b.close();

    const db = new DatabaseSync(path);
    try {
      expect(db.prepare('SELECT version FROM schema_migrations ORDER BY version').all().map((r) => r['version']))
        .toEqual(MIGRATIONS.map((m) => m.version));
      expect(applyMigrations(db)).toEqual([]);
      expect(scalar(db, 'PRAGMA journal_mode')).toBe('wal');
    } finally {
      db.close();
    }
  });

  it('applies each migration in its own transaction: a failing one leaves the earlier ones applied', () => {
    const db = new DatabaseSync(path);
    try {
      const migrations = [
        { version: 1, name: 'one', sql: 'CREATE TABLE t1 (x INTEGER) STRICT;' },
        { version: 2, name: 'two', sql: 'CREATE TABLE t2 (x INTEGER) STRICT; THIS IS NOT SQL;' },
      ];
      expect(() => applyMigrations(db, migrations)).toThrow();
      expect(db.prepare('SELECT version FROM schema_migrations').all().map((r) => r['version'])).toEqual([1]);
      expect(scalar(db, `SELECT count(*) FROM sqlite_schema WHERE name = 't2'`)).toBe(0);
      expect(applyMigrations(db, [migrations[0]!, { version: 2, name: 'two', sql: 'CREATE TABLE t2 (x INTEGER) STRICT;' }])).toEqual([2]);
      expect(() => applyMigrations(db, [migrations[1]!, migrations[0]!])).toThrow(TypeError);
    } finally {
      db.close();
    }
  });

  it('refuses a database written by a newer schema version', async () => {
    await SqliteStore.open(path).close();
    const db = new DatabaseSync(path);
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, ?, 0)').run('future');
    db.close();
    let err: unknown;
    try { SqliteStore.open(path); } catch (e) { err = e; }
    expect(isSepalError(err, ErrorCodes.DATA_DIR_INVALID)).toBe(true);
  });

  it('opens read-only: reads work, writes fail', async () => {
    const w = SqliteStore.open(path);
    await enrollOne(w, 'n1');
    const r = SqliteStore.open(path, { readonly: true });
    expect(await r.getNode('n1')).toMatchObject({ id: 'n1' });
    expect(verifyAuditChain(r.iterateAudit())).toMatchObject({ ok: true, count: 1 });
    await expect(r.appendAudit({ event: 'token.created', actor: 'cli' }, T0)).rejects.toThrow(/readonly/);
    await r.close();
    await w.close();
  });

  it('keeps the audit log append-only against UPDATE and DELETE from code', async () => {
    const s = SqliteStore.open(path);
    await s.appendAudit({ event: 'token.created', actor: 'cli' }, T0);
    await s.close();
    const db = new DatabaseSync(path);
    try {
      expect(() => db.exec(`UPDATE audit SET actor = 'x'`)).toThrow(/append-only/);
      expect(() => db.exec('DELETE FROM audit')).toThrow(/append-only/);
    } finally {
      db.close();
    }
  });

  it('two connections on one file see each other\'s writes and share one audit chain', async () => {
    const a = SqliteStore.open(path);
    const b = SqliteStore.open(path);
    await enrollOne(a, 'from-a');
    expect(await b.getNode('from-a')).toMatchObject({ id: 'from-a', state: 'active' });
    await enrollOne(b, 'from-b', T0 + 1);
    expect(await a.getNode('from-b')).toMatchObject({ id: 'from-b' });
    await b.revokeNode('from-a', { event: 'node.revoked', actor: 'cli' }, T0 + 2);
    expect((await a.certAcceptance(serialFor('from-a/enroll'))).node).toMatchObject({ state: 'revoked' });
    for (let i = 0; i < 50; i++) {
      await (i % 2 === 0 ? a : b).appendAudit({ event: 'security.denied', actor: 'peer:x', detail: { i } }, T0 + 10 + i);
    }
    expect(await a.auditHead()).toBe(53);
    expect(verifyAuditChain(b.iterateAudit(0, 7))).toMatchObject({ ok: true, count: 53 });
    await a.close();
    await b.close();
  });

  it('iterateAudit pages through the log in order', async () => {
    const s = SqliteStore.open(path);
    for (let i = 0; i < 50; i++) await s.appendAudit({ event: 'token.created', actor: 'cli', detail: { i } }, T0 + i);
    for (const batch of [1, 7, 10, 50, 1000]) {
      expect([...s.iterateAudit(0, batch)].map((e) => e.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    }
    expect([...s.iterateAudit(45, 2)].map((e) => e.seq)).toEqual([46, 47, 48, 49, 50]);
    await s.close();
  });

  it('uses indexes for the lookups that need them', async () => {
    await SqliteStore.open(path).close();
    const db = new DatabaseSync(path);
    try {
      const plan = (sql: string) => db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all().map((r) => String(r['detail'])).join(' | ');
      expect(plan('SELECT serial FROM certs WHERE node_id = ? AND revoked_at IS NULL')).toMatch(/USING INDEX certs_by_node/);
      expect(plan('SELECT serial FROM certs WHERE revoked_at IS NOT NULL AND not_after >= ?')).toMatch(/USING INDEX certs_revoked_by_expiry/);
      expect(plan('SELECT max(expires_at) FROM manifests WHERE kid = ?')).toMatch(/USING COVERING INDEX manifests_by_kid/);
      expect(plan('SELECT * FROM manifests WHERE node_id = ? ORDER BY version DESC LIMIT 1')).toMatch(/USING PRIMARY KEY/);
      expect(plan('SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT 10')).toMatch(/USING INTEGER PRIMARY KEY/);
      expect(plan('SELECT * FROM nodes WHERE org = ?')).toMatch(/USING INDEX nodes_by_org/);
    } finally {
      db.close();
    }
  });

  describe('crashes and several processes', () => {
    it('survives SIGKILL inside a transaction: the open transaction is gone, everything committed stays', async () => {
      const r = spawnSync(process.execPath, [CHILD, path, 'in-tx', '20', 'k'], { encoding: 'utf8' });
      expect(r.signal).toBe('SIGKILL');
      expect(r.stdout.trim().split('\n')).toHaveLength(20);
      const counts = await checkConsistency(path);
      // 20 iterations of enroll + 2 renewals + denial + manifest; the killed publish left nothing
      expect(counts).toEqual({ nodes: 20, certs: 60, manifests: 20, audit: 100 });
    });

    it('survives SIGKILL at a random point of a write loop', async () => {
      const child = spawn(process.execPath, [CHILD, path, 'loop', '0', 'r'], { stdio: ['ignore', 'pipe', 'inherit'] });
      let done = 0;
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
      await new Promise<void>((resolve) => {
        child.stdout.on('data', (chunk: Buffer) => {
          done += chunk.toString().split('\n').filter(Boolean).length;
          if (done >= 40) resolve();
        });
      });
      child.kill('SIGKILL');
      expect(await exited).toBe('SIGKILL');
      const counts = await checkConsistency(path);
      expect(counts.nodes).toBeGreaterThanOrEqual(done); // nothing reported as finished was lost
    });

    it('several processes writing at once keep one valid chain', async () => {
      const procs = ['p', 'q', 'r'].map((prefix) => new Promise<number | null>((resolve) => {
        spawn(process.execPath, [CHILD, path, 'loop', '100', prefix], { stdio: ['ignore', 'ignore', 'inherit'] })
          .on('exit', (code) => resolve(code));
      }));
      expect(await Promise.all(procs)).toEqual([0, 0, 0]);
      expect(await checkConsistency(path)).toEqual({ nodes: 300, certs: 900, manifests: 300, audit: 1500 });
    });
  });
});
