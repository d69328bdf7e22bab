// How a node is shown to operators (CLI --json and the admin API): one shape for both.
import type { FlowerRegistration, FlowerState, NodeRecord } from '../store/store.ts';

/** The node's Flower key with the SuperLink; null when the node has no Flower key. */
export interface FlowerView {
  /** Flower's node id: uint64 as a decimal string (JSON numbers cannot hold it exactly). */
  nodeId: string | null;
  state: FlowerState;
  /** For people: 'registration pending (SUPERLINK_UNAVAILABLE)', 'registered', 'failed (...)'. */
  summary: string;
  attempts: number;
  lastError: string | null;
  lastErrorMessage: string | null;
  nextAttemptAt: string | null;
  since: string;
}

export interface NodeView {
  id: string;
  org: string;
  name: string;
  state: string;
  createdAt: string;
  revokedAt: string | null;
  lastSeenAt: string | null;
  certSerial: string | null;
  certNotAfter: string | null;
  manifestVersion: number;
  status: unknown;
  facts: unknown;
  flower: FlowerView | null;
}

const iso = (t: number | null): string | null => (t === null ? null : new Date(t).toISOString());

function parseJson(text: string | null): unknown {
  if (text === null) return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}

const STATE_WORDS: Readonly<Record<FlowerState, string>> = {
  pending: 'registration pending',
  registered: 'registered',
  'unregister-pending': 'unregistration pending',
  unregistered: 'unregistered',
  failed: 'failed',
};

export function flowerSummary(f: FlowerRegistration): string {
  const words = STATE_WORDS[f.state];
  return f.lastError === null ? words : `${words} (${f.lastError})`;
}

function flowerView(f: FlowerRegistration | null): FlowerView | null {
  if (f === null) return null;
  return {
    nodeId: f.flowerNodeId,
    state: f.state,
    summary: flowerSummary(f),
    attempts: f.attempts,
    lastError: f.lastError,
    lastErrorMessage: f.lastErrorMessage,
    nextAttemptAt: iso(f.nextAttemptAt),
    since: new Date(f.since).toISOString(),
  };
}

export function nodeView(n: NodeRecord): NodeView {
  return {
    id: n.id,
    org: n.org,
    name: n.name,
    state: n.state,
    createdAt: new Date(n.createdAt).toISOString(),
    revokedAt: iso(n.revokedAt),
    lastSeenAt: iso(n.lastSeenAt),
    certSerial: n.certSerial,
    certNotAfter: iso(n.certNotAfter),
    manifestVersion: n.manifestVersion,
    status: parseJson(n.status),
    facts: parseJson(n.facts),
    flower: flowerView(n.flower),
  };
}
