// sepal-hub token create | list | revoke — enrollment tokens for unattended installs.
import { mintEnrollmentToken } from '../enroll/enrollment-tokens.ts';
import { checkOrg } from '../service/names.ts';
import { parse, parseDuration, required, UsageError } from './args.ts';
import { COMMON, out, pathsFrom, table, withHub } from './common.ts';

const MAX_TTL_SECONDS = 30 * 86400;

export async function cmdToken(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values: v, positionals } = parse(rest, { ...COMMON, org: { type: 'string' }, ttl: { type: 'string' }, uses: { type: 'string' } }, true);
  const paths = pathsFrom(v);
  switch (sub) {
    case 'create': {
      const org = checkOrg(required(v.org, '--org'));
      const ttl = parseDuration(v.ttl ?? '1h', '--ttl');
      if (ttl < 60 || ttl > MAX_TTL_SECONDS) throw new UsageError('--ttl must be between 1m and 30d');
      const uses = Number(v.uses ?? '1');
      if (!Number.isSafeInteger(uses) || uses < 1 || uses > 1000) throw new UsageError('--uses must be an integer from 1 to 1000');
      return withHub(paths, async (hub) => {
        const now = hub.ctx.clock();
        const t = mintEnrollmentToken();
        const rec = await hub.ctx.store.createEnrollmentToken(
          { id: t.id, secretHash: t.secretHash, org, expiresAt: now + ttl * 1000, uses, createdBy: 'cli' },
          { event: 'token.created', actor: 'cli', org, detail: { token: t.id, uses, expiresAt: new Date(now + ttl * 1000).toISOString() } },
          now,
        );
        if (v.json === true) {
          out(JSON.stringify({ token: t.token, id: rec.id, org, uses, expiresAt: new Date(rec.expiresAt).toISOString() }));
        } else {
          out(`Enrollment token for ${org} (id ${rec.id}, ${uses} use(s), expires ${new Date(rec.expiresAt).toISOString()}).
It is shown only now; the hub keeps only a hash:

  ${t.token}

On the organisation's host: sepal-agent enroll --hub URL --ca-sha256 FINGERPRINT --token <the token above>`);
        }
        return 0;
      });
    }
    case 'list':
      return withHub(paths, async (hub) => {
        const now = hub.ctx.clock();
        const rows = (await hub.ctx.store.listEnrollmentTokens(v.org === undefined ? {} : { org: v.org })).map((t) => ({
          id: t.id, org: t.org, createdAt: new Date(t.createdAt).toISOString(), expiresAt: new Date(t.expiresAt).toISOString(),
          usesLeft: t.usesLeft, usesTotal: t.usesTotal, revokedAt: t.revokedAt === null ? null : new Date(t.revokedAt).toISOString(),
          state: t.revokedAt !== null ? 'revoked' : now >= t.expiresAt ? 'expired' : t.usesLeft === 0 ? 'used' : 'valid',
        }));
        if (v.json === true) out(JSON.stringify({ tokens: rows }));
        else out(table([['ID', 'ORG', 'STATE', 'USES LEFT', 'EXPIRES'], ...rows.map((r) => [r.id, r.org, r.state, `${r.usesLeft}/${r.usesTotal}`, r.expiresAt])]));
        return 0;
      });
    case 'revoke': {
      const id = positionals[0];
      if (id === undefined) throw new UsageError('token revoke needs a token id');
      return withHub(paths, async (hub) => {
        const done = await hub.ctx.store.revokeEnrollmentToken(id, { event: 'token.revoked', actor: 'cli', detail: { token: id } }, hub.ctx.clock());
        out(done ? `Revoked enrollment token ${id}.` : `${id} was already revoked.`);
        return 0;
      });
    }
    default:
      throw new UsageError('token: expected create, list or revoke');
  }
}
