// The manifest contract shared by hub and agent: what a node runs, and the JWS claims around it.
// Every object is strict (an unknown field is an error, never ignored) and every string, array and
// number is bounded, so a manifest either decodes into these types whole or is rejected.
import { X509Certificate } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';

/** JWS header `typ` of a manifest (explicit typing, RFC 8725 §3.11). */
export const MANIFEST_TYP = 'sepal-manifest+jwt';
/** The only signature algorithms a manifest may use. */
export const MANIFEST_ALGS = ['ES256'] as const;

// ---- address and path checks (plain predicates, reused by the agent) ----

const HOST_LABEL = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/;
const PORT = /^[1-9][0-9]{0,4}$/;

/** An RFC 1123 host name. A last label made only of digits is refused so that a mistyped IPv4
 *  address (`10.0.0.256`) is not taken for a name. */
export function isHostname(s: string): boolean {
  if (s.length === 0 || s.length > 253) return false;
  const labels = s.split('.');
  if (!labels.every((l) => HOST_LABEL.test(l))) return false;
  return !/^[0-9]+$/.test(labels[labels.length - 1] ?? '');
}

/** A host for a socket: name, IPv4, or IPv6 without brackets. Zone ids (`%eth0`) are refused:
 *  they name an interface of one machine and mean nothing in a manifest. */
export function isHost(s: string): boolean {
  if (s.length > 253) return false;
  return isHostname(s) || isIPv4(s) || (isIPv6(s) && !s.includes('%'));
}

function isPort(s: string): boolean {
  return PORT.test(s) && Number(s) <= 65535;
}

/** `host:port` with a host name, an IPv4 address or a bracketed IPv6 address; port 1..65535. */
export function isHostPort(s: string): boolean {
  if (s.length > 261) return false;
  if (s.startsWith('[')) {
    const m = /^\[([^\]]+)\]:([0-9]+)$/.exec(s);
    return m !== null && isIPv6(m[1] ?? '') && !(m[1] ?? '').includes('%') && isPort(m[2] ?? '');
  }
  const m = /^([^:]+):([0-9]+)$/.exec(s);
  return m !== null && (isHostname(m[1] ?? '') || isIPv4(m[1] ?? '')) && isPort(m[2] ?? '');
}

/** An IPv4 or IPv6 network in CIDR notation (`10.8.0.0/24`, `fd00::/64`). */
export function isCidr(s: string): boolean {
  if (s.length > 64) return false;
  const m = /^([^/]+)\/(0|[1-9][0-9]{0,2})$/.exec(s);
  if (m === null) return false;
  const ip = m[1] ?? '';
  const prefix = Number(m[2]);
  if (isIPv4(ip)) return prefix <= 32;
  return isIPv6(ip) && !ip.includes('%') && prefix <= 128;
}

const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

/** An absolute path on the node: POSIX (`/data/x`) or Windows with a drive (`C:\data\x`).
 *  Refused: relative paths, `..` segments, control characters, and UNC paths (`\\host\share`,
 *  which would make a Windows node authenticate to whatever host the path names). */
export function isAbsoluteNodePath(p: string): boolean {
  if (CONTROL_CHARS.test(p)) return false;
  let segments: string[];
  if (p.startsWith('/')) segments = p.split('/');
  else if (/^[A-Za-z]:[\\/]/.test(p)) segments = p.split(/[\\/]/);
  else return false;
  return !segments.includes('..');
}

const PEM_CERTS = /^(?:-----BEGIN CERTIFICATE-----\r?\n(?:[A-Za-z0-9+/=]+\r?\n)+-----END CERTIFICATE-----\s*)+$/;
const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/** One or more PEM `CERTIFICATE` blocks, each of which parses as X.509. */
export function isPemCertificates(s: string): boolean {
  if (!PEM_CERTS.test(s.trim() + '\n')) return false;
  for (const block of s.match(PEM_BLOCK) ?? []) {
    try {
      new X509Certificate(block);
    } catch {
      return false;
    }
  }
  return true;
}

// ---- schema pieces ----

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const MAX_CONFIG_ENTRIES = 64;

const hostPort = z.string().refine(isHostPort, 'must be host:port (host name, IPv4 or [IPv6]; port 1..65535)');
const host = z.string().refine(isHost, 'must be a host name or an IP address');
const name = z.string().regex(NAME_RE, `must match ${NAME_RE.source}`);

const nodeConfigValue = z.union(
  [z.string().max(1024).refine((s) => !CONTROL_CHARS.test(s), 'must not contain control characters'), z.number(), z.boolean()],
  { error: 'must be a string, number or boolean' },
);

// Counted before the entries are parsed (a huge map is refused without walking it), and a
// `__proto__` key is reported: zod would otherwise drop it from the result without a word.
const nodeConfig = z.preprocess((v, ctx) => {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    if (Object.keys(v).length > MAX_CONFIG_ENTRIES) {
      ctx.addIssue({ code: 'custom', message: `at most ${MAX_CONFIG_ENTRIES} entries`, input: v, fatal: true });
    } else if (Object.hasOwn(v, '__proto__')) {
      ctx.addIssue({ code: 'custom', message: 'reserved key', path: ['__proto__'], input: v });
    }
  }
  return v;
}, z.record(z.string().regex(NAME_RE, `key must match ${NAME_RE.source}`), nodeConfigValue));

const superlink = z.strictObject({
  address: hostPort,
  caCertPem: z.string().refine((s) => s.length <= 65536 && isPemCertificates(s), 'must be one or more PEM CERTIFICATE blocks (at most 64 KiB)').optional(),
});

