// A real OpenID provider for tests: npm `oidc-provider` (a certified OP) in-process on
// 127.0.0.1:0 over plain HTTP, with the Device Authorization Grant (RFC 8628) and JWT access
// tokens (RFC 9068, `typ: at+jwt`) for one resource server, the hub. Access tokens carry claims
// shaped like Keycloak's (`realm_access.roles`, `org`, `azp`, `preferred_username`).
//
// Users approve or deny a device code the way a browser does: `approve`/`deny` drive the
// provider's own verification pages (`/device`, with the xsrf token it puts in its forms) and
// this helper's login and consent pages (`/interaction/:uid`, built on interactionDetails /
// interactionResult) over HTTP with a cookie jar. Nothing reaches into the provider's storage.
//
// `mintAccessToken` signs arbitrary claims with the provider's own key (or a foreign one, or none)
// for negative tests of the hub's token verification.
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider, { errors as oidcErrors, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { JWK } from 'jose';
import * as views from './oidc-views.ts';

/** A JWK with the `kid` and `alg` the provider publishes. */
export type SigningJwk = JWK & { kid: string; alg: string };

export interface TestIdpUser {
  /** Login name; also the `sub` of this user's tokens. */
  id: string;
  password: string;
  /** Goes into the access token as `org` (omitted when undefined). */
  org?: string;
  /** Goes into the access token as `realm_access.roles` (empty list when undefined). */
  roles?: string[];
}

export interface TestIdpOptions {
  /** A public client (token_endpoint_auth_method none) allowed the device-code grant. */
  clientId: string;
  /** The hub's resource indicator: `aud` of every access token. */
  audience: string;
  users: TestIdpUser[];
  /** Default 300. */
  accessTokenTtlSeconds?: number;
  /** Lifetime of a device code / user code. Default 600. */
  deviceCodeTtlSeconds?: number;
  /** `interval` in the device authorization response. Default 1 (oidc-provider itself sends none). */
  pollIntervalSeconds?: number;
  /** Scopes defined on the resource server (the hub), space separated. Default `enroll`. */
  resourceScope?: string;
  /**
   * Redirect URIs for the authorization-code grant (PKCE S256 required, public client). When
   * given, the client may also use `authorization_code`; drive it with `authorize()`.
   */
  redirectUris?: string[];
  /** Signing algorithm of the provider's key (access tokens and ID tokens). Default ES256. */
  alg?: 'ES256' | 'RS256';
}

/** RFC 8628 §3.2 device authorization response. */
export interface DeviceAuthorization {
  device_code: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete?: string;
  expires_in: number;
  interval?: number;
}

export interface TokenResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
  id_token?: string;
  refresh_token?: string;
  scope?: string;
}

export type PollResult =
  | { ok: true; tokens: TokenResponse; polls: number }
  | { ok: false; error: string; error_description?: string; polls: number };

export interface MintOptions {
  /** JWS `alg`. Default: the provider key's (ES256). `HS*` with key 'provider' uses the provider's
   * public key (SPKI PEM) as the HMAC secret: the classic algorithm-confusion forgery. */
  alg?: string;
  /** 'provider' (default): the provider's own private key, so the signature verifies against its
   * JWKS. 'foreign': a key the provider does not publish (header still names the provider's kid
   * unless `header.kid` says otherwise), i.e. a forged signature. */
  key?: 'provider' | 'foreign';
  /** Merged over the default header `{ alg, typ: 'at+jwt', kid }`; a key set to undefined is removed. */
  header?: Record<string, unknown>;
  /** Sets `iat` = now (unless given in claims) and `exp` = now + this (negative = already expired). */
  expiresInSeconds?: number;
  /** An unsecured JWS: header `alg: none` and an empty signature. */
  none?: boolean;
}

