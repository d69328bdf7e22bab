// X.509 checks the agent makes itself (node:crypto parses; these functions decide): a CA bundle
// that must hang off its roots, which of the hub's roots to trust (the ones already trusted, and
// new ones they vouch for with a cross certificate), and the certificate the hub issued to this node.
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

/** True when every certificate in `bundle` is one of `roots` or reaches one through other
 *  certificates of the bundle, each link a valid CA signature. */
export function bundleChainsTo(bundle: readonly crypto.X509Certificate[], roots: readonly crypto.X509Certificate[]): boolean {
  const reached = [...roots];
  let pending = bundle.filter((c) => !roots.some((r) => c.raw.equals(r.raw)));
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

/** A CA certificate signed by its own key. */
export function selfSignedCa(c: crypto.X509Certificate): boolean {
  return issuedBy(c, c);
}

function validAt(c: crypto.X509Certificate, now: number): boolean {
  return c.validFromDate.getTime() <= now && now < c.validToDate.getTime();
}

function untrusted(message: string): never {
  throw new AgentError(ErrorCodes.CLIENT_CERT_UNTRUSTED, message);
}

/** `cross` is a CA certificate, valid at `now`, for `root`'s name and key: whoever signed it
 *  vouches for `root`. */
function vouchesFor(cross: crypto.X509Certificate, root: crypto.X509Certificate, now: number): boolean {
  return cross.ca && validAt(cross, now) && cross.subject === root.subject && spkiDer(cross.publicKey).equals(spkiDer(root.publicKey));
}

/**
 * The roots of a CA bundle (self-signed CA certificates followed by cross certificates) to trust,
 * in bundle order: those DER-equal to one of `anchors` (the roots trusted so far), and, applied
 * transitively, those a cross certificate of the bundle, valid at `now`, issued by an accepted root,
 * vouches for. That is how a root rotation reaches a node: the old root signs the new one. An
 * anchor missing from the bundle is not returned (a retired root is dropped); a root nothing
 * trusted vouches for is ignored. CLIENT_CERT_UNTRUSTED when no root is accepted.
 */
export function acceptedRoots(bundle: readonly crypto.X509Certificate[], anchors: readonly Buffer[], now: number): crypto.X509Certificate[] {
  // One signature check per certificate decides root or cross certificate; duplicates count once.
  const roots: crypto.X509Certificate[] = [];
  const crosses: crypto.X509Certificate[] = [];
  for (const c of bundle) {
    if (!selfSignedCa(c)) crosses.push(c);
    else if (!roots.some((r) => r.raw.equals(c.raw))) roots.push(c);
  }
  const accepted = new Set(roots.filter((r) => anchors.some((a) => a.equals(r.raw))));
  for (let progress = true; progress;) {
    progress = false;
    for (const r of roots) {
      if (accepted.has(r)) continue;
      if (crosses.some((x) => vouchesFor(x, r, now) && [...accepted].some((a) => issuedBy(x, a)))) {
        accepted.add(r);
        progress = true;
      }
    }
  }
  if (accepted.size === 0) untrusted('the CA bundle the hub returned holds no root this node trusts (the pinned root, or one it vouches for with a cross certificate)');
  return roots.filter((r) => accepted.has(r));
}

export interface IssuedCheck {
  readonly certificateDer: Buffer;
  readonly chainDer: readonly Buffer[];
  readonly caBundleDer: readonly Buffer[];
  /** DER of the roots trusted so far: the pinned root at enrollment, ca.pem's roots at renewal. */
  readonly anchors: readonly Buffer[];
  readonly publicKey: crypto.KeyObject;
  readonly nodeId: string;
  readonly now: number;
}

export interface IssuedCertificate {
  readonly leaf: crypto.X509Certificate;
  readonly chain: readonly crypto.X509Certificate[];
  /** The accepted roots of the bundle (acceptedRoots): what ca.pem is to hold. */
  readonly roots: readonly crypto.X509Certificate[];
}

/**
 * Checks what the hub returned from Enroll or Renew before anything is written: the leaf chains
 * through chain_der, in order, to a root of ca_bundle_der that `anchors` make trusted
 * (acceptedRoots); the leaf carries our public key, is valid now, allows clientAuth and names the
 * node id as its CN.
 */
export function checkIssuedCertificate(x: IssuedCheck): IssuedCertificate {
  const leaf = parseCertificate(x.certificateDer) ?? untrusted('the hub returned a certificate that does not parse');
  const chain = x.chainDer.map((d) => parseCertificate(d) ?? untrusted('the hub returned a chain certificate that does not parse'));
  const bundle = x.caBundleDer.map((d) => parseCertificate(d) ?? untrusted('the hub returned a CA bundle certificate that does not parse'));
  const roots = acceptedRoots(bundle, x.anchors, x.now);

  let child = leaf;
  for (const ca of chain) {
    if (!issuedBy(child, ca)) untrusted(`certificate "${child.subject}" is not signed by the next certificate in the chain`);
    if (!validAt(ca, x.now)) throw new AgentError(ErrorCodes.CLIENT_CERT_EXPIRED, `chain certificate "${ca.subject}" is not valid now`);
    child = ca;
  }
  const top = child;
  if (!roots.some((r) => (r.raw.equals(top.raw) && chain.length > 0) || issuedBy(top, r))) {
    untrusted('the certificate does not chain to a trusted root of the returned CA bundle');
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
