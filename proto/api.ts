// TypeScript shapes of the messages in sepal.proto as @grpc/proto-loader decodes them with the
// options in load.ts (camelCase fields, 64-bit integers as decimal strings, bytes as Buffer,
// defaults filled in). Values from the wire are still untrusted: check them at the edge.

export interface Gpu { vendor: string; model: string; memoryBytes: string; driver: string }

export interface HostFacts {
  hostname: string; os: string; arch: string; cpuModel: string; cpuCores: number;
  memoryBytes: string; gpus: Gpu[]; agentVersion: string; flowerVersion: string;
}

export interface EnrollRequest {
  csrDer: Buffer;
  flowerPublicKey: string;
  facts: HostFacts | null;
  accessToken?: string;
  enrollmentToken?: string;
  credential?: 'accessToken' | 'enrollmentToken';
  name: string;
  org: string;
}

export interface Credentials { certificateDer: Buffer; chainDer: Buffer[]; caBundleDer: Buffer[]; notAfterUnixMs: string }

export interface ManifestEnvelope { jws: string; version: string }

export interface EnrollResponse { nodeId: string; org: string; credentials: Credentials; manifest: ManifestEnvelope | null }

export interface RenewRequest { csrDer: Buffer }
export interface RenewResponse { credentials: Credentials }

export interface WatchManifestRequest { knownVersion: string }

export interface StatusReport {
  ready: boolean; supernodeState: string; vpnState: string; manifestVersion: string;
  facts: HostFacts | null; rejectedManifests: string[]; detailJson: string;
}

export interface StatusAck { serverTimeUnixMs: string }

export interface VpnSecretRequest { ref: string }
export interface VpnSecretResponse { tlsCryptKey: Buffer }

/** Input shapes (what a client may pass when calling). */
export type In<T> = { [K in keyof T]?: T[K] extends Buffer ? Buffer | Uint8Array : T[K] extends string ? string | number | bigint : T[K] };
