// Everything a hub operation needs, built once per process (server or admin CLI command).
// Clock and randomness are injected so rotation and expiry can be tested without sleeping.
import type { HubConfig } from '../config.ts';
import type { HubPaths } from '../datadir.ts';
import type { Logger } from '../log.ts';
import type { HubMetrics } from '../metrics.ts';
import type { Store } from '../store/store.ts';
import type { Authority } from './authority.ts';

export interface HubContext {
  readonly config: Readonly<HubConfig>;
  readonly paths: HubPaths;
  readonly store: Store;
  readonly authority: Authority;
  readonly log: Logger;
  readonly metrics: HubMetrics;
  /** Unix milliseconds. */
  readonly clock: () => number;
}

/** Hub-side view of the credentials handed to a node. */
export interface IssuedCredentials {
  readonly certDer: Buffer;
  readonly chainDer: readonly Buffer[];
  /** The roots to trust, then cross certificates between them (Authority.caBundleDer). */
  readonly caBundleDer: readonly Buffer[];
  readonly notAfter: number;
  readonly serial: string;
}

/** Who is calling, as proven by a verified client certificate. */
export interface PeerIdentity {
  readonly nodeId: string;
  readonly org: string;
  readonly serial: string;
  readonly notAfter: number;
  readonly address: string;
}
