// The hub's configuration file (`hub.json` in the data dir), validated once at start into a
// frozen object. Unknown keys and contradictions stop start-up with the option path named.
import fs from 'node:fs';
import { z } from 'zod';
import { SepalError, ErrorCodes } from './errors.ts';

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/, 'expected HOST:PORT')
  .refine((s) => { const p = Number(s.slice(s.lastIndexOf(':') + 1)); return p >= 0 && p <= 65535; }, 'port out of range');

const seconds = (min: number, max: number) => z.number().int().min(min).max(max);

export const HubConfigSchema = z.object({
  version: z.literal(1),
  /** Also the trust domain in node URIs and part of the CA names (at most 47 characters). */
  federationId: z.string().regex(/^[a-z0-9][a-z0-9-]{0,46}$/),
  hostnames: z.array(z.string().min(1).max(253)).min(1).max(32),
  grpc: z.object({
    listen: hostPort,
    /** The address agents dial (differs from `listen` behind a proxy or NAT). */
    publicAddress: hostPort,
  }).strict(),
  https: z.object({
    listen: hostPort,
    /** The URL agents and operators use; the discovery document's links start with it. */
    publicUrl: z.url({ protocol: /^https$/ }),
  }).strict(),
  certificates: z.object({
    /** Node certificate lifetime: from a minute (agents renew at ~2/3 of notAfter - notBefore,
     *  which includes the 60 s backdating) to days. */
    leafLifetimeSeconds: seconds(60, 30 * 86400),
  }).strict(),
  manifests: z.object({
    lifetimeSeconds: seconds(300, 365 * 86400),
  }).strict(),
  crl: z.object({
    /** nextUpdate - thisUpdate; the hub regenerates at half of it and on every revocation. */
    lifetimeSeconds: seconds(600, 30 * 86400),
  }).strict(),
  limits: z.object({
    maxMessageBytes: z.number().int().min(4096).max(4 * 1024 * 1024),
    /** Longest a unary RPC may take before the server gives up. */
    rpcTimeoutMs: z.number().int().min(100).max(120_000),
  }).strict(),
  /** The federation's OpenID provider (device flow); null until configured. */
  idp: z.object({
    issuer: z.url(),
    /** The agent's public client (device grant). */
    clientId: z.string().min(1),
    /** What access tokens must carry in `aud` to be meant for this hub. */
    audience: z.string().min(1),
    /** Scopes the agent asks for. */
    scopes: z.array(z.string().min(1)).max(16),
    /** JWS algorithms accepted on access tokens; never `none` or HMAC. */
    algorithms: z.array(z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'])).min(1).default(['RS256', 'PS256', 'ES256']),
    /** Dotted path to the roles array (Keycloak: realm_access.roles). */
    roleClaim: z.string().regex(/^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$/).default('realm_access.roles'),
    /** Claim holding the caller's organisation. */
    orgClaim: z.string().regex(/^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$/).default('org'),
    enrollRole: z.string().min(1).default('sepal-enroll'),
    adminRole: z.string().min(1).default('sepal-admin'),
    clockToleranceSeconds: z.number().int().min(0).max(300).default(30),
    /** Override for the JWKS location (default: from the issuer's discovery document). */
    jwksUri: z.url().optional(),
  }).strict().nullable(),
  /** The Flower SuperLink's Control API, where the hub registers each node's Flower key; null:
   *  no registration (nodes stay 'registration pending' until it is configured). */
  superlink: z.object({
    /** The Control API (TLS, server certificate only; Flower's default port is 9093). */
    controlAddress: hostPort,
    /** PEM file with the CA(s) that issued the SuperLink's certificate; relative to the data dir. */
    caFile: z.string().min(1).max(4096),
    /** Deadline of each Control API call. */
    callTimeoutMs: z.number().int().min(100).max(120_000).default(10_000),
    /** Retries: capped exponential backoff with full jitter, per node. */
    retryBaseMs: z.number().int().min(100).max(3_600_000).default(2_000),
    retryCapMs: z.number().int().min(1_000).max(86_400_000).default(300_000),
    /** How often the store is scanned for due work besides the change feed's nudges. */
    scanIntervalMs: z.number().int().min(1_000).max(3_600_000).default(30_000),
  }).strict().refine((s) => s.retryCapMs >= s.retryBaseMs, { message: 'retryCapMs must be at least retryBaseMs', path: ['retryCapMs'] })
    .nullable().default(null),
  /** The cloud's OpenVPN server (docs/vpn.md). */
  vpn: z.object({
    /** A copy of the CRL for the OpenVPN server's `crl-verify`, rewritten atomically (mode 0644)
     *  whenever the hub regenerates the CRL; absolute, or relative to the data dir. null: none. */
    crlFile: z.string().min(1).max(4096).refine((s) => !s.includes('\0'), 'must not contain NUL').nullable().default(null),
  }).strict().default({ crlFile: null }),
  enrollment: z.object({
    /** Per IdP subject (or enrollment token) and per source address, in a sliding minute. */
    maxPerSubjectPerMinute: z.number().int().min(1).max(10_000),
    maxPerAddressPerMinute: z.number().int().min(1).max(100_000),
  }).strict().default({ maxPerSubjectPerMinute: 5, maxPerAddressPerMinute: 30 }),
}).strict();

export type HubConfig = z.infer<typeof HubConfigSchema>;

export function defaultHubConfig(federationId: string, hostnames: readonly string[]): HubConfig {
  const first = hostnames[0];
  if (first === undefined) throw new TypeError('at least one hostname');
  const host = first.includes(':') ? `[${first}]` : first;
  return {
    version: 1,
    federationId,
    hostnames: [...hostnames],
    grpc: { listen: '0.0.0.0:8443', publicAddress: `${host}:8443` },
    https: { listen: '0.0.0.0:8444', publicUrl: `https://${host}:8444` },
    certificates: { leafLifetimeSeconds: 86400 },
    manifests: { lifetimeSeconds: 7 * 86400 },
    crl: { lifetimeSeconds: 86400 },
    limits: { maxMessageBytes: 64 * 1024, rpcTimeoutMs: 10_000 },
    idp: null,
    superlink: null,
    vpn: { crlFile: null },
    enrollment: { maxPerSubjectPerMinute: 5, maxPerAddressPerMinute: 30 },
  };
}

export function parseHubConfig(input: unknown, source: string): Readonly<HubConfig> {
  const r = HubConfigSchema.safeParse(input);
  if (!r.success) {
    // An unknown key is reported at the key itself (`grpc.extra`), not at the object holding it.
    const issues = r.error.issues.flatMap((i) => (i.code === 'unrecognized_keys' ? i.keys.map((k) => [...i.path, k]) : [i.path])
      .map((p) => ({ path: p.map(String).join('.'), message: i.message })));
    const first = issues[0];
    const where = first?.path ?? '';
    throw new SepalError(ErrorCodes.CONFIG_INVALID, `${source}: ${where || '(root)'}: ${first?.message ?? 'invalid'}`, {
      detail: { path: where, issues },
    });
  }
  return deepFreeze(r.data);
}

export function loadHubConfig(file: string): Readonly<HubConfig> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new SepalError(ErrorCodes.CONFIG_INVALID, `${file}: cannot read: ${(e as NodeJS.ErrnoException).code ?? 'error'}`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SepalError(ErrorCodes.CONFIG_INVALID, `${file}: not valid JSON`, { cause: e });
  }
  return parseHubConfig(json, file);
}

export function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
