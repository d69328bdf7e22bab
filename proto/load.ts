// Loads sepal.proto for @grpc/grpc-js. Both hub and agent use these exact loader options, so the
// decoded shapes are the ones described in api.ts.
import type * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import fs from 'node:fs';
import { serviceFromText } from './source.ts';

/** sepal.proto's text, inlined by the bundler (installers/bundle.ts); undefined from source. */
declare const SEPAL_PROTO_TEXT: string | undefined;

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

export const AGENT_API_SERVICE = 'sepal.v1.AgentApi';

let cached: grpc.ServiceClientConstructor | null = null;

export function loadAgentApi(): { service: grpc.ServiceDefinition; client: grpc.ServiceClientConstructor } {
  cached ??= serviceFromText(
    typeof SEPAL_PROTO_TEXT === 'string' ? SEPAL_PROTO_TEXT : fs.readFileSync(new URL('./sepal.proto', import.meta.url), 'utf8'), LOADER_OPTIONS, AGENT_API_SERVICE);
  return { service: cached.service, client: cached };
}

/** Channel options both sides agree on: message size limits and keepalives. */
export function channelOptions(maxMessageBytes: number): grpc.ChannelOptions {
  return {
    'grpc.max_receive_message_length': maxMessageBytes,
    'grpc.max_send_message_length': maxMessageBytes,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
  };
}