const supernode = z.strictObject({
  nodeConfig,
  /** Applied by the agent when absent. */
  clientAppIoAddress: hostPort.optional(),
  maxRetries: z.int().min(0).max(1_000_000).optional(),
  maxWaitTimeSeconds: z.number().positive().max(31_536_000).optional(),
  isolation: z.enum(['subprocess', 'process']).optional(),
});

const KEY_REF_RE = /^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,255}$/;

/** A `vpn.tlsCryptKeyRef`: what the hub's GetVpnSecret also accepts (no `..` segment, so a ref
 *  can never name a path outside the key store). */
export function isTlsCryptKeyRef(s: string): boolean {
  return KEY_REF_RE.test(s) && !s.split('/').includes('..');
}

const vpn = z.strictObject({
  remotes: z.array(z.strictObject({
    host,
    port: z.int().min(1).max(65535),
    proto: z.enum(['udp', 'tcp']),
  })).min(1).max(8),
  /** Names the tls-crypt key the agent holds; the key itself never travels in a manifest. */
  tlsCryptKeyRef: z.string().refine(isTlsCryptKeyRef, `must match ${KEY_REF_RE.source} without a ".." segment`),
  routes: z.array(z.string().refine(isCidr, 'must be an IPv4 or IPv6 CIDR')).max(64),
  superlinkAddress: hostPort,
});

const dataset = z.strictObject({
  name,
  path: z.string().refine((p) => p.length <= 4096 && isAbsoluteNodePath(p), 'must be an absolute path (at most 4096 characters) without ".." segments'),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits').optional(),
});

const datasets = z.array(dataset).max(64).superRefine((list, ctx) => {
  const seen = new Set<string>();
  list.forEach((d, i) => {
    if (seen.has(d.name)) ctx.addIssue({ code: 'custom', message: `duplicate dataset name "${d.name}"`, path: [i, 'name'], input: d.name });
    seen.add(d.name);
  });
}).default([]);

const privacy = z.strictObject({
  differentialPrivacy: z.strictObject({
    enabled: z.boolean(),
    epsilon: z.number().positive().optional(),
    delta: z.number().gt(0).lt(1).optional(),
  }),
  secureAggregation: z.strictObject({ enabled: z.boolean() }),
});

const resources = z.strictObject({
  gpu: z.strictObject({
    required: z.boolean(),
    minMemoryMiB: z.int().positive().max(16_777_216).optional(),
    count: z.int().positive().max(64).optional(),
  }).optional(),
});

export const ManifestBodySchema = z.strictObject({
  superlink,
  supernode,
  vpn: vpn.optional(),
  datasets,
  privacy,
  resources: resources.optional(),
});

/** A decoded manifest body (defaults applied: `datasets` is always present). */
export type ManifestBody = z.infer<typeof ManifestBodySchema>;
/** What an operator may write (`datasets` may be left out). */
export type ManifestBodyInput = z.input<typeof ManifestBodySchema>;

const claimString = z.string().min(1).max(256);
const seconds = z.int().min(0);

export const ManifestClaimsSchema = z.strictObject({
  iss: claimString,
  /** Node id. */
  sub: claimString,
  /** Node id again: a manifest is addressed to exactly one node. */
  aud: claimString,
  org: claimString,
  federation_id: claimString,
  iat: seconds,
  nbf: seconds,
  exp: seconds,
  jti: z.string().min(1).max(128),
  /** Monotonic per node; the agent refuses a version lower than the one it runs. */
  version: z.int().min(1),
  manifest: ManifestBodySchema,
}).superRefine((c, ctx) => {
  if (c.aud !== c.sub) ctx.addIssue({ code: 'custom', message: 'aud must equal sub', path: ['aud'], input: c.aud });
  if (c.exp <= c.nbf) ctx.addIssue({ code: 'custom', message: 'exp must be after nbf', path: ['exp'], input: c.exp });
});

export type ManifestClaims = z.infer<typeof ManifestClaimsSchema>;

// ---- decoding with field paths ----

export interface ManifestIssue {
  /** Dotted path to the offending field (`supernode.nodeConfig.lr`, `datasets.0.sha256`); '' for the root. */
  readonly path: string;
  readonly message: string;
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; issues: ManifestIssue[] };

function toIssues(error: z.ZodError): ManifestIssue[] {
  const out: ManifestIssue[] = [];
  for (const issue of error.issues) {
    const base = issue.path.map(String);
    if (issue.code === 'unrecognized_keys') {
      // One issue per unknown field, so the path names the field itself.
      for (const key of issue.keys) out.push({ path: [...base, key].join('.'), message: 'unknown field' });
    } else if (issue.code === 'invalid_key') {
      out.push({ path: base.join('.'), message: issue.issues.map((i) => i.message).join('; ') || issue.message });
    } else {
      out.push({ path: base.join('.'), message: issue.message });
    }
  }
  return out;
}

/** Decodes a manifest body (e.g. an operator's JSON file, or the `manifest` claim). */
export function parseManifestBody(input: unknown): ParseResult<ManifestBody> {
  const r = ManifestBodySchema.safeParse(input);
  return r.success ? { ok: true, value: r.data } : { ok: false, issues: toIssues(r.error) };
}

/** Decodes the full claim set of a verified manifest JWS payload. */
export function parseManifestClaims(input: unknown): ParseResult<ManifestClaims> {
  const r = ManifestClaimsSchema.safeParse(input);
  return r.success ? { ok: true, value: r.data } : { ok: false, issues: toIssues(r.error) };
}
