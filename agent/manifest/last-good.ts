// The last good manifest on disk, so that a restart keeps running it and keeps refusing older ones.
//
// <state>/manifest/current.jws is the JWS as the hub signed it; <state>/manifest/applied.json says
// when this agent accepted it: { version, appliedAt, kid, nodeId, jwsSha256 }. Each is written
// atomically, current.jws first. applied.json describes current.jws only when its jwsSha256 is that
// file's hash; otherwise current.jws was never accepted by this agent (enrollment stores the first
// manifest unverified, or a crash came between the two writes) and must be verified before use.
// The anti-rollback floor is the version applied.json records for this node (0 when none).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { parseManifestClaims, type ManifestClaims } from '../../proto/manifest.ts';
import { AgentError, ErrorCodes } from '../errors.ts';
import { ensurePrivateDir, writeFileAtomicSync } from '../fsutil.ts';
import { systemClock, type Clock } from '../runtime/clock.ts';
import type { VerifiedManifest } from './verify.ts';

export const MANIFEST_FILES = { current: 'current.jws', applied: 'applied.json' } as const;
const FILE_MODE = 0o600;
const MAX_FILE_BYTES = 1024 * 1024;

const AppliedSchema = z.strictObject({
  version: z.int().min(1),
  appliedAt: z.iso.datetime(),
  kid: z.string().min(1).max(256),
  nodeId: z.string().min(1).max(256),
  jwsSha256: z.string().regex(/^[0-9a-f]{64}$/),
});

export type AppliedRecord = z.infer<typeof AppliedSchema>;

export interface StoredManifest {
  readonly jws: string;
  /** Decoded without checking the signature: trusted only when `applied` is not null. */
  readonly claims: ManifestClaims;
  readonly version: number;
  readonly kid: string;
  /** applied.json when it describes this very JWS; null when this agent never accepted it. */
  readonly applied: AppliedRecord | null;
}

export interface LastGoodState {
  /** current.jws addressed to this node, or null when there is none. */
  readonly manifest: StoredManifest | null;
  /** Pass to ManifestVerifier.verify as lastAppliedVersion. */
  readonly floorVersion: number;
}

export interface LastGoodOptions {
  readonly stateDir: string;
  /** The enrolled node: files about another node (before a re-enrollment) are ignored. */
  readonly nodeId: string;
  readonly clock?: Clock;
  /** Atomic write (temp, fsync, rename, fsync dir); injected by tests to fail at a chosen write. */
  readonly writeFile?: (file: string, data: string, mode: number) => void;
}

const sha256 = (s: string): string => crypto.createHash('sha256').update(s, 'utf8').digest('hex');

