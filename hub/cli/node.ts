// sepal-hub node list | show | revoke | retry-registration
import { ErrorCodes } from '../../proto/errors.ts';
import { SepalError } from '../errors.ts';
import { nodeView, type NodeView } from '../service/views.ts';
import { parse, UsageError } from './args.ts';
import { COMMON, out, pathsFrom, table, withHub } from './common.ts';

function gpuSummary(n: NodeView): string {
  type Facts = { gpus?: Array<{ model?: string }> } | null | undefined;
  const reported = (n.status as { facts?: Facts } | null)?.facts;
  const gpus = (reported ?? (n.facts as Facts))?.gpus ?? [];
  return gpus.length === 0 ? '-' : `${gpus.length}x ${gpus[0]?.model ?? '?'}`;
}

function statusField(n: NodeView, key: 'supernodeState' | 'vpnState'): string {
  const s = n.status as Record<string, unknown> | null;
  const v = s?.[key];
  return typeof v === 'string' && v.length > 0 ? v : '-';
}

export async function cmdNode(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values: v, positionals } = parse(rest, { ...COMMON, org: { type: 'string' } }, true);
  const paths = pathsFrom(v);
  switch (sub) {
    case 'list':
      return withHub(paths, async (hub) => {
        const nodes = (await hub.ctx.store.listNodes(v.org === undefined ? {} : { org: v.org })).map(nodeView);
        if (v.json === true) {
          out(JSON.stringify({ nodes }));
          return 0;
        }
        out(table([
          ['NODE', 'ORG', 'NAME', 'STATE', 'LAST SEEN', 'CERT EXPIRES', 'MANIFEST', 'GPU', 'SUPERNODE', 'VPN', 'FLOWER NODE', 'FLOWER REGISTRATION'],
          ...nodes.map((n) => [n.id, n.org, n.name, n.state, n.lastSeenAt ?? 'never', n.certNotAfter ?? '-', String(n.manifestVersion), gpuSummary(n), statusField(n, 'supernodeState'), statusField(n, 'vpnState'),
            n.flower?.nodeId ?? '-', n.flower?.summary ?? '-']),
        ]));
        return 0;
      });
    case 'show':
    case 'revoke':
    case 'retry-registration': {
      const id = positionals[0];
      if (id === undefined) throw new UsageError(`node ${sub} needs a node id`);
      return withHub(paths, async (hub) => {
        const node = await hub.ctx.store.getNode(id);
        if (node === null) throw new SepalError(ErrorCodes.NOT_FOUND, `no node ${id}`);
        if (sub === 'show') {
          out(v.json === true ? JSON.stringify(nodeView(node)) : JSON.stringify(nodeView(node), null, 2));
          return 0;
        }
        if (sub === 'retry-registration') {
          // A running hub sees the audit entry on its change feed and registers the key at once.
          const reg = await hub.ctx.store.retryFlowerRegistration(id, { event: 'flower.registration_retried', actor: 'cli', detail: {} }, hub.ctx.clock());
          out(v.json === true ? JSON.stringify({ nodeId: id, flower: reg.state }) : `${id}: Flower registration is pending again; a running hub tries it now.`);
          return 0;
        }
        const serials = await hub.revoke(id, 'cli');
        out(serials.length === 0 ? `${id} was already revoked.` : `Revoked ${id} (${serials.length} certificate(s)); the CRL is regenerated and a running hub closes its streams.`);
        return 0;
      });
    }
    default:
      throw new UsageError('node: expected list, show, revoke or retry-registration');
  }
}
