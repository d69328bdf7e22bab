// Loads control.proto (the subset of Flower's Control API the hub calls) for @grpc/grpc-js, and
// the shapes its messages decode to with these loader options. uint64 fields decode to decimal
// strings (longs: String): a Flower node id never passes through a JavaScript number.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';

export const CONTROL_PROTO_PATH = fileURLToPath(new URL('./control.proto', import.meta.url));

/** The Flower release whose descriptors control.proto mirrors. */
export const FLOWER_CONTROL_API_VERSION = '1.23.0';

export const CONTROL_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

export interface RegisterNodeRequest { publicKey: Buffer }
export interface RegisterNodeResponse { nodeId: string }
export interface UnregisterNodeRequest { nodeId: string }
export type UnregisterNodeResponse = Record<string, never>;
export type ListNodesRequest = Record<string, never>;
export interface NodeInfo {
  nodeId: string;
  ownerAid: string;
  /** 'registered' | 'online' | 'offline' | 'unregistered' in Flower 1.23. */
  status: string;
  registeredAt: string;
  lastActivatedAt: string;
  lastDeactivatedAt: string;
  unregisteredAt: string;
  onlineUntil: number;
  heartbeatInterval: number;
  publicKey: Buffer;
}
export interface ListNodesResponse { nodesInfo: NodeInfo[]; now: string }

let cached: grpc.GrpcObject | null = null;

export function loadControlApi(): { service: grpc.ServiceDefinition; client: grpc.ServiceClientConstructor } {
  cached ??= grpc.loadPackageDefinition(protoLoader.loadSync(CONTROL_PROTO_PATH, CONTROL_LOADER_OPTIONS));
  const ctor = ((cached['flwr'] as grpc.GrpcObject)['proto'] as grpc.GrpcObject)['Control'] as grpc.ServiceClientConstructor;
  return { service: ctor.service, client: ctor };
}
