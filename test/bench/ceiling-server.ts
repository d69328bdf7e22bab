// The transport ceiling for the issuance benchmark: the hub's own TLS 1.3 listener with
// connection injection into grpc-js and the same channel options, but a Renew handler that
// answers a canned response (no crypto, no store). Prints its port on stdout, runs until killed.
import * as grpc from '@grpc/grpc-js';
import fs from 'node:fs';
import tls from 'node:tls';
import { loadAgentApi, channelOptions } from '../../proto/load.ts';
import { hubPaths } from '../../hub/datadir.ts';
import { loadAuthority } from '../../hub/service/authority.ts';

const dataDir = process.argv[2];
if (dataDir === undefined) throw new TypeError('usage: ceiling-server.ts DATA_DIR');
const authority = loadAuthority(hubPaths(dataDir));
const canned = { credentials: { certificateDer: fs.readFileSync(hubPaths(dataDir).serverCert).subarray(0, 600), chainDer: [authority.chainDer[0]], caBundleDer: [...authority.rootsDer], notAfterUnixMs: String(Date.now()) } };

const server = new grpc.Server({ ...channelOptions(64 * 1024), 'grpc.max_concurrent_streams': 1000 });
server.addService(loadAgentApi().service, {
  Renew: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
    // Same per-connection identity lookup cost as the hub: read the peer string.
    call.getPeer();
    cb(null, canned);
  },
});
const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
const t = tls.createServer({ key: authority.serverKeyPem, cert: authority.serverChainPem, ca: authority.bundlePem, minVersion: 'TLSv1.3', requestCert: true, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
t.on('secureConnection', (s) => injector.injectConnection(s));
t.listen(0, '127.0.0.1', () => {
  const a = t.address();
  process.stdout.write(`${typeof a === 'object' && a !== null ? a.port : 0}\n`);
});
