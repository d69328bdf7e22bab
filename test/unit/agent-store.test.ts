// The identity on disk: files and modes, node.json, the state lock, and the swap that replaces an
// identity as a whole. A crash is simulated at every filesystem step of the swap (that step and all
// later ones fail, as in a dead process); after recovery the identity is entirely the old one or
// entirely the new one, never a mix, and no staging or retired dir is left behind.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ErrorCodes } from '../../proto/errors.ts';
import {
  defaultStateDir, IDENTITY_FILES, installIdentity, lockState, readNodeRecord, realFs, recoverState, statePaths, storeManifest,
  type IdentityFiles, type StatePaths, type StoreFs,
} from '../../agent/enroll/store.ts';

let tmp: string;
let paths: StatePaths;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-agent-store-'));
  paths = statePaths(path.join(tmp, 'state'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

function identity(tag: string, nodeId: string): IdentityFiles {
  return {
    tlsKeyPem: `tls key ${tag}\n`,
    tlsCertPem: `tls cert ${tag}\n`,
    chainPem: `chain ${tag}\n`,
    caPem: `ca ${tag}\n`,
    flowerKey: `flower key ${tag}\n`,
    flowerPub: `ecdsa-sha2-nistp384 ${tag}`,
    node: {
      nodeId, org: 'org-a', name: 'host', hubUrl: 'https://hub:8444/', grpcAddress: 'hub:8443',
      caSha256: 'ab'.repeat(32), federationId: 'fed', enrolledAt: new Date().toISOString(),
    },
  };
}

const OLD = identity('old', 'n-0000000000000001');
const NEW = identity('new', 'n-0000000000000002');

/** Which identity the dir holds: 'old', 'new', 'none', or 'mixed' when files disagree. */
function whichIdentity(): string {
  if (!fs.existsSync(paths.identity)) return 'none';
  const tags = new Set<string>();
  for (const f of Object.values(IDENTITY_FILES)) {
    const p = path.join(paths.identity, f);
    if (!fs.existsSync(p)) {
      tags.add('missing');
      continue;
    }
    const text = fs.readFileSync(p, 'utf8');
    if (f === IDENTITY_FILES.node) tags.add(text.includes(OLD.node.nodeId) ? 'old' : text.includes(NEW.node.nodeId) ? 'new' : '?');
    else tags.add(/\bold\b/.test(text) ? 'old' : /\bnew\b/.test(text) ? 'new' : '?');
  }
  return tags.size === 1 ? [...tags][0] ?? 'mixed' : 'mixed';
}

function leftovers(): string[] {
  return fs.existsSync(paths.root) ? fs.readdirSync(paths.root).filter((n) => n.startsWith('.identity-')) : [];
}

/** realFs until operation number `failAt` (1-based); that one and every later one throw, like a
 *  process that died there. A write that "dies" leaves a half-written temp file, as a crash would. */
function crashingFs(failAt: number): { fs: StoreFs; ops: () => number } {
  let n = 0;
  const step = (): void => {
    n++;
    if (n >= failAt) throw new Error(`simulated crash at step ${n}`);
  };
  return {
    ops: () => n,
    fs: {
      writeFile: (file, data, mode) => {
        try {
          step();
        } catch (e) {
          if (n === failAt) fs.writeFileSync(path.join(path.dirname(file), `.${path.basename(file)}.dead00000000.tmp`), data.slice(0, 3));
          throw e;
        }
        realFs.writeFile(file, data, mode);
      },
      mkdirPrivate: (dir) => { step(); realFs.mkdirPrivate(dir); },
      rename: (a, b) => { step(); realFs.rename(a, b); },
      removeTree: (p) => { step(); realFs.removeTree(p); },
      fsyncDir: (d) => { step(); realFs.fsyncDir(d); },
    },
  };
}

function mode(p: string): number {
  return fs.statSync(p).mode & 0o777;
}

describe('installIdentity', () => {
  it('writes every file with its mode, in a 0700 identity dir under a 0700 state dir', () => {
    installIdentity(paths, NEW);
    expect(whichIdentity()).toBe('new');
    expect(mode(paths.root)).toBe(0o700);
    expect(mode(paths.identity)).toBe(0o700);
    const modes = Object.fromEntries(Object.values(IDENTITY_FILES).map((f) => [f, mode(path.join(paths.identity, f))]));
    expect(modes).toEqual({
      'tls.key': 0o600, 'tls.crt': 0o644, 'chain.pem': 0o644, 'ca.pem': 0o644, 'flower.key': 0o600, 'flower.pub': 0o644, 'node.json': 0o644,
    });
    expect(readNodeRecord(paths.nodeJson)).toEqual(NEW.node);
    expect(fs.readFileSync(path.join(paths.identity, 'flower.pub'), 'utf8')).toBe('ecdsa-sha2-nistp384 new\n');
    expect(leftovers()).toEqual([]);
    expect(fs.readdirSync(paths.identity).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it.skipIf(process.getuid?.() !== 0)('run as root into a state dir another user owns (the package\'s), gives what it writes to that user', () => {
    fs.mkdirSync(paths.root, { mode: 0o700 });
    fs.chownSync(paths.root, 65534, 65534); // the service's user, e.g. sepal-agent
    installIdentity(paths, NEW);
    storeManifest(paths, 'header.payload.signature');
    for (const p of [paths.identity, ...Object.values(IDENTITY_FILES).map((f) => path.join(paths.identity, f)), paths.manifestDir, paths.manifest]) {
      expect(fs.statSync(p).uid, p).toBe(65534);
    }
  });

  it.skipIf(process.getuid?.() !== 0)('run as root into a root-owned state dir, leaves everything root\'s', () => {
    installIdentity(paths, NEW);
    expect(fs.statSync(path.join(paths.identity, 'tls.key')).uid).toBe(0);
  });

  it('tightens a state dir that exists with looser permissions', () => {
    fs.mkdirSync(paths.root, { mode: 0o755 });
    fs.chmodSync(paths.root, 0o755);
    installIdentity(paths, NEW);
    expect(mode(paths.root)).toBe(0o700);
  });

  it('replaces an identity as a whole', () => {
    installIdentity(paths, OLD);
    installIdentity(paths, NEW);
    expect(whichIdentity()).toBe('new');
    expect(leftovers()).toEqual([]);
  });

  it('a crash at any step of a replacement leaves, after recovery, the old or the new identity, never a mix', () => {
    installIdentity(paths, OLD);
    const probe = crashingFs(Number.POSITIVE_INFINITY);
    installIdentity(paths, NEW, probe.fs);
    const steps = probe.ops();
    expect(steps).toBeGreaterThanOrEqual(12);
    const outcomes: string[] = [];
    for (let k = 1; k <= steps; k++) {
      fs.rmSync(paths.root, { recursive: true, force: true });
      installIdentity(paths, OLD);
      expect(() => installIdentity(paths, NEW, crashingFs(k).fs)).toThrow(/simulated crash/);
      recoverState(paths);
      const got = whichIdentity();
      expect(['old', 'new'], `crash at step ${k}`).toContain(got);
      expect(leftovers(), `crash at step ${k}`).toEqual([]);
      outcomes.push(got);
    }
    // Old until the staging dir is complete and swapped, new from then on: one switch, no flapping.
    expect(outcomes[0]).toBe('old');
    expect(outcomes.at(-1)).toBe('new');
    expect(outcomes.join(',')).toMatch(/^(old,)*(new,)*new$/);
  });

  it('a crash during a first enrollment leaves no identity or the complete new one', () => {
    const probe = crashingFs(Number.POSITIVE_INFINITY);
    installIdentity(paths, NEW, probe.fs);
    for (let k = 1; k <= probe.ops(); k++) {
      fs.rmSync(paths.root, { recursive: true, force: true });
      expect(() => installIdentity(paths, NEW, crashingFs(k).fs)).toThrow(/simulated crash/);
      recoverState(paths);
      expect(['none', 'new'], `crash at step ${k}`).toContain(whichIdentity());
      expect(leftovers()).toEqual([]);
    }
  });

  it('recovery that itself crashes can simply be run again', () => {
    installIdentity(paths, OLD);
    // Die right after identity/ was moved aside (step 10 is that rename; 11 its fsync).
    expect(() => installIdentity(paths, NEW, crashingFs(11).fs)).toThrow(/simulated crash/);
    expect(whichIdentity()).toBe('none');
    expect(() => recoverState(paths, crashingFs(2).fs)).toThrow(/simulated crash/);
    recoverState(paths);
    expect(whichIdentity()).toBe('new');
    expect(leftovers()).toEqual([]);
  });

  it('recovery with nothing to do does nothing', () => {
    expect(recoverState(paths)).toEqual({ action: 'none', removed: [] });
    installIdentity(paths, OLD);
    expect(recoverState(paths)).toEqual({ action: 'none', removed: [] });
    expect(whichIdentity()).toBe('old');
  });
});

describe('node.json', () => {
  it('absent is null; unreadable or invalid is STATE_INVALID', () => {
    expect(readNodeRecord(paths.nodeJson)).toBeNull();
    fs.mkdirSync(paths.identity, { recursive: true });
    fs.writeFileSync(paths.nodeJson, '{');
    expect(() => readNodeRecord(paths.nodeJson)).toThrow(expect.objectContaining({ code: ErrorCodes.STATE_INVALID }) as Error);
    fs.writeFileSync(paths.nodeJson, JSON.stringify({ ...NEW.node, extra: 1 }));
    expect(() => readNodeRecord(paths.nodeJson)).toThrow(expect.objectContaining({ code: ErrorCodes.STATE_INVALID }) as Error);
  });
});

describe('the manifest', () => {
  it('is written to manifest/current.jws; a later enrollment without one removes the old one', () => {
    storeManifest(paths, 'a.b.c');
    expect(fs.readFileSync(paths.manifest, 'utf8')).toBe('a.b.c\n');
    storeManifest(paths, null);
    expect(fs.existsSync(paths.manifest)).toBe(false);
    storeManifest(paths, null);
  });
});

describe('the state lock', () => {
  it('refuses a second agent while the first runs, and takes over a lock whose process is gone', () => {
    const release = lockState(paths);
    expect(() => lockState(paths, process.pid + 1)).toThrow(expect.objectContaining({ code: ErrorCodes.STATE_INVALID }) as Error);
    release();
    expect(fs.existsSync(paths.lock)).toBe(false);
    const dead = spawnSync(process.execPath, ['-e', 'process.pid']).pid;
    fs.writeFileSync(paths.lock, `${dead}\n`);
    const again = lockState(paths);
    expect(fs.readFileSync(paths.lock, 'utf8')).toBe(`${process.pid}\n`);
    again();
  });
});

describe('defaultStateDir', () => {
  it('is /var/lib/sepal-agent, or %ProgramData%\\Sepal\\Agent on Windows', () => {
    expect(defaultStateDir('linux', {})).toBe('/var/lib/sepal-agent');
    expect(defaultStateDir('win32', { ProgramData: 'D:\\PD' })).toBe('D:\\PD\\Sepal\\Agent');
    expect(defaultStateDir('win32', {})).toBe('C:\\ProgramData\\Sepal\\Agent');
  });
});