export interface TestIdp {
  /** `http://127.0.0.1:PORT` (no trailing slash). */
  readonly issuer: string;
  readonly clientId: string;
  readonly audience: string;
  readonly discoveryUrl: string;
  readonly jwksUri: string;
  readonly deviceAuthorizationEndpoint: string;
  readonly tokenEndpoint: string;
  /** The public half of the provider's signing key (what `jwksUri` serves). */
  readonly publicJwk: SigningJwk;
  /** The provider's signing key, private. */
  readonly privateJwk: SigningJwk;
  /** Approve a user code as `username`: device page, code, confirm, login, consent. */
  approve(userCode: string, username: string, password: string): Promise<void>;
  /** Log in as `username` and press Deny on the consent page: the device code ends `access_denied`. */
  deny(userCode: string, username: string, password: string): Promise<void>;
  /** Press Abort on the device confirmation page (before any login): `access_denied` too. */
  abort(userCode: string): Promise<void>;
  /** POST /device/auth as the client. */
  startDeviceAuthorization(opts?: { scope?: string; resource?: string }): Promise<DeviceAuthorization>;
  /** Poll /token until tokens or a terminal error (anything but authorization_pending / slow_down). */
  pollDeviceToken(deviceCode: string, opts?: { intervalMs?: number; timeoutMs?: number }): Promise<PollResult>;
  /** The whole device flow for `username`: start, approve through the pages, poll. Default scope `openid enroll`. */
  deviceFlowTokens(username: string, password: string, opts?: { scope?: string }): Promise<TokenResponse>;
  /** A genuine ID token for `username` (device flow with scope openid). */
  getIdToken(username: string, password: string): Promise<string>;
  /**
   * Follow an authorization URL (authorization-code grant) through login and consent as
   * `username`; returns the redirect to the client's redirect_uri (with `code` or `error`).
   */
  authorize(authorizationUrl: string, username: string, password: string): Promise<URL>;
  /** Valid Keycloak-shaped access-token claims for `username`, for mintAccessToken. */
  claimsFor(username: string, overrides?: Record<string, unknown>): Record<string, unknown>;
  /** Sign arbitrary claims (see MintOptions); nothing is added unless expiresInSeconds is given. */
  mintAccessToken(claims: Record<string, unknown>, opts?: MintOptions): Promise<string>;
  close(): Promise<void>;
}

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

