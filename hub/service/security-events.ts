// Denials are security events: counted in metrics, logged, and appended to the audit log.
// Logging or auditing a denial must never turn it into a different error for the caller.
import type { ErrorCode } from '../../proto/errors.ts';
import type { HubContext } from './context.ts';

export async function recordDenial(ctx: HubContext, reason: ErrorCode, actor: string, detail: Record<string, unknown> = {}, who: { nodeId?: string | null; org?: string | null } = {}): Promise<void> {
  ctx.metrics.denials.inc({ reason });
  ctx.log.warn({ event: 'security.denied', reason, actor, ...who, detail }, 'request denied');
  try {
    await ctx.store.appendAudit({ event: 'security.denied', actor, reason, nodeId: who.nodeId ?? null, org: who.org ?? null, detail }, ctx.clock());
  } catch (e) {
    ctx.log.error({ err: e, event: 'audit.write_failed', reason }, 'could not append denial to the audit log');
  }
}
