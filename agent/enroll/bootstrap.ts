// Pinned first contact (like kubeadm's --discovery-token-ca-cert-hash): fetch the hub's CA bundle
// over TLS trusting nothing, accept it only if one of its roots (self-signed CA certificates; the
// active one first, two during a root rotation) has the SHA-256 fingerprint the admin gave and
// every other certificate chains to one of its roots, then trust the pinned root alone. Also the
// HTTPS GET every later step uses, with the trust it is handed.
import https from 'node:https';
import crypto from 'node:crypto';
import { AgentError, ErrorCodes, UsageError } from '../errors.ts';
import { AGENT_VERSION } from '../version.ts';
import { bundleChainsTo, parseCertificate, selfSignedCa, sha256Hex } from './certificate.ts';
import { derToPem, pemBlocks } from './der.ts';

export interface HttpsGetRequest {
  readonly url: URL;
  /** PEM of the only root to trust, or null on first contact (the peer is not verified). */
  readonly ca: string | null;
  readonly maxBytes: number;
  readonly signal?: AbortSignal | undefined;
}

export interface HttpsGetResponse {
  readonly status: number;
  readonly body: Buffer;
}

export type HttpsGet = (req: HttpsGetRequest) => Promise<HttpsGetResponse>;

const REQUEST_TIMEOUT_MS = 15_000;
const MAX_BUNDLE_BYTES = 256 * 1024;
const MAX_BUNDLE_CERTS = 16;

/** Codes of node's TLS layer that mean "the peer's certificate did not verify", as opposed to a
 *  network failure. Reported with the pinned root named, since that is what they were checked against. */
function isTlsVerifyError(code: string | undefined): boolean {
  return code !== undefined && (code.startsWith('ERR_TLS_CERT') || /CERT|SELF_SIGNED|UNABLE_TO|ISSUER/.test(code));
}

/** GET over TLS 1.3 only; no redirects, no proxies, a size cap and a timeout. */
export const httpsGet: HttpsGet = (req) => new Promise<HttpsGetResponse>((resolve, reject) => {
  const r = https.get(req.url, {
    agent: false,
    minVersion: 'TLSv1.3',
    ...(req.ca === null ? { rejectUnauthorized: false } : { ca: req.ca, rejectUnauthorized: true }),
    headers: { accept: '*/*', 'user-agent': `sepal-agent/${AGENT_VERSION}` },
    timeout: REQUEST_TIMEOUT_MS,
    ...(req.signal === undefined ? {} : { signal: req.signal }),
  }, (res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (c: Buffer) => {
      size += c.length;
      if (size > req.maxBytes) {
        res.destroy();
        reject(new AgentError(ErrorCodes.DISCOVERY_INVALID, `${req.url.href}: response larger than ${req.maxBytes} bytes`));
        return;
      }
      chunks.push(c);
    });
    res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    res.on('error', reject);
  });
  r.on('timeout', () => r.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
  r.on('error', (e: NodeJS.ErrnoException) => {
    if (req.signal?.aborted === true) {
      reject(new AgentError(ErrorCodes.CANCELLED, 'cancelled; nothing was written'));
    } else if (e instanceof AgentError) {
      reject(e);
    } else if (req.ca !== null && isTlsVerifyError(e.code)) {
      reject(new AgentError(ErrorCodes.HUB_UNREACHABLE, `the hub at ${req.url.origin} presented a TLS certificate that does not verify against the pinned root: ${e.code ?? ''} ${e.message}`, { cause: e }));
    } else {
      reject(new AgentError(ErrorCodes.HUB_UNREACHABLE, `cannot reach the hub at ${req.url.origin}: ${e.code ?? e.message}`, { cause: e }));
    }
  });
});

/** The hub's base URL from --hub: https, with a host, no credentials, query or fragment. */
export function parseHubUrl(s: string): URL {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new UsageError(`--hub: not a URL: ${JSON.stringify(s)}`);
  }
  if (u.protocol !== 'https:') throw new UsageError(`--hub must be an https:// URL, got ${JSON.stringify(s)}`);
  if (u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') {
    throw new UsageError('--hub must not carry credentials, a query or a fragment');
  }
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return u;
}

