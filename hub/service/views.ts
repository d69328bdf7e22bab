// How a node is shown to operators (CLI --json and the admin API): one shape for both.
import type { NodeRecord } from '../store/store.ts';

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
  };
}
