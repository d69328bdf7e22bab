// The gRPC agent API listener. We own the TLS server (TLS 1.3 only, client certificate requested
// but not required so that Enroll works before a node has one) and hand each established
// connection to grpc-js. Owning the socket lets us judge the client certificate once per
// connection with OpenSSL's exact verdict, and swap the server certificate without a restart.
import * as grpc from '@grpc/grpc-js';
import tls from 'node:tls';
import { loadAgentApi, channelOptions } from '../../proto/load.ts';
import { ErrorCodes } from '../../proto/errors.ts';
import { HARD_LIMIT_FACTOR, limitRequests } from './limits.ts';
import type { HubContext } from '../service/context.ts';
import { buildHandlers, type HandlerDeps } from './handlers.ts';
import { verifyPeer, type PeerVerdict } from './peer.ts';
import { ManifestStreams } from './streams.ts';
import { listenOrExplain } from '../listen.ts';

export interface GrpcServerOptions {
  readonly ctx: HubContext;
  readonly host: string;
  readonly port: number;
  readonly enroll?: HandlerDeps['enroll'];
}

export interface RunningGrpcServer {
  readonly port: number;
  readonly streams: ManifestStreams;
  /** Serves ctx.authority's current server certificate and trust store to new connections. */
  reloadTls(): void;
  /** Refuses new calls, ends streams, waits up to graceMs for calls in flight, then forces. */
  close(graceMs: number): Promise<void>;
}

function secureContextOptions(ctx: HubContext): tls.SecureContextOptions {
  return {
    key: ctx.authority.serverKeyPem,
    cert: ctx.authority.serverChainPem,
    ca: ctx.authority.bundlePem,
    minVersion: 'TLSv1.3',
  };
}

export async function startGrpcServer(opts: GrpcServerOptions): Promise<RunningGrpcServer> {
  const { ctx } = opts;
  const verdicts = new Map<string, PeerVerdict>();
  const streams = new ManifestStreams(ctx.metrics);
  let shuttingDown = false;

  const limit = ctx.config.limits.maxMessageBytes;
  const server = new grpc.Server({
    ...channelOptions(limit),
    // grpc-js refuses anything above this before decoding, without a code we could attach; up to
    // it, limitRequests() turns an oversized request into a coded, audited refusal.
    'grpc.max_receive_message_length': limit * HARD_LIMIT_FACTOR,
    'grpc.max_concurrent_streams': 1000,
  });
  const { service } = loadAgentApi();
  server.addService(limitRequests(service, limit), buildHandlers({
    ctx,
    streams,
    verdictFor: (peer) => verdicts.get(peer),
    isShuttingDown: () => shuttingDown,
    ...(opts.enroll === undefined ? {} : { enroll: opts.enroll }),
  }));
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());

  const tlsServer = tls.createServer({
    ...secureContextOptions(ctx),
    requestCert: true,
    rejectUnauthorized: false,
    ALPNProtocols: ['h2'],
    handshakeTimeout: 10_000,
  });
  tlsServer.on('secureConnection', (socket) => {
    const key = `${socket.remoteAddress ?? ''}:${socket.remotePort ?? 0}`;
    verdicts.set(key, verifyPeer(socket));
    socket.once('close', () => verdicts.delete(key));
    injector.injectConnection(socket);
  });
  tlsServer.on('tlsClientError', (err, socket) => {
    ctx.log.debug({ event: 'tls.handshake_failed', code: (err as NodeJS.ErrnoException).code, peer: socket.remoteAddress }, 'TLS handshake failed');
  });

  await listenOrExplain(() => new Promise<void>((resolve, reject) => {
    tlsServer.once('error', reject);
    tlsServer.listen(opts.port, opts.host, () => {
      tlsServer.off('error', reject);
      resolve();
    });
  }), opts);
  const addr = tlsServer.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : opts.port;
  ctx.log.info({ event: 'grpc.listening', host: opts.host, port }, 'gRPC agent API listening');

  return {
    port,
    streams,
    reloadTls: () => tlsServer.setSecureContext(secureContextOptions(ctx)),
    close: async (graceMs) => {
      shuttingDown = true;
      tlsServer.close();
      streams.closeAll(grpc.status.UNAVAILABLE, ErrorCodes.SHUTTING_DOWN, 'hub is shutting down');
      const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      let timer: NodeJS.Timeout | undefined;
      const forced = new Promise<void>((resolve) => {
        timer = setTimeout(() => { server.forceShutdown(); resolve(); }, graceMs);
      });
      await Promise.race([drained, forced]);
      clearTimeout(timer);
      injector.destroy();
      server.forceShutdown();
    },
  };
}
