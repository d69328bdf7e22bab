// A client for OpenVPN's management interface on a unix socket (the `management PATH unix` line of
// the client config). It connects (retrying with capped, jittered backoff while OpenVPN starts or
// restarts), switches on real-time state, log and byte-count notifications, and turns what OpenVPN
// writes into typed events. Invariants: whatever arrives on the socket is untrusted text — a line
// that does not parse becomes a VPN_MANAGEMENT_PROTOCOL event and is otherwise ignored, never an
// exception; a line longer than MAX_LINE is dropped; commands are answered in order (SUCCESS/ERROR
// or a block ending in END), and every pending command fails at once when the socket goes away.
import net from 'node:net';
import { AgentError, ErrorCodes } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Clock, Timer } from '../runtime/clock.ts';
import { backoffDelay } from '../credentials/schedule.ts';

export const TUNNEL_STATES = [
  'CONNECTING', 'WAIT', 'AUTH', 'GET_CONFIG', 'ASSIGN_IP', 'ADD_ROUTES', 'CONNECTED', 'RECONNECTING', 'EXITING',
  'RESOLVE', 'TCP_CONNECT', 'AUTH_PENDING',
] as const;
export type TunnelState = (typeof TUNNEL_STATES)[number];

export type ManagementEvent =
  /** `>STATE:time,state,detail,localIp,remoteIp,...` (also the reply lines of `state`). */
  | { readonly type: 'state'; readonly state: TunnelState; readonly at: number; readonly detail: string; readonly localIp: string; readonly remoteIp: string }
  /** `>BYTECOUNT:in,out`: totals since OpenVPN started. */
  | { readonly type: 'bytecount'; readonly received: number; readonly sent: number }
  | { readonly type: 'fatal'; readonly message: string }
  | { readonly type: 'info'; readonly message: string }
  /** `>LOG:time,flags,message` */
  | { readonly type: 'log'; readonly flags: string; readonly message: string }
  /** A notification of a kind this client does not use (`>HOLD:`, `>PASSWORD:`...). */
  | { readonly type: 'other'; readonly kind: string; readonly text: string };

/** A real-time notification line (starting with '>'), or a protocol error for garbage. */
export function parseNotification(line: string): ManagementEvent | AgentError {
  const m = /^>([A-Z0-9_-]{1,32}):(.*)$/s.exec(line);
  if (m === null) return protocolError('not a notification', line);
  const kind = m[1] ?? '';
  const rest = m[2] ?? '';
  switch (kind) {
    case 'STATE':
      return parseStateLine(rest);
    case 'BYTECOUNT': {
      const b = /^(\d{1,20}),(\d{1,20})$/.exec(rest);
      if (b === null) return protocolError('bad BYTECOUNT', line);
      const received = Number(b[1]);
      const sent = Number(b[2]);
      if (!Number.isSafeInteger(received) || !Number.isSafeInteger(sent)) return protocolError('BYTECOUNT out of range', line);
      return { type: 'bytecount', received, sent };
    }
    case 'FATAL':
      return { type: 'fatal', message: rest };
    case 'INFO':
      return { type: 'info', message: rest };
    case 'LOG': {
      const l = /^(\d{1,20}),([A-Z]*),(.*)$/s.exec(rest);
      if (l === null) return protocolError('bad LOG', line);
      return { type: 'log', flags: l[2] ?? '', message: l[3] ?? '' };
    }
    default:
      return { type: 'other', kind, text: rest };
  }
}

/** `time,STATE,detail,localIp,remoteIp[,...]`: the body of >STATE: and each line of `state`. */
export function parseStateLine(text: string): ManagementEvent | AgentError {
  const f = text.split(',');
  const at = Number(f[0]);
  const state = f[1] ?? '';
  if (f.length < 3 || !/^\d{1,20}$/.test(f[0] ?? '') || !Number.isSafeInteger(at)) return protocolError('bad STATE', text);
  if (!(TUNNEL_STATES as readonly string[]).includes(state)) return protocolError(`unknown state ${JSON.stringify(state.slice(0, 32))}`, text);
  return { type: 'state', state: state as TunnelState, at: at * 1000, detail: f[2] ?? '', localIp: f[3] ?? '', remoteIp: f[4] ?? '' };
}