export async function startTestIdp(opts: TestIdpOptions): Promise<TestIdp> {
  const alg = opts.alg ?? 'ES256';
  const accessTokenTtl = opts.accessTokenTtlSeconds ?? 300;
  const deviceCodeTtl = opts.deviceCodeTtlSeconds ?? 600;
  const pollInterval = opts.pollIntervalSeconds ?? 1;
  const resourceScope = opts.resourceScope ?? 'enroll';
  const users = new Map(opts.users.map((u) => [u.id, u]));

  const signing = generateSigningKey(alg);
  const server = http.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;

  const clientName = `Sepal test client ${opts.clientId}`;
  const withCode = opts.redirectUris !== undefined && opts.redirectUris.length > 0;

  const configuration: Configuration = {
    clients: [{
      client_id: opts.clientId,
      client_name: clientName,
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: withCode ? [DEVICE_GRANT, 'authorization_code'] : [DEVICE_GRANT],
      response_types: withCode ? ['code'] : [],
      redirect_uris: opts.redirectUris ?? [],
      id_token_signed_response_alg: alg,
    }],
    clientDefaults: { id_token_signed_response_alg: alg },
    jwks: { keys: [signing.privateJwk] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    // ID tokens carry the same org/roles as access tokens (as a Keycloak mapper would add them), so
    // a hub that accepted an ID token would be fooled: the negative test is meaningful.
    claims: { openid: ['sub', 'org', 'realm_access', 'preferred_username'] },
    scopes: ['openid', 'offline_access'],
    findAccount: (_ctx, sub) => {
      const user = users.get(sub);
      if (user === undefined) return undefined;
      return { accountId: sub, claims: () => ({ sub, ...userClaims(user) }) };
    },
    extraTokenClaims: (_ctx, token) => {
      const user = 'accountId' in token && token.accountId !== undefined ? users.get(token.accountId) : undefined;
      if (user === undefined) return undefined;
      return { azp: opts.clientId, ...userClaims(user) };
    },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: {
        enabled: true,
        userCodeInputSource: (ctx, form, _out, err) => {
          ctx.type = 'html';
          ctx.body = views.deviceInputPage(form, err === undefined ? undefined : { code: err.name, message: err.message });
        },
        userCodeConfirmSource: (ctx, form, client, _deviceInfo, userCode) => {
          ctx.type = 'html';
          ctx.body = views.deviceConfirmPage(form, client.clientName ?? client.clientId, userCode);
        },
        successSource: (ctx) => {
          ctx.type = 'html';
          const client = ctx.oidc.client;
          ctx.body = views.deviceSuccessPage(client === undefined ? '' : (client.clientName ?? client.clientId));
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: (_ctx, _client, oneOf) => oneOf ?? opts.audience,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => {
          if (resource !== opts.audience) throw new oidcErrors.InvalidTarget();
          return {
            scope: resourceScope,
            audience: opts.audience,
            accessTokenTTL: accessTokenTtl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: accessTokenTtl,
      AuthorizationCode: 60,
      DeviceCode: deviceCodeTtl,
      Grant: 3600,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
    },
    renderError: (ctx, out) => {
      ctx.type = 'html';
      ctx.body = views.errorPage(out.error, out.error_description ?? '');
    },
  };

  const provider = new Provider(issuer, configuration);

  // RFC 8628 lets the server say how fast to poll; oidc-provider sends no `interval` (clients then
  // wait 5 s), so this adds one. It does not enforce it (no slow_down).
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method === 'POST' && ctx.path === '/device/auth' && ctx.status === 200
      && typeof ctx.body === 'object' && ctx.body !== null) {
      (ctx.body as Record<string, unknown>)['interval'] = pollInterval;
    }
  });
  provider.use(interactionRoutes(provider, users, clientName));

  const handle = provider.callback();
  server.on('request', (req, res) => { void handle(req, res); });

  const idp: TestIdp = {
    issuer,
    clientId: opts.clientId,
    audience: opts.audience,
    discoveryUrl: `${issuer}/.well-known/openid-configuration`,
    jwksUri: `${issuer}/jwks`,
    deviceAuthorizationEndpoint: `${issuer}/device/auth`,
    tokenEndpoint: `${issuer}/token`,
    publicJwk: signing.publicJwk,
    privateJwk: signing.privateJwk,

    approve: (userCode, username, password) => verifyDevice(issuer, userCode, { username, password, consent: 'allow' }),
    deny: (userCode, username, password) => verifyDevice(issuer, userCode, { username, password, consent: 'deny' }),
    abort: (userCode) => verifyDevice(issuer, userCode, 'abort'),

    async startDeviceAuthorization(o = {}) {
      const body = new URLSearchParams({ client_id: opts.clientId, scope: o.scope ?? `openid ${resourceScope}` });
      if (o.resource !== undefined) body.set('resource', o.resource);
      const res = await fetch(idp.deviceAuthorizationEndpoint, { method: 'POST', body });
      const json = await res.json() as Record<string, unknown>;
      if (res.status !== 200) throw new Error(`device authorization failed: ${res.status} ${JSON.stringify(json)}`);
      return json as unknown as DeviceAuthorization;
    },

    async pollDeviceToken(deviceCode, o = {}) {
      const intervalMs = o.intervalMs ?? pollInterval * 1000;
      const deadline = Date.now() + (o.timeoutMs ?? (deviceCodeTtl + 30) * 1000);
      for (let polls = 1; ; polls++) {
        const res = await fetch(idp.tokenEndpoint, {
          method: 'POST',
          body: new URLSearchParams({ grant_type: DEVICE_GRANT, device_code: deviceCode, client_id: opts.clientId }),
        });
        const json = await res.json() as Record<string, unknown>;
        if (res.status === 200) return { ok: true, tokens: json as unknown as TokenResponse, polls };
        const error = String(json['error']);
        if ((error !== 'authorization_pending' && error !== 'slow_down') || Date.now() > deadline) {
          const description = json['error_description'];
          return typeof description === 'string'
            ? { ok: false, error, error_description: description, polls }
            : { ok: false, error, polls };
        }
        await sleep(intervalMs);
      }
    },

    async deviceFlowTokens(username, password, o = {}) {
      const da = await idp.startDeviceAuthorization(o.scope === undefined ? {} : { scope: o.scope });
      await idp.approve(da.user_code, username, password);
      const result = await idp.pollDeviceToken(da.device_code);
      if (!result.ok) throw new Error(`device flow ended with ${result.error}: ${result.error_description ?? ''}`);
      return result.tokens;
    },

    async getIdToken(username, password) {
      const tokens = await idp.deviceFlowTokens(username, password, { scope: 'openid' });
      if (tokens.id_token === undefined) throw new Error('no id_token in the token response');
      return tokens.id_token;
    },

    authorize: (authorizationUrl, username, password) => authorizeInBrowser(issuer, authorizationUrl, username, password),

    claimsFor(username, overrides = {}) {
      const user = users.get(username);
      if (user === undefined) throw new Error(`unknown test user ${username}`);
      const now = Math.floor(Date.now() / 1000);
      return {
        jti: crypto.randomBytes(16).toString('base64url'),
        sub: user.id,
        iat: now,
        exp: now + accessTokenTtl,
        scope: resourceScope,
        client_id: opts.clientId,
        iss: issuer,
        aud: opts.audience,
        azp: opts.clientId,
        ...userClaims(user),
        ...overrides,
      };
    },

    mintAccessToken: (claims, o = {}) => Promise.resolve().then(() => mint(signing, claims, o)),

    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((err) => err === undefined ? resolve() : reject(err)));
    },
  };
  return idp;
}

