// OpenVPN's management interface as the agent reads it: the notification parser (every state the
// client walks through, byte counts, FATAL/INFO/LOG, garbage as a coded error and never a throw),
// and the client against a stub management server on a unix socket: the handshake switches on the
// notifications and reads the current state, commands are answered in order, junk on the socket is
// ignored, an over-long line is dropped, pending commands fail when the socket goes away, and the
// client reconnects when OpenVPN comes back.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManagementClient, MAX_LINE, parseNotification, parseStateLine, TUNNEL_STATES, type ManagementEvent } from '../../agent/vpn/management.ts';
import { ErrorCodes, isAgentError, type AgentError } from '../../agent/errors.ts';
import { silentLogger } from '../../agent/log.ts';
import { systemClock } from '../../agent/runtime/clock.ts';

describe('parseNotification', () => {
  it('reads every state OpenVPN reports, with its time, detail and addresses', () => {
    for (const s of TUNNEL_STATES) {
      const e = parseNotification(`>STATE:1795889525,${s},SUCCESS,10.99.0.3,127.0.0.1,11940,,`);
      expect(e).toEqual({ type: 'state', state: s, at: 1795889525000, detail: 'SUCCESS', localIp: '10.99.0.3', remoteIp: '127.0.0.1' });
    }
    expect(parseNotification('>STATE:1795889523,RECONNECTING,SIGUSR1,,,,,')).toMatchObject({ state: 'RECONNECTING', detail: 'SIGUSR1', localIp: '' });
  });

  it('reads byte counts, FATAL, INFO, LOG; other notifications pass as "other"', () => {
    expect(parseNotification('>BYTECOUNT:4881,4803')).toEqual({ type: 'bytecount', received: 4881, sent: 4803 });
    expect(parseNotification('>FATAL:Cannot open TUN/TAP dev /dev/net/tun: No such file or directory')).toEqual({ type: 'fatal', message: 'Cannot open TUN/TAP dev /dev/net/tun: No such file or directory' });
    expect(parseNotification(">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info")).toMatchObject({ type: 'info' });
    expect(parseNotification('>LOG:1795889536,,VERIFY OK: depth=0, CN=server')).toEqual({ type: 'log', flags: '', message: 'VERIFY OK: depth=0, CN=server' });
    expect(parseNotification('>LOG:1795889535,I,SIGUSR1[hard,] received, process restarting')).toMatchObject({ flags: 'I' });
    expect(parseNotification('>HOLD:Waiting for hold release:0')).toEqual({ type: 'other', kind: 'HOLD', text: 'Waiting for hold release:0' });
  });

  it('turns garbage into VPN_MANAGEMENT_PROTOCOL, never a throw', () => {
    const bad = [
      'no prefix', '>', '>STATE:', '>STATE:abc,CONNECTED,,', '>STATE:1,NOT_A_STATE,x,', '>STATE:1', '>BYTECOUNT:1', '>BYTECOUNT:-1,2',
      '>BYTECOUNT:99999999999999999999,1', '>LOG:nonsense', '>lower:case', '\u0000\u0001',
    ];
    for (const line of bad) {
      const e = parseNotification(line);
      expect(isAgentError(e, ErrorCodes.VPN_MANAGEMENT_PROTOCOL), line).toBe(true);
    }
    expect(isAgentError(parseStateLine('x,y,z'), ErrorCodes.VPN_MANAGEMENT_PROTOCOL)).toBe(true);
    // The detail carries a short prefix only.
    const long = parseNotification(`>STATE:${'9'.repeat(5000)}`) as AgentError;
    expect(String(long.detail?.['line']).length).toBeLessThanOrEqual(80);
  });
});

// ---- the client against a stub server ----

let dir: string;
let sock: string;
let server: net.Server | null;
let conns: net.Socket[];
let received: string[];
let client: ManagementClient | null;
let events: ManagementEvent[];
let connections: boolean[];

type Handler = (c: net.Socket, cmd: string) => void;

const standard: Handler = (c, cmd) => {
  if (cmd === 'state on' || cmd === 'log on' || cmd.startsWith('bytecount ')) c.write(`SUCCESS: ${cmd}\r\n`);
  else if (cmd === 'state') c.write('1795889510,CONNECTED,SUCCESS,10.99.0.2,127.0.0.1,11940,,\r\nEND\r\n');
  else if (cmd.startsWith('signal ')) c.write(`SUCCESS: ${cmd} thrown\r\n`);
  else c.write("ERROR: unknown command, enter 'help' for more options\r\n");
};

function listen(handler: Handler = standard): Promise<void> {
  const s = net.createServer((c) => {
    conns.push(c);
    c.on('error', () => undefined);
    c.write(">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n");
    let buf = '';
    c.on('data', (d) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const cmd = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        received.push(cmd);
        handler(c, cmd);
      }
    });
  });
  server = s;
  return new Promise((resolve) => s.listen(sock, resolve));
}

