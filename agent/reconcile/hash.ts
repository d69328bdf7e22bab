// Content hashes of the manifest parts each child depends on. A child is restarted only when its own
// hash changes, so a manifest that changes something else (or only its version) restarts nothing.
// The hash is of canonical JSON (keys sorted, datasets by name), so it is stable across processes.
import crypto from 'node:crypto';
import type { ManifestBody } from '../../proto/manifest.ts';
import type { SupernodeConfig } from './steps.ts';

export interface ConfigHashes {
  /** superlink + supernode + datasets + privacy + resources. */
  readonly supernode: string;
  /** The vpn section; null when the manifest has none. */
  readonly vpn: string | null;
}

/** JSON with object keys sorted at every level and undefined members left out. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? 'null' : canonicalJson(x))).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const entries = Object.keys(v).sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

function hashOf(tag: string, v: unknown): string {
  return crypto.createHash('sha256').update(`${tag}\n${canonicalJson(v)}`).digest('hex');
}

/**
 * The SuperNode's inputs. With a VPN, the SuperNode reaches the SuperLink through the tunnel, at
 * the address the vpn section names (vpn.superlinkAddress), so that is the address it is given.
 * The privacy flags and resource hints are part of the hash (a change restarts the SuperNode so a
 * ClientApp started afterwards sees the new manifest) but Flower 1.23 itself has no flag for them.
 */
export function supernodeConfig(body: ManifestBody): SupernodeConfig {
  return {
    superlink: body.vpn === undefined ? body.superlink : { ...body.superlink, address: body.vpn.superlinkAddress },
    supernode: body.supernode,
    datasets: body.datasets,
    privacy: body.privacy,
    resources: body.resources ?? null,
  };
}

export function configHashes(body: ManifestBody): ConfigHashes {
  const sn = supernodeConfig(body);
  // Dataset names are unique (the schema says so): their order in the manifest means nothing.
  const datasets = [...sn.datasets].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return {
    supernode: hashOf('sepal/supernode/v1', { ...sn, datasets }),
    vpn: body.vpn === undefined ? null : hashOf('sepal/vpn/v1', body.vpn),
  };
}
