import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync, type SQLOutputValue } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { auditHash, canonicalJson, GENESIS_HASH, verifyAuditChain, type AuditHashFields } from '../../hub/audit/chain.ts';
import { SqliteStore } from '../../hub/store/sqlite.ts';
import type { AuditEntry } from '../../hub/store/store.ts';
import { enrolledAudit, newCert, newNode, renewedAudit, serialFor, T0 } from './store.fixtures.ts';

describe('canonicalJson', () => {
  it('sorts keys at every level and has no whitespace', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: null, y: 'x' }], c: true } })).toBe('{"a":{"c":true,"d":[3,{"y":"x","z":null}]},"b":1}');
    expect(canonicalJson({})).toBe('{}');
    expect(canonicalJson('é"\n')).toBe(JSON.stringify('é"\n'));
  });

  it('is independent of key insertion order', () => {
    expect(canonicalJson({ x: 1, y: [1, 2], z: { q: 1, p: 2 } })).toBe(canonicalJson({ z: { p: 2, q: 1 }, y: [1, 2], x: 1 }));
  });

  it('follows JSON.stringify for undefined and toJSON, and refuses what JSON cannot carry', () => {
    expect(canonicalJson({ a: undefined, b: [undefined], c: new Date(0) })).toBe('{"b":[null],"c":"1970-01-01T00:00:00.000Z"}');
    expect(() => canonicalJson({ n: Number.NaN })).toThrow(TypeError);
    expect(() => canonicalJson({ n: Infinity })).toThrow(TypeError);
    expect(() => canonicalJson({ n: 1n })).toThrow(TypeError);
    expect(() => canonicalJson({ f: () => 1 })).toThrow(TypeError);
    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(TypeError);
    const shared = { k: 1 };
    expect(canonicalJson({ a: shared, b: shared })).toBe('{"a":{"k":1},"b":{"k":1}}'); // repeated, not cyclic
  });
});

describe('auditHash', () => {
  const base: AuditHashFields = { seq: 1, at: T0, event: 'node.enrolled', actor: 'cli', nodeId: 'n1', org: 'o', reason: null, detail: '{}' };

  it('is deterministic lowercase SHA-256 hex', () => {
    expect(auditHash(GENESIS_HASH, base)).toMatch(/^[0-9a-f]{64}$/);
    expect(auditHash(GENESIS_HASH, { ...base })).toBe(auditHash(GENESIS_HASH, base));
  });

  it('covers the previous hash and every field', () => {
    const h = auditHash(GENESIS_HASH, base);
    expect(auditHash('1'.repeat(64), base)).not.toBe(h);
    const variants: Partial<AuditHashFields>[] = [
      { seq: 2 }, { at: T0 + 1 }, { event: 'cert.renewed' }, { actor: 'cli2' }, { nodeId: null }, { nodeId: 'n2' },
      { org: null }, { reason: 'NOT_FOUND' }, { reason: '' }, { detail: '{"a":1}' },
    ];
    for (const v of variants) expect(auditHash(GENESIS_HASH, { ...base, ...v }), JSON.stringify(v)).not.toBe(h);
  });

  it('is unambiguous: moving text between neighbouring fields changes the hash', () => {
    const a = auditHash(GENESIS_HASH, { ...base, actor: 'ab', nodeId: 'c' });
    const b = auditHash(GENESIS_HASH, { ...base, actor: 'a', nodeId: 'bc' });
    const c = auditHash(GENESIS_HASH, { ...base, actor: 'a","b', nodeId: 'c' });
    expect(new Set([a, b, c]).size).toBe(3);
    expect(auditHash(GENESIS_HASH, { ...base, nodeId: null })).not.toBe(auditHash(GENESIS_HASH, { ...base, nodeId: 'null' }));
  });
});

/** Builds a valid chain of n entries in memory. */
function chain(n: number): AuditEntry[] {
  const out: AuditEntry[] = [];
  let prev = GENESIS_HASH;
  for (let seq = 1; seq <= n; seq++) {
    const f = { seq, at: T0 + seq, event: 'token.created' as const, actor: 'cli', nodeId: null, org: null, reason: null, detail: `{"i":${seq}}` };
    const hash = auditHash(prev, f);
    out.push({ ...f, prevHash: prev, hash });
    prev = hash;
  }
  return out;
}

