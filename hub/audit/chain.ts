// The audit log is a hash chain: every entry's hash covers the previous entry's hash and all of
// the entry's own fields, so editing, removing or reordering any row breaks the chain from that
// row on. Pure functions only; the store computes hashes inside its write transactions and
// `audit verify` streams the whole log through verifyAuditChain.
//
// What the chain cannot show on its own: removing rows from the *end* of the log (the shorter log
// is still a valid chain). Compare the returned headHash/count with a copy kept elsewhere (a
// monitoring system, a printed report) to detect truncation.
import { createHash } from 'node:crypto';
import type { AuditEntry, AuditEvent } from '../store/store.ts';

/** prevHash of the first entry. */
export const GENESIS_HASH = '0'.repeat(64);

/** Domain separation tag, first element of the hashed array; bump it if the encoding changes. */
const HASH_VERSION = 'sepal-audit-v1';

const KNOWN_EVENTS: Readonly<Record<AuditEvent, true>> = {
  'node.enrolled': true,
  'cert.renewed': true,
  'node.revoked': true,
  'manifest.published': true,
  'keys.rotated': true,
  'security.denied': true,
  'token.created': true,
  'token.revoked': true,
  'flower.registered': true,
  'flower.unregistered': true,
  'flower.registration_failed': true,
  'flower.registration_retried': true,
  'vpn.server_config_written': true,
  'vpn.secret_fetched': true,
  'ca.prepared': true,
  'ca.activated': true,
  'ca.pruned': true,
  'ca.server_renewed': true,
};

export function isAuditEvent(v: unknown): v is AuditEvent {
  return typeof v === 'string' && Object.hasOwn(KNOWN_EVENTS, v);
}

/**
 * Canonical JSON: object keys sorted (UTF-16 code unit order), no whitespace, the same number and
 * string formatting as JSON.stringify (which for finite numbers matches RFC 8785). Values JSON
 * cannot represent faithfully (NaN, Infinity, bigint, functions, symbols, cycles) are refused
 * with a TypeError instead of being silently turned into null.
 */
export function canonicalJson(value: unknown): string {
  return encode(value, new Set());
}

function encode(value: unknown, seen: Set<object>): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: non-finite number ${value}`);
      return JSON.stringify(value);
    case 'object':
      break;
    default:
      throw new TypeError(`canonicalJson: cannot encode a ${typeof value}`);
  }
  const toJSON = (value as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === 'function') return encode((toJSON as () => unknown).call(value), seen);
  if (seen.has(value)) throw new TypeError('canonicalJson: cyclic value');
  seen.add(value);
  let out: string;
  if (Array.isArray(value)) {
    const items: string[] = [];
    for (const item of value as unknown[]) items.push(item === undefined ? 'null' : encode(item, seen));
    out = `[${items.join(',')}]`;
  } else {
    const obj = value as Record<string, unknown>;
    const parts: string[] = [];
    for (const key of Object.keys(obj).sort()) {
      const v = obj[key];
      if (v === undefined) continue;
      parts.push(`${JSON.stringify(key)}:${encode(v, seen)}`);
    }
    out = `{${parts.join(',')}}`;
  }
  seen.delete(value);
  return out;
}

/** The hashed fields of an entry; `detail` is the stored canonical JSON text. */
export interface AuditHashFields {
  readonly seq: number;
  readonly at: number;
  readonly event: string;
  readonly actor: string;
  readonly nodeId: string | null;
  readonly org: string | null;
  readonly reason: string | null;
  readonly detail: string;
}

/**
 * SHA-256 (lowercase hex) over the canonical JSON array
 * [version tag, prevHash, seq, at, event, actor, nodeId, org, reason, detail].
 * A JSON array of strings, numbers and nulls has exactly one encoding and no field can bleed into
 * its neighbour, so two different entries never share an encoding.
 */
export function auditHash(prevHash: string, e: AuditHashFields): string {
  const encoded = canonicalJson([
    HASH_VERSION, prevHash, e.seq, e.at, e.event, e.actor, e.nodeId, e.org, e.reason, e.detail,
  ]);
  return createHash('sha256').update(encoded, 'utf8').digest('hex');
}

export type AuditBreak = 'hash_mismatch' | 'prev_mismatch' | 'seq_gap' | 'seq_order';

export type AuditVerifyResult =
  | { readonly ok: true; readonly count: number; readonly headHash: string }
  | { readonly ok: false; readonly firstBadSeq: number; readonly reason: AuditBreak };

/**
 * Walks the entries once, in the order given, keeping only the previous hash: constant memory, so
 * it can stream millions of rows from an iterator. Seqs must run 1, 2, 3, ... (or on from
 * `from.seq + 1` when verifying a tail whose start was checked earlier).
 *
 * On failure every entry below `firstBadSeq` has been verified:
 * - seq_gap:       the entry with seq firstBadSeq is missing (a higher seq came next);
 * - seq_order:     a seq at or below an already verified one came where firstBadSeq was expected;
 * - prev_mismatch: entry firstBadSeq does not point at its predecessor's hash (a removed,
 *                  inserted or moved row);
 * - hash_mismatch: entry firstBadSeq's fields do not match its hash (an edited row).
 */
export function verifyAuditChain(
  entries: Iterable<AuditEntry>,
  from: { readonly seq: number; readonly hash: string } = { seq: 0, hash: GENESIS_HASH },
): AuditVerifyResult {
  let expectedSeq = from.seq + 1;
  let prevHash = from.hash;
  let count = 0;
  for (const e of entries) {
    if (e.seq !== expectedSeq) {
      return { ok: false, firstBadSeq: expectedSeq, reason: e.seq > expectedSeq ? 'seq_gap' : 'seq_order' };
    }
    if (e.prevHash !== prevHash) return { ok: false, firstBadSeq: e.seq, reason: 'prev_mismatch' };
    if (auditHash(prevHash, e) !== e.hash) return { ok: false, firstBadSeq: e.seq, reason: 'hash_mismatch' };
    prevHash = e.hash;
    expectedSeq++;
    count++;
  }
  return { ok: true, count, headHash: prevHash };
}
