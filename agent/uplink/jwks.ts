// The hub's manifest key set, fetched over HTTPS with the node's client certificate and trusting
// only the hub's roots. A copy is kept in the state dir so verification works across restarts
// while the hub is away.
import https from 'node:https';
import fs from 'node:fs';
import path from 'node:path';
import type { JSONWebKeySet } from 'jose';
import { AgentError, ErrorCodes } from '../errors.ts';
import { writeFileAtomicSync } from '../fsutil.ts';
import type { TlsIdentity } from './connection.ts';

const MAX_BYTES = 256 * 1024;

export function fetchJwks(hubUrl: string, identity: TlsIdentity, timeoutMs = 10_000): Promise<JSONWebKeySet> {
  const url = `${hubUrl.replace(/\/$/, '')}/.well-known/jwks.json`;
  return new Promise((resolve, reject) => {
    const req = https.get(url, {
      ca: identity.rootsPem, key: identity.keyPem, cert: identity.certChainPem, minVersion: 'TLSv1.3', timeout: timeoutMs,
    }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BYTES) req.destroy(new Error('JWKS too large'));
        else chunks.push(c);
      });
      res.on('end', () => {
        if (res.statusCode !== 200) {
          reject(new AgentError(ErrorCodes.HUB_UNREACHABLE, `${url} answered ${res.statusCode ?? 0}`));
          return;
        }
        try {
          const doc = JSON.parse(Buffer.concat(chunks).toString('utf8')) as JSONWebKeySet;
          if (!Array.isArray(doc.keys)) throw new Error('no keys');
          resolve(doc);
        } catch (e) {
          reject(new AgentError(ErrorCodes.DISCOVERY_INVALID, `${url} is not a JWKS`, { cause: e }));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => reject(e instanceof AgentError ? e : new AgentError(ErrorCodes.HUB_UNREACHABLE, `cannot fetch ${url}: ${(e as NodeJS.ErrnoException).code ?? e.message}`, { cause: e })));
  });
}

/** Fetches and caches; falls back to the cached copy when the hub cannot be reached. */
export function cachedJwks(hubUrl: string, identity: () => TlsIdentity, cacheFile: string): () => Promise<JSONWebKeySet> {
  return async () => {
    try {
      const doc = await fetchJwks(hubUrl, identity());
      fs.mkdirSync(path.dirname(cacheFile), { recursive: true, mode: 0o700 });
      writeFileAtomicSync(cacheFile, JSON.stringify(doc), 0o644);
      return doc;
    } catch (e) {
      try {
        return JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as JSONWebKeySet;
      } catch {
        throw e;
      }
    }
  };
}
