// The real `sepal-hub` CLI as child processes on this Node: init, serve (two hubs side by side,
// graceful SIGTERM with a manifest stream open), audit verify against a tampered store, the node
// and keys commands, usage errors and a broken config file.
import { afterAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { DatabaseSync } from 'node:sqlite';
import { ErrorCodes } from '../../proto/errors.ts';
import { derToPem } from '../../hub/ca/pem.ts';
import { pemToDerList } from '../../hub/ca/bootstrap.ts';
import { hubPaths, type HubPaths } from '../../hub/datadir.ts';
import { silentLogger } from '../../hub/log.ts';
import { openHub, type OpenHub } from '../../hub/runtime.ts';
import { enrollNode } from '../../hub/service/issuance.ts';
import { makeCsr, newKey } from '../helpers/csr.ts';
import {
  REPO, type ServeChild, cli, clientAt, freePorts, httpsRequest, metricValue, sha256, spawnServe, tempDir, watchManifest,
} from '../helpers/hub.ts';

const run = promisify(execFile);
const MAIN = path.join(REPO, 'hub/cli/main.ts');
const MANIFEST = {
  superlink: { address: 'superlink.example.org:9092' },
  supernode: { nodeConfig: { 'partition-id': 0 } },
  datasets: [],
  privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
};

const work = tempDir('sepal-cli-');
const children: ServeChild[] = [];
afterAll(async () => {
  for (const c of children) {
    if (c.child.exitCode === null && c.child.signalCode === null && c.child.pid !== undefined) process.kill(c.child.pid, 'SIGKILL');
    await c.exited;
  }
  fs.rmSync(work, { recursive: true, force: true });
});

let seq = 0;
function newDir(): string {
  return path.join(work, `hub-${++seq}`);
}

async function init(dir: string, ...extra: string[]): Promise<HubPaths> {
  const r = await cli(['init', '--data-dir', dir, '--hostname', 'localhost,127.0.0.1', ...extra]);
  expect(r.code, r.stderr).toBe(0);
  return hubPaths(dir);
}

async function withHub<T>(paths: HubPaths, fn: (hub: OpenHub) => Promise<T>): Promise<T> {
  const hub = await openHub(paths, { log: silentLogger() });
  try {
    return await fn(hub);
  } finally {
    await hub.close();
  }
}

/** Enrolls in this process on the same data dir, as an admin tool next to a running hub would. */
async function enroll(paths: HubPaths, org: string) {
  const key = newKey();
  return withHub(paths, async (hub) => {
    const { node, credentials } = await enrollNode(hub.ctx, { org, name: `${org}-host`, csr: makeCsr(key), facts: null, flowerPublicKey: null, actor: 'test' });
    const certPem = derToPem(credentials.certDer, 'CERTIFICATE');
    return { id: node.id, serial: credentials.serial, key, certPem, chainPem: certPem + credentials.chainDer.map((d) => derToPem(d, 'CERTIFICATE')).join('') };
  });
}

/** relative path -> sha256 and mode of every file and directory under dir. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of fs.readdirSync(dir, { recursive: true }) as string[]) {
    const p = path.join(dir, rel);
    const st = fs.statSync(p);
    out[rel] = `${(st.mode & 0o7777).toString(8)} ${st.isDirectory() ? 'dir' : sha256(fs.readFileSync(p))}`;
  }
  return out;
}

function mode(p: string): string {
  return (fs.statSync(p).mode & 0o777).toString(8).padStart(4, '0');
}

function rootDer(paths: HubPaths): Buffer {
  return pemToDerList(fs.readFileSync(paths.rootCert, 'utf8'))[0] as Buffer;
}

function auditRows(paths: HubPaths): Array<{ seq: number; event: string; node_id: string | null; actor: string }> {
  const db = new DatabaseSync(paths.db, { readOnly: true });
  try {
    return db.prepare('SELECT seq, event, node_id, actor FROM audit ORDER BY seq').all() as Array<{ seq: number; event: string; node_id: string | null; actor: string }>;
  } finally {
    db.close();
  }
}

describe('init', () => {
  it('prints the root CA fingerprint, which is the SHA-256 of ca/root.crt\'s DER (text and --json)', async () => {
    const d1 = newDir();
    const text = await cli(['init', '--data-dir', d1, '--hostname', 'localhost,127.0.0.1']);
    expect(text.code, text.stderr).toBe(0);
    const fp1 = sha256(rootDer(hubPaths(d1)));
    expect(text.stdout).toContain(fp1);
    expect(text.stdout).toMatch(new RegExp(`^\\s*${fp1}\\s*$`, 'm'));

    const d2 = newDir();
    const j = await cli(['init', '--data-dir', d2, '--hostname', 'hub.example.org', '--federation-id', 'fed-cli', '--json']);
    expect(j.code, j.stderr).toBe(0);
    const r = JSON.parse(j.stdout) as { dataDir: string; rootFingerprint: string; federationId: string; kid: string };
    expect(r.rootFingerprint).toBe(sha256(rootDer(hubPaths(d2))));
    expect(r.rootFingerprint).toBe(new crypto.X509Certificate(rootDer(hubPaths(d2))).fingerprint256.replaceAll(':', '').toLowerCase());
    expect(r.rootFingerprint).not.toBe(fp1);
    expect(r.dataDir).toBe(path.resolve(d2));
    expect(r.federationId).toBe('fed-cli');
    expect(fs.existsSync(path.join(hubPaths(d2).manifestKeysDir, `${r.kid}.key.pem`))).toBe(true);
  });

  it('refuses a second init on the same data dir with DATA_DIR_EXISTS and leaves every file as it was', async () => {
    const dir = newDir();
    const paths = await init(dir);
    const before = snapshot(dir);
    expect(Object.keys(before)).toEqual(expect.arrayContaining(['hub.json', 'hub.db', 'ca/root.key', 'ca/root.crt', 'tls/server.key']));
    for (const args of [['--hostname', 'localhost,127.0.0.1'], ['--hostname', 'other.example.org', '--federation-id', 'other', '--json']]) {
      const r = await cli(['init', '--data-dir', dir, ...args]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error DATA_DIR_EXISTS\b/m);
      expect(snapshot(dir)).toEqual(before);
    }
    // a new data dir whose --config would overwrite an existing file: refused before anything is made
    const fresh = newDir();
    const r = await cli(['init', '--data-dir', fresh, '--hostname', 'localhost', '--config', paths.config]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error DATA_DIR_EXISTS\b/m);
    expect(fs.existsSync(fresh)).toBe(false);
    expect(snapshot(dir)).toEqual(before);
  });

  it('makes keys 0600, the data dir 0700 and hub.db 0600, even under umask 000', async () => {
    const dir = newDir();
    await run('sh', ['-c', 'umask 000 && exec "$0" "$@"', process.execPath, MAIN, 'init', '--data-dir', dir, '--hostname', 'localhost']);
    const paths = hubPaths(dir);
    expect(mode(dir)).toBe('0700');
    expect(mode(paths.db)).toBe('0600');
    expect(mode(paths.config)).toBe('0600');
    const keys = [paths.rootKey, paths.issuingKey, paths.serverKey,
      ...fs.readdirSync(paths.manifestKeysDir).filter((f) => f.endsWith('.key.pem')).map((f) => path.join(paths.manifestKeysDir, f))];
    expect(keys).toHaveLength(4);
    for (const k of keys) expect(mode(k), k).toBe('0600');
    for (const d of [path.dirname(paths.rootKey), path.dirname(paths.serverKey), paths.manifestKeysDir]) expect(mode(d), d).toBe('0700');
    // nothing in the data dir is writable by group or others
    for (const rel of fs.readdirSync(dir, { recursive: true }) as string[]) {
      expect(fs.statSync(path.join(dir, rel)).mode & 0o022, rel).toBe(0);
    }
  });
});

describe('serve', () => {
  it('two hubs run side by side; SIGTERM ends an open manifest stream with UNAVAILABLE / SHUTTING_DOWN and exits 0', async () => {
    const hubs = [];
    for (let i = 0; i < 2; i++) {
      const paths = await init(newDir());
      const [g = 0, h = 0] = await freePorts(2);
      const child = spawnServe(['--data-dir', paths.dataDir, '--grpc-addr', `127.0.0.1:${g}`, '--https-addr', `127.0.0.1:${h}`]);
      children.push(child);
      const ready = await child.ready;
      expect(ready).toEqual({ grpcPort: g, httpsPort: h, rootFingerprint: sha256(rootDer(paths)) });
      hubs.push({ paths, child, grpcPort: g, httpsPort: h, rootPem: fs.readFileSync(paths.rootCert, 'utf8'), caPem: fs.readFileSync(paths.rootCert, 'utf8') + fs.readFileSync(paths.issuingCert, 'utf8') });
    }
    const [a, b] = hubs as [NonNullable<(typeof hubs)[0]>, NonNullable<(typeof hubs)[0]>];
    expect(a.httpsPort).not.toBe(b.httpsPort);
    for (const h of hubs) {
      // trusting only that hub's root: each answers, and each is its own CA
      const r = await httpsRequest(`https://localhost:${h.httpsPort}/healthz`, h.rootPem);
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body.toString())).toEqual({ status: 'ok' });
      const other = h === a ? b : a;
      await expect(httpsRequest(`https://localhost:${h.httpsPort}/healthz`, other.rootPem)).rejects.toThrow();
    }

    // a node of hub a, enrolled by another process on the same data dir while a serves
    const node = await enroll(a.paths, 'org-sig');
    const c = clientAt(`localhost:${a.grpcPort}`, a.caPem, { keyPem: node.key.keyPem, certChainPem: node.chainPem });
    const w = watchManifest(c);
    await expect.poll(async () => metricValue((await httpsRequest(`https://localhost:${a.httpsPort}/metrics`, a.rootPem)).body.toString(), 'sepal_hub_manifest_streams_open'), { timeout: 10_000 }).toBe(1);

    a.child.child.kill('SIGTERM');
    expect(await w.ended).toEqual({ status: grpc.status.UNAVAILABLE, code: ErrorCodes.SHUTTING_DOWN });
    c.close();
    const exit = await a.child.exited;
    expect(exit.code, exit.stderr).toBe(0);
    expect(exit.signal).toBeNull();
    const events = exit.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { event?: string }).event);
    expect(events).toEqual(expect.arrayContaining(['hub.ready', 'hub.stopping', 'hub.stopped']));

    const verify = await cli(['audit', 'verify', '--data-dir', a.paths.dataDir, '--json']);
    expect(verify.code, verify.stderr).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, entries: auditRows(a.paths).length });

    // the other hub was not disturbed, and stops the same way on SIGINT
    expect((await httpsRequest(`https://localhost:${b.httpsPort}/healthz`, b.rootPem)).status).toBe(200);
    b.child.child.kill('SIGINT');
    const exitB = await b.child.exited;
    expect(exitB.code, exitB.stderr).toBe(0);
  });

  it('an HTTPS port already in use: serve exits 1 with LISTEN_FAILED and leaves no listener behind', async () => {
    const paths = await init(newDir());
    const [g = 0] = await freePorts(1);
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve()));
    const a = blocker.address();
    const taken = typeof a === 'object' && a !== null ? a.port : 0;
    try {
      const child = spawnServe(['--data-dir', paths.dataDir, '--grpc-addr', `127.0.0.1:${g}`, '--https-addr', `127.0.0.1:${taken}`]);
      children.push(child);
      const exit = await child.exited;
      expect(exit.code).toBe(1);
      expect(exit.stderr).toMatch(/^error LISTEN_FAILED\b/m);
      // the gRPC port it had opened is free again
      const probe = net.createServer();
      await new Promise<void>((resolve, reject) => { probe.once('error', reject); probe.listen(g, '127.0.0.1', () => resolve()); });
      await new Promise<void>((resolve) => probe.close(() => resolve()));
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  it('a config file with an unknown key or a wrong type: serve exits 1 with CONFIG_INVALID naming the option path', async () => {
    const paths = await init(newDir());
    const good = JSON.parse(fs.readFileSync(paths.config, 'utf8')) as Record<string, Record<string, unknown>>;
    const cases: Array<[string, (c: Record<string, Record<string, unknown>>) => void]> = [
      ['grpc.listenAddress', (c) => { (c['grpc'] as Record<string, unknown>)['listenAddress'] = '0.0.0.0:1'; }],
      ['tls', (c) => { c['tls'] = {}; }],
      ['limits.maxMessageBytes', (c) => { (c['limits'] as Record<string, unknown>)['maxMessageBytes'] = '64k'; }],
      ['certificates.leafLifetimeSeconds', (c) => { (c['certificates'] as Record<string, unknown>)['leafLifetimeSeconds'] = 59; }],
    ];
    for (const [where, breakIt] of cases) {
      const bad = structuredClone(good);
      breakIt(bad);
      fs.writeFileSync(paths.config, JSON.stringify(bad));
      const [g = 0, h = 0] = await freePorts(2);
      const child = spawnServe(['--data-dir', paths.dataDir, '--grpc-addr', `127.0.0.1:${g}`, '--https-addr', `127.0.0.1:${h}`]);
      children.push(child);
      const exit = await child.exited;
      expect(exit.code, where).toBe(1);
      const line = exit.stderr.split('\n').find((l) => l.startsWith('error ')) ?? '';
      expect(line, where).toMatch(/^error CONFIG_INVALID\b/);
      expect(line, where).toContain(`${where}:`);
      // admin commands refuse the same file
      const list = await cli(['node', 'list', '--data-dir', paths.dataDir]);
      expect(list.code).toBe(1);
      expect(list.stderr).toMatch(/^error CONFIG_INVALID\b/m);
    }
    fs.writeFileSync(paths.config, '{ not json');
    const exit = await cli(['serve', '--data-dir', paths.dataDir]);
    expect(exit.code).toBe(1);
    expect(exit.stderr).toMatch(/^error CONFIG_INVALID\b/m);
  });
});

describe('audit verify', () => {
  it('passes on a clean log and names the first bad entry after the SQLite file is edited', async () => {
    const paths = await init(newDir());
    const n1 = await enroll(paths, 'org-audit');
    await enroll(paths, 'org-audit');
    expect((await cli(['node', 'revoke', n1.id, '--data-dir', paths.dataDir])).code).toBe(0);
    const rows = auditRows(paths);
    expect(rows.length).toBeGreaterThanOrEqual(4);

    const clean = await cli(['audit', 'verify', '--data-dir', paths.dataDir]);
    expect(clean.code, clean.stderr).toBe(0);
    const cleanJson = await cli(['audit', 'verify', '--data-dir', paths.dataDir, '--json']);
    expect(cleanJson.code).toBe(0);
    const ok = JSON.parse(cleanJson.stdout) as { ok: boolean; entries: number; headHash: string };
    expect(ok).toMatchObject({ ok: true, entries: rows.length });
    expect(ok.headHash).toMatch(/^[0-9a-f]{64}$/);

    const target = rows[1] as { seq: number; actor: string };
    const db = new DatabaseSync(paths.db);
    try {
      // the store's triggers stop an UPDATE by mistake; an attacker drops them first
      expect(() => db.prepare('UPDATE audit SET actor = ? WHERE seq = ?').run('mallory', target.seq)).toThrow();
      db.exec('DROP TRIGGER audit_no_update');
      db.prepare('UPDATE audit SET actor = ? WHERE seq = ?').run('mallory', target.seq);
    } finally {
      db.close();
    }
    const broken = await cli(['audit', 'verify', '--data-dir', paths.dataDir]);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/^error AUDIT_CHAIN_BROKEN\b/m);
    const brokenJson = await cli(['audit', 'verify', '--data-dir', paths.dataDir, '--json']);
    expect(brokenJson.code).toBe(1);
    expect(brokenJson.stderr).toContain(ErrorCodes.AUDIT_CHAIN_BROKEN);
    expect(JSON.parse(brokenJson.stdout)).toMatchObject({ ok: false, firstBadSeq: target.seq, reason: 'hash_mismatch' });

    // undo the edit: the chain verifies again, so it was exactly that edit that was caught
    const undo = new DatabaseSync(paths.db);
    try {
      undo.prepare('UPDATE audit SET actor = ? WHERE seq = ?').run(target.actor, target.seq);
      // now remove a later row instead
      undo.exec('DROP TRIGGER audit_no_delete');
    } finally {
      undo.close();
    }
    expect((await cli(['audit', 'verify', '--data-dir', paths.dataDir])).code).toBe(0);
    const removed = rows[2] as { seq: number };
    const del = new DatabaseSync(paths.db);
    try {
      del.prepare('DELETE FROM audit WHERE seq = ?').run(removed.seq);
    } finally {
      del.close();
    }
    const gap = await cli(['audit', 'verify', '--data-dir', paths.dataDir, '--json']);
    expect(gap.code).toBe(1);
    expect(gap.stderr).toContain(ErrorCodes.AUDIT_CHAIN_BROKEN);
    expect(JSON.parse(gap.stdout)).toMatchObject({ ok: false, firstBadSeq: removed.seq });
  });
});

describe('node and keys commands', () => {
  it('node list / show / revoke, and NOT_FOUND for an unknown node', async () => {
    const paths = await init(newDir());
    const x = await enroll(paths, 'org-x');
    const y = await enroll(paths, 'org-y');

    const list = await cli(['node', 'list', '--data-dir', paths.dataDir, '--json']);
    expect(list.code, list.stderr).toBe(0);
    const nodes = (JSON.parse(list.stdout) as { nodes: Array<{ id: string; org: string; state: string; certSerial: string }> }).nodes;
    expect(nodes.map((n) => [n.id, n.org, n.state, n.certSerial])).toEqual([[x.id, 'org-x', 'active', x.serial], [y.id, 'org-y', 'active', y.serial]]);
    const onlyY = JSON.parse((await cli(['node', 'list', '--data-dir', paths.dataDir, '--org', 'org-y', '--json'])).stdout) as { nodes: Array<{ id: string }> };
    expect(onlyY.nodes.map((n) => n.id)).toEqual([y.id]);
    const table = await cli(['node', 'list', '--data-dir', paths.dataDir]);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain(x.id);
    expect(table.stdout).toContain(y.id);

    for (const extra of [[], ['--json']]) {
      const show = await cli(['node', 'show', x.id, '--data-dir', paths.dataDir, ...extra]);
      expect(show.code, show.stderr).toBe(0);
      expect(JSON.parse(show.stdout)).toMatchObject({ id: x.id, org: 'org-x', state: 'active', certSerial: x.serial, revokedAt: null });
    }

    const first = await cli(['node', 'revoke', x.id, '--data-dir', paths.dataDir]);
    expect(first.code, first.stderr).toBe(0);
    const shown = JSON.parse((await cli(['node', 'show', x.id, '--data-dir', paths.dataDir, '--json'])).stdout) as { state: string; revokedAt: string | null };
    expect(shown.state).toBe('revoked');
    expect(shown.revokedAt).not.toBeNull();
    expect(fs.readFileSync(paths.crlPem, 'utf8')).toContain('BEGIN X509 CRL');
    const second = await cli(['node', 'revoke', x.id, '--data-dir', paths.dataDir]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toContain('already revoked');
    expect(first.stdout).not.toContain('already revoked');
    expect(auditRows(paths).filter((e) => e.event === 'node.revoked' && e.node_id === x.id)).toHaveLength(1);
    // the other node is untouched
    expect((JSON.parse((await cli(['node', 'show', y.id, '--data-dir', paths.dataDir, '--json'])).stdout) as { state: string }).state).toBe('active');

    for (const sub of ['show', 'revoke']) {
      const r = await cli(['node', sub, 'n-0000000000000000', '--data-dir', paths.dataDir]);
      expect(r.code, sub).toBe(1);
      expect(r.stderr, sub).toMatch(/^error NOT_FOUND\b/m);
      expect(r.stdout, sub).toBe('');
    }
  });

  it('keys list --json: the active key, and retired keys published only while manifests they signed live', async () => {
    const paths = await init(newDir());
    const node = await enroll(paths, 'org-keys');
    const listKeys = async () => {
      const r = await cli(['keys', 'list', '--data-dir', paths.dataDir, '--json']);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { keys: Array<{ kid: string; active: boolean; published: boolean; retiredAt: string | null }> }).keys;
    };
    const k0 = await listKeys();
    expect(k0).toHaveLength(1);
    expect(k0[0]).toMatchObject({ active: true, published: true, retiredAt: null });
    const first = k0[0]?.kid ?? '';

    // the first key signs a manifest, then two rotations: the middle key signs nothing
    const file = path.join(paths.dataDir, 'm.json');
    fs.writeFileSync(file, JSON.stringify(MANIFEST));
    expect((await cli(['manifest', 'publish', '--data-dir', paths.dataDir, '--node', node.id, '--file', file])).code).toBe(0);
    const rot1 = JSON.parse((await cli(['keys', 'rotate', '--data-dir', paths.dataDir, '--json'])).stdout) as { kid: string; previous: string };
    expect(rot1.previous).toBe(first);
    const rot2 = JSON.parse((await cli(['keys', 'rotate', '--data-dir', paths.dataDir, '--json'])).stdout) as { kid: string; previous: string };
    expect(rot2.previous).toBe(rot1.kid);

    const byKid = new Map((await listKeys()).map((k) => [k.kid, k]));
    expect(byKid.size).toBe(3);
    expect(byKid.get(rot2.kid)).toMatchObject({ active: true, published: true, retiredAt: null });
    expect(byKid.get(first)).toMatchObject({ active: false, published: true });
    expect(byKid.get(first)?.retiredAt).not.toBeNull();
    expect(byKid.get(rot1.kid)).toMatchObject({ active: false, published: false });
    // exactly one active key
    expect([...byKid.values()].filter((k) => k.active)).toHaveLength(1);
  });
});

describe('usage errors', () => {
  it('exit 2 with a usage message, and create nothing', async () => {
    const paths = await init(newDir());
    const fresh = newDir();
    const file = path.join(work, 'usage-m.json');
    fs.writeFileSync(file, JSON.stringify(MANIFEST));
    const cases: string[][] = [
      [],
      ['frobnicate'],
      ['node'],
      ['node', 'frob', '--data-dir', paths.dataDir],
      ['node', 'list'],
      ['node', 'list', '--data-dir', paths.dataDir, '--bogus'],
      ['node', 'show', '--data-dir', paths.dataDir],
      ['node', 'revoke', '--data-dir', paths.dataDir],
      ['keys', '--data-dir', paths.dataDir],
      ['audit', '--data-dir', paths.dataDir],
      ['audit', 'verify'],
      ['manifest', 'publish', '--data-dir', paths.dataDir, '--file', file],
      ['manifest', 'publish', '--data-dir', paths.dataDir, '--file', file, '--node', 'n-0000000000000000', '--org', 'o'],
      ['manifest', 'publish', '--data-dir', paths.dataDir, '--node', 'n-0000000000000000'],
      ['init', '--data-dir', fresh],
      ['init', '--data-dir', fresh, '--hostname', ','],
      ['init', '--data-dir', fresh, '--hostname', 'localhost', '--grpc-listen', 'nope'],
      ['init', '--data-dir', fresh, '--hostname', 'localhost', '--https-listen', '127.0.0.1:70000'],
      ['init', '--data-dir', fresh, '--hostname', 'localhost', '--leaf-lifetime', '24x'],
      ['init', '--data-dir', fresh, '--hostname'],
      ['serve', '--data-dir', paths.dataDir, '--grpc-addr', 'nope'],
    ];
    const before = snapshot(paths.dataDir);
    // a few at a time: each is a Node process
    const results: Array<Awaited<ReturnType<typeof cli>>> = [];
    for (let i = 0; i < cases.length; i += 4) results.push(...await Promise.all(cases.slice(i, i + 4).map((args) => cli(args))));
    results.forEach((r, i) => {
      const args = cases[i] ?? [];
      const what = JSON.stringify(args);
      expect(r.code, `${what}: ${r.stderr}`).toBe(2);
      // no command at all prints the help; everything else says what was wrong on stderr
      if (args.length === 0) expect(r.stdout, what).toContain('Usage:');
      else expect(r.stderr, what).toMatch(/^usage error: /);
    });
    expect(fs.existsSync(fresh)).toBe(false);
    expect(snapshot(paths.dataDir)).toEqual(before);
    // help is not an error
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('sepal-hub init');
  });
});