/** A fingerprint as people paste it — any case, with or without colons, optionally `sha256:` in
 *  front — as 64 lowercase hex digits; null when it is not a SHA-256 fingerprint. */
export function normalizeFingerprint(pin: string): string | null {
  const s = pin.trim().replace(/^sha256:/i, '').toLowerCase();
  // Colons only between byte pairs, as `openssl x509 -fingerprint` prints them.
  if (/^[0-9a-f]{64}$/.test(s)) return s;
  return /^([0-9a-f]{2}:){31}[0-9a-f]{2}$/.test(s) ? s.replaceAll(':', '') : null;
}

/** `ab:cd:...` for people comparing fingerprints by eye. */
export function colonHex(hex: string): string {
  return hex.toUpperCase().match(/../g)?.join(':') ?? hex;
}

export interface PinnedRoot {
  readonly der: Buffer;
  /** The only trust anchor from here on. */
  readonly pem: string;
  readonly fingerprint: string;
}

/** Resolves a path relative to the hub base URL (which always ends in '/'). */
export function hubResource(hub: URL, relative: string): URL {
  return new URL(relative.replace(/^\/+/, ''), hub);
}

export async function fetchPinnedRoot(hub: URL, pin: string, deps: { get: HttpsGet; signal?: AbortSignal | undefined }): Promise<PinnedRoot> {
  const url = hubResource(hub, 'ca.pem');
  const res = await deps.get({ url, ca: null, maxBytes: MAX_BUNDLE_BYTES, signal: deps.signal });
  if (res.status !== 200) throw new AgentError(ErrorCodes.DISCOVERY_INVALID, `${url.href} answered HTTP ${res.status}`);
  const ders = pemBlocks(res.body.toString('utf8'), 'CERTIFICATE');
  if (ders === null) throw new AgentError(ErrorCodes.DISCOVERY_INVALID, `${url.href} is not a PEM certificate bundle`);
  if (ders.length > MAX_BUNDLE_CERTS) throw new AgentError(ErrorCodes.DISCOVERY_INVALID, `${url.href} holds more than ${MAX_BUNDLE_CERTS} certificates`);
  // Compare before parsing anything further: until the pin matches, the bundle is just bytes. The
  // pin may name any root: during a root rotation the operator may hand out the old or the new one.
  const expected = Buffer.from(pin, 'hex');
  const rootDer = ders.find((d) => crypto.timingSafeEqual(Buffer.from(sha256Hex(d), 'hex'), expected));
  if (rootDer === undefined) {
    const actual = sha256Hex(ders[0] as Buffer);
    throw new AgentError(ErrorCodes.CA_FINGERPRINT_MISMATCH,
      `the hub's root CA has SHA-256 fingerprint ${actual}, but --ca-sha256 is ${pin}; nothing was written. ` +
      'Check the fingerprint with the hub operator (sepal-hub init prints it); a mismatch can mean you are not talking to your hub.',
      { detail: { expected: pin, actual } });
  }
  const certs = ders.map((d) => parseCertificate(d));
  if (certs.some((c) => c === null)) throw new AgentError(ErrorCodes.DISCOVERY_INVALID, `${url.href} holds a certificate that does not parse`);
  const parsed = certs as crypto.X509Certificate[];
  const roots = parsed.filter(selfSignedCa);
  if (!roots.some((r) => r.raw.equals(rootDer))) throw new AgentError(ErrorCodes.DISCOVERY_INVALID, 'the pinned certificate is not a self-signed CA certificate');
  if (!bundleChainsTo(parsed, roots)) {
    throw new AgentError(ErrorCodes.DISCOVERY_INVALID, `${url.href} holds a certificate that does not chain to a root of the bundle`);
  }
  return Object.freeze({ der: rootDer, pem: derToPem(rootDer, 'CERTIFICATE'), fingerprint: sha256Hex(rootDer) });
}
