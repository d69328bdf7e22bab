// One rotation: a new P-256 key made here, a CSR, the Renew call, every check on the answer, and
// the identity swapped in as a whole (store.ts installIdentity: a complete new identity dir, then
// renames), with the Flower key and node.json carried over unchanged. Nothing is written unless
// the returned certificate chains to a root it came with that the node trusts (one already in
// ca.pem, or one such a root vouches for with a cross certificate: a root rotation), is valid
// now, allows clientAuth, names this node and organisation, and carries the new key; ca.pem
// becomes the trusted roots of the answer. A kill at any moment leaves the old pair or the new
// pair on disk, never one of each.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AgentError, ErrorCodes } from '../errors.ts';
import { checkIssuedCertificate } from '../enroll/certificate.ts';
import { MAX_COMMON_NAME, buildCsr } from '../enroll/csr.ts';
import { derToPem } from '../enroll/der.ts';
import { pkcs8Pem, type KeyPair } from '../enroll/keys.ts';
import { IDENTITY_FILES, installIdentity, readNodeRecord, realFs, type StatePaths, type StoreFs } from '../enroll/store.ts';
import { parseIdentity, subjectAttribute, type CurrentIdentity } from './identity.ts';

/** What the hub's Renew answered (proto Credentials), decoded at the edge. */
export interface RenewResult {
  readonly certificateDer: Buffer;
  readonly chainDer: readonly Buffer[];
  readonly caBundleDer: readonly Buffer[];
  readonly notAfterUnixMs: number;
}

/** Asks the hub for a certificate for `csrDer`, authenticating as `identity`. Failures are
 *  AgentErrors carrying the hub's code (or a transport code). */
export type RenewFn = (csrDer: Buffer, identity: CurrentIdentity, signal: AbortSignal) => Promise<RenewResult>;

export function generateTlsKey(): KeyPair {
  return crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

function untrusted(message: string): never {
  throw new AgentError(ErrorCodes.CLIENT_CERT_UNTRUSTED, message);
}

function sameDerSet(a: readonly Buffer[], b: readonly Buffer[]): boolean {
  return a.length === b.length && a.every((x) => b.some((y) => y.equals(x)));
}

/**
 * Checks a Renew answer for `current`'s node, made for `key`, at `now`, and returns the identity
 * it makes. Throws a coded AgentError (CLIENT_CERT_UNTRUSTED / _EXPIRED / _WRONG_USAGE) otherwise.
 */
export function acceptRenewal(current: CurrentIdentity, res: RenewResult, key: KeyPair, now: number): { identity: CurrentIdentity; rootsChanged: boolean } {
  const issued = checkIssuedCertificate({
    certificateDer: res.certificateDer,
    chainDer: res.chainDer,
    caBundleDer: res.caBundleDer,
    anchors: current.roots.map((r) => r.raw),
    publicKey: key.publicKey,
    nodeId: current.node.nodeId,
    now,
  });
  const { leaf } = issued;
  if (subjectAttribute(leaf.subject, 'CN') !== current.node.nodeId) untrusted(`the renewed certificate does not name node ${current.node.nodeId} exactly once`);
  const org = subjectAttribute(leaf.subject, 'O');
  if (org !== current.node.org) untrusted(`the renewed certificate names organisation ${JSON.stringify(org ?? '')}, not ${current.node.org}`);
  const rootsChanged = !sameDerSet(issued.roots.map((r) => r.raw), current.roots.map((r) => r.raw));
  const identity = parseIdentity({
    node: current.node,
    keyPem: pkcs8Pem(key.privateKey),
    certPem: derToPem(leaf.raw, 'CERTIFICATE'),
    chainPem: issued.chain.map((c) => derToPem(c.raw, 'CERTIFICATE')).join(''),
    // Unchanged roots keep their file byte for byte.
    caPem: rootsChanged ? issued.roots.map((c) => derToPem(c.raw, 'CERTIFICATE')).join('') : current.caPem,
  });
  return { identity, rootsChanged };
}

export interface RotateDeps {
  readonly paths: StatePaths;
  readonly renew: RenewFn;
  readonly now: () => number;
  readonly signal: AbortSignal;
  readonly fs?: StoreFs;
  readonly generateKey?: () => KeyPair;
}

/** The CN the CSR asks for: informational only (the hub decides the subject). */
function csrName(nodeId: string): string {
  return [...nodeId].slice(0, MAX_COMMON_NAME).join('');
}

function cancelled(): AgentError {
  return new AgentError(ErrorCodes.CANCELLED, 'rotation cancelled; the identity on disk is unchanged');
}

export async function rotateOnce(current: CurrentIdentity, d: RotateDeps): Promise<{ identity: CurrentIdentity; rootsChanged: boolean }> {
  const key = (d.generateKey ?? generateTlsKey)();
  const res = await d.renew(buildCsr(key.privateKey, csrName(current.node.nodeId)), current, d.signal);
  if (d.signal.aborted) throw cancelled();
  const accepted = acceptRenewal(current, res, key, d.now());

  // The swap carries node.json and the Flower key over from disk, so it must be this node's.
  const onDisk = readNodeRecord(d.paths.nodeJson);
  if (onDisk === null || JSON.stringify(onDisk) !== JSON.stringify(current.node)) {
    throw new AgentError(ErrorCodes.STATE_INVALID, `${d.paths.nodeJson} changed while the agent was running; not rotating over it`);
  }
  const carried = (name: string): string => {
    try {
      return fs.readFileSync(path.join(d.paths.identity, name), 'utf8');
    } catch (e) {
      throw new AgentError(ErrorCodes.STATE_INVALID, `cannot read ${path.join(d.paths.identity, name)}: ${(e as Error).message}`, { cause: e });
    }
  };
  const flowerKey = carried(IDENTITY_FILES.flowerKey);
  const flowerPub = carried(IDENTITY_FILES.flowerPub);
  if (d.signal.aborted) throw cancelled();
  const id = accepted.identity;
  try {
    installIdentity(d.paths, {
      tlsKeyPem: id.keyPem,
      tlsCertPem: id.certPem,
      chainPem: id.chainPem,
      caPem: id.caPem,
      flowerKey,
      flowerPub,
      node: onDisk,
    }, d.fs ?? realFs);
  } catch (e) {
    // The swap may have got past its first rename: recoverState decides which identity is current.
    throw new AgentError(ErrorCodes.STATE_INVALID, `could not swap in the renewed identity: ${(e as Error).message}`, { cause: e, detail: { phase: SWAP_PHASE } });
  }
  return accepted;
}

export const SWAP_PHASE = 'swap';

/** The error came from the identity swap (the state dir needs recoverState before it is read). */
export function isSwapFailure(e: unknown): boolean {
  return e instanceof AgentError && e.detail?.['phase'] === SWAP_PHASE;
}
