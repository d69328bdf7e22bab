// X.509 checks the agent makes itself (node:crypto parses; these functions decide): a CA bundle
// that must hang off the pinned root, and the certificate the hub issued to this node.
import crypto from 'node:crypto';
import { AgentError, ErrorCodes } from '../errors.ts';
import { spkiDer } from './keys.ts';

export const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

export function sha256Hex(der: Buffer): string {
  return crypto.createHash('sha256').update(der).digest('hex');
}

export function parseCertificate(der: Buffer): crypto.X509Certificate | null {
  try {
    return new crypto.X509Certificate(der);
  } catch {
    return null;
  }
}

/** `child` names `parent` as issuer and carries a valid signature by it, and `parent` is a CA. */
export function issuedBy(child: crypto.X509Certificate, parent: crypto.X509Certificate): boolean {
  return parent.ca && child.checkIssued(parent) && child.verify(parent.publicKey);
}

/** True when every certificate in `bundle` is `root` itself or reaches it through other
 *  certificates of the bundle, each link a valid CA signature. */
export function bundleChainsTo(bundle: readonly crypto.X509Certificate[], root: crypto.X509Certificate): boolean {
  const reached = [root];
  let pending = bundle.filter((c) => !c.raw.equals(root.raw));
  for (let progress = true; progress && pending.length > 0;) {
    progress = false;
    const rest: crypto.X509Certificate[] = [];
    for (const c of pending) {
      if (reached.some((p) => issuedBy(c, p))) {
        reached.push(c);
        progress = true;
      } else {
        rest.push(c);
      }
    }
    pending = rest;
  }
  return pending.length === 0;
}

function validAt(c: crypto.X509Certificate, now: number): boolean {
  return c.validFromDate.getTime() <= now && now < c.validToDate.getTime();
}

export interface IssuedCheck {
  readonly certificateDer: Buffer;
  readonly chainDer: readonly Buffer[];
  readonly caBundleDer: readonly Buffer[];
  /** SHA-256 of the root pinned on the command line. */
  readonly pinnedRoot: string;
  readonly publicKey: crypto.KeyObject;
  readonly nodeId: string;
  readonly now: number;
}

export interface IssuedCertificate {
  readonly leaf: crypto.X509Certificate;
  readonly chain: readonly crypto.X509Certificate[];
  readonly roots: readonly crypto.X509Certificate[];
}

function untrusted(message: string): never {
  throw new AgentError(ErrorCodes.CLIENT_CERT_UNTRUSTED, message);
}

/**
 * Checks what the hub returned from Enroll before anything is written: the leaf chains through
 * chain_der, in order, to a root of ca_bundle_der; that bundle holds the pinned root; the leaf
 * carries our public key, is valid now, allows clientAuth and names the node id as its CN.
 */
export function checkIssuedCertificate(x: IssuedCheck): IssuedCertificate {
  const leaf = parseCertificate(x.certificateDer) ?? untrusted('the hub returned a certificate that does not parse');
  const chain = x.chainDer.map((d) => parseCertificate(d) ?? untrusted('the hub returned a chain certificate that does not parse'));
  const roots = x.caBundleDer.map((d) => parseCertificate(d) ?? untrusted('the hub returned a root certificate that does not parse'));
  if (!roots.some((r) => sha256Hex(r.raw) === x.pinnedRoot)) untrusted('the CA bundle the hub returned does not contain the pinned root');

  let child = leaf;
  for (const ca of chain) {
    if (!issuedBy(child, ca)) untrusted(`certificate "${child.subject}" is not signed by the next certificate in the chain`);
    if (!validAt(ca, x.now)) throw new AgentError(ErrorCodes.CLIENT_CERT_EXPIRED, `chain certificate "${ca.subject}" is not valid now`);
    child = ca;
  }
  const top = child;
  if (!roots.some((r) => (r.raw.equals(top.raw) && chain.length > 0) || issuedBy(top, r))) {
    untrusted('the certificate does not chain to a root of the returned CA bundle');
  }

  if (!spkiDer(leaf.publicKey).equals(spkiDer(x.publicKey))) untrusted('the certificate does not carry this host\'s public key');
  if (!validAt(leaf, x.now)) {
    throw new AgentError(ErrorCodes.CLIENT_CERT_EXPIRED, `the certificate is valid from ${leaf.validFromDate.toISOString()} to ${leaf.validToDate.toISOString()}, not now (check the clock)`);
  }
  if (!leaf.keyUsage?.includes(OID_CLIENT_AUTH)) throw new AgentError(ErrorCodes.CLIENT_CERT_WRONG_USAGE, 'the certificate does not allow TLS client authentication');
  if (leaf.ca) throw new AgentError(ErrorCodes.CLIENT_CERT_WRONG_USAGE, 'the hub issued a CA certificate to a node');
  const cn = /^CN=(.*)$/m.exec(leaf.subject)?.[1];
  if (cn !== x.nodeId) untrusted(`the certificate names ${JSON.stringify(cn ?? '')}, not node ${x.nodeId}`);
  return { leaf, chain, roots };
}
