// The reconcile planner: data in, steps out, no mocks. Each case states the runtime state, the
// manifest body, and the exact steps expected.
import { describe, expect, it } from 'vitest';
import type { ManifestBody } from '../../proto/manifest.ts';
import { configHashes, plan } from '../../agent/reconcile/plan.ts';
import { canonicalJson, supernodeConfig } from '../../agent/reconcile/hash.ts';
import { idleState, type NodeRuntimeState, type Step } from '../../agent/reconcile/steps.ts';

const SHA_A = 'a'.repeat(64);
const SHA_B = 'b'.repeat(64);

const base: ManifestBody = {
  superlink: { address: '10.8.0.1:9092' },
  supernode: { nodeConfig: { 'partition-id': 0, lr: 0.1 }, isolation: 'subprocess' },
  vpn: {
    remotes: [{ host: 'vpn.example.org', port: 1194, proto: 'udp' }],
    tlsCryptKeyRef: 'org-a/tls-crypt',
    routes: ['10.8.0.0/24'],
    superlinkAddress: '10.8.0.1:9092',
  },
  datasets: [
    { name: 'mnist', path: '/srv/data/mnist', sha256: SHA_A },
    { name: 'notes', path: '/srv/data/notes' },
  ],
  privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: true } },
  resources: { gpu: { required: false } },
};

function edit(f: (b: ManifestBody) => void): ManifestBody {
  const b = structuredClone(base);
  f(b);
  return b;
}

/** The state a node is in once `body` has been applied in full. */
function runningWith(body: ManifestBody): NodeRuntimeState {
  const h = configHashes(body);
  return {
    supernode: { running: true, configHash: h.supernode },
    vpn: { running: h.vpn !== null, configHash: h.vpn },
    datasets: Object.fromEntries(body.datasets.map((d) => [d.name, { path: d.path, verifiedSha256: d.sha256 ?? null }])),
  };
}

const kinds = (steps: Step[]): string[] => steps.map((s) => s.kind);

