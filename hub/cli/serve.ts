// sepal-hub serve: runs until SIGTERM/SIGINT, then shuts down gracefully.
import { createLogger, LOG_LEVELS } from '../log.ts';
import { serveHub, splitHostPort } from '../runtime.ts';
import { checkHostPort, parse, UsageError } from './args.ts';
import { COMMON, pathsFrom } from './common.ts';

export async function cmdServe(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, { ...COMMON, 'grpc-addr': { type: 'string' }, 'https-addr': { type: 'string' } });
  const paths = pathsFrom(v);
  const level = v['log-level'] ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  const log = createLogger({ level });
  const running = await serveHub(paths, {
    log,
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
