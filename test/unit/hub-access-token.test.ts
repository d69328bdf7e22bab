// The access-token verifier when the IdP's keys cannot be had: IDP_UNAVAILABLE, never a verdict
// on the token.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { SignJWT, generateKeyPair } from 'jose';
import { ErrorCodes } from '../../proto/errors.ts';
import { AccessTokenVerifier } from '../../hub/enroll/access-token.ts';
import { isSepalError } from '../../hub/errors.ts';

let server: http.Server;
let base = '';
beforeAll(async () => {
  server = http.createServer((req, res) => {
    if (req.url === '/502') { res.writeHead(502); res.end('bad gateway'); return; }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"not":"a jwks"}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const a = server.address();
  base = `http://127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

async function token(): Promise<string> {
  const { privateKey } = await generateKeyPair('ES256');
  return new SignJWT({ realm_access: { roles: ['sepal-enroll'] }, org: 'org-a', jti: 'j' })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })
    .setIssuer('https://idp.example').setAudience('https://hub').setSubject('u').setIssuedAt().setExpirationTime('5m')
    .sign(privateKey);
}

const idp = (jwksUri: string) => ({
  issuer: 'https://idp.example', clientId: 'c', audience: 'https://hub', scopes: [], algorithms: ['ES256' as const],
  roleClaim: 'realm_access.roles', orgClaim: 'org', enrollRole: 'sepal-enroll', adminRole: 'sepal-admin', clockToleranceSeconds: 30, jwksUri,
});

describe('AccessTokenVerifier when the IdP is not usable', () => {
  it.each([['an HTTP error from the JWKS URL', '/502'], ['a body that is not a JWKS', '/junk'], ['nothing listening', null]])('%s is IDP_UNAVAILABLE', async (_name, p) => {
    const uri = p === null ? 'http://127.0.0.1:1/jwks' : `${base}${p}`;
    const v = new AccessTokenVerifier(idp(uri));
    const err = await v.verify(await token(), 'enroll').then(() => null, (e: unknown) => e);
    expect(isSepalError(err, ErrorCodes.IDP_UNAVAILABLE)).toBe(true);
  });
});