describe('plan', () => {
  it('first apply: VPN config, VPN up, datasets verified, then the SuperNode', () => {
    const h = configHashes(base);
    expect(plan(idleState(), base)).toEqual([
      { kind: 'write-vpn-config', configHash: h.vpn, vpn: base.vpn },
      { kind: 'start-vpn', configHash: h.vpn },
      { kind: 'verify-dataset', name: 'mnist', path: '/srv/data/mnist', sha256: SHA_A },
      { kind: 'verify-dataset', name: 'notes', path: '/srv/data/notes' },
      { kind: 'start-supernode', configHash: h.supernode, config: supernodeConfig(base) },
    ]);
  });

  it('re-applying the same body (a new version with nothing changed) is a no-op', () => {
    expect(plan(runningWith(base), base)).toEqual([]);
    expect(plan(runningWith(base), structuredClone(base))).toEqual([]);
  });

  it('a VPN-only change rewrites the config and restarts only the VPN', () => {
    const next = edit((b) => { b.vpn?.routes.push('10.9.0.0/24'); });
    const h = configHashes(next);
    expect(h.supernode).toBe(configHashes(base).supernode);
    expect(plan(runningWith(base), next)).toEqual([
      { kind: 'write-vpn-config', configHash: h.vpn, vpn: next.vpn },
      { kind: 'restart-vpn', configHash: h.vpn },
    ]);
  });

  it('a node-config change restarts only the SuperNode (no dataset re-verification)', () => {
    const next = edit((b) => { b.supernode.nodeConfig['lr'] = 0.01; });
    expect(configHashes(next).vpn).toBe(configHashes(base).vpn);
    expect(plan(runningWith(base), next)).toEqual([
      { kind: 'restart-supernode', configHash: configHashes(next).supernode, config: supernodeConfig(next) },
    ]);
  });

  it('a dataset sha256 change re-verifies that dataset, then restarts the SuperNode', () => {
    const next = edit((b) => { (b.datasets[0] as { sha256?: string }).sha256 = SHA_B; });
    expect(plan(runningWith(base), next)).toEqual([
      { kind: 'verify-dataset', name: 'mnist', path: '/srv/data/mnist', sha256: SHA_B },
      { kind: 'restart-supernode', configHash: configHashes(next).supernode, config: supernodeConfig(next) },
    ]);
  });

  it('a dataset path change, or a new dataset, is verified before the restart', () => {
    const moved = edit((b) => { (b.datasets[1] as { path: string }).path = '/mnt/notes'; });
    expect(kinds(plan(runningWith(base), moved))).toEqual(['verify-dataset', 'restart-supernode']);
    const added = edit((b) => { b.datasets.push({ name: 'cifar', path: '/srv/data/cifar', sha256: SHA_B }); });
    expect(plan(runningWith(base), added).slice(0, 1)).toEqual([{ kind: 'verify-dataset', name: 'cifar', path: '/srv/data/cifar', sha256: SHA_B }]);
  });

  it('null (no manifest, or revoked) stops the SuperNode first, then the VPN', () => {
    expect(plan(runningWith(base), null)).toEqual([{ kind: 'stop-supernode' }, { kind: 'stop-vpn' }]);
    expect(plan(idleState(), null)).toEqual([]);
    const vpnOnly: NodeRuntimeState = { ...idleState(), vpn: { running: true, configHash: 'x' } };
    expect(plan(vpnOnly, null)).toEqual([{ kind: 'stop-vpn' }]);
  });

  it('a change that touches neither child restarts nothing (dataset order, manifest version)', () => {
    const reordered = edit((b) => { b.datasets.reverse(); });
    expect(plan(runningWith(base), reordered)).toEqual([]);
    // Key order inside a section means nothing either.
    const { isolation, nodeConfig } = base.supernode;
    const shuffled = { ...base, supernode: { isolation, nodeConfig } } as ManifestBody;
    expect(plan(runningWith(base), shuffled)).toEqual([]);
  });

  it('every SuperNode input restarts it: superlink, privacy flags, resources', () => {
    for (const next of [
      edit((b) => { b.superlink.caCertPem = 'another SuperLink CA'; }),
      edit((b) => { b.privacy.differentialPrivacy.enabled = true; }),
      edit((b) => { b.resources = { gpu: { required: true, count: 1 } }; }),
    ]) {
      expect(kinds(plan(runningWith(base), next))).toEqual(['restart-supernode']);
    }
  });

  it('with a VPN, the SuperNode dials vpn.superlinkAddress: a change of superlink.address alone restarts nothing', () => {
    expect(plan(runningWith(base), edit((b) => { b.superlink.address = '203.0.113.7:9092'; }))).toEqual([]);
  });

  it('a manifest that drops the VPN stops it after the SuperNode steps; one that adds it starts it first', () => {
    const noVpn = edit((b) => { delete b.vpn; b.superlink.address = 'superlink.example.org:9092'; });
    expect(kinds(plan(runningWith(base), noVpn))).toEqual(['restart-supernode', 'stop-vpn']);
    expect(plan(runningWith(noVpn), noVpn)).toEqual([]);
    expect(kinds(plan(runningWith(noVpn), base))).toEqual(['write-vpn-config', 'start-vpn', 'restart-supernode']);
  });

  it('children that died are started again with the config already on disk', () => {
    const crashed: NodeRuntimeState = { ...runningWith(base), supernode: { running: false, configHash: configHashes(base).supernode }, vpn: { running: false, configHash: configHashes(base).vpn } };
    expect(kinds(plan(crashed, base))).toEqual(['start-vpn', 'start-supernode']);
  });

  it('is pure: the inputs are not modified and the same inputs give the same steps', () => {
    const state = runningWith(base);
    const frozenState = structuredClone(state);
    const next = edit((b) => { b.supernode.nodeConfig['lr'] = 0.5; });
    const frozenNext = structuredClone(next);
    expect(plan(state, next)).toEqual(plan(state, next));
    expect(state).toEqual(frozenState);
    expect(next).toEqual(frozenNext);
  });
});

describe('configHashes', () => {
  it('are 64-hex, differ between sections, and have no VPN hash without a VPN', () => {
    const h = configHashes(base);
    expect(h.supernode).toMatch(/^[0-9a-f]{64}$/);
    expect(h.vpn).toMatch(/^[0-9a-f]{64}$/);
    expect(h.vpn).not.toBe(h.supernode);
    expect(configHashes(edit((b) => { delete b.vpn; })).vpn).toBeNull();
  });

  it('are over canonical JSON', () => {
    expect(canonicalJson({ b: 1, a: [{ d: undefined, c: 'x' }] })).toBe('{"a":[{"c":"x"}],"b":1}');
  });
});

describe('supernodeConfig with a VPN', () => {
  it('points the SuperNode at the SuperLink address inside the tunnel, and a change of it restarts the SuperNode', () => {
    const withVpn = edit((b) => {
      b.vpn = { remotes: [{ host: 'vpn.example.org', port: 1194, proto: 'udp' }], tlsCryptKeyRef: 'default', routes: ['10.8.0.0/24'], superlinkAddress: '10.8.0.1:9092' };
    });
    expect(supernodeConfig(withVpn).superlink.address).toBe('10.8.0.1:9092');
    expect(supernodeConfig(base).superlink.address).toBe(base.superlink.address);
    const moved = edit((b) => {
      b.vpn = { remotes: [{ host: 'vpn.example.org', port: 1194, proto: 'udp' }], tlsCryptKeyRef: 'default', routes: ['10.8.0.0/24'], superlinkAddress: '10.8.0.2:9092' };
    });
    expect(kinds(plan(runningWith(withVpn), moved))).toContain('restart-supernode');
  });
});
