// The CRL: signed by the issuing CA, served over HTTPS and written to the data dir for the
// OpenVPN server's crl-verify. Regenerated on every revocation and before nextUpdate.
import { buildCrl, crlToPem } from '../ca/crl.ts';
import { writeFileAtomicSync } from '../fsutil.ts';
import fs from 'node:fs';
import path from 'node:path';
import type { HubContext } from './context.ts';

export interface CrlSnapshot {
  readonly der: Buffer;
  readonly pem: string;
  readonly thisUpdate: number;
  readonly nextUpdate: number;
}

export class CrlPublisher {
  #current: CrlSnapshot | null = null;
  readonly #ctx: HubContext;

  constructor(ctx: HubContext) {
    this.#ctx = ctx;
  }

  get current(): CrlSnapshot | null {
    return this.#current;
  }

  /** Regenerates from the store and writes the PEM file atomically. */
  async refresh(): Promise<CrlSnapshot> {
    const ctx = this.#ctx;
    const now = ctx.clock();
    const revoked = await ctx.store.listRevokedCerts(now);
    const thisUpdate = now - 60_000;
    const nextUpdate = now + ctx.config.crl.lifetimeSeconds * 1000;
    const der = buildCrl(ctx.authority.issuer, {
      revoked: revoked.map((r) => ({ serialHex: r.serial, revokedAt: new Date(r.revokedAt) })),
      thisUpdate: new Date(thisUpdate),
      nextUpdate: new Date(nextUpdate),
      // Monotonic across processes sharing the data dir: milliseconds since the epoch.
      crlNumber: BigInt(Math.max(now, (this.#current?.thisUpdate ?? 0) + 60_001)),
    });
    const snap: CrlSnapshot = { der, pem: crlToPem(der), thisUpdate, nextUpdate };
    fs.mkdirSync(path.dirname(ctx.paths.crlPem), { recursive: true, mode: 0o755 });
    writeFileAtomicSync(ctx.paths.crlPem, snap.pem, 0o644);
    this.#current = snap;
    ctx.metrics.crlNextUpdate.set(nextUpdate / 1000);
    return snap;
  }

  /** Whether the served CRL has passed half of its validity. */
  isStale(now: number): boolean {
    const c = this.#current;
    return c === null || now >= c.thisUpdate + (c.nextUpdate - c.thisUpdate) / 2;
  }
}
