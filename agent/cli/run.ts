// sepal-agent run: the daemon in the foreground (systemd runs it so). SIGTERM/SIGINT stop it in
// order; SIGHUP re-reads the config file and applies what can change live (the log level).
import { parseArgs } from 'node:util';
import pino from 'pino';
import { loadAgentConfig } from '../config.ts';
import { AgentDaemon } from '../daemon/daemon.ts';
import { UsageError } from '../errors.ts';
import { createLogger } from '../log.ts';

export const RUN_USAGE = 'sepal-agent run [--config FILE] [--state-dir DIR] [--metrics-addr HOST:PORT]';

export function runOptions(argv: string[]): { config?: string | undefined; stateDir?: string | undefined; metricsAddr?: string | undefined; json?: boolean | undefined } {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { config: { type: 'string' }, 'state-dir': { type: 'string' }, 'metrics-addr': { type: 'string' }, json: { type: 'boolean' } },
      strict: true,
    });
    return { config: values.config, stateDir: values['state-dir'], metricsAddr: values['metrics-addr'], json: values.json };
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export async function cmdRun(argv: string[], io: { signal: AbortSignal }): Promise<number> {
  const o = runOptions(argv);
  const config = loadAgentConfig(o.config, { stateDir: o.stateDir, metricsAddr: o.metricsAddr });
  // JSON lines on stdout: journald keeps them.
  const log = createLogger({ level: config.logLevel, destination: pino.destination({ fd: 1, sync: false }) });
  const daemon = new AgentDaemon({ config, log });
  const reload = (): void => {
    try {
      const next = loadAgentConfig(o.config, { stateDir: o.stateDir, metricsAddr: o.metricsAddr });
      log.level = next.logLevel;
      log.info({ event: 'config.reloaded', logLevel: next.logLevel }, 'configuration reloaded (other changes take effect at the next start)');
    } catch (e) {
      log.error({ err: e, event: 'config.reload_failed' }, 'the configuration file is invalid; keeping the running configuration');
    }
  };
  process.on('SIGHUP', reload);
  try {
    await daemon.start();
    if (!io.signal.aborted) await new Promise<void>((resolve) => io.signal.addEventListener('abort', () => resolve(), { once: true }));
    await daemon.stop();
    return 0;
  } finally {
    process.off('SIGHUP', reload);
    log.flush();
  }
}