describe('verifyAuditChain on entries in memory', () => {
  it('accepts an empty and a valid log', () => {
    expect(verifyAuditChain([])).toEqual({ ok: true, count: 0, headHash: GENESIS_HASH });
    const c = chain(5);
    expect(verifyAuditChain(c)).toEqual({ ok: true, count: 5, headHash: c[4]!.hash });
  });

  it('streams from a generator without materialising the log', () => {
    function* lazy(n: number): Generator<AuditEntry> {
      let prev = GENESIS_HASH;
      for (let seq = 1; seq <= n; seq++) {
        const f = { seq, at: seq, event: 'token.created' as const, actor: 'cli', nodeId: null, org: null, reason: null, detail: '{}' };
        const hash = auditHash(prev, f);
        yield { ...f, prevHash: prev, hash };
        prev = hash;
      }
    }
    expect(verifyAuditChain(lazy(20_000))).toMatchObject({ ok: true, count: 20_000 });
  });

  it('reports reordered, duplicated, missing and edited entries', () => {
    const c = chain(6);
    const [e1, e2, e3, e4, e5, e6] = c as [AuditEntry, AuditEntry, AuditEntry, AuditEntry, AuditEntry, AuditEntry];
    expect(verifyAuditChain([e1, e2, e4, e3, e5, e6])).toEqual({ ok: false, firstBadSeq: 3, reason: 'seq_gap' });
    expect(verifyAuditChain([e1, e2, e3, e2, e4])).toEqual({ ok: false, firstBadSeq: 4, reason: 'seq_order' });
    expect(verifyAuditChain([e2, e3])).toEqual({ ok: false, firstBadSeq: 1, reason: 'seq_gap' });
    expect(verifyAuditChain([e1, { ...e3, seq: 2 }])).toEqual({ ok: false, firstBadSeq: 2, reason: 'prev_mismatch' });
    expect(verifyAuditChain([e1, e2, { ...e3, actor: 'mallory' }])).toEqual({ ok: false, firstBadSeq: 3, reason: 'hash_mismatch' });
    expect(verifyAuditChain([e1, { ...e2, hash: e2.hash.toUpperCase() }])).toEqual({ ok: false, firstBadSeq: 2, reason: 'hash_mismatch' });
  });

  it('verifies a tail from a trusted checkpoint', () => {
    const c = chain(6);
    expect(verifyAuditChain(c.slice(3), { seq: 3, hash: c[2]!.hash })).toEqual({ ok: true, count: 3, headHash: c[5]!.hash });
    expect(verifyAuditChain(c.slice(3), { seq: 3, hash: c[1]!.hash })).toEqual({ ok: false, firstBadSeq: 4, reason: 'prev_mismatch' });
  });
});

