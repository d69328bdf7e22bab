// Maps coded errors to gRPC statuses. The code travels in the `sepal-error-code` trailer; an
// error that is not meant for the client becomes a generic INTERNAL.
import * as grpc from '@grpc/grpc-js';
import { ERROR_CODE_METADATA_KEY, ErrorCodes, type ErrorCode } from '../../proto/errors.ts';
import { isSepalError } from '../errors.ts';

const STATUS: Partial<Record<ErrorCode, grpc.status>> = {
  CLIENT_CERT_MISSING: grpc.status.UNAUTHENTICATED,
  CLIENT_CERT_UNTRUSTED: grpc.status.UNAUTHENTICATED,
  CLIENT_CERT_EXPIRED: grpc.status.UNAUTHENTICATED,
  CLIENT_CERT_REVOKED: grpc.status.PERMISSION_DENIED,
  CLIENT_CERT_WRONG_USAGE: grpc.status.UNAUTHENTICATED,
  CLIENT_CERT_UNKNOWN: grpc.status.UNAUTHENTICATED,
  NODE_REVOKED: grpc.status.PERMISSION_DENIED,
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  CSR_MALFORMED: grpc.status.INVALID_ARGUMENT,
  CSR_BAD_SIGNATURE: grpc.status.INVALID_ARGUMENT,
  CSR_UNSUPPORTED_KEY: grpc.status.INVALID_ARGUMENT,
  CSR_CA_REQUESTED: grpc.status.INVALID_ARGUMENT,
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  MANIFEST_INVALID: grpc.status.INVALID_ARGUMENT,
  MESSAGE_TOO_LARGE: grpc.status.RESOURCE_EXHAUSTED,
  RATE_LIMITED: grpc.status.RESOURCE_EXHAUSTED,
  NOT_FOUND: grpc.status.NOT_FOUND,
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  ENROLLMENT_UNAVAILABLE: grpc.status.FAILED_PRECONDITION,
  TOKEN_INVALID: grpc.status.UNAUTHENTICATED,
  TOKEN_EXPIRED: grpc.status.UNAUTHENTICATED,
  TOKEN_ISSUER_MISMATCH: grpc.status.UNAUTHENTICATED,
  TOKEN_AUDIENCE_MISMATCH: grpc.status.UNAUTHENTICATED,
  TOKEN_NOT_ACCESS_TOKEN: grpc.status.UNAUTHENTICATED,
  TOKEN_REPLAYED: grpc.status.UNAUTHENTICATED,
  ENROLLMENT_TOKEN_INVALID: grpc.status.UNAUTHENTICATED,
  ENROLLMENT_TOKEN_EXPIRED: grpc.status.UNAUTHENTICATED,
  ENROLLMENT_TOKEN_REVOKED: grpc.status.UNAUTHENTICATED,
  ENROLLMENT_TOKEN_EXHAUSTED: grpc.status.UNAUTHENTICATED,
  ROLE_MISSING: grpc.status.PERMISSION_DENIED,
  ORG_CLAIM_MISSING: grpc.status.PERMISSION_DENIED,
  ORG_MISMATCH: grpc.status.PERMISSION_DENIED,
  FLOWER_KEY_INVALID: grpc.status.INVALID_ARGUMENT,
  IDP_UNAVAILABLE: grpc.status.UNAVAILABLE,
  SHUTTING_DOWN: grpc.status.UNAVAILABLE,
  TIMEOUT: grpc.status.DEADLINE_EXCEEDED,
};

export function statusFor(code: ErrorCode): grpc.status {
  return STATUS[code] ?? grpc.status.INTERNAL;
}

export function serviceError(code: ErrorCode, message: string): grpc.ServiceError {
  const md = new grpc.Metadata();
  md.set(ERROR_CODE_METADATA_KEY, code);
  const status = statusFor(code);
  return Object.assign(new Error(message), { code: status, details: message, metadata: md });
}

/** Any thrown value to what the client may see. */
export function toServiceError(e: unknown): grpc.ServiceError {
  if (isSepalError(e) && e.expose) return serviceError(e.code, e.message);
  return serviceError(ErrorCodes.INTERNAL, 'internal error');
}
