// A stand-in for the Flower SuperLink's Control API in unit tests: a real grpc-js server over TLS
// serving proto/flower/control.proto with Flower 1.23's semantics for the three methods the hub
// calls (checked against flwr/superlink/servicer/control/control_servicer.py and its SQLite
// link state): RegisterNode refuses a key that is not a NIST EC PEM key, or that any node row
// (also an unregistered one) already has, with FAILED_PRECONDITION; UnregisterNode answers
// NOT_FOUND for an unknown or already unregistered node; ListNodes lists every node row.
// Tests script faults per method and can hold or delay answers.
import * as grpc from '@grpc/grpc-js';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createCaMaterial } from '../../hub/ca/bootstrap.ts';
import { loadControlApi, type ListNodesResponse, type NodeInfo, type RegisterNodeRequest, type RegisterNodeResponse, type UnregisterNodeRequest } from '../../proto/flower/control.ts';

export interface StubNode {
  nodeId: string;
  status: 'registered' | 'online' | 'offline' | 'unregistered';
  publicKey: Buffer;
}

export type Method = 'RegisterNode' | 'UnregisterNode' | 'ListNodes';

/** What the stub does with the next call of a method instead of (or besides) answering normally. */
export type Fault =
  /** Answer with this status and do nothing. */
  | { readonly status: grpc.status; readonly details?: string }
  /** Do the work, then answer only after this many ms (the client's deadline is shorter: a lost answer). */
  | { readonly answerAfterMs: number }
  /** Wait for `until` before doing anything. */
  | { readonly until: Promise<void> }
  /** Never answer. */
  | { readonly hang: true };

const NIST = new Set(['prime256v1', 'secp384r1', 'secp521r1', 'secp224r1', 'prime192v1']);

function isNistEcPem(b: Buffer): boolean {
  if (!b.toString('latin1').startsWith('-----BEGIN PUBLIC KEY-----')) return false;
  try {
    const k = crypto.createPublicKey({ key: b, format: 'pem' });
    return k.asymmetricKeyType === 'ec' && NIST.has(k.asymmetricKeyDetails?.namedCurve ?? '');
  } catch {
    return false;
  }
}

function isStatus(r: unknown): r is grpc.StatusObject {
  return typeof r === 'object' && r !== null && 'code' in r && typeof r.code === 'number';
}

function reply<Res>(cb: grpc.sendUnaryData<Res>, r: Res | grpc.StatusObject): void {
  if (isStatus(r)) cb(r);
  else cb(null, r);
}

export class StubSuperlink {
  readonly nodes: StubNode[] = [];
  readonly calls: Array<{ method: Method; request: unknown }> = [];
  /** Ids RegisterNode hands out, in order; random uint64s once used up. */
  readonly nextIds: string[] = [];
  readonly #faults = new Map<Method, Fault[]>();
  readonly #server: grpc.Server;
  readonly #timers = new Set<NodeJS.Timeout>();
  port = 0;
  /** The CA bundle (PEM) a client must trust, and a file holding it. */
  readonly caPem: string;
  readonly caFile: string;

  private constructor(server: grpc.Server, caPem: string, caFile: string) {
    this.#server = server;
    this.caPem = caPem;
    this.caFile = caFile;
  }

  static async start(dir: string): Promise<StubSuperlink> {
    const m = createCaMaterial({ hostnames: ['localhost', '127.0.0.1'], federationId: 'superlink-stub', now: new Date() });
    const caFile = path.join(dir, `superlink-ca-${crypto.randomBytes(4).toString('hex')}.pem`);
    fs.writeFileSync(caFile, m.rootCert);
    const server = new grpc.Server();
    const stub = new StubSuperlink(server, m.rootCert, caFile);
    server.addService(loadControlApi().service, {
      RegisterNode: stub.#unary('RegisterNode', (req: RegisterNodeRequest) => stub.#register(req)),
      UnregisterNode: stub.#unary('UnregisterNode', (req: UnregisterNodeRequest) => stub.#unregister(req)),
      ListNodes: stub.#unary('ListNodes', () => stub.#list()),
    });
    const creds = grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(m.serverKey), cert_chain: Buffer.from(m.serverCert + m.issuingCert) }], false);
    stub.port = await new Promise<number>((resolve, reject) => {
      server.bindAsync('127.0.0.1:0', creds, (e, port) => (e === null ? resolve(port) : reject(e)));
    });
    return stub;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The next call(s) of `method` get `fault` (queued in order). */
  fault(method: Method, fault: Fault, times = 1): void {
    const q = this.#faults.get(method) ?? [];
    for (let i = 0; i < times; i++) q.push(fault);
    this.#faults.set(method, q);
  }

  callsOf(method: Method): unknown[] {
    return this.calls.filter((c) => c.method === method).map((c) => c.request);
  }

  /** A node the SuperLink has (registered by someone, or by a call whose answer was lost). */
  add(publicKeyPem: Buffer, nodeId: string, status: StubNode['status'] = 'registered'): void {
    this.nodes.push({ nodeId, status, publicKey: publicKeyPem });
  }

  #unary<Req, Res>(method: Method, work: (req: Req) => Res | grpc.StatusObject) {
    return (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>): void => {
      this.calls.push({ method, request: call.request });
      const fault = this.#faults.get(method)?.shift();
      const answer = (): void => reply(cb, work(call.request));
      if (fault === undefined) return answer();
      if ('status' in fault) return cb({ code: fault.status, details: fault.details ?? grpc.status[fault.status] ?? '' });
      if ('hang' in fault) return;
      if ('until' in fault) {
        void fault.until.then(answer);
        return;
      }
      const r = work(call.request);
      const t = setTimeout(() => {
        this.#timers.delete(t);
        reply(cb, r);
      }, fault.answerAfterMs);
      this.#timers.add(t);
    };
  }

  #register(req: RegisterNodeRequest): RegisterNodeResponse | grpc.StatusObject {
    const refuse = (details: string) => ({ code: grpc.status.FAILED_PRECONDITION, details, metadata: new grpc.Metadata() });
    if (!isNistEcPem(req.publicKey)) return refuse('Public key is not valid');
    if (this.nodes.some((n) => n.publicKey.equals(req.publicKey))) return refuse('Public key already in use');
    const nodeId = this.nextIds.shift() ?? BigInt.asUintN(64, crypto.randomBytes(8).readBigUInt64LE()).toString();
    this.nodes.push({ nodeId, status: 'registered', publicKey: req.publicKey });
    return { nodeId };
  }

  #unregister(req: UnregisterNodeRequest): Record<string, never> | grpc.StatusObject {
    const n = this.nodes.find((x) => x.nodeId === req.nodeId && x.status !== 'unregistered');
    if (n === undefined) return { code: grpc.status.NOT_FOUND, details: 'Node ID not found', metadata: new grpc.Metadata() };
    n.status = 'unregistered';
    return {};
  }

  #list(): ListNodesResponse {
    const nodesInfo: NodeInfo[] = this.nodes.map((n) => ({
      nodeId: n.nodeId, ownerAid: 'sys_noauth', status: n.status, registeredAt: '', lastActivatedAt: '', lastDeactivatedAt: '',
      unregisteredAt: '', onlineUntil: 0, heartbeatInterval: 30, publicKey: n.publicKey,
    }));
    return { nodesInfo, now: new Date().toISOString() };
  }

  async stop(): Promise<void> {
    for (const t of this.#timers) clearTimeout(t);
    this.#server.forceShutdown();
    await Promise.resolve();
  }
}
