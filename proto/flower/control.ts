// Loads control.proto (the subset of Flower's Control API the hub calls) for @grpc/grpc-js with the
// project's loader options (proto/load.ts), and the shapes its messages decode to. uint64 fields
// decode to decimal strings (longs: String): a Flower node id never passes through a JS number.
import type * as grpc from '@grpc/grpc-js';
import fs from 'node:fs';
import { LOADER_OPTIONS } from '../load.ts';
import { serviceFromText } from '../source.ts';

/** control.proto's text, inlined by the bundler (installers/bundle.ts); undefined from source. */
declare const SEPAL_CONTROL_PROTO_TEXT: string | undefined;

/** The Flower release whose descriptors control.proto mirrors. */
export const FLOWER_CONTROL_API_VERSION = '1.23.0';

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

let cached: grpc.ServiceClientConstructor | null = null;

export function loadControlApi(): { service: grpc.ServiceDefinition; client: grpc.ServiceClientConstructor } {
  cached ??= serviceFromText(
    typeof SEPAL_CONTROL_PROTO_TEXT === 'string' ? SEPAL_CONTROL_PROTO_TEXT : fs.readFileSync(new URL('./control.proto', import.meta.url), 'utf8'), LOADER_OPTIONS, 'flwr.proto.Control');
  return { service: cached.service, client: cached };
}
