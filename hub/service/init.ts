// `sepal-hub init`: a new data dir with a two-tier CA, the hub's TLS certificate, the first
// manifest signing key, a config file and an empty store. Never overwrites anything.
import fs from 'node:fs';
import path from 'node:path';
import { createCaMaterial, certFingerprintSha256 } from '../ca/bootstrap.ts';
import { defaultHubConfig, parseHubConfig, type HubConfig } from '../config.ts';
import type { HubPaths } from '../datadir.ts';
import { SepalError, ErrorCodes } from '../errors.ts';
import { writeFileAtomicSync } from '../fsutil.ts';
import { generateSigningKey } from '../manifest/keyset.ts';
import { SqliteStore } from '../store/sqlite.ts';

export interface InitOptions {
  readonly hostnames: readonly string[];
  readonly federationId?: string | undefined;
  readonly now?: number;
  /** Applied to the default config before it is written (listen addresses, lifetimes). */
  readonly configure?: (c: HubConfig) => HubConfig;
}

export interface InitResult {
  readonly rootFingerprint: string;
  readonly config: Readonly<HubConfig>;
  readonly kid: string;
}

export function federationIdFrom(hostname: string): string {
  const s = hostname.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 47).replace(/-+$/, '');
  return s.length > 0 ? s : 'sepal';
}

export async function initDataDir(paths: HubPaths, opts: InitOptions): Promise<InitResult> {
  if (fs.existsSync(paths.dataDir) && fs.readdirSync(paths.dataDir).length > 0) {
    throw new SepalError(ErrorCodes.DATA_DIR_EXISTS, `${paths.dataDir} already exists and is not empty; refusing to overwrite it`);
  }
  for (const f of [paths.config, paths.db]) {
    if (fs.existsSync(f)) throw new SepalError(ErrorCodes.DATA_DIR_EXISTS, `${f} already exists; refusing to overwrite it`);
  }
  const first = opts.hostnames[0];
  if (first === undefined) throw new SepalError(ErrorCodes.INVALID_ARGUMENT, 'at least one --hostname is required');
  const federationId = opts.federationId ?? federationIdFrom(first);
  const base = defaultHubConfig(federationId, opts.hostnames);
  const config = parseHubConfig(opts.configure === undefined ? base : opts.configure(base), 'generated config');

  const now = opts.now ?? Date.now();
  const m = createCaMaterial({ hostnames: opts.hostnames, federationId, now: new Date(now) });
  fs.mkdirSync(paths.dataDir, { recursive: true, mode: 0o700 });
  fs.chmodSync(paths.dataDir, 0o700);
  for (const d of [path.dirname(paths.rootCert), path.dirname(paths.serverCert), paths.manifestKeysDir, path.dirname(paths.crlPem)]) {
    fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  }
  fs.chmodSync(path.dirname(paths.crlPem), 0o755);
  writeFileAtomicSync(paths.rootKey, m.rootKey, 0o600);
  writeFileAtomicSync(paths.rootCert, m.rootCert, 0o644);
  writeFileAtomicSync(paths.issuingKey, m.issuingKey, 0o600);
  writeFileAtomicSync(paths.issuingCert, m.issuingCert, 0o644);
  writeFileAtomicSync(paths.serverKey, m.serverKey, 0o600);
  writeFileAtomicSync(paths.serverCert, m.serverCert, 0o644);
  writeFileAtomicSync(paths.config, JSON.stringify(config, null, 2) + '\n', 0o600);

  const store = SqliteStore.open(paths.db);
  fs.chmodSync(paths.db, 0o600);
  try {
    await store.migrate();
    const { kid, publicJwk } = await generateSigningKey(paths.manifestKeysDir);
    await store.addSigningKey({ kid, publicJwk: JSON.stringify(publicJwk) }, { event: 'keys.rotated', actor: 'cli', detail: { kid, previous: null, reason: 'init' } }, now);
    return { rootFingerprint: certFingerprintSha256(m.rootCert), config, kid };
  } finally {
    await store.close();
  }
}
