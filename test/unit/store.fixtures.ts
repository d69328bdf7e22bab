// Test data shared by the store contract suite and the SQLite crash child (no vitest import, so a
// plain `node` child process can load it).
import { createHash, randomBytes } from 'node:crypto';
import type { AuditInput, CertKind, NewCert, NewNode } from '../../hub/store/store.ts';

export const T0 = 1_700_000_000_000;
export const DAY = 86_400_000;

export function serialFor(label: string): string {
  return createHash('sha256').update(label).digest('hex').slice(0, 32);
}

export function newNode(id: string, org = 'org-a'): NewNode {
  return { id, org, name: `name of ${id}`, facts: JSON.stringify({ os: 'linux', id }), flowerPublicKey: `ecdsa-sha2-nistp256 AAAA${id}` };
}

export function newCert(serial: string, nodeId: string, org: string, kind: CertKind, notAfter = T0 + 30 * DAY): NewCert {
  const der = randomBytes(300);
  return {
    serial, nodeId, org, kind, notBefore: notAfter - 30 * DAY, notAfter,
    fingerprint: createHash('sha256').update(der).digest('hex'), der,
  };
}

export const enrolledAudit = (nodeId: string, org: string, serial: string): AuditInput =>
  ({ event: 'node.enrolled', actor: 'cli', nodeId, org, detail: { serial, name: `name of ${nodeId}` } });
export const renewedAudit = (nodeId: string, org: string, serial: string): AuditInput =>
  ({ event: 'cert.renewed', actor: `node:${nodeId}`, nodeId, org, detail: { serial } });