function readText(file: string): string | null {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NOFOLLOW ?? 0));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AgentError(ErrorCodes.STATE_INVALID, `cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.size > MAX_FILE_BYTES) throw new AgentError(ErrorCodes.STATE_INVALID, `${file} is not a regular file of at most ${MAX_FILE_BYTES} bytes`);
    return fs.readFileSync(fd, 'utf8');
  } finally {
    fs.closeSync(fd);
  }
}

/** Claims and kid of a stored JWS, without verifying it (it was verified before it was stored,
 *  or is verified again before use when applied.json does not vouch for it). */
function decodeStored(file: string, jws: string): { claims: ManifestClaims; kid: string } {
  const parts = jws.split('.');
  const bad = (why: string): AgentError => new AgentError(ErrorCodes.STATE_INVALID, `${file} is not a manifest: ${why}`);
  if (parts.length !== 3) throw bad('not a compact JWS');
  let header: unknown;
  let payload: unknown;
  try {
    header = JSON.parse(Buffer.from(parts[0] ?? '', 'base64url').toString('utf8'));
    payload = JSON.parse(Buffer.from(parts[1] ?? '', 'base64url').toString('utf8'));
  } catch {
    throw bad('header or payload is not JSON');
  }
  const kid = header !== null && typeof header === 'object' ? (header as Record<string, unknown>)['kid'] : undefined;
  if (typeof kid !== 'string' || kid.length === 0) throw bad('no kid');
  const r = parseManifestClaims(payload);
  if (!r.ok) throw bad(`claims do not match the schema at ${r.issues[0]?.path || '(root)'}: ${r.issues[0]?.message ?? ''}`);
  return { claims: r.value, kid };
}

export class LastGoodStore {
  readonly dir: string;
  readonly currentFile: string;
  readonly appliedFile: string;
  readonly #nodeId: string;
  readonly #clock: Clock;
  readonly #write: (file: string, data: string, mode: number) => void;
  #state: LastGoodState = { manifest: null, floorVersion: 0 };

  constructor(opts: LastGoodOptions) {
    if (typeof opts.nodeId !== 'string' || opts.nodeId.length === 0) throw new TypeError('LastGoodStore: nodeId must be a non-empty string');
    this.dir = path.join(path.resolve(opts.stateDir), 'manifest');
    this.currentFile = path.join(this.dir, MANIFEST_FILES.current);
    this.appliedFile = path.join(this.dir, MANIFEST_FILES.applied);
    this.#nodeId = opts.nodeId;
    this.#clock = opts.clock ?? systemClock;
    this.#write = opts.writeFile ?? writeFileAtomicSync;
  }

  /** What was last loaded or saved. */
  get state(): LastGoodState {
    return this.#state;
  }

  /** The anti-rollback floor: the version this agent last accepted (0 for none). */
  get version(): number {
    return this.#state.floorVersion;
  }

  /** Reads both files. STATE_INVALID when one exists but cannot be decoded (they are only ever
   *  written atomically, so that is damage or tampering, not an interrupted write). */
  load(): LastGoodState {
    const appliedText = readText(this.appliedFile);
    let applied: AppliedRecord | null = null;
    if (appliedText !== null) {
      let json: unknown;
      try {
        json = JSON.parse(appliedText);
      } catch {
        throw new AgentError(ErrorCodes.STATE_INVALID, `${this.appliedFile} is not JSON`);
      }
      const r = AppliedSchema.safeParse(json);
      if (!r.success) throw new AgentError(ErrorCodes.STATE_INVALID, `${this.appliedFile} is invalid: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
      applied = r.data.nodeId === this.#nodeId ? r.data : null;
    }
    const text = readText(this.currentFile);
    let manifest: StoredManifest | null = null;
    if (text !== null) {
      const jws = text.trim();
      const { claims, kid } = decodeStored(this.currentFile, jws);
      if (claims.sub === this.#nodeId) {
        const vouched = applied !== null && applied.jwsSha256 === sha256(jws) && applied.version === claims.version ? applied : null;
        manifest = Object.freeze({ jws, claims, version: claims.version, kid, applied: vouched });
      }
    }
    this.#state = Object.freeze({ manifest, floorVersion: applied?.version ?? 0 });
    return this.#state;
  }

  /** Persists a manifest this agent has just accepted: current.jws, then applied.json. */
  save(m: VerifiedManifest): LastGoodState {
    if (m.claims.sub !== this.#nodeId) throw new TypeError(`LastGoodStore.save: manifest is for ${m.claims.sub}, not ${this.#nodeId}`);
    if (m.version <= this.#state.floorVersion) throw new TypeError(`LastGoodStore.save: version ${m.version} is not above ${this.#state.floorVersion}`);
    ensurePrivateDir(this.dir);
    const jws = m.jws.trim();
    this.#write(this.currentFile, jws + '\n', FILE_MODE);
    const applied: AppliedRecord = {
      version: m.version,
      appliedAt: new Date(this.#clock.now()).toISOString(),
      kid: m.kid,
      nodeId: this.#nodeId,
      jwsSha256: sha256(jws),
    };
    this.#write(this.appliedFile, JSON.stringify(applied, null, 2) + '\n', FILE_MODE);
    this.#state = Object.freeze({
      manifest: Object.freeze({ jws, claims: m.claims, version: m.version, kid: m.kid, applied: Object.freeze(applied) }),
      floorVersion: m.version,
    });
    return this.#state;
  }
}
