// The reconcile planner: (what runs now, what the manifest wants) -> ordered steps. Pure: no I/O,
// no clock, same input same output. Rules:
// - no manifest (none yet, or the node is revoked): stop the SuperNode, then the VPN;
// - the VPN comes up (or is reconfigured) before the SuperNode, which may reach its SuperLink
//   through it; a VPN the manifest no longer has is stopped after the SuperNode's steps;
// - every dataset is verified before the SuperNode is (re)started with it;
// - a child is restarted only when its own inputs changed (configHashes), so a change elsewhere
//   in the manifest, or a new version of the same body, restarts nothing.
import type { ManifestBody } from '../../proto/manifest.ts';
import { configHashes, supernodeConfig } from './hash.ts';
import type { NodeRuntimeState, Step } from './steps.ts';

export { configHashes } from './hash.ts';

export function plan(current: NodeRuntimeState, desired: ManifestBody | null): Step[] {
  if (desired === null) {
    const steps: Step[] = [];
    if (current.supernode.running) steps.push({ kind: 'stop-supernode' });
    if (current.vpn.running) steps.push({ kind: 'stop-vpn' });
    return steps;
  }
  const hashes = configHashes(desired);
  const steps: Step[] = [];

  // VPN first.
  if (desired.vpn !== undefined && hashes.vpn !== null) {
    const vpnHash = hashes.vpn;
    const changed = current.vpn.configHash !== vpnHash;
    if (changed) steps.push({ kind: 'write-vpn-config', configHash: vpnHash, vpn: desired.vpn });
    if (!current.vpn.running) steps.push({ kind: 'start-vpn', configHash: vpnHash });
    else if (changed) steps.push({ kind: 'restart-vpn', configHash: vpnHash });
  }

  // Datasets the SuperNode will read: verified unless already verified at this path and hash.
  for (const d of desired.datasets) {
    const seen = current.datasets[d.name];
    if (seen !== undefined && seen.path === d.path && seen.verifiedSha256 === (d.sha256 ?? null)) continue;
    steps.push(d.sha256 === undefined ? { kind: 'verify-dataset', name: d.name, path: d.path } : { kind: 'verify-dataset', name: d.name, path: d.path, sha256: d.sha256 });
  }

  // Then the SuperNode.
  const snHash = hashes.supernode;
  if (!current.supernode.running) steps.push({ kind: 'start-supernode', configHash: snHash, config: supernodeConfig(desired) });
  else if (current.supernode.configHash !== snHash) steps.push({ kind: 'restart-supernode', configHash: snHash, config: supernodeConfig(desired) });

  // A VPN the manifest dropped goes last: the SuperNode has moved off it by now.
  if (desired.vpn === undefined && current.vpn.running) steps.push({ kind: 'stop-vpn' });
  return steps;
}