function protocolError(what: string, line: string): AgentError {
  // Only a short prefix travels in the detail: the management stream is not ours to copy.
  return new AgentError(ErrorCodes.VPN_MANAGEMENT_PROTOCOL, `openvpn management: ${what}`, { detail: { line: line.slice(0, 80) } });
}

/** Longest line accepted; longer ones are dropped (OpenVPN's own lines are far shorter). */
export const MAX_LINE = 16 * 1024;

export interface ManagementOptions {
  readonly socketPath: string;
  readonly clock: Clock;
  readonly log: Logger;
  readonly onEvent: (e: ManagementEvent) => void;
  /** Connected (after the notifications are switched on) or lost. */
  readonly onConnection?: (connected: boolean) => void;
  /** Seconds between BYTECOUNT notifications; default 5. */
  readonly bytecountSeconds?: number;
  /** Reconnect backoff while OpenVPN is not listening; default 100 ms doubling to 2 s. */
  readonly retry?: { readonly baseMs: number; readonly capMs: number };
  /** Deadline of one command; default 5 s. */
  readonly commandTimeoutMs?: number;
  /** net.connect, or a stand-in. */
  readonly connect?: (path: string) => net.Socket;
}

interface Pending {
  readonly command: string;
  /** 'line': one SUCCESS:/ERROR: line; 'block': lines up to END. */
  readonly reply: 'line' | 'block';
  readonly lines: string[];
  readonly resolve: (lines: string[]) => void;
  readonly reject: (e: AgentError) => void;
  readonly timer: Timer;
}

export class ManagementClient {
  readonly #o: ManagementOptions;
  #socket: net.Socket | null = null;
  #connected = false;
  #running = false;
  #attempt = 0;
  #retry: Timer | null = null;
  #pending: Pending[] = [];
  #buffer = '';
  #dropping = false;
  #protocolErrors = 0;

  constructor(o: ManagementOptions) {
    this.#o = o;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Lines that did not parse (each was logged and ignored). */
  get protocolErrors(): number {
    return this.#protocolErrors;
  }

  /** Starts connecting (and reconnecting whenever the socket goes away) until stop(). */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#attempt = 0;
    this.#connect();
  }

  stop(): void {
    this.#running = false;
    this.#retry?.cancel();
    this.#retry = null;
    this.#drop(new AgentError(ErrorCodes.VPN_MANAGEMENT_UNAVAILABLE, 'openvpn management: client stopped'));
  }

  /** `signal SIGUSR1` (reconnect, re-reading cert and key) or `signal SIGTERM` (exit). */
  async signal(sig: 'SIGUSR1' | 'SIGTERM' | 'SIGHUP'): Promise<void> {
    await this.command(`signal ${sig}`);
  }

  /** Sends one command and resolves with its reply lines; VPN_MANAGEMENT_UNAVAILABLE when not
   *  connected or the socket goes away, VPN_MANAGEMENT_PROTOCOL for an ERROR: reply. */
  command(command: string, reply: 'line' | 'block' = 'line'): Promise<string[]> {
    if (/[\r\n]/.test(command)) throw new TypeError('a management command is one line');
    const socket = this.#socket;
    if (socket === null || !this.#connected) {
      return Promise.reject(new AgentError(ErrorCodes.VPN_MANAGEMENT_UNAVAILABLE, 'openvpn management: not connected'));
    }
    return this.#send(socket, command, reply);
  }

