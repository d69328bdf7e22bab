// sepal-hub keys rotate | list
import { parse, UsageError } from './args.ts';
import { COMMON, out, pathsFrom, table, withHub } from './common.ts';

export async function cmdKeys(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values: v } = parse(rest, COMMON);
  const paths = pathsFrom(v);
  switch (sub) {
    case 'rotate':
      return withHub(paths, async (hub) => {
        const r = await hub.manifests.rotateKeys('cli');
        out(v.json === true ? JSON.stringify(r) : `New signing key ${r.kid}; ${r.previous ?? 'no previous key'} stays published until the manifests it signed expire.`);
        return 0;
      });
    case 'list':
      return withHub(paths, async (hub) => {
        const keys = await hub.ctx.store.listSigningKeys();
        const published = new Set((await hub.manifests.jwks()).keys.map((k) => k.kid));
        const rows = keys.map((k) => ({ kid: k.kid, createdAt: new Date(k.createdAt).toISOString(), retiredAt: k.retiredAt === null ? null : new Date(k.retiredAt).toISOString(), active: k.retiredAt === null, published: published.has(k.kid) }));
        if (v.json === true) out(JSON.stringify({ keys: rows }));
        else out(table([['KID', 'CREATED', 'RETIRED', 'ACTIVE', 'PUBLISHED'], ...rows.map((r) => [r.kid, r.createdAt, r.retiredAt ?? '-', String(r.active), String(r.published)])]));
        return 0;
      });
    default:
      throw new UsageError('keys: expected rotate or list');
  }
}
