// The hub's discovery document (/.well-known/sepal-configuration), fetched trusting only the pinned
// root and decoded at the edge: every field the agent uses is typed and bounded, or enrollment
// stops with DISCOVERY_INVALID. Unknown fields are ignored so the hub can add some later.
import { z } from 'zod';
import { isHostPort } from '../../proto/manifest.ts';
import { AgentError, ErrorCodes } from '../errors.ts';
import { hubResource, type HttpsGet, type PinnedRoot } from './bootstrap.ts';

const MAX_DISCOVERY_BYTES = 64 * 1024;

const httpsUrl = z.string().max(2048).refine((s) => URL.canParse(s) && new URL(s).protocol === 'https:', 'must be an https:// URL');
// The IdP may be plain http only on a loopback address (tests); device-flow.ts enforces that.
const httpUrl = z.string().max(2048).refine((s) => URL.canParse(s) && ['https:', 'http:'].includes(new URL(s).protocol), 'must be an http(s):// URL');
const text = z.string().min(1).max(256).refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'must not contain control characters');

export const DiscoverySchema = z.object({
  issuer: httpsUrl,
  federation_id: text,
  grpc_address: z.string().refine(isHostPort, 'must be host:port (port 1..65535)'),
  jwks_uri: httpsUrl,
  crl_uri: httpsUrl,
  ca_bundle_uri: httpsUrl,
  idp: z.object({
    issuer: httpUrl,
    client_id: text,
    audience: text,
    scopes: z.array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/, 'must be an RFC 6749 scope token')).max(16),
  }).nullable(),
});

export type Discovery = Readonly<z.infer<typeof DiscoverySchema>>;

/** Decodes a discovery document, or throws DISCOVERY_INVALID naming the first bad fields. */
export function parseDiscovery(input: unknown): Discovery {
  const r = DiscoverySchema.safeParse(input);
  if (!r.success) {
    const what = r.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new AgentError(ErrorCodes.DISCOVERY_INVALID, `the hub's discovery document is invalid: ${what}`);
  }
  return Object.freeze(r.data);
}

export async function fetchDiscovery(hub: URL, root: PinnedRoot, deps: { get: HttpsGet; signal?: AbortSignal | undefined }): Promise<Discovery> {
  const url = hubResource(hub, '.well-known/sepal-configuration');
  const res = await deps.get({ url, ca: root.pem, maxBytes: MAX_DISCOVERY_BYTES, signal: deps.signal });
  if (res.status !== 200) throw new AgentError(ErrorCodes.DISCOVERY_INVALID, `${url.href} answered HTTP ${res.status}`);
  let json: unknown;
  try {
    json = JSON.parse(res.body.toString('utf8'));
  } catch {
    throw new AgentError(ErrorCodes.DISCOVERY_INVALID, `${url.href} is not JSON`);
  }
  return parseDiscovery(json);
}
