// The Renew client's edge: the answer decoded field by field, and a failed call mapped to the
// hub's own code (the `sepal-error-code` trailer) or to a transport code.
import { describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { ERROR_CODE_METADATA_KEY } from '../../proto/errors.ts';
import { ErrorCodes } from '../../agent/errors.ts';
import { decodeRenewResponse, renewErrorFromGrpc } from '../../agent/credentials/hub-renew.ts';

const DER = Buffer.from('3003020101', 'hex');

function serviceError(code: grpc.status, details: string, sepalCode?: string): grpc.ServiceError {
  const metadata = new grpc.Metadata();
  if (sepalCode !== undefined) metadata.set(ERROR_CODE_METADATA_KEY, sepalCode);
  return Object.assign(new Error(details), { code, details, metadata });
}

describe('decodeRenewResponse', () => {
  it('accepts a well-formed answer and returns it frozen', () => {
    const r = decodeRenewResponse({ credentials: { certificateDer: DER, chainDer: [DER], caBundleDer: [DER, DER], notAfterUnixMs: '1700000000000' } });
    expect(r).toEqual({ certificateDer: DER, chainDer: [DER], caBundleDer: [DER, DER], notAfterUnixMs: 1_700_000_000_000 });
    expect(Object.isFrozen(r)).toBe(true);
  });

  it.each([
    ['no message', null],
    ['no credentials', {}],
    ['an empty certificate', { credentials: { certificateDer: Buffer.alloc(0), chainDer: [], caBundleDer: [DER], notAfterUnixMs: '1' } }],
    ['no root', { credentials: { certificateDer: DER, chainDer: [], caBundleDer: [], notAfterUnixMs: '1' } }],
    ['an empty chain entry', { credentials: { certificateDer: DER, chainDer: [Buffer.alloc(0)], caBundleDer: [DER], notAfterUnixMs: '1' } }],
    ['too long a chain', { credentials: { certificateDer: DER, chainDer: new Array<Buffer>(9).fill(DER), caBundleDer: [DER], notAfterUnixMs: '1' } }],
    ['a string for bytes', { credentials: { certificateDer: DER, chainDer: ['x'], caBundleDer: [DER], notAfterUnixMs: '1' } }],
    ['no expiry', { credentials: { certificateDer: DER, chainDer: [], caBundleDer: [DER], notAfterUnixMs: '0' } }],
    ['an expiry beyond 2^53', { credentials: { certificateDer: DER, chainDer: [], caBundleDer: [DER], notAfterUnixMs: '99999999999999999999' } }],
  ])('refuses %s as a malformed answer (INTERNAL)', (_name, raw) => {
    expect(() => decodeRenewResponse(raw)).toThrow(expect.objectContaining({ code: ErrorCodes.INTERNAL }) as Error);
  });
});

describe('renewErrorFromGrpc', () => {
  it('the hub\'s own code wins, whatever the status', () => {
    for (const code of [ErrorCodes.NODE_REVOKED, ErrorCodes.CLIENT_CERT_REVOKED, ErrorCodes.CLIENT_CERT_EXPIRED, ErrorCodes.RATE_LIMITED]) {
      const e = renewErrorFromGrpc(serviceError(grpc.status.PERMISSION_DENIED, 'no', code), 'hub:8443', 30_000);
      expect(e.code).toBe(code);
    }
  });

  it('an unknown trailer value is ignored; transport statuses map to transport codes', () => {
    const at = (status: grpc.status, sepal?: string): string => renewErrorFromGrpc(serviceError(status, 'x', sepal), 'hub:8443', 30_000).code;
    expect(at(grpc.status.UNAVAILABLE, 'NOT_A_CODE')).toBe(ErrorCodes.HUB_UNREACHABLE);
    expect(at(grpc.status.DEADLINE_EXCEEDED)).toBe(ErrorCodes.TIMEOUT);
    expect(at(grpc.status.CANCELLED)).toBe(ErrorCodes.CANCELLED);
    expect(at(grpc.status.UNKNOWN)).toBe(ErrorCodes.INTERNAL);
    expect(renewErrorFromGrpc(serviceError(grpc.status.UNAVAILABLE, 'connect refused'), 'hub:8443', 30_000).message).toContain('hub:8443');
  });
});
