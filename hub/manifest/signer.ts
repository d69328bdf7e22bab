// Signs one manifest per node as a compact JWS (ES256, explicit `typ`). Synchronous on purpose:
// the store calls `sign` inside its transaction, once the node's version is allocated. What is
// signed always passes the shared claims schema, so the hub never signs what an agent would refuse.
import crypto, { type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { MANIFEST_ALGS, MANIFEST_TYP, ManifestBodySchema, ManifestClaimsSchema, type ManifestBody } from '../../proto/manifest.ts';
import { SepalError, ErrorCodes } from '../errors.ts';

// The claims around the body. The body is checked on its own (and once per distinct body, see
// #bodyJson), so a publish to thousands of nodes does not re-validate the same body each time.
// aud = sub and exp > nbf, the schema's cross-field rules, hold by construction here.
const { manifest: _body, ...envelopeShape } = ManifestClaimsSchema.shape;
const EnvelopeSchema = z.strictObject(envelopeShape);

export interface ManifestSignerOptions {
  /** `iss`: the hub's public URL. */
  readonly issuer: string;
  readonly federationId: string;
  /** Must be the RFC 7638 thumbprint of `privateKey` (as keyset.ts names keys). */
  readonly kid: string;
  /** EC P-256 private key. */
  readonly privateKey: KeyObject;
  /** How long a manifest is valid; at least one second (claims are in whole seconds). */
  readonly lifetimeMs: number;
  /** Unix milliseconds; injectable for tests. */
  readonly clock?: () => number;
}

export interface SignInput {
  readonly nodeId: string;
  readonly org: string;
  readonly version: number;
  readonly body: ManifestBody;
}

export interface SignedManifest {
  readonly jws: string;
  readonly kid: string;
  /** `exp` in Unix milliseconds (a whole second), for the store's key-retention bookkeeping. */
  readonly expiresAt: number;
  readonly jti: string;
}

const b64u = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

/** RFC 7638 thumbprint of an EC public key, computed synchronously (jose's is async). */
function ecThumbprint(key: KeyObject): string {
  const { crv, kty, x, y } = crypto.createPublicKey(key).export({ format: 'jwk' });
  return crypto.createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest('base64url');
}

export class ManifestSigner {
  readonly kid: string;
  readonly #issuer: string;
  readonly #federationId: string;
  readonly #key: KeyObject;
  readonly #lifetimeMs: number;
  readonly #clock: () => number;
  /** base64url of the protected header, the same for every manifest this signer makes. */
  readonly #header: string;
  /** The last body signed: its JSON as given, and its JSON as decoded (defaults applied). */
  #lastBody: { readonly given: string; readonly decoded: string } | null = null;

  constructor(opts: ManifestSignerOptions) {
    for (const f of ['issuer', 'federationId', 'kid'] as const) {
      if (typeof opts[f] !== 'string' || opts[f].length === 0) throw new TypeError(`ManifestSigner: ${f} must be a non-empty string`);
    }
    const key = opts.privateKey;
    if (!(key instanceof crypto.KeyObject) || key.type !== 'private' || key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new TypeError('ManifestSigner: privateKey must be an EC P-256 private KeyObject');
    }
    if (!Number.isSafeInteger(opts.lifetimeMs) || opts.lifetimeMs < 1000) throw new TypeError('ManifestSigner: lifetimeMs must be an integer >= 1000');
    // A kid that names another key would make every manifest unverifiable for every agent.
    if (ecThumbprint(key) !== opts.kid) throw new SepalError(ErrorCodes.CONFIG_INVALID, `manifest signing key does not match kid ${opts.kid}`);
    this.kid = opts.kid;
    this.#issuer = opts.issuer;
    this.#federationId = opts.federationId;
    this.#key = key;
    this.#lifetimeMs = opts.lifetimeMs;
    this.#clock = opts.clock ?? Date.now;
    this.#header = b64u(JSON.stringify({ alg: MANIFEST_ALGS[0], typ: MANIFEST_TYP, kid: this.kid }));
  }

  /** Signs the manifest for one node. Throws MANIFEST_INVALID when the claims fail the schema. */
  sign(input: SignInput): SignedManifest {
    const bodyJson = this.#bodyJson(input.body);
    const now = this.#clock();
    const iat = Math.floor(now / 1000);
    const exp = Math.floor((now + this.#lifetimeMs) / 1000);
    const jti = crypto.randomBytes(16).toString('base64url');
    const envelope = EnvelopeSchema.safeParse({
      iss: this.#issuer,
      sub: input.nodeId,
      aud: input.nodeId,
      org: input.org,
      federation_id: this.#federationId,
      iat,
      nbf: iat,
      exp,
      jti,
      version: input.version,
    });
    if (!envelope.success) throw invalid(envelope.error);
    // `{...envelope, "manifest": body}` without serialising the body again.
    const payload = `${JSON.stringify(envelope.data).slice(0, -1)},"manifest":${bodyJson}}`;
    const signingInput = `${this.#header}.${b64u(payload)}`;
    const sig = crypto.sign('sha256', Buffer.from(signingInput, 'ascii'), { key: this.#key, dsaEncoding: 'ieee-p1363' });
    return { jws: `${signingInput}.${sig.toString('base64url')}`, kid: this.kid, expiresAt: exp * 1000, jti };
  }

  /** The decoded body as JSON. Reuses the last result when the body is the same by content (not
   *  by identity: a body mutated between calls is checked again). */
  #bodyJson(body: ManifestBody): string {
    const given = JSON.stringify(body) as string | undefined;
    if (given !== undefined && this.#lastBody?.given === given) return this.#lastBody.decoded;
    const r = ManifestBodySchema.safeParse(body);
    if (!r.success) throw invalid(r.error, ['manifest']);
    const decoded = JSON.stringify(r.data);
    if (given !== undefined) this.#lastBody = { given, decoded };
    return decoded;
  }
}

function invalid(error: z.ZodError, prefix: readonly PropertyKey[] = []): SepalError {
  const first = error.issues[0];
  const where = [...prefix, ...(first?.path ?? [])].map(String).join('.') || '(root)';
  return new SepalError(ErrorCodes.MANIFEST_INVALID, `manifest claims are invalid at ${where}: ${first?.message ?? ''}`);
}