function userClaims(user: TestIdpUser): Record<string, unknown> {
  return {
    preferred_username: user.id,
    realm_access: { roles: [...(user.roles ?? [])] },
    ...(user.org === undefined ? {} : { org: user.org }),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// Interaction pages: login (user + password) and consent (allow / deny), as Koa middleware in
// front of the provider's router.

function interactionRoutes(provider: Provider, users: Map<string, TestIdpUser>, clientName: string) {
  return async (ctx: KoaContextWithOIDC, next: () => Promise<unknown>): Promise<void> => {
    const m = /^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/.exec(ctx.path);
    if (m === null) { await next(); return; }
    const [, uid, action] = m;
    ctx.set('cache-control', 'no-store');
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = views.errorPage('invalid_request', 'interaction mismatch');
      return;
    }
    const base = `/interaction/${uid}`;
    const finish = async (result: Parameters<Provider['interactionResult']>[2], merge: boolean) => {
      const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: merge });
      ctx.status = 303;
      ctx.set('location', returnTo);
      ctx.body = '';
    };

    if (action === undefined && ctx.method === 'GET') {
      ctx.type = 'html';
      if (details.prompt.name === 'login') {
        ctx.body = views.loginPage(`${base}/login`, '');
      } else if (details.prompt.name === 'consent') {
        ctx.body = views.consentPage(`${base}/confirm`, `${base}/abort`, clientName, describeAsks(details.prompt.details));
      } else {
        ctx.status = 501;
        ctx.body = views.errorPage('not_implemented', `prompt ${details.prompt.name}`);
      }
      return;
    }
    if (ctx.method !== 'POST') { ctx.status = 405; return; }
    const form = new URLSearchParams(await readBody(ctx.req));

    if (action === 'login' && details.prompt.name === 'login') {
      const login = form.get('login') ?? '';
      const user = users.get(login);
      if (user === undefined || !passwordMatches(user.password, form.get('password') ?? '')) {
        ctx.status = 200;
        ctx.type = 'html';
        ctx.body = views.loginPage(`${base}/login`, login, { code: 'invalid_credentials', message: 'Invalid username or password.' });
        return;
      }
      await finish({ login: { accountId: user.id } }, false);
      return;
    }
    if (action === 'confirm' && details.prompt.name === 'consent') {
      const accountId = details.session?.accountId;
      const clientId = details.params['client_id'];
      if (accountId === undefined || typeof clientId !== 'string') throw new Error('consent without a session');
      const grant = details.grantId === undefined
        ? new provider.Grant({ accountId, clientId })
        : await provider.Grant.find(details.grantId);
      if (grant === undefined) throw new Error('grant not found');
      const d = details.prompt.details as {
        missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]>;
      };
      if (d.missingOIDCScope !== undefined) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims !== undefined) grant.addOIDCClaims(d.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      await finish({ consent: { grantId: await grant.save() } }, true);
      return;
    }
    if (action === 'abort') {
      await finish({ error: 'access_denied', error_description: 'End-User aborted interaction' }, false);
      return;
    }
    ctx.status = 400;
    ctx.type = 'html';
    ctx.body = views.errorPage('invalid_request', `cannot ${action ?? 'post'} at prompt ${details.prompt.name}`);
  };
}

