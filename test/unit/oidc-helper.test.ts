// The test OpenID provider (test/helpers/oidc.ts) works for real: discovery, the device flow driven
// through its HTML pages, JWT access tokens that verify against its JWKS, deny / abort / expiry,
// the authorization-code grant with PKCE, and minted tokens for negative tests.
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify, type JWTVerifyOptions } from 'jose';
import { startTestIdp, type TestIdp } from '../helpers/oidc.ts';

const AUDIENCE = 'https://hub.sepal.test';
const CLIENT_ID = 'sepal-agent';
const REDIRECT_URI = 'http://127.0.0.1:1/callback';
const users = [
  { id: 'alice', password: 'alice-pw', org: 'org-a', roles: ['sepal-enroll'] },
  { id: 'bob', password: 'bob-pw', org: 'org-b', roles: ['sepal-admin', 'sepal-enroll'] },
  { id: 'carol', password: 'carol-pw' },
];

describe('test OpenID provider (oidc-provider, device flow)', () => {
  let idp: TestIdp;
  let jwks: ReturnType<typeof createRemoteJWKSet>;
  let discovery: Record<string, unknown>;
  let verifyOpts: JWTVerifyOptions;

  beforeAll(async () => {
    idp = await startTestIdp({ clientId: CLIENT_ID, audience: AUDIENCE, users, redirectUris: [REDIRECT_URI] });
    const res = await fetch(idp.discoveryUrl);
    expect(res.status).toBe(200);
    discovery = await res.json() as Record<string, unknown>;
    jwks = createRemoteJWKSet(new URL(String(discovery['jwks_uri'])));
    verifyOpts = { issuer: idp.issuer, audience: AUDIENCE, algorithms: ['ES256'], typ: 'at+jwt' };
  });
  afterAll(async () => { await idp.close(); });

  it('publishes discovery with the device authorization endpoint', () => {
    expect(idp.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(discovery['issuer']).toBe(idp.issuer);
    expect(discovery['device_authorization_endpoint']).toBe(idp.deviceAuthorizationEndpoint);
    expect(discovery['token_endpoint']).toBe(idp.tokenEndpoint);
    expect(discovery['jwks_uri']).toBe(idp.jwksUri);
    expect(discovery['grant_types_supported']).toContain('urn:ietf:params:oauth:grant-type:device_code');
  });

  it('serves only the public half of its signing key', async () => {
    const body = await (await fetch(idp.jwksUri)).json() as { keys: Array<Record<string, unknown>> };
    expect(body.keys).toHaveLength(1);
    expect(body.keys[0]).toMatchObject({ kid: idp.publicJwk.kid, kty: 'EC', crv: 'P-256' });
    expect(body.keys[0]).not.toHaveProperty('d');
    expect(idp.privateJwk).toHaveProperty('d');
  });

  it('answers a device authorization with a 1 s polling interval', async () => {
    const da = await idp.startDeviceAuthorization();
    expect(da).toMatchObject({ verification_uri: `${idp.issuer}/device`, expires_in: 600, interval: 1 });
    expect(da.user_code).toMatch(/^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
    const pending = await fetch(idp.tokenEndpoint, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: da.device_code, client_id: CLIENT_ID }),
    });
    expect(pending.status).toBe(400);
    expect(await pending.json()).toMatchObject({ error: 'authorization_pending' });
  });

  it('issues a Keycloak-shaped JWT access token for the hub through the real pages', async () => {
    const tokens = await idp.deviceFlowTokens('alice', 'alice-pw');
    expect(tokens).toMatchObject({ token_type: 'Bearer', expires_in: 300 });
    const { payload, protectedHeader } = await jwtVerify(tokens.access_token, jwks, verifyOpts);
    expect(protectedHeader).toMatchObject({ alg: 'ES256', typ: 'at+jwt', kid: idp.publicJwk.kid });
    expect(payload).toMatchObject({
      iss: idp.issuer,
      aud: AUDIENCE,
      sub: 'alice',
      client_id: CLIENT_ID,
      azp: CLIENT_ID,
      org: 'org-a',
      realm_access: { roles: ['sepal-enroll'] },
    });
    expect(typeof payload.jti).toBe('string');
    expect(payload.exp! - payload.iat!).toBe(300);
    // A second user gets their own claims; a user without org gets none.
    const bob = await jwtVerify((await idp.deviceFlowTokens('bob', 'bob-pw')).access_token, jwks, verifyOpts);
    expect(bob.payload).toMatchObject({ sub: 'bob', org: 'org-b', realm_access: { roles: ['sepal-admin', 'sepal-enroll'] } });
    const carol = await jwtVerify((await idp.deviceFlowTokens('carol', 'carol-pw')).access_token, jwks, verifyOpts);
    expect(carol.payload).not.toHaveProperty('org');
    expect(carol.payload).toMatchObject({ realm_access: { roles: [] } });
  });

  it('gives the hub as audience also for scope=openid alone and for an explicit resource', async () => {
    const openidOnly = await idp.deviceFlowTokens('alice', 'alice-pw', { scope: 'openid' });
    await expect(jwtVerify(openidOnly.access_token, jwks, verifyOpts)).resolves.toBeDefined();
    const da = await idp.startDeviceAuthorization({ scope: 'openid', resource: AUDIENCE });
    await idp.approve(da.user_code, 'alice', 'alice-pw');
    const result = await idp.pollDeviceToken(da.device_code);
    if (!result.ok) throw new Error(result.error);
    await expect(jwtVerify(result.tokens.access_token, jwks, verifyOpts)).resolves.toBeDefined();
    await expect(idp.startDeviceAuthorization({ resource: 'https://elsewhere.test' })).rejects.toThrow(/invalid_target/);
  });

  it('grants nothing to a device request without a scope (oidc-provider ends it access_denied)', async () => {
    const res = await fetch(idp.deviceAuthorizationEndpoint, { method: 'POST', body: new URLSearchParams({ client_id: CLIENT_ID }) });
    expect(res.status).toBe(200);
    const da = await res.json() as { user_code: string; device_code: string };
    await expect(idp.approve(da.user_code, 'alice', 'alice-pw')).rejects.toThrow(/access_denied/);
    expect(await idp.pollDeviceToken(da.device_code)).toMatchObject({ ok: false, error: 'access_denied' });
  });

  it('issues a genuine ID token that is not an access token for the hub', async () => {
    const idToken = await idp.getIdToken('alice', 'alice-pw');
    expect(decodeProtectedHeader(idToken).typ).toBeUndefined();
    // Same key, same issuer, even the same org/roles claims: only aud and typ tell it apart.
    const { payload } = await jwtVerify(idToken, jwks, { issuer: idp.issuer, audience: CLIENT_ID });
    expect(payload).toMatchObject({ sub: 'alice', org: 'org-a', realm_access: { roles: ['sepal-enroll'] } });
    await expect(jwtVerify(idToken, jwks, verifyOpts)).rejects.toBeInstanceOf(errors.JWTClaimValidationFailed);
    await expect(jwtVerify(idToken, jwks, { ...verifyOpts, audience: CLIENT_ID })).rejects.toThrow(/typ/);
  });

  it('ends polling with access_denied when the user denies at consent', async () => {
    const da = await idp.startDeviceAuthorization();
    await idp.deny(da.user_code, 'alice', 'alice-pw');
    const result = await idp.pollDeviceToken(da.device_code);
    expect(result).toMatchObject({ ok: false, error: 'access_denied', polls: 1 });
  });

  it('ends polling with access_denied when the user aborts on the device page', async () => {
    const da = await idp.startDeviceAuthorization();
    await idp.abort(da.user_code);
    expect(await idp.pollDeviceToken(da.device_code)).toMatchObject({ ok: false, error: 'access_denied' });
  });

  it('refuses a wrong password, an unknown user code and a used one', async () => {
    const da = await idp.startDeviceAuthorization();
    await expect(idp.approve(da.user_code, 'alice', 'wrong')).rejects.toThrow(/login as alice failed \(invalid_credentials\)/);
    await expect(idp.approve(da.user_code, 'mallory', 'x')).rejects.toThrow(/AlreadyUsedError/);
    await expect(idp.approve('BCDF-GHJK', 'alice', 'alice-pw')).rejects.toThrow(/NotFoundError/);
    const pending = await idp.pollDeviceToken(da.device_code, { timeoutMs: 0 });
    expect(pending).toMatchObject({ ok: false, error: 'authorization_pending' });

    const done = await idp.startDeviceAuthorization();
    await idp.approve(done.user_code, 'alice', 'alice-pw');
    await expect(idp.approve(done.user_code, 'alice', 'alice-pw')).rejects.toThrow(/AlreadyUsedError/);
    expect(await idp.pollDeviceToken(done.device_code)).toMatchObject({ ok: true });
    // A device code is single use.
    expect(await idp.pollDeviceToken(done.device_code)).toMatchObject({ ok: false, error: 'invalid_grant' });
  });

  it('runs the authorization-code grant with PKCE through the same pages', async () => {
    const verifier = crypto.randomBytes(32).toString('base64url');
    const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
    const auth = new URL(String(discovery['authorization_endpoint']));
    auth.search = new URLSearchParams({
      client_id: CLIENT_ID, response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid enroll',
      code_challenge: challenge, code_challenge_method: 'S256', state: 'st-1',
    }).toString();
    const back = await idp.authorize(auth.href, 'bob', 'bob-pw');
    expect(back.origin + back.pathname).toBe(REDIRECT_URI);
    expect(back.searchParams.get('state')).toBe('st-1');
    const code = back.searchParams.get('code');
    expect(code).toBeTruthy();
    const res = await fetch(idp.tokenEndpoint, {
      method: 'POST',
      body: new URLSearchParams({
        grant_type: 'authorization_code', code: code ?? '', redirect_uri: REDIRECT_URI, client_id: CLIENT_ID, code_verifier: verifier,
      }),
    });
    expect(res.status).toBe(200);
    const tokens = await res.json() as { access_token: string };
    const { payload } = await jwtVerify(tokens.access_token, jwks, verifyOpts);
    expect(payload).toMatchObject({ sub: 'bob', org: 'org-b' });
  });

  describe('minted tokens', () => {
    it('verifies a minted token signed with the provider key', async () => {
      const token = await idp.mintAccessToken(idp.claimsFor('alice'));
      const { payload, protectedHeader } = await jwtVerify(token, jwks, verifyOpts);
      expect(protectedHeader).toEqual({ alg: 'ES256', typ: 'at+jwt', kid: idp.publicJwk.kid });
      expect(payload).toMatchObject({ sub: 'alice', org: 'org-a', realm_access: { roles: ['sepal-enroll'] }, aud: AUDIENCE });
    });

    it('lets each negative case fail the way it should', async () => {
      const claims = idp.claimsFor('alice');
      const expired = await idp.mintAccessToken(claims, { expiresInSeconds: -120 });
      await expect(jwtVerify(expired, jwks, verifyOpts)).rejects.toBeInstanceOf(errors.JWTExpired);

      const wrongAud = await idp.mintAccessToken({ ...claims, aud: 'https://other.test' });
      await expect(jwtVerify(wrongAud, jwks, verifyOpts)).rejects.toThrow(/"aud" claim/);

      const wrongIss = await idp.mintAccessToken({ ...claims, iss: 'http://127.0.0.1:1' });
      await expect(jwtVerify(wrongIss, jwks, verifyOpts)).rejects.toThrow(/"iss" claim/);

      const forged = await idp.mintAccessToken(claims, { key: 'foreign' });
      expect(decodeProtectedHeader(forged).kid).toBe(idp.publicJwk.kid);
      await expect(jwtVerify(forged, jwks, verifyOpts)).rejects.toBeInstanceOf(errors.JWSSignatureVerificationFailed);

      const unknownKid = await idp.mintAccessToken(claims, { key: 'foreign', header: { kid: 'nope' } });
      await expect(jwtVerify(unknownKid, jwks, verifyOpts)).rejects.toBeInstanceOf(errors.JWKSNoMatchingKey);

      const none = await idp.mintAccessToken(claims, { none: true });
      expect(none.endsWith('.')).toBe(true);
      expect(decodeProtectedHeader(none).alg).toBe('none');
      await expect(jwtVerify(none, jwks, verifyOpts)).rejects.toBeInstanceOf(errors.JOSEAlgNotAllowed);

      const confused = await idp.mintAccessToken(claims, { alg: 'HS256' });
      await expect(jwtVerify(confused, jwks, verifyOpts)).rejects.toBeInstanceOf(errors.JOSEAlgNotAllowed);
      // The HMAC really is keyed with the provider's public key (PEM): a verifier that let the token
      // pick its algorithm and used that key as a secret would accept it.
      const pem = crypto.createPublicKey({ key: idp.publicJwk, format: 'jwk' }).export({ format: 'pem', type: 'spki' });
      await expect(jwtVerify(confused, new TextEncoder().encode(pem), { ...verifyOpts, algorithms: ['HS256'] })).resolves.toBeDefined();

      const idLike = await idp.mintAccessToken(claims, { header: { typ: 'JWT' } });
      await expect(jwtVerify(idLike, jwks, verifyOpts)).rejects.toThrow(/typ/);
      const noTyp = await idp.mintAccessToken(claims, { header: { typ: undefined } });
      expect(decodeProtectedHeader(noTyp)).not.toHaveProperty('typ');

      // Claims the hub checks itself: the signature is fine, the content is not.
      const { realm_access: _ra, ...noRoles } = claims;
      const { payload } = await jwtVerify(await idp.mintAccessToken({ ...noRoles, realm_access: { roles: [] } }), jwks, verifyOpts);
      expect(payload['realm_access']).toEqual({ roles: [] });
      const { org: _org, ...noOrg } = claims;
      const withoutOrg = await jwtVerify(await idp.mintAccessToken(noOrg), jwks, verifyOpts);
      expect(withoutOrg.payload).not.toHaveProperty('org');

      const rs = await idp.mintAccessToken(claims, { alg: 'RS256', key: 'foreign' });
      expect(decodeProtectedHeader(rs).alg).toBe('RS256');
      await expect(jwtVerify(rs, jwks, verifyOpts)).rejects.toBeInstanceOf(errors.JOSEAlgNotAllowed);
      await expect(idp.mintAccessToken(claims, { alg: 'RS256' })).rejects.toThrow(/cannot sign RS256/);
    });
  });
});

describe('test OpenID provider: device code expiry', () => {
  it('ends polling with expired_token when nobody approves in time', async () => {
    const idp = await startTestIdp({ clientId: CLIENT_ID, audience: AUDIENCE, users, deviceCodeTtlSeconds: 2 });
    try {
      const da = await idp.startDeviceAuthorization();
      expect(da.expires_in).toBe(2);
      const result = await idp.pollDeviceToken(da.device_code, { intervalMs: 500 });
      expect(result).toMatchObject({ ok: false, error: 'expired_token' });
      expect(result.polls).toBeGreaterThan(1);
      await expect(idp.approve(da.user_code, 'alice', 'alice-pw')).rejects.toThrow(/ExpiredError/);
    } finally {
      await idp.close();
    }
  });
});
