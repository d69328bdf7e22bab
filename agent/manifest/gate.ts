// The one way a manifest becomes the node's desired state: verified against the last good version,
// then persisted as the new last good one. Calls are serialised, so two manifests arriving together
// are checked one after the other against an up-to-date anti-rollback floor. A rejected manifest
// changes nothing; the caller logs it, counts it and reports it (its AgentError code is the reason).
import type { ManifestBody, ManifestClaims } from '../../proto/manifest.ts';
import type { LastGoodStore } from './last-good.ts';
import type { ManifestVerifier, VerifiedManifest } from './verify.ts';

export interface RunnableManifest {
  readonly version: number;
  readonly body: ManifestBody;
  readonly claims: ManifestClaims;
  readonly kid: string;
  readonly jws: string;
}

export class ManifestGate {
  readonly #verifier: ManifestVerifier;
  readonly #store: LastGoodStore;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(deps: { verifier: ManifestVerifier; store: LastGoodStore }) {
    this.#verifier = deps.verifier;
    this.#store = deps.store;
  }

  /** The version of the last good manifest (0 for none). */
  get version(): number {
    return this.#store.version;
  }

  /** Verifies `jws` and, when it passes, persists it. Throws the verifier's AgentError otherwise. */
  accept(jws: string): Promise<VerifiedManifest> {
    const run = this.#queue.then(async () => {
      const m = await this.#verifier.verify(jws, this.#store.version);
      this.#store.save(m);
      return m;
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** What to run at start-up, from the store as loaded. A manifest this agent accepted before is
   *  returned as it is, even expired (the last good manifest keeps running while the hub is away);
   *  one it never accepted (the first manifest enrollment stored) is verified first, and the
   *  verifier's error is thrown when it fails. Null when there is none. */
  async resume(): Promise<RunnableManifest | null> {
    const stored = this.#store.state.manifest;
    if (stored === null) return null;
    if (stored.applied !== null) return { version: stored.version, body: stored.claims.manifest, claims: stored.claims, kid: stored.kid, jws: stored.jws };
    return this.accept(stored.jws);
  }
}
