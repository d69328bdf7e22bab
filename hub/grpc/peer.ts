// Who is on the other end of a TLS connection. The verdict is computed once per connection, when
// the handshake completes (OpenSSL has already checked the chain against our CA, validity and
// purpose); each call then only re-checks expiry and the store (revocation), so a revocation made
// by another process is honoured on the very next call.
import type { TLSSocket } from 'node:tls';
import { ErrorCodes, type ErrorCode } from '../../proto/errors.ts';
import type { PeerIdentity } from '../service/context.ts';
import { isNodeId } from '../service/names.ts';

const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

export type PeerVerdict =
  | { readonly ok: true; readonly identity: PeerIdentity; readonly fingerprint: string }
  | { readonly ok: false; readonly code: ErrorCode; readonly detail: Readonly<Record<string, string>> };

function attr(dn: string, key: string): string | undefined {
  // X509Certificate.subject is "K=V" lines; our leaves carry one CN and one O.
  for (const line of dn.split('\n')) {
    const i = line.indexOf('=');
    if (line.slice(0, i) === key) return line.slice(i + 1);
  }
  return undefined;
}

export function verifyPeer(socket: TLSSocket): PeerVerdict {
  const address = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
  const cert = socket.getPeerX509Certificate();
  if (cert === undefined) return { ok: false, code: ErrorCodes.CLIENT_CERT_MISSING, detail: { address } };
  const fingerprint = cert.fingerprint256.replaceAll(':', '').toLowerCase();
  const detail = { address, fingerprint, serial: cert.serialNumber.toLowerCase() };
  if (!socket.authorized) {
    const err = String(socket.authorizationError ?? '');
    const code = err === 'CERT_HAS_EXPIRED' || err === 'CERT_NOT_YET_VALID'
      ? ErrorCodes.CLIENT_CERT_EXPIRED
      : err === 'INVALID_PURPOSE' ? ErrorCodes.CLIENT_CERT_WRONG_USAGE : ErrorCodes.CLIENT_CERT_UNTRUSTED;
    return { ok: false, code, detail: { ...detail, tls: err } };
  }
  const eku = cert.keyUsage;
  if (!Array.isArray(eku) || !eku.includes(CLIENT_AUTH)) return { ok: false, code: ErrorCodes.CLIENT_CERT_WRONG_USAGE, detail };
  const nodeId = attr(cert.subject, 'CN');
  const org = attr(cert.subject, 'O');
  if (nodeId === undefined || org === undefined || !isNodeId(nodeId)) return { ok: false, code: ErrorCodes.CLIENT_CERT_UNTRUSTED, detail };
  return {
    ok: true,
    fingerprint,
    identity: {
      nodeId,
      org,
      serial: normaliseSerial(cert.serialNumber),
      notAfter: Date.parse(cert.validTo),
      address,
    },
  };
}

/** OpenSSL prints serials in upper case with possible leading zero; the store keeps lowercase. */
export function normaliseSerial(s: string): string {
  return s.toLowerCase();
}
