// sepal-hub manifest publish (--node ID | --org ORG) --file manifest.json
import fs from 'node:fs';
import { ErrorCodes } from '../../proto/errors.ts';
import { SepalError } from '../errors.ts';
import { parse, required, UsageError } from './args.ts';
import { COMMON, out, pathsFrom, withHub } from './common.ts';

export async function cmdManifest(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'publish') throw new UsageError('manifest: expected publish');
  const { values: v } = parse(rest, { ...COMMON, node: { type: 'string' }, org: { type: 'string' }, file: { type: 'string' } });
  if ((v.node === undefined) === (v.org === undefined)) throw new UsageError('give exactly one of --node or --org');
  const file = required(v.file, '--file');
  let body: unknown;
  try {
    body = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new SepalError(ErrorCodes.MANIFEST_INVALID, `${file}: cannot read as JSON: ${(e as Error).message}`);
  }
  return withHub(pathsFrom(v), async (hub) => {
    try {
      const records = await hub.manifests.publish(v.node === undefined ? { org: v.org as string } : { nodeId: v.node }, body, 'cli');
      if (v.json === true) out(JSON.stringify({ published: records.map((r) => ({ nodeId: r.nodeId, version: r.version, kid: r.kid })) }));
      else for (const r of records) out(`published version ${r.version} for ${r.nodeId}`);
      if (v.org !== undefined && v.json !== true) out(`Nodes enrolling into ${v.org} from now on get this manifest first.`);
      return 0;
    } catch (e) {
      if (e instanceof SepalError && e.code === ErrorCodes.MANIFEST_INVALID) {
        const issues = (e.detail?.['issues'] ?? []) as Array<{ path: string; message: string }>;
        for (const i of issues) process.stderr.write(`  ${i.path || '(root)'}: ${i.message}\n`);
      }
      throw e;
    }
  });
}
