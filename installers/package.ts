// `npm run package`: the single executables under dist/ (issue 7).
//   dist/sepal-agent, dist/sepal-hub                          linux-x64
//   dist/linux-arm64/sepal-agent, dist/linux-arm64/sepal-hub  linux-arm64
//   dist/sepal-agent.exe                                      win-x64
// `npm run package -- linux-x64` builds only the targets named. Deterministic: the same sources and
// Node release give the same bytes, so an executable whose inputs have not changed since it was
// written (dist/.sea-inputs.json) is kept as it is.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AGENT_NODE_FLAGS, bundleForSea } from './bundle.ts';
import { SEA_CACHE, SEA_NODE_VERSION, SEA_TARGETS, baseExecutable, buildSea, seaConfig, type SeaTargetId } from './sea.ts';

const REPO = path.resolve(import.meta.dirname, '..');
export const DIST = path.join(REPO, 'dist');
const STAMPS = path.join(DIST, '.sea-inputs.json');

export interface PackagedExecutable {
  readonly target: SeaTargetId;
  readonly program: 'sepal-agent' | 'sepal-hub';
  readonly path: string;
  readonly bytes: number;
  /** false: reused, its inputs unchanged. */
  readonly built: boolean;
  readonly ms: number;
}

/** Where `npm run package` puts `program` for `target`. */
export function executablePath(target: SeaTargetId, program: 'sepal-agent' | 'sepal-hub'): string {
  const t = SEA_TARGETS[target];
  return path.join(DIST, t.distDir, `${program}${t.exeSuffix}`);
}

function fileHash(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

export async function packageAll(opts: { targets?: readonly SeaTargetId[]; log?: (s: string) => void } = {}): Promise<PackagedExecutable[]> {
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const targets = opts.targets ?? (Object.keys(SEA_TARGETS) as SeaTargetId[]);
  const mains = await bundleForSea(path.join(SEA_CACHE, 'main'));
  const mainHash = { 'sepal-agent': fileHash(mains.agent), 'sepal-hub': fileHash(mains.hub) };
  const stamps = ((): Record<string, string> => {
    try { return JSON.parse(fs.readFileSync(STAMPS, 'utf8')) as Record<string, string>; } catch { return {}; }
  })();
  const out: PackagedExecutable[] = [];
  for (const id of targets) {
    const target = SEA_TARGETS[id];
    const executable = baseExecutable(target, log);
    for (const program of target.programs) {
      const t0 = Date.now();
      const output = executablePath(id, program);
      const build = {
        main: program === 'sepal-agent' ? mains.agent : mains.hub,
        output,
        executable,
        // The agent idles; see AGENT_NODE_FLAGS. The hub runs with Node's defaults.
        execArgv: program === 'sepal-agent' ? AGENT_NODE_FLAGS : [],
      };
      // The base is the registry's package at that version (integrity checked when fetched).
      const base = `${target.npmPackage}@${SEA_NODE_VERSION}:${fs.statSync(executable).size}`;
      const key = crypto.createHash('sha256').update(JSON.stringify({ main: mainHash[program], base, config: seaConfig(build, '') })).digest('hex');
      const rel = path.relative(DIST, output);
      const existing = fs.statSync(output, { throwIfNoEntry: false });
      const fresh = existing !== undefined && stamps[rel] === `${key}:${existing.size}`;
      if (!fresh) {
        log(`building ${rel} (${id})`);
        buildSea(build);
        stamps[rel] = `${key}:${fs.statSync(output).size}`;
        fs.writeFileSync(STAMPS, `${JSON.stringify(stamps, null, 2)}\n`);
      }
      out.push({ target: id, program, path: output, bytes: fs.statSync(output).size, built: !fresh, ms: Date.now() - t0 });
    }
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const t0 = Date.now();
  const wanted = process.argv.slice(2);
  for (const w of wanted) if (!(w in SEA_TARGETS)) throw new Error(`unknown target ${w} (${Object.keys(SEA_TARGETS).join(', ')})`);
  const r = await packageAll(wanted.length > 0 ? { targets: wanted as SeaTargetId[] } : {});
  for (const e of r) process.stdout.write(`${path.relative(REPO, e.path)}\t${e.target}\t${(e.bytes / 1e6).toFixed(1)} MB\t${e.built ? `built in ${e.ms} ms` : 'unchanged'}\n`);
  process.stdout.write(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
}
