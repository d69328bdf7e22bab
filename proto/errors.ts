// The error catalogue shared by hub and agent: stable codes that callers switch on.
// A code travels over gRPC in the `sepal-error-code` trailer and over HTTPS in the JSON body
// `{ "error": { "code": ... } }`. Never tell errors apart by their message text.

export const ERROR_CODE_METADATA_KEY = 'sepal-error-code';

export const ErrorCodes = {
  // caller / transport identity
  CLIENT_CERT_MISSING: 'CLIENT_CERT_MISSING',
  CLIENT_CERT_UNTRUSTED: 'CLIENT_CERT_UNTRUSTED',
  CLIENT_CERT_EXPIRED: 'CLIENT_CERT_EXPIRED',
  CLIENT_CERT_REVOKED: 'CLIENT_CERT_REVOKED',
  CLIENT_CERT_WRONG_USAGE: 'CLIENT_CERT_WRONG_USAGE',
  CLIENT_CERT_UNKNOWN: 'CLIENT_CERT_UNKNOWN',
  NODE_REVOKED: 'NODE_REVOKED',
  // CSR and issuance
  CSR_MALFORMED: 'CSR_MALFORMED',
  CSR_BAD_SIGNATURE: 'CSR_BAD_SIGNATURE',
  CSR_UNSUPPORTED_KEY: 'CSR_UNSUPPORTED_KEY',
  CSR_CA_REQUESTED: 'CSR_CA_REQUESTED',
  // requests
  MESSAGE_TOO_LARGE: 'MESSAGE_TOO_LARGE',
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  NOT_FOUND: 'NOT_FOUND',
  ALREADY_EXISTS: 'ALREADY_EXISTS',
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  RATE_LIMITED: 'RATE_LIMITED',
  ENROLLMENT_UNAVAILABLE: 'ENROLLMENT_UNAVAILABLE',
  // manifests
  MANIFEST_INVALID: 'MANIFEST_INVALID',
  // configuration and data dir
  CONFIG_INVALID: 'CONFIG_INVALID',
  LISTEN_FAILED: 'LISTEN_FAILED',
  DATA_DIR_EXISTS: 'DATA_DIR_EXISTS',
  DATA_DIR_INVALID: 'DATA_DIR_INVALID',
  // integrity
  AUDIT_CHAIN_BROKEN: 'AUDIT_CHAIN_BROKEN',
  TIMEOUT: 'TIMEOUT',
  INTERNAL: 'INTERNAL',
  SHUTTING_DOWN: 'SHUTTING_DOWN',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export function isErrorCode(v: unknown): v is ErrorCode {
  return typeof v === 'string' && Object.hasOwn(ErrorCodes, v);
}
