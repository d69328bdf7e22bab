// What the reconciler reasons about: the runtime state of the node's children and datasets, and the
// steps that move it towards a manifest. Steps carry everything their executor needs, so an executor
// never reads the manifest itself.
import type { ManifestBody } from '../../proto/manifest.ts';

/** What runs on the node now, as the supervisor sees it. A configHash is the configHashes() value
 *  the child was last configured with (null when never). */
export interface NodeRuntimeState {
  readonly supernode: { readonly running: boolean; readonly configHash: string | null };
  readonly vpn: { readonly running: boolean; readonly configHash: string | null };
  /** Datasets verified so far, by name: the path checked and the sha256 it was checked against
   *  (null when the manifest gave none and only presence was checked). */
  readonly datasets: Readonly<Record<string, { readonly path: string; readonly verifiedSha256: string | null }>>;
}

export type VpnConfig = NonNullable<ManifestBody['vpn']>;
export type DatasetSpec = ManifestBody['datasets'][number];

/** The manifest parts the SuperNode depends on (see configHashes). */
export interface SupernodeConfig {
  readonly superlink: ManifestBody['superlink'];
  readonly supernode: ManifestBody['supernode'];
  readonly datasets: ManifestBody['datasets'];
  readonly privacy: ManifestBody['privacy'];
  readonly resources: ManifestBody['resources'] | null;
}

export type Step =
  | { readonly kind: 'verify-dataset'; readonly name: string; readonly path: string; readonly sha256?: string }
  | { readonly kind: 'write-vpn-config'; readonly configHash: string; readonly vpn: VpnConfig }
  | { readonly kind: 'start-vpn'; readonly configHash: string }
  | { readonly kind: 'restart-vpn'; readonly configHash: string }
  | { readonly kind: 'stop-vpn' }
  | { readonly kind: 'start-supernode'; readonly configHash: string; readonly config: SupernodeConfig }
  | { readonly kind: 'restart-supernode'; readonly configHash: string; readonly config: SupernodeConfig }
  | { readonly kind: 'stop-supernode' };

export type StepKind = Step['kind'];
export type StepOf<K extends StepKind> = Extract<Step, { kind: K }>;

export const STEP_KINDS: readonly StepKind[] = Object.freeze([
  'verify-dataset', 'write-vpn-config', 'start-vpn', 'restart-vpn', 'stop-vpn', 'start-supernode', 'restart-supernode', 'stop-supernode',
]);

/** A node with nothing running and nothing verified. */
export function idleState(): NodeRuntimeState {
  return { supernode: { running: false, configHash: null }, vpn: { running: false, configHash: null }, datasets: {} };
}
