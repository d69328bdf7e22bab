// Identifiers the hub hands out and the names it accepts for organisations.
import crypto from 'node:crypto';
import { SepalError, ErrorCodes } from '../errors.ts';

const ORG_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const NODE_RE = /^n-[0-9a-f]{16}$/;

export function newNodeId(): string {
  return `n-${crypto.randomBytes(8).toString('hex')}`;
}

export function isNodeId(s: string): boolean {
  return NODE_RE.test(s);
}

export function checkOrg(org: string): string {
  if (!ORG_RE.test(org)) throw new SepalError(ErrorCodes.INVALID_ARGUMENT, `organisation name ${JSON.stringify(org)} must match ${ORG_RE.source}`);
  return org;
}

/** The URI SAN naming org and node, SPIFFE style with the federation as trust domain. */
export function nodeUri(federationId: string, org: string, nodeId: string): string {
  return `spiffe://${federationId}/org/${org}/node/${nodeId}`;
}
