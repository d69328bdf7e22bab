// Revoking a node: every certificate it holds is refused from then on (the mTLS check reads the
// store on every call), its streams are closed by the server, and the CRL is regenerated.
import type { HubContext } from './context.ts';
import type { CrlPublisher } from './crl.ts';

export async function revokeNode(ctx: HubContext, crl: CrlPublisher, nodeId: string, actor: string): Promise<string[]> {
  const node = await ctx.store.getNode(nodeId);
  const serials = await ctx.store.revokeNode(nodeId, { event: 'node.revoked', actor, nodeId, org: node?.org ?? null, detail: {} }, ctx.clock());
  if (serials.length > 0) {
    ctx.metrics.revocations.inc();
    ctx.log.warn({ event: 'node.revoked', nodeId, serials: serials.length, actor }, 'node revoked');
  }
  await crl.refresh();
  return serials;
}
