// Publishing manifests: validate the body against the schema in proto/, sign one JWS per node
// with the active key, and store them with strictly increasing versions in one transaction.
import { parseManifestBody } from '../../proto/manifest.ts';
import { SepalError, ErrorCodes } from '../errors.ts';
import { ManifestSigner } from '../manifest/signer.ts';
import { generateSigningKey, loadSigningKey, publishedKeys } from '../manifest/keyset.ts';
import type { JWK } from 'jose';
import type { ManifestRecord } from '../store/store.ts';
import type { HubContext } from './context.ts';
import { recordDenial } from './security-events.ts';

/** Bytes a ManifestEnvelope and gRPC framing add around the JWS. */
const ENVELOPE_OVERHEAD = 256;

export type ManifestTarget = { readonly nodeId: string } | { readonly org: string };

export class ManifestService {
  readonly #ctx: HubContext;
  #signer: ManifestSigner | null = null;

  constructor(ctx: HubContext) {
    this.#ctx = ctx;
  }

  /** The signer for the store's active key; reloaded when another process rotated keys. */
  async activeSigner(): Promise<ManifestSigner> {
    const ctx = this.#ctx;
    const keys = await ctx.store.listSigningKeys();
    const active = keys.find((k) => k.retiredAt === null);
    if (active === undefined) throw new SepalError(ErrorCodes.DATA_DIR_INVALID, 'no active manifest signing key (run sepal-hub keys rotate)');
    if (this.#signer?.kid !== active.kid) {
      const { privateKey } = await loadSigningKey(ctx.paths.manifestKeysDir, active.kid);
      this.#signer = new ManifestSigner({
        issuer: ctx.config.https.publicUrl,
        federationId: ctx.config.federationId,
        kid: active.kid,
        privateKey,
        lifetimeMs: ctx.config.manifests.lifetimeSeconds * 1000,
        clock: ctx.clock,
      });
    }
    return this.#signer;
  }

  async publish(target: ManifestTarget, rawBody: unknown, actor: string): Promise<ManifestRecord[]> {
    const ctx = this.#ctx;
    const parsed = parseManifestBody(rawBody);
    if (!parsed.ok) {
      await recordDenial(ctx, ErrorCodes.MANIFEST_INVALID, actor, { issues: parsed.issues.slice(0, 10) });
      const first = parsed.issues[0];
      throw new SepalError(ErrorCodes.MANIFEST_INVALID, `manifest body is invalid at ${first?.path || '(root)'}: ${first?.message ?? ''}`, { detail: { issues: parsed.issues } });
    }
    const signer = await this.activeSigner();
    const body = parsed.value;
    const nodes = 'nodeId' in target
      ? [await ctx.store.getNode(target.nodeId)].filter((n) => n !== null)
      : await ctx.store.listNodes({ org: target.org });
    const active = nodes.filter((n) => n.state === 'active');
    if (active.length === 0 && 'nodeId' in target) throw new SepalError(ErrorCodes.NOT_FOUND, `no active node ${target.nodeId}`);
    const org = 'org' in target ? target.org : active[0]?.org ?? '';
    // A signed manifest must fit in one gRPC message with room for its envelope, or no agent could
    // ever receive it. Checked before anything is stored (also when an organisation has no node
    // yet, its manifest is kept for later), with the longest version number a manifest can carry.
    const maxJws = ctx.config.limits.maxMessageBytes - ENVELOPE_OVERHEAD;
    const tooLarge = (jwsLength: number): SepalError =>
      new SepalError(ErrorCodes.MANIFEST_INVALID, `signed manifest is ${jwsLength} bytes; limits.maxMessageBytes allows ${maxJws}`, { detail: { issues: [{ path: '', message: 'too large once signed' }] } });
    const probe = signer.sign({ nodeId: 'n-0000000000000000', org, version: Number.MAX_SAFE_INTEGER, body });
    if (probe.jws.length > maxJws) {
      await recordDenial(ctx, ErrorCodes.MANIFEST_INVALID, actor, { reason: 'too_large' });
      throw tooLarge(probe.jws.length);
    }

    const records = active.length === 0 ? [] : await ctx.store.publishManifests(
      active.map((n) => n.id),
      (nodeId, nodeOrg, version) => {
        const signed = signer.sign({ nodeId, org: nodeOrg, version, body });
        if (signed.jws.length > maxJws) throw tooLarge(signed.jws.length); // rolls the whole publication back
        return { kid: signed.kid, jws: signed.jws, expiresAt: signed.expiresAt };
      },
      (nodeId, nodeOrg, version) => ({ event: 'manifest.published', actor, nodeId, org: nodeOrg, detail: { version, kid: signer.kid } }),
      ctx.clock(),
    );
    if ('org' in target) {
      // Remembered for nodes that enroll into the organisation later (their first manifest), once
      // the publication itself has succeeded.
      await ctx.store.setOrgManifest(target.org, JSON.stringify(body), ctx.clock());
    }
    ctx.metrics.manifestsPublished.inc(records.length);
    ctx.log.info({ event: 'manifest.published', nodes: records.length, kid: signer.kid, actor }, 'manifests published');
    return records;
  }

  /** Signs the organisation's manifest for a node that just enrolled, when there is one. */
  async firstManifest(nodeId: string, org: string): Promise<ManifestRecord | null> {
    const body = await this.#ctx.store.getOrgManifest(org);
    if (body === null) return null;
    const [record] = await this.publish({ nodeId }, JSON.parse(body) as unknown, 'hub:enroll');
    return record ?? null;
  }

  /** Adds a new signing key; the previous one stays published while its manifests live. */
  async rotateKeys(actor: string): Promise<{ kid: string; previous: string | null }> {
    const ctx = this.#ctx;
    const before = (await ctx.store.listSigningKeys()).find((k) => k.retiredAt === null);
    const { kid, publicJwk } = await generateSigningKey(ctx.paths.manifestKeysDir);
    await ctx.store.addSigningKey({ kid, publicJwk: JSON.stringify(publicJwk) }, { event: 'keys.rotated', actor, detail: { kid, previous: before?.kid ?? null } }, ctx.clock());
    ctx.log.info({ event: 'keys.rotated', kid, previous: before?.kid ?? null }, 'manifest signing key rotated');
    return { kid, previous: before?.kid ?? null };
  }

  /** The JWKS agents verify manifests with. */
  async jwks(): Promise<{ keys: JWK[] }> {
    const ctx = this.#ctx;
    const keys = await ctx.store.listSigningKeys();
    const expiry = new Map<string, number | null>();
    for (const k of keys) if (k.retiredAt !== null) expiry.set(k.kid, await ctx.store.lastManifestExpiryForKey(k.kid));
    return { keys: publishedKeys(keys, (kid) => expiry.get(kid) ?? null, ctx.clock()) };
  }
}
