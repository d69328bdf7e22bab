// Migration 4 (Flower registration) on a store written by the previous version, and the schema's
// own guards on Flower node ids. The behaviour of the store methods is in store.contract.ts.
import fs from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { applyMigrations, MIGRATIONS } from '../../hub/store/migrations.ts';
import { SqliteStore } from '../../hub/store/sqlite.ts';
import { tempDir } from '../helpers/hub.ts';
import { T0 } from './store.fixtures.ts';

let dir: string;
beforeEach(() => { dir = tempDir('sepal-flower-store-'); });
afterEach(() => { fs.rmSync(dir, { recursive: true, force: true }); });

describe('migration 4: flower registration', () => {
  it('queues the active nodes that have a Flower key; revoked and keyless nodes get no registration', async () => {
    const file = path.join(dir, 'hub.db');
    const db = new DatabaseSync(file);
    applyMigrations(db, MIGRATIONS.filter((m) => m.version <= 3), T0);
    const insert = db.prepare(`INSERT INTO nodes (id, org, name, state, created_at, revoked_at, flower_public_key) VALUES (?, 'org-a', 'n', ?, ?, ?, ?)`);
    insert.run('n-active', 'active', T0 + 1, null, 'ecdsa-sha2-nistp384 AAAA1');
    insert.run('n-keyless', 'active', T0 + 2, null, null);
    insert.run('n-revoked', 'revoked', T0 + 3, T0 + 4, 'ecdsa-sha2-nistp384 AAAA2');
    db.close();

    const store = SqliteStore.open(file);
    try {
      expect((await store.getNode('n-active'))!.flower).toEqual({ state: 'pending', flowerNodeId: null, attempts: 0, lastError: null, lastErrorMessage: null, nextAttemptAt: 0, since: T0 + 1 });
      expect((await store.getNode('n-keyless'))!.flower).toBeNull();
      expect((await store.getNode('n-revoked'))!.flower).toBeNull();
      expect((await store.dueFlowerWork(T0, 10)).map((w) => w.nodeId)).toEqual(['n-active']);
    } finally {
      await store.close();
    }
  });

  it('the schema itself refuses a Flower node id that is not canonical decimal, and an unknown state', async () => {
    const file = path.join(dir, 'hub.db');
    await SqliteStore.open(file).close();
    const db = new DatabaseSync(file);
    try {
      db.prepare(`INSERT INTO nodes (id, org, name, state, created_at) VALUES ('n1', 'o', 'n', 'active', 1)`).run();
      const set = db.prepare('UPDATE nodes SET flower_node_id = ? WHERE id = ?');
      for (const bad of ['0', '01', '-5', '1.5', 'abc', '123456789012345678901']) expect(() => set.run(bad, 'n1'), bad).toThrow(/CHECK constraint/);
      set.run('18446744073709551615', 'n1');
      expect(() => db.prepare(`UPDATE nodes SET flower_state = 'registering' WHERE id = 'n1'`).run()).toThrow(/CHECK constraint/);
    } finally {
      db.close();
    }
  });
});
