// Bundles each CLI into ES modules under dist/ (what the benchmark measures: plain JS, no
// TypeScript loader at run time), and into one self-contained ES module each for the
// single-executable build (installers/sea.ts). The .proto files the gRPC bindings parse are inlined
// as text (esbuild `define`, read by proto/load.ts and proto/flower/control.ts): neither a bundle
// nor a single executable reads a file next to itself.
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

/** The .proto texts the bundles carry (see proto/source.ts). */
function protoDefines(): Record<string, string> {
  return {
    SEPAL_PROTO_TEXT: JSON.stringify(fs.readFileSync(path.join(REPO, 'proto/sepal.proto'), 'utf8')),
    SEPAL_CONTROL_PROTO_TEXT: JSON.stringify(fs.readFileSync(path.join(REPO, 'proto/flower/control.proto'), 'utf8')),
  };
}

function commonOptions() {
  return {
    bundle: true,
    platform: 'node' as const,
    format: 'esm' as const,
    target: 'node26',
    legalComments: 'none' as const,
    logLevel: 'warning' as const,
    // CommonJS dependencies bundled into ESM still call require() for Node built-ins.
    banner: { js: "import { createRequire as __sepalCreateRequire } from 'node:module'; const require = __sepalCreateRequire(import.meta.url);" },
    define: protoDefines(),
  };
}

export async function bundle(): Promise<{ agent: string; hub: string }> {
  fs.mkdirSync(OUT, { recursive: true });
  const common = commonOptions();
  const agent = path.join(OUT, 'sepal-agent.mjs');
  const hub = path.join(OUT, 'sepal-hub.mjs');
  // The agent's commands load lazily (agent/cli/main.ts): split chunks keep the daemon from
  // parsing the device-flow client, the QR encoder and the doctor it never runs.
  await build({ ...common, entryPoints: { 'sepal-agent': path.join(REPO, 'agent/cli/main.ts') }, outdir: OUT, splitting: true, outExtension: { '.js': '.mjs' }, chunkNames: 'chunks/agent-[name]-[hash]' });
  await build({ ...common, entryPoints: [path.join(REPO, 'hub/cli/main.ts')], outfile: hub });
  return { agent, hub };
}

/**
 * One ES module per CLI with everything in it, for `node --build-sea` (mainFormat "module"): a
 * single executable's main script can import only built-in modules, so no chunks; the agent's lazy
 * `import('./enroll.ts')` become in-file initialisers. Written to `outDir`, not dist/.
 */
export async function bundleForSea(outDir: string): Promise<{ agent: string; hub: string }> {
  fs.mkdirSync(outDir, { recursive: true });
  const agent = path.join(outDir, 'sepal-agent.mjs');
  const hub = path.join(outDir, 'sepal-hub.mjs');
  await build({ ...commonOptions(), entryPoints: [path.join(REPO, 'agent/cli/main.ts')], outfile: agent });
  await build({ ...commonOptions(), entryPoints: [path.join(REPO, 'hub/cli/main.ts')], outfile: hub });
  return { agent, hub };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await bundle();
  process.stdout.write(`${r.agent}\n${r.hub}\n`);
}