describe('tampering with a real SQLite audit log', () => {
  let dir: string;
  let path: string;
  let pristine: { count: number; headHash: string };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sepal-audit-'));
    path = join(dir, 'hub.db');
    const store = SqliteStore.open(path);
    // 12 entries of mixed kinds
    for (let i = 0; i < 3; i++) {
      const id = `n${i}`;
      const s = serialFor(`${id}/enroll`);
      await store.enrollNode(newNode(id), newCert(s, id, 'org-a', 'enroll'), enrolledAudit(id, 'org-a', s), T0 + i);
      const r = serialFor(`${id}/renew`);
      await store.recordRenewal(newCert(r, id, 'org-a', 'renew'), renewedAudit(id, 'org-a', r), T0 + 10 + i);
    }
    await store.revokeNode('n1', { event: 'node.revoked', actor: 'cli', detail: { why: 'lost laptop' } }, T0 + 20);
    for (let i = 0; i < 5; i++) {
      await store.appendAudit({ event: 'security.denied', actor: 'peer:10.0.0.9', reason: 'CLIENT_CERT_UNKNOWN', detail: { i } }, T0 + 30 + i);
    }
    const v = verifyAuditChain(store.iterateAudit());
    await store.close();
    if (!v.ok) throw new Error('fixture chain does not verify');
    expect(v.count).toBe(12);
    pristine = v;
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Raw SQL as an attacker with the file would run it: first drop the append-only triggers. */
  function tamper(fn: (db: DatabaseSync) => void): void {
    const db = new DatabaseSync(path);
    try {
      db.exec('DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;');
      fn(db);
    } finally {
      db.close();
    }
  }

  async function verifyFile(): Promise<ReturnType<typeof verifyAuditChain>> {
    const store = SqliteStore.open(path, { readonly: true });
    try {
      return verifyAuditChain(store.iterateAudit(0, 5)); // small pages: breaks span page boundaries
    } finally {
      await store.close();
    }
  }

  it('an untouched log verifies', async () => {
    expect(await verifyFile()).toEqual({ ok: true, count: 12, headHash: pristine.headHash });
  });

  it('detects an edited detail', async () => {
    tamper((db) => db.exec(`UPDATE audit SET detail = '{"why":"routine"}' WHERE seq = 7`));
    expect(await verifyFile()).toEqual({ ok: false, firstBadSeq: 7, reason: 'hash_mismatch' });
  });

  it('detects an edited row whose hash was recomputed (the next row no longer links)', async () => {
    tamper((db) => {
      const row = db.prepare('SELECT * FROM audit WHERE seq = 7').get()!;
      const forged = {
        seq: 7, at: row['at'] as number, event: row['event'] as string, actor: 'cli', nodeId: row['node_id'] as string | null,
        org: row['org'] as string | null, reason: row['reason'] as string | null, detail: '{"why":"routine"}',
      };
      db.prepare('UPDATE audit SET detail = ?, hash = ? WHERE seq = 7').run(forged.detail, auditHash(row['prev_hash'] as string, forged));
    });
    expect(await verifyFile()).toEqual({ ok: false, firstBadSeq: 8, reason: 'prev_mismatch' });
  });

  it('detects a deleted middle row', async () => {
    tamper((db) => db.exec('DELETE FROM audit WHERE seq = 5'));
    expect(await verifyFile()).toEqual({ ok: false, firstBadSeq: 5, reason: 'seq_gap' });
  });

  it('detects a deleted row when the later seqs were renumbered to close the gap', async () => {
    tamper((db) => {
      db.exec('DELETE FROM audit WHERE seq = 5');
      for (let seq = 6; seq <= 12; seq++) db.prepare('UPDATE audit SET seq = ? WHERE seq = ?').run(seq - 1, seq);
    });
    expect(await verifyFile()).toEqual({ ok: false, firstBadSeq: 5, reason: 'prev_mismatch' });
  });

  it('detects a deleted first row', async () => {
    tamper((db) => db.exec('DELETE FROM audit WHERE seq = 1'));
    expect(await verifyFile()).toEqual({ ok: false, firstBadSeq: 1, reason: 'seq_gap' });
  });

  it('detects two rows whose contents were swapped', async () => {
    tamper((db) => {
      const cols = ['at', 'event', 'actor', 'node_id', 'org', 'reason', 'detail', 'prev_hash', 'hash'];
      const get = (seq: number) => {
        const row = db.prepare(`SELECT ${cols.join(', ')} FROM audit WHERE seq = ?`).get(seq)!;
        return cols.map((c) => row[c] as SQLOutputValue);
      };
      const set = db.prepare(`UPDATE audit SET ${cols.map((c) => `${c} = ?`).join(', ')} WHERE seq = ?`);
      const [a, b] = [get(3), get(8)];
      set.run(...b, 3);
      set.run(...a, 8);
    });
    expect(await verifyFile()).toEqual({ ok: false, firstBadSeq: 3, reason: 'prev_mismatch' });
  });

  it('detects swapped contents when the hash columns were left in place', async () => {
    tamper((db) => {
      const cols = ['at', 'event', 'actor', 'node_id', 'org', 'reason', 'detail'];
      const get = (seq: number) => {
        const row = db.prepare(`SELECT ${cols.join(', ')} FROM audit WHERE seq = ?`).get(seq)!;
        return cols.map((c) => row[c] as SQLOutputValue);
      };
      const set = db.prepare(`UPDATE audit SET ${cols.map((c) => `${c} = ?`).join(', ')} WHERE seq = ?`);
      const [a, b] = [get(2), get(4)];
      set.run(...b, 2);
      set.run(...a, 4);
    });
    expect(await verifyFile()).toEqual({ ok: false, firstBadSeq: 2, reason: 'hash_mismatch' });
  });

  it('cannot see a truncated tail by itself: compare the head hash with a copy kept elsewhere', async () => {
    tamper((db) => db.exec('DELETE FROM audit WHERE seq >= 11'));
    const v = await verifyFile();
    expect(v).toMatchObject({ ok: true, count: 10 });
    expect(v.ok && v.headHash).not.toBe(pristine.headHash);
  });
});
