// The node's current TLS identity as the rotator holds it: key, certificate, chain and roots from
// <state>/identity/, parsed and checked together. An identity that does not hang together (key and
// certificate disagree, a chain that does not reach a root, a subject that is not the node's) is
// STATE_INVALID: the agent must not present it, let alone rotate from it. An expired certificate
// is still an identity: the rotator reports it and retries. ca.pem need not hold the root pinned
// at enrollment (node.json caSha256): after a root rotation it holds the roots the old one vouched
// for, and only checked renewals write it.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AgentError, ErrorCodes } from '../errors.ts';
import { issuedBy } from '../enroll/certificate.ts';
import { pemBlocks } from '../enroll/der.ts';
import { spkiDer } from '../enroll/keys.ts';
import { IDENTITY_FILES, readNodeRecord, type NodeRecord, type StatePaths } from '../enroll/store.ts';

export interface CurrentIdentity {
  readonly node: NodeRecord;
  readonly privateKey: crypto.KeyObject;
  /** PKCS#8 PEM: what tls.key holds. */
  readonly keyPem: string;
  /** The leaf alone: what tls.crt holds. */
  readonly certPem: string;
  /** Intermediates, leaf issuer first ('' when none): what chain.pem holds. */
  readonly chainPem: string;
  /** Trusted roots: what ca.pem holds. */
  readonly caPem: string;
  readonly leaf: crypto.X509Certificate;
  readonly chain: readonly crypto.X509Certificate[];
  readonly roots: readonly crypto.X509Certificate[];
  /** Unix ms. */
  readonly notBefore: number;
  readonly notAfter: number;
  /** Lowercase hex, as the hub records it. */
  readonly serial: string;
}

export interface IdentityText {
  readonly node: NodeRecord;
  readonly keyPem: string;
  readonly certPem: string;
  readonly chainPem: string;
  readonly caPem: string;
}

function invalid(message: string): never {
  throw new AgentError(ErrorCodes.STATE_INVALID, message);
}

/** One value of a DN attribute in X509Certificate.subject ("K=V" lines); undefined unless the
 *  attribute occurs exactly once. */
export function subjectAttribute(subject: string, key: 'CN' | 'O'): string | undefined {
  const values = subject.split('\n').filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1));
  return values.length === 1 ? values[0] : undefined;
}

function certificates(text: string, what: string, allowEmpty: boolean): crypto.X509Certificate[] {
  if (allowEmpty && text.trim() === '') return [];
  const ders = pemBlocks(text, 'CERTIFICATE') ?? invalid(`${what} is not a PEM list of certificates`);
  return ders.map((d) => {
    try {
      return new crypto.X509Certificate(d);
    } catch {
      return invalid(`${what} holds a certificate that does not parse`);
    }
  });
}

/** Parses and cross-checks an identity's text. Validity dates are reported, not enforced. */
export function parseIdentity(t: IdentityText): CurrentIdentity {
  let privateKey: crypto.KeyObject;
  try {
    privateKey = crypto.createPrivateKey(t.keyPem);
  } catch {
    return invalid(`${IDENTITY_FILES.tlsKey} is not a private key`);
  }
  if (privateKey.asymmetricKeyType !== 'ec') invalid(`${IDENTITY_FILES.tlsKey} is not an EC key`);
  const [leaf, ...extra] = certificates(t.certPem, IDENTITY_FILES.tlsCert, false);
  if (leaf === undefined || extra.length > 0) invalid(`${IDENTITY_FILES.tlsCert} must hold exactly one certificate`);
  const chain = certificates(t.chainPem, IDENTITY_FILES.chain, true);
  const roots = certificates(t.caPem, IDENTITY_FILES.ca, false);

  if (!spkiDer(crypto.createPublicKey(privateKey)).equals(spkiDer(leaf.publicKey))) {
    invalid(`${IDENTITY_FILES.tlsKey} and ${IDENTITY_FILES.tlsCert} are not a pair`);
  }
  let child = leaf;
  for (const ca of chain) {
    if (!issuedBy(child, ca)) invalid(`${IDENTITY_FILES.chain}: "${child.subject}" is not signed by the next certificate`);
    child = ca;
  }
  const top = child;
  if (!roots.some((r) => (chain.length > 0 && r.raw.equals(top.raw)) || issuedBy(top, r))) {
    invalid(`${IDENTITY_FILES.tlsCert} does not chain to a root in ${IDENTITY_FILES.ca}`);
  }
  if (subjectAttribute(leaf.subject, 'CN') !== t.node.nodeId || subjectAttribute(leaf.subject, 'O') !== t.node.org) {
    invalid(`${IDENTITY_FILES.tlsCert} is not issued to node ${t.node.nodeId} of ${t.node.org}`);
  }
  return Object.freeze({
    ...t,
    privateKey,
    leaf,
    chain: Object.freeze(chain),
    roots: Object.freeze(roots),
    notBefore: leaf.validFromDate.getTime(),
    notAfter: leaf.validToDate.getTime(),
    serial: leaf.serialNumber.toLowerCase(),
  });
}

function read(dir: string, name: string): string {
  try {
    return fs.readFileSync(path.join(dir, name), 'utf8');
  } catch (e) {
    throw new AgentError(ErrorCodes.STATE_INVALID, `cannot read ${path.join(dir, name)}: ${(e as Error).message}`, { cause: e });
  }
}

/** The identity in <state>/identity/. Run recoverState (under the state lock) before this. */
export function loadIdentity(paths: StatePaths): CurrentIdentity {
  const node = readNodeRecord(paths.nodeJson) ?? invalid(`${paths.root} holds no enrolled identity (run sepal-agent enroll)`);
  return parseIdentity({
    node,
    keyPem: read(paths.identity, IDENTITY_FILES.tlsKey),
    certPem: read(paths.identity, IDENTITY_FILES.tlsCert),
    chainPem: read(paths.identity, IDENTITY_FILES.chain),
    caPem: read(paths.identity, IDENTITY_FILES.ca),
  });
}
