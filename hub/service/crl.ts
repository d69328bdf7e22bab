// The CRL: one per trusted issuing CA (one, except during a CA rotation), served over HTTPS, written to the data dir and (config
// vpn.crlFile) to where the OpenVPN server's crl-verify reads it. Regenerated on every revocation
// and before nextUpdate.
//
// Several processes share a data dir (the server and admin commands), and each may regenerate.
// A lock file serialises "read the revoked list, sign, write": whoever takes the lock after a
// revocation committed sees it, so a slower writer can never replace a newer list with an older
// one. The HTTPS side serves what the file holds, so the file and the served CRL always agree.
import fs from 'node:fs';
import path from 'node:path';
import { buildCrl, crlToPem } from '../ca/crl.ts';
import { pemToDerList } from '../ca/pem.ts';
import { withLockFile, writeFileAtomicSync } from '../fsutil.ts';
import type { HubContext } from './context.ts';

export interface CrlSnapshot {
  /** The active issuing CA's CRL (served at /crl.der). */
  readonly der: Buffer;
  /** Every issuing CA's CRL, the active one first (served at /crl.pem, written for OpenVPN). */
  readonly pem: string;
}

export class CrlPublisher {
  readonly #ctx: HubContext;
  /** When this process last regenerated, and the nextUpdate it wrote (for the refresh timer). */
  #thisUpdate = 0;
  #nextUpdate = 0;
  #served: { mtimeMs: number; size: number; snap: CrlSnapshot } | null = null;

  constructor(ctx: HubContext) {
    this.#ctx = ctx;
  }

  /** Regenerates from the store and writes the PEM file atomically, under the data dir's lock. */
  async refresh(): Promise<CrlSnapshot> {
    const ctx = this.#ctx;
    const file = ctx.paths.crlPem;
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
    return withLockFile(`${file}.lock`, async () => {
      const now = ctx.clock();
      const revoked = await ctx.store.listRevokedCerts(now);
      const thisUpdate = now - 60_000;
      const nextUpdate = now + ctx.config.crl.lifetimeSeconds * 1000;
      // One CRL per trusted issuing CA, the active one first. Each lists every revoked serial:
      // serials are random and a CRL only speaks for certificates of its own issuer, so listing
      // another issuer's serials is harmless and needs no record of who issued what.
      const ders = ctx.authority.crlIssuers.map((issuer) => buildCrl(issuer, {
        revoked: revoked.map((r) => ({ serialHex: r.serial, revokedAt: new Date(r.revokedAt) })),
        thisUpdate: new Date(thisUpdate),
        nextUpdate: new Date(nextUpdate),
        // Increasing across processes: writers are serialised by the lock and use the clock.
        crlNumber: BigInt(now),
      }));
      const snap: CrlSnapshot = { der: ders[0]!, pem: ders.map(crlToPem).join('') };
      writeFileAtomicSync(file, snap.pem, 0o644);
      this.#writeVpnCopy(snap.pem);
      this.#thisUpdate = thisUpdate;
      this.#nextUpdate = nextUpdate;
      ctx.metrics.crlNextUpdate.set(nextUpdate / 1000);
      return snap;
    });
  }

  /** Where the OpenVPN server's copy goes (config vpn.crlFile, resolved), or null. */
  get vpnCopyPath(): string | null {
    const f = this.#ctx.config.vpn.crlFile;
    return f === null ? null : path.resolve(this.#ctx.paths.dataDir, f);
  }

  /** The OpenVPN server's copy, written under the same lock so it is never older than the data
   *  dir's. A failure is logged, not thrown: the revocation is committed and the hub's own CRL is
   *  right; the next regeneration (at the latest at half-life) tries again. */
  #writeVpnCopy(pem: string): void {
    const file = this.vpnCopyPath;
    if (file === null) return;
    try {
      writeFileAtomicSync(file, pem, 0o644);
    } catch (err) {
      this.#ctx.log.error({ err, event: 'crl.vpn_copy_failed', file }, 'could not write the CRL copy for the OpenVPN server');
    }
  }

  /** The CRL as the data dir holds it now (whoever wrote it last), regenerated when missing. */
  async current(): Promise<CrlSnapshot> {
    const file = this.#ctx.paths.crlPem;
    const st = fs.statSync(file, { throwIfNoEntry: false });
    if (st === undefined) return this.refresh();
    const cached = this.#served;
    if (cached !== null && cached.mtimeMs === st.mtimeMs && cached.size === st.size) return cached.snap;
    const pem = fs.readFileSync(file, 'utf8');
    const der = pemToDerList(pem, 'X509 CRL')[0];
    if (der === undefined) return this.refresh();
    const snap = { der, pem };
    this.#served = { mtimeMs: st.mtimeMs, size: st.size, snap };
    return snap;
  }

  /** Whether the CRL this process last wrote is still within its validity. */
  isValid(now: number): boolean {
    return now < this.#nextUpdate;
  }

  /** Whether this process should regenerate: past half of the validity it last wrote. */
  isStale(now: number): boolean {
    return this.#nextUpdate === 0 || now >= this.#thisUpdate + (this.#nextUpdate - this.#thisUpdate) / 2;
  }
}
