// sepal-hub ca status | prepare-issuing | prepare-root | activate | prune | renew-server
// (the phases are explained in hub/service/ca-rotation.ts and docs/operations.md).
import { parse, UsageError } from './args.ts';
import { COMMON, out, pathsFrom, table, withHub } from './common.ts';
import { activate, caStatus, prepareIssuing, prepareRoot, prune, renewServer } from '../service/ca-rotation.ts';

const OPTIONS = {
  ...COMMON,
  'root-key': { type: 'string' },
  'new-root-key': { type: 'string' },
  hostname: { type: 'string' },
  force: { type: 'boolean' },
} as const;

/** Flags beyond the common ones that each subcommand takes; any other is a usage error rather
 *  than silently ignored (`ca prune --force` must not look as if it forced anything). */
const OWN_FLAGS: Readonly<Record<string, readonly string[]>> = {
  'status': [],
  'prepare-issuing': ['root-key'],
  'prepare-root': ['root-key', 'new-root-key'],
  'activate': ['force'],
  'prune': [],
  'renew-server': ['hostname'],
};

export async function cmdCa(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values: v } = parse(rest, OPTIONS);
  const own = sub === undefined ? undefined : OWN_FLAGS[sub];
  if (own !== undefined) {
    const extra = Object.keys(v).find((k) => !(k in COMMON) && !own.includes(k));
    if (extra !== undefined) throw new UsageError(`ca ${sub}: --${extra} does not apply here`);
  }
  const paths = pathsFrom(v);
  const json = v.json === true;
  const rootKeyFile = v['root-key'] ?? paths.rootKey;
  switch (sub) {
    case 'status':
      return withHub(paths, async (hub) => {
        const s = await caStatus(hub.ctx);
        if (json) {
          out(JSON.stringify(s));
          return 0;
        }
        out(`Enrollment fingerprint (--ca-sha256): ${s.rootSha256}`);
        if (s.nodesNotRenewed !== null) {
          out(s.nodesNotRenewed.length === 0
            ? 'Root rotation prepared: every active node has renewed since; ready for sepal-hub ca activate.'
            : `Root rotation prepared: ${s.nodesNotRenewed.length} active node(s) still to renew before sepal-hub ca activate: ${s.nodesNotRenewed.slice(0, 10).join(', ')}${s.nodesNotRenewed.length > 10 ? ', …' : ''}`);
        }
        out(table([
          ['ROLE', 'STATE', 'KEY ID', 'SIGNED BY', 'NOT AFTER', 'LAST LEAF EXPIRES', 'SUBJECT'],
          ...s.rows.map((r) => [r.role, r.state, r.keyId.slice(0, 16), r.signedBy.slice(0, 16), r.notAfter,
            r.lastLeafExpiry === undefined ? '-' : r.lastLeafExpiry ?? 'none', r.subject]),
        ]));
        return 0;
      });
    case 'prepare-issuing':
      return withHub(paths, async (hub) => {
        const r = await prepareIssuing(hub, { actor: 'cli', rootKeyFile });
        out(json ? JSON.stringify(r) : `Prepared issuing CA ${r.issuingKeyId} (valid until ${r.issuingNotAfter}); it is trusted, and published by a running serve within a second. ` +
          'Update the OpenVPN server\'s ca.pem and crl.pem if it has its own copy, then run: sepal-hub ca activate');
        return 0;
      });
    case 'prepare-root':
      return withHub(paths, async (hub) => {
        const r = await prepareRoot(hub, { actor: 'cli', rootKeyFile, ...(v['new-root-key'] === undefined ? {} : { newRootKeyFile: v['new-root-key'] }) });
        out(json ? JSON.stringify(r) : [
          `Prepared a new root ${r.root?.keyId ?? ''} (SHA-256 ${r.root?.sha256 ?? ''}), cross-signed by the current root,`,
          `and issuing CA ${r.issuingKeyId} under it. New root key: ${r.root?.keyFile ?? ''} — keep it offline with the old one.`,
          'Nodes take the new root into their trust at their next renewal. Give the OpenVPN server the new ca.pem (and restart it);',
          'once sepal-hub ca status shows every active node renewed, run: sepal-hub ca activate',
        ].join('\n'));
        return 0;
      });
    case 'activate':
      return withHub(paths, async (hub) => {
        const r = await activate(hub, { actor: 'cli', force: v.force === true });
        out(json ? JSON.stringify(r) : [
          `Issuing CA ${r.issuingKeyId} now signs every new certificate; ${r.retiredKeyId} is retired (trusted until its certificates expire).`,
          `Hub server certificate re-issued (serial ${r.serverSerial}); a running serve switches to it by itself.`,
          ...(r.rootChanged ? [`New enrollments pin the new root: --ca-sha256 ${r.rootSha256}`] : []),
          'Once every node has renewed (sepal-hub ca status shows when), run: sepal-hub ca prune',
        ].join('\n'));
        return 0;
      });
    case 'prune':
      return withHub(paths, async (hub) => {
        const r = await prune(hub, { actor: 'cli' });
        if (json) out(JSON.stringify(r));
        else {
          out(r.removedIssuing.length + r.removedRoots.length === 0 ? 'Nothing to prune.' : `Removed issuing CAs: ${r.removedIssuing.join(', ') || 'none'}; roots: ${r.removedRoots.join(', ') || 'none'}.`);
          for (const k of r.kept) out(`Kept retired issuing CA ${k.keyId}: a certificate it issued is valid until ${k.until}.`);
        }
        return 0;
      });
    case 'renew-server':
      return withHub(paths, async (hub) => {
        const names = v.hostname?.split(',').map((s) => s.trim()).filter((s) => s !== '');
        const r = await renewServer(hub, { actor: 'cli', ...(names === undefined ? {} : { names }) });
        out(json ? JSON.stringify(r) : `Hub server certificate re-issued for ${r.names.join(', ')} (serial ${r.serial}, valid until ${r.notAfter}); a running serve switches to it by itself.`);
        return 0;
      });
    default:
      throw new UsageError('ca: expected status, prepare-issuing, prepare-root, activate, prune or renew-server');
  }
}