async function closeServer(): Promise<void> {
  for (const c of conns) c.destroy();
  conns = [];
  const s = server;
  server = null;
  if (s !== null) await new Promise((r) => s.close(r));
}

function startClient(): ManagementClient {
  client = new ManagementClient({
    socketPath: sock,
    clock: systemClock,
    log: silentLogger(),
    bytecountSeconds: 5,
    retry: { baseMs: 20, capMs: 100 },
    commandTimeoutMs: 2000,
    onEvent: (e) => events.push(e),
    onConnection: (up) => connections.push(up),
  });
  client.start();
  return client;
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
  if (!ok()) throw new Error(`timed out: ${what}`);
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-mgmt-'));
  sock = path.join(dir, 'openvpn.sock');
  server = null;
  conns = [];
  received = [];
  client = null;
  events = [];
  connections = [];
});

afterEach(async () => {
  client?.stop();
  await closeServer();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('ManagementClient', () => {
  it('waits for the socket, switches the notifications on, reads the current state, then streams events', async () => {
    const c = startClient();
    await new Promise((r) => setTimeout(r, 100)); // nothing listens yet: it keeps retrying
    expect(c.connected).toBe(false);
    await listen();
    await until('connected', () => c.connected);
    expect(received).toEqual(['state on', 'log on', 'bytecount 5', 'state']);
    expect(connections).toEqual([true]);
    expect(events).toContainEqual(expect.objectContaining({ type: 'state', state: 'CONNECTED', localIp: '10.99.0.2' }));
    conns[0]?.write('>BYTECOUNT:100,200\r\n>STATE:1795889523,RECONNECTING,SIGUSR1,,,,,\r\n');
    await until('events', () => events.some((e) => e.type === 'bytecount') && events.some((e) => e.type === 'state' && e.state === 'RECONNECTING'));
    expect(events).toContainEqual({ type: 'bytecount', received: 100, sent: 200 });
  });

  it('sends signals and reports an ERROR reply as VPN_MANAGEMENT_PROTOCOL', async () => {
    await listen();
    const c = startClient();
    await until('connected', () => c.connected);
    await c.signal('SIGUSR1');
    expect(received).toContain('signal SIGUSR1');
    const e = await c.command('bogus').catch((x: unknown) => x);
    expect(isAgentError(e, ErrorCodes.VPN_MANAGEMENT_PROTOCOL)).toBe(true);
    expect(() => c.command('state\nsignal SIGTERM')).toThrow(TypeError);
  });

  it('ignores garbage and replies nobody asked for (counted, no crash) and keeps working', async () => {
    await listen();
    const c = startClient();
    await until('connected', () => c.connected);
    const before = c.protocolErrors;
    conns[0]?.write('complete nonsense\r\n>STATE:nope\r\n\u0000\u0001\u0002\r\n>BYTECOUNT:x,y\r\n');
    conns[0]?.write('>BYTECOUNT:7,8\r\n');
    await until('good event after junk', () => events.some((e) => e.type === 'bytecount' && e.received === 7));
    expect(c.protocolErrors - before).toBe(4);
    await c.signal('SIGUSR1'); // still in step with the replies
  });

  it('drops an over-long line without buffering it, and reads what follows', async () => {
    await listen();
    const c = startClient();
    await until('connected', () => c.connected);
    conns[0]?.write(`>LOG:1,,${'x'.repeat(MAX_LINE + 10)}`);
    conns[0]?.write(`${'y'.repeat(MAX_LINE)}\r\n>BYTECOUNT:1,2\r\n`);
    await until('event after the long line', () => events.some((e) => e.type === 'bytecount' && e.received === 1));
    expect(events.some((e) => e.type === 'log')).toBe(false);
    expect(c.protocolErrors).toBeGreaterThanOrEqual(1);
  });

  it('fails a pending command when the socket goes away, reports the loss, and reconnects when OpenVPN is back', async () => {
    await listen((c, cmd) => (cmd === 'signal SIGTERM' ? undefined : standard(c, cmd)));
    const c = startClient();
    await until('connected', () => c.connected);
    const pending = c.signal('SIGTERM').catch((x: unknown) => x);
    await until('command sent', () => received.includes('signal SIGTERM'));
    await closeServer();
    expect(isAgentError(await pending, ErrorCodes.VPN_MANAGEMENT_UNAVAILABLE)).toBe(true);
    await until('lost', () => connections.includes(false));
    expect(c.connected).toBe(false);
    fs.rmSync(sock, { force: true });
    await listen();
    await until('reconnected', () => c.connected);
    expect(connections).toEqual([true, false, true]);
  });

  it('a command while disconnected fails at once; stop() ends the retries', async () => {
    const c = startClient();
    const e = await c.signal('SIGUSR1').catch((x: unknown) => x);
    expect(isAgentError(e, ErrorCodes.VPN_MANAGEMENT_UNAVAILABLE)).toBe(true);
    c.stop();
    await listen();
    await new Promise((r) => setTimeout(r, 200));
    expect(received).toEqual([]);
  });
});
