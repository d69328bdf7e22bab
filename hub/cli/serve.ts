// sepal-hub serve: runs until SIGTERM/SIGINT, then shuts down gracefully.
import path from 'node:path';
import type { HubConfig } from '../config.ts';
import { createLogger, LOG_LEVELS } from '../log.ts';
import { serveHub, splitHostPort } from '../runtime.ts';
import { checkHostPort, parse, UsageError } from './args.ts';
import { COMMON, pathsFrom } from './common.ts';

export async function cmdServe(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, { ...COMMON, 'grpc-addr': { type: 'string' }, 'https-addr': { type: 'string' }, 'vpn-crl-file': { type: 'string' } });
  const vpnCrlFile = v['vpn-crl-file'];
  if (vpnCrlFile === '') throw new UsageError('--vpn-crl-file needs a path');
  const paths = pathsFrom(v);
  const level = v['log-level'] ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  const log = createLogger({ level });
  const running = await serveHub(paths, {
    log,
    // The CRL copy for the OpenVPN server's crl-verify (overrides vpn.crlFile in hub.json).
    ...(vpnCrlFile === undefined ? {} : { override: (c: HubConfig) => ({ ...c, vpn: { ...c.vpn, crlFile: path.resolve(vpnCrlFile) } }) }),
    ...(v['grpc-addr'] === undefined ? {} : { grpcAddr: splitHostPort(checkHostPort(v['grpc-addr'], '--grpc-addr')) }),
    ...(v['https-addr'] === undefined ? {} : { httpsAddr: splitHostPort(checkHostPort(v['https-addr'], '--https-addr')) }),
  });
  log.info({ event: 'hub.ready', grpcPort: running.grpcPort, httpsPort: running.httpsPort, rootFingerprint: running.hub.ctx.authority.rootFingerprint }, 'hub ready');
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      log.info({ event: 'hub.stopping', signal }, 'shutting down');
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  await running.close(5000);
  return 0;
}
