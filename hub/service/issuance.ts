// Certificate issuance: from a verified CSR to a recorded certificate. The hub decides subject,
// SAN, usage and lifetime; the CSR contributes its public key only. Recording happens in one
// store transaction together with the audit entry.
import { parseAndVerifyCsr } from '../ca/csr.ts';
import { randomSerial } from '../ca/certificate.ts';
import type { EnrollmentClaim, NodeRecord } from '../store/store.ts';
import type { HubContext, IssuedCredentials, PeerIdentity } from './context.ts';
import { checkOrg, newNodeId, nodeUri } from './names.ts';

const BACKDATE_MS = 60_000;

interface Minted {
  readonly creds: IssuedCredentials;
  readonly fingerprint: string;
  readonly notBefore: number;
  readonly issuerKeyId: string;
}

function mint(ctx: HubContext, csr: Buffer | string, nodeId: string, org: string): Minted {
  const verified = parseAndVerifyCsr(csr);
  const now = ctx.clock();
  // X.509 times have whole seconds: record exactly what the certificate says.
  const notBefore = Math.floor((now - BACKDATE_MS) / 1000) * 1000;
  const notAfter = Math.floor((now + ctx.config.certificates.leafLifetimeSeconds * 1000) / 1000) * 1000;
  const issued = ctx.authority.leafIssuer.issue({
    spkiDer: verified.spkiDer,
    nodeId,
    org,
    uri: nodeUri(ctx.config.federationId, org, nodeId),
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
    serial: randomSerial(),
  });
  return {
    creds: { certDer: issued.der, chainDer: ctx.authority.chainDer, caBundleDer: ctx.authority.caBundleDer, notAfter, serial: issued.serialHex },
    issuerKeyId: ctx.authority.issuerKeyId,
    fingerprint: issued.fingerprint,
    notBefore,
  };
}

export interface EnrollInput {
  readonly org: string;
  readonly name: string;
  readonly csr: Buffer | string;
  readonly facts: string | null;
  readonly flowerPublicKey: string | null;
  /** Who authorised it: 'cli', 'oidc:<sub>', 'token:<id>'. */
  readonly actor: string;
  /** The credential's one use, consumed in the enrollment transaction. */
  readonly claim?: EnrollmentClaim;
  /** Extra audit detail (never secrets). */
  readonly detail?: Record<string, unknown>;
}

export async function enrollNode(ctx: HubContext, input: EnrollInput): Promise<{ node: NodeRecord; credentials: IssuedCredentials }> {
  const org = checkOrg(input.org);
  const nodeId = newNodeId();
  const t0 = performance.now();
  const m = mint(ctx, input.csr, nodeId, org);
  const node = await ctx.store.enrollNode(
    { id: nodeId, org, name: input.name, facts: input.facts, flowerPublicKey: input.flowerPublicKey },
    { serial: m.creds.serial, nodeId, org, kind: 'enroll', notBefore: m.notBefore, notAfter: m.creds.notAfter, fingerprint: m.fingerprint, der: m.creds.certDer, issuerKeyId: m.issuerKeyId },
    { event: 'node.enrolled', actor: input.actor, nodeId, org, detail: { ...input.detail, serial: m.creds.serial, name: input.name } },
    ctx.clock(),
    input.claim,
  );
  ctx.metrics.issuanceSeconds.observe((performance.now() - t0) / 1000);
  ctx.metrics.issued.inc({ kind: 'enroll' });
  ctx.log.info({ event: 'node.enrolled', nodeId, org, serial: m.creds.serial }, 'node enrolled');
  return { node, credentials: m.creds };
}

/** Renewal for a caller already proven by its client certificate: same node, new key. */
export async function renewCertificate(ctx: HubContext, peer: PeerIdentity, csr: Buffer): Promise<IssuedCredentials> {
  const t0 = performance.now();
  const m = mint(ctx, csr, peer.nodeId, peer.org);
  await ctx.store.recordRenewal(
    { serial: m.creds.serial, nodeId: peer.nodeId, org: peer.org, kind: 'renew', notBefore: m.notBefore, notAfter: m.creds.notAfter, fingerprint: m.fingerprint, der: m.creds.certDer, issuerKeyId: m.issuerKeyId },
    { event: 'cert.renewed', actor: `node:${peer.nodeId}`, nodeId: peer.nodeId, org: peer.org, detail: { serial: m.creds.serial, previous: peer.serial } },
    ctx.clock(),
  );
  ctx.metrics.issuanceSeconds.observe((performance.now() - t0) / 1000);
  ctx.metrics.issued.inc({ kind: 'renew' });
  if (ctx.log.isLevelEnabled('debug')) ctx.log.debug({ event: 'cert.renewed', nodeId: peer.nodeId, serial: m.creds.serial }, 'certificate renewed');
  return m.creds;
}
