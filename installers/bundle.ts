// Bundles each CLI into one ES module under dist/ (the input of the single-executable build, and
// what the benchmark measures: plain JS, no TypeScript loader at run time). The proto file the
// gRPC bindings load at run time is copied next to the bundles.
import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';

const REPO = path.resolve(import.meta.dirname, '..');
const OUT = path.join(REPO, 'dist');

/**
 * V8 flags the shipped agent runs with (the single executable's execArgv, issue 7; the benchmark
 * starts the bundle with the same). The agent idles: it renews a certificate a few times a day and
 * answers a scrape now and then, so an optimising compiler buys nothing. Measured with the daemon
 * against a local hub (npm run bench): RSS ~91 MB without, ~81 MB with; idle CPU unchanged.
 * --lite-mode: no optimising tiers, bytecode flushed, lazy feedback vectors;
 * --max-semi-space-size=1: a 1 MB young generation (the agent allocates little and rarely).
 */
export const AGENT_NODE_FLAGS: readonly string[] = Object.freeze(['--lite-mode', '--max-semi-space-size=1']);

export async function bundle(): Promise<{ agent: string; hub: string }> {
  fs.mkdirSync(OUT, { recursive: true });
  const common = {
    bundle: true,
    platform: 'node' as const,
    format: 'esm' as const,
    target: 'node26',
    legalComments: 'none' as const,
    logLevel: 'warning' as const,
    // CommonJS dependencies bundled into ESM still call require() for Node built-ins.
    banner: { js: "import { createRequire as __sepalCreateRequire } from 'node:module'; const require = __sepalCreateRequire(import.meta.url);" },
  };
  const agent = path.join(OUT, 'sepal-agent.mjs');
  const hub = path.join(OUT, 'sepal-hub.mjs');
  // The agent's commands load lazily (agent/cli/main.ts): split chunks keep the daemon from
  // parsing the device-flow client, the QR encoder and the doctor it never runs.
  await build({ ...common, entryPoints: { 'sepal-agent': path.join(REPO, 'agent/cli/main.ts') }, outdir: OUT, splitting: true, outExtension: { '.js': '.mjs' }, chunkNames: 'chunks/agent-[name]-[hash]' });
  await build({ ...common, entryPoints: [path.join(REPO, 'hub/cli/main.ts')], outfile: hub });
  // proto/load.ts finds sepal.proto next to the module that loads it: the entry or a chunk.
  fs.copyFileSync(path.join(REPO, 'proto/sepal.proto'), path.join(OUT, 'sepal.proto'));
  fs.copyFileSync(path.join(REPO, 'proto/sepal.proto'), path.join(OUT, 'chunks', 'sepal.proto'));
  // The hub's SuperLink client loads Flower's Control API subset the same way (next to the module).
  fs.copyFileSync(path.join(REPO, 'proto/flower/control.proto'), path.join(OUT, 'control.proto'));
  return { agent, hub };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await bundle();
  process.stdout.write(`${r.agent}\n${r.hub}\n`);
}