  #send(socket: net.Socket, command: string, reply: 'line' | 'block'): Promise<string[]> {
    return new Promise((resolve, reject) => {
      const timer = this.#o.clock.setTimeout(() => {
        const i = this.#pending.findIndex((p) => p.timer === timer);
        // A reply that never comes leaves the stream out of step: start over on a new connection.
        if (i >= 0) socket.destroy(new AgentError(ErrorCodes.TIMEOUT, `openvpn management: no reply to ${command.split(' ')[0] ?? ''}`));
      }, this.#o.commandTimeoutMs ?? 5000);
      this.#pending.push({ command, reply, lines: [], resolve, reject, timer });
      socket.write(`${command}\n`);
    });
  }

  #connect(): void {
    if (!this.#running) return;
    const socket = (this.#o.connect ?? ((p) => net.connect(p)))(this.#o.socketPath);
    this.#socket = socket;
    this.#buffer = '';
    this.#dropping = false;
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      this.#attempt = 0;
      void this.#handshake(socket);
    });
    socket.on('data', (chunk: string) => this.#onData(chunk));
    socket.on('error', (err) => {
      // ENOENT/ECONNREFUSED while OpenVPN starts are expected; 'close' follows and retries.
      this.#o.log.debug({ event: 'vpn.management_error', err }, 'openvpn management socket error');
    });
    socket.on('close', () => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      this.#drop(new AgentError(ErrorCodes.VPN_MANAGEMENT_UNAVAILABLE, 'openvpn management: connection closed'));
      if (!this.#running) return;
      const retry = this.#o.retry ?? { baseMs: 100, capMs: 2000 };
      const delay = backoffDelay(this.#attempt, retry, this.#o.clock.random());
      this.#attempt = Math.min(this.#attempt + 1, 32);
      this.#retry = this.#o.clock.setTimeout(() => {
        this.#retry = null;
        this.#connect();
      }, delay);
    });
  }

  async #handshake(socket: net.Socket): Promise<void> {
    try {
      await this.#send(socket, 'state on', 'line');
      await this.#send(socket, 'log on', 'line');
      await this.#send(socket, `bytecount ${this.#o.bytecountSeconds ?? 5}`, 'line');
      // The current state, for a client that connects after OpenVPN got somewhere.
      const lines = await this.#send(socket, 'state', 'block');
      if (this.#socket !== socket) return;
      this.#connected = true;
      this.#o.onConnection?.(true);
      for (const l of lines) this.#emit(parseStateLine(l));
    } catch (e) {
      if (this.#socket === socket) {
        this.#o.log.warn({ event: 'vpn.management_handshake_failed', err: e }, 'openvpn management: could not switch on notifications');
        socket.destroy();
      }
    }
  }

  #onData(chunk: string): void {
    this.#buffer += chunk;
    for (;;) {
      const nl = this.#buffer.indexOf('\n');
      if (nl < 0) break;
      const raw = this.#buffer.slice(0, nl);
      this.#buffer = this.#buffer.slice(nl + 1);
      if (this.#dropping) {
        // The tail of an over-long line.
        this.#dropping = false;
        continue;
      }
      if (raw.length > MAX_LINE) {
        this.#emit(protocolError(`line longer than ${MAX_LINE} characters dropped`, raw));
        continue;
      }
      this.#line(raw.endsWith('\r') ? raw.slice(0, -1) : raw);
    }
    if (this.#buffer.length > MAX_LINE) {
      this.#emit(protocolError(`line longer than ${MAX_LINE} characters dropped`, this.#buffer));
      this.#buffer = '';
      this.#dropping = true;
    }
  }

  #line(line: string): void {
    if (line === '') return;
    if (line.startsWith('>')) {
      this.#emit(parseNotification(line));
      return;
    }
    const head = this.#pending[0];
    if (head === undefined) {
      this.#emit(protocolError('a reply nobody asked for', line));
      return;
    }
    const done = (): void => {
      this.#pending.shift();
      head.timer.cancel();
    };
    if (line.startsWith('ERROR:') && head.lines.length === 0) {
      done();
      head.reject(new AgentError(ErrorCodes.VPN_MANAGEMENT_PROTOCOL, `openvpn management: ${head.command.split(' ')[0] ?? ''}: ${line.slice(0, 200)}`));
      return;
    }
    if (head.reply === 'line') {
      done();
      if (line.startsWith('SUCCESS:')) head.resolve([line]);
      else head.reject(protocolError(`unexpected reply to ${head.command.split(' ')[0] ?? ''}`, line));
      return;
    }
    if (line === 'END') {
      done();
      head.resolve(head.lines);
      return;
    }
    if (head.lines.length < 1000) head.lines.push(line);
  }

  #emit(e: ManagementEvent | AgentError): void {
    if (e instanceof AgentError) {
      this.#protocolErrors += 1;
      this.#o.log.warn({ event: 'vpn.management_protocol', code: e.code, detail: e.detail }, e.message);
      return;
    }
    try {
      this.#o.onEvent(e);
    } catch (err) {
      this.#o.log.error({ event: 'vpn.management_listener_failed', err }, 'a management event listener threw');
    }
  }

  #drop(err: AgentError): void {
    const wasConnected = this.#connected;
    this.#connected = false;
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) {
      p.timer.cancel();
      p.reject(err);
    }
    const s = this.#socket;
    this.#socket = null;
    s?.destroy();
    if (wasConnected) this.#o.onConnection?.(false);
  }
}