function describeAsks(details: Record<string, unknown>): string[] {
  const asks: string[] = [];
  const scopes = details['missingOIDCScope'];
  if (Array.isArray(scopes)) asks.push(`scopes: ${scopes.join(' ')}`);
  const resources = details['missingResourceScopes'];
  if (typeof resources === 'object' && resources !== null) {
    for (const [indicator, s] of Object.entries(resources)) asks.push(`${indicator}: ${Array.isArray(s) ? s.join(' ') : ''}`);
  }
  return asks.length > 0 ? asks : ['to confirm a previous authorization'];
}

function passwordMatches(expected: string, given: string): boolean {
  const a = crypto.createHash('sha256').update(expected).digest();
  const b = crypto.createHash('sha256').update(given).digest();
  return crypto.timingSafeEqual(a, b);
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

// ---------------------------------------------------------------------------------------------
// A browser, just enough of one: cookie jar (with paths), manual redirects, form scraping.

interface Cookie { name: string; value: string; path: string }

class CookieJar {
  readonly #cookies = new Map<string, Cookie>();

  store(setCookies: string[], url: URL): void {
    for (const line of setCookies) {
      const [pair = '', ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = url.pathname.replace(/\/[^/]*$/, '') || '/';
      let expired = false;
      for (const attr of attrs) {
        const [k = '', v = ''] = attr.split('=', 2);
        const key = k.toLowerCase();
        if (key === 'path' && v.startsWith('/')) path = v;
        if (key === 'max-age' && Number(v) <= 0) expired = true;
        if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      const id = `${name}\u0000${path}`;
      if (expired) this.#cookies.delete(id);
      else this.#cookies.set(id, { name, value, path });
    }
  }

  header(url: URL): string {
    return [...this.#cookies.values()]
      .filter((c) => url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }
}

interface Page { url: URL; status: number; html: string; name: string | undefined; error: string | undefined }
type Landing = Page | { url: URL; leftTo: URL };

class Browser {
  readonly #jar = new CookieJar();
  readonly #origin: string;

  constructor(origin: string) { this.#origin = new URL(origin).origin; }

  /** One request; follows redirects while they stay on the provider's origin. */
  async go(url: URL, form?: Record<string, string>): Promise<Landing> {
    let method = form === undefined ? 'GET' : 'POST';
    let body: URLSearchParams | undefined = form === undefined ? undefined : new URLSearchParams(form);
    for (let hops = 0; hops < 20; hops++) {
      const headers: Record<string, string> = { accept: 'text/html' };
      const cookie = this.#jar.header(url);
      if (cookie !== '') headers['cookie'] = cookie;
      const res = await fetch(url, { method, headers, redirect: 'manual', ...(body === undefined ? {} : { body }) });
      this.#jar.store(res.headers.getSetCookie(), url);
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location !== null) {
        await res.arrayBuffer();
        const next = new URL(location, url);
        if (next.origin !== this.#origin) return { url, leftTo: next };
        url = next;
        method = 'GET';
        body = undefined;
        continue;
      }
      const html = await res.text();
      return { url, status: res.status, html, name: attr(html, /<body[^>]*\bdata-page="([^"]*)"/), error: attr(html, /\bdata-error="([^"]*)"/) };
    }
    throw new Error(`too many redirects from ${url.href}`);
  }

  async page(url: URL, form?: Record<string, string>): Promise<Page> {
    const landing = await this.go(url, form);
    if ('leftTo' in landing) throw new Error(`unexpected redirect to ${landing.leftTo.href}`);
    return landing;
  }
}

function attr(html: string, re: RegExp): string | undefined {
  const m = re.exec(html);
  return m?.[1] === undefined ? undefined : decodeHtml(m[1]);
}

function decodeHtml(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos);/gi, (_, e: string) => {
    const k = e.toLowerCase();
    if (k.startsWith('#x')) return String.fromCodePoint(parseInt(k.slice(2), 16));
    if (k.startsWith('#')) return String.fromCodePoint(parseInt(k.slice(1), 10));
    return ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[k] ?? '';
  });
}

/** The named form's action (resolved against the page) and its hidden inputs. */
function scrapeForm(page: Page, id: string): { action: URL; fields: Record<string, string> } {
  for (const m of page.html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const attrs = attributes(m[1] ?? '');
    if (attrs['id'] !== id) continue;
    const fields: Record<string, string> = {};
    for (const input of (m[2] ?? '').matchAll(/<input\b([^>]*)>/gi)) {
      const a = attributes(input[1] ?? '');
      if (a['type'] === 'hidden' && a['name'] !== undefined) fields[a['name']] = a['value'] ?? '';
    }
    return { action: new URL(attrs['action'] ?? '', page.url), fields };
  }
  throw new Error(`no form #${id} on ${page.url.pathname} (page ${page.name ?? '?'}, error ${page.error ?? 'none'})`);
}

function attributes(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of s.matchAll(/([\w:.-]+)\s*=\s*"([^"]*)"/g)) {
    if (m[1] !== undefined) out[m[1].toLowerCase()] = decodeHtml(m[2] ?? '');
  }
  return out;
}

function expectPage(page: Page, name: string, doing: string): void {
  if (page.name !== name) {
    throw new Error(`${doing}: expected the ${name} page, got ${page.name ?? 'an unknown page'} (HTTP ${page.status}${page.error === undefined ? '' : `, error ${page.error}`}) at ${page.url.pathname}`);
  }
}

type Verify = { username: string; password: string; consent: 'allow' | 'deny' } | 'abort';

async function verifyDevice(issuer: string, userCode: string, how: Verify): Promise<void> {
  const browser = new Browser(issuer);
  const input = await browser.page(new URL('/device', issuer));
  expectPage(input, 'device-input', 'opening the device page');
  const inputForm = scrapeForm(input, 'op.deviceInputForm');
  const confirm = await browser.page(inputForm.action, { ...inputForm.fields, user_code: userCode });
  expectPage(confirm, 'device-confirm', `entering user code ${userCode}`);
  const confirmForm = scrapeForm(confirm, 'op.deviceConfirmForm');
  if (how === 'abort') {
    const aborted = await browser.page(confirmForm.action, { ...confirmForm.fields, abort: 'yes' });
    expectPage(aborted, 'device-input', 'aborting');
    if (aborted.error !== 'AbortedError') throw new Error(`abort: expected AbortedError, got ${aborted.error ?? 'no error'}`);
    return;
  }
  const login = await browser.page(confirmForm.action, confirmForm.fields);
  const next = await logInAndConsent(browser, login, how.username, how.password, how.consent);
  if ('leftTo' in next) throw new Error(`device flow redirected off the provider to ${next.leftTo.href}`);
  if (how.consent === 'allow') {
    if (next.name === 'device-input' && next.error === 'AbortedError') {
      // oidc-provider ends a grant with access_denied when nothing was granted, e.g. a device
      // authorization request without any scope.
      throw new Error('approving: the provider ended the flow with access_denied (did the device request a scope?)');
    }
    expectPage(next, 'device-success', 'approving');
  } else {
    expectPage(next, 'device-input', 'denying');
    if (next.error !== 'AbortedError') throw new Error(`deny: expected AbortedError, got ${next.error ?? 'no error'}`);
  }
}

async function logInAndConsent(browser: Browser, login: Page, username: string, password: string, consent: 'allow' | 'deny'): Promise<Landing> {
  let page = login;
  if (page.name === 'login') {
    const form = scrapeForm(page, 'login');
    page = await browser.page(form.action, { ...form.fields, login: username, password });
    if (page.name === 'login') throw new Error(`login as ${username} failed (${page.error ?? 'no error shown'})`);
  }
  expectPage(page, 'consent', `logging in as ${username}`);
  const form = scrapeForm(page, consent === 'allow' ? 'consent' : 'deny');
  return browser.go(form.action, form.fields);
}

async function authorizeInBrowser(issuer: string, authorizationUrl: string, username: string, password: string): Promise<URL> {
  const browser = new Browser(issuer);
  const first = await browser.go(new URL(authorizationUrl));
  if ('leftTo' in first) return first.leftTo;
  const last = await logInAndConsent(browser, first, username, password, 'allow');
  if ('leftTo' in last) return last.leftTo;
  throw new Error(`authorization did not return to the client (page ${last.name ?? '?'}, error ${last.error ?? 'none'})`);
}

// ---------------------------------------------------------------------------------------------
// Keys and minting.

interface SigningKey {
  alg: string;
  privateKey: crypto.KeyObject;
  publicKey: crypto.KeyObject;
  privateJwk: SigningJwk;
  publicJwk: SigningJwk;
  foreign: Map<string, crypto.KeyObject>;
}

function generateSigningKey(alg: 'ES256' | 'RS256'): SigningKey {
  const { privateKey, publicKey } = alg === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pub = publicKey.export({ format: 'jwk' });
  const kid = crypto.createHash('sha256').update(JSON.stringify(pub)).digest('base64url').slice(0, 16);
  return {
    alg,
    privateKey,
    publicKey,
    privateJwk: { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' },
    publicJwk: { ...pub, kid, alg, use: 'sig' },
    foreign: new Map(),
  };
}

function foreignKey(signing: SigningKey, alg: string): crypto.KeyObject {
  let key = signing.foreign.get(alg);
  if (key !== undefined) return key;
  if (alg.startsWith('HS')) key = crypto.createSecretKey(crypto.randomBytes(64));
  else if (alg.startsWith('RS') || alg.startsWith('PS')) key = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  else if (alg === 'ES256') key = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  else if (alg === 'ES384') key = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
  else if (alg === 'ES512') key = crypto.generateKeyPairSync('ec', { namedCurve: 'P-521' }).privateKey;
  else if (alg === 'EdDSA' || alg === 'Ed25519') key = crypto.generateKeyPairSync('ed25519').privateKey;
  else throw new Error(`mintAccessToken: no foreign key for alg ${alg}`);
  signing.foreign.set(alg, key);
  return key;
}

function b64json(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function mint(signing: SigningKey, claims: Record<string, unknown>, o: MintOptions): string {
  const payload: Record<string, unknown> = { ...claims };
  if (o.expiresInSeconds !== undefined) {
    const now = Math.floor(Date.now() / 1000);
    payload['iat'] ??= now;
    payload['exp'] = now + o.expiresInSeconds;
  }
  const alg = o.none === true ? 'none' : (o.alg ?? signing.alg);
  const header: Record<string, unknown> = { alg, typ: 'at+jwt', kid: signing.publicJwk.kid, ...o.header };
  if (o.none === true) header['alg'] = 'none';
  for (const k of Object.keys(header)) if (header[k] === undefined) delete header[k];
  const input = `${b64json(header)}.${b64json(payload)}`;
  if (alg === 'none') return `${input}.`;

  let key: crypto.KeyObject;
  if ((o.key ?? 'provider') === 'foreign') {
    key = foreignKey(signing, alg);
  } else if (alg.startsWith('HS')) {
    // Algorithm confusion: the provider's *public* key, as PEM, used as an HMAC secret.
    key = crypto.createSecretKey(Buffer.from(signing.publicKey.export({ format: 'pem', type: 'spki' })));
  } else if (alg === signing.alg) {
    key = signing.privateKey;
  } else {
    throw new Error(`mintAccessToken: the provider key is ${signing.alg}, cannot sign ${alg} with it (use key: 'foreign')`);
  }
  return `${input}.${signature(alg, key, Buffer.from(input)).toString('base64url')}`;
}

function signature(alg: string, key: crypto.KeyObject, data: Buffer): Buffer {
  const bits = alg.slice(2);
  const hash = `sha${bits}`;
  if (alg.startsWith('HS')) return crypto.createHmac(hash, key).update(data).digest();
  if (alg.startsWith('RS')) return crypto.sign(hash, data, key);
  if (alg.startsWith('PS')) {
    return crypto.sign(hash, data, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: Number(bits) / 8 });
  }
  if (alg.startsWith('ES')) return crypto.sign(hash, data, { key, dsaEncoding: 'ieee-p1363' });
  if (alg === 'EdDSA' || alg === 'Ed25519') return crypto.sign(null, data, key);
  throw new Error(`mintAccessToken: unsupported alg ${alg}`);
}
