// Message size limits with a coded answer. grpc-js itself refuses a message above its limit with
// a bare RESOURCE_EXHAUSTED that no handler sees; so its limit is set a few times higher, and
// below that each method's deserializer replaces a request larger than the configured limit by a
// marker that the handler refuses (MESSAGE_TOO_LARGE, audited) without decoding it.
import type * as grpc from '@grpc/grpc-js';

export const HARD_LIMIT_FACTOR = 4;

const OVERSIZED = Symbol('sepal.oversized');

interface Oversized {
  readonly [OVERSIZED]: number;
}

export function oversizedLength(request: unknown): number | null {
  return typeof request === 'object' && request !== null && OVERSIZED in request ? (request as Oversized)[OVERSIZED] : null;
}

export function limitRequests(service: grpc.ServiceDefinition, limit: number): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, def] of Object.entries(service)) {
    const decode = def.requestDeserialize;
    out[name] = {
      ...def,
      requestDeserialize: (buf: Buffer): unknown => (buf.length > limit ? ({ [OVERSIZED]: buf.length } satisfies Oversized) : decode(buf)),
    };
  }
  return out;
}
