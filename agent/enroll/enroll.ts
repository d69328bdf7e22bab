// Enrollment from start to finish: pinned first contact, discovery, a credential (enrollment token
// or device flow), keys and CSR made here, the Enroll RPC, checks on what came back, and the
// identity swapped in on disk. Nothing is written before the pin has matched, and no identity
// file is written before the hub has answered and its answer has passed every check.
import fs from 'node:fs';
import type { HostFacts } from '../../proto/api.ts';
import { AgentError, ErrorCodes, isAgentError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { fetchPinnedRoot, type HttpsGet } from './bootstrap.ts';
import { checkIssuedCertificate } from './certificate.ts';
import { buildCsr } from './csr.ts';
import { derToPem } from './der.ts';
import type { DevicePrompt, IdpSettings } from './device-flow.ts';
import { fetchDiscovery, type Discovery } from './discovery.ts';
import type { EnrollCredential, EnrollRpc } from './hub-client.ts';
import { generateNodeKeys, pkcs8Pem } from './keys.ts';
import { opensshPrivateKey, opensshPublicKey } from './openssh.ts';
import {
  installIdentity, lockState, readNodeRecord, recoverState, statePaths, storeManifest, type StatePaths, type StoreFs,
} from './store.ts';

export interface EnrollOptions {
  readonly hubUrl: URL;
  /** 64 lowercase hex digits (see normalizeFingerprint). */
  readonly caSha256: string;
  readonly enrollmentToken: string | undefined;
  readonly name: string;
  /** '' lets the credential decide. */
  readonly org: string;
  readonly stateDir: string;
  readonly force: boolean;
}

/** What the user is told along the way (the CLI prints it; tests record it). */
export interface EnrollUi {
  /** `--force` over an existing identity: the old node stays registered at the hub. */
  replacing(oldNodeId: string): void;
  /** The device flow needs a human: show where to go and what to type. */
  devicePrompt(p: DevicePrompt): void;
  /** The device flow is over (approved, denied or aborted): stop any countdown. */
  deviceDone(): void;
}

export interface EnrollDeps {
  readonly get: HttpsGet;
  readonly enrollRpc: EnrollRpc;
  readonly deviceLogin: (idp: IdpSettings, d: { signal: AbortSignal; onPrompt: (p: DevicePrompt) => void }) => Promise<string>;
  readonly facts: () => HostFacts;
  readonly ui: EnrollUi;
  readonly log: Logger;
  /** Aborted on Ctrl-C / SIGTERM. */
  readonly signal: AbortSignal;
  readonly now?: () => number;
  readonly fs?: StoreFs;
}

export interface EnrollOutcome {
  readonly nodeId: string;
  readonly org: string;
  readonly certNotAfter: Date;
  readonly stateDir: string;
  /** The node id this enrollment replaced locally (`--force`), else null. */
  readonly replaced: string | null;
  readonly manifestVersion: string | null;
}

function alreadyEnrolled(paths: StatePaths, nodeId: string): AgentError {
  return new AgentError(ErrorCodes.ALREADY_ENROLLED,
    `this host is already enrolled as node ${nodeId} (${paths.identity}); use --force to enroll it as a new node`,
    { detail: { nodeId } });
}

/** The node this host is enrolled as, or null. An unreadable node.json stops a plain enroll; with
 *  --force it is an identity like any other, to be replaced. */
function currentNodeId(paths: StatePaths, force: boolean): string | null {
  try {
    return readNodeRecord(paths.nodeJson)?.nodeId ?? null;
  } catch (e) {
    if (!force || !isAgentError(e, ErrorCodes.STATE_INVALID)) {
      if (isAgentError(e, ErrorCodes.STATE_INVALID)) throw new AgentError(e.code, `${e.message}; use --force to replace this identity`, { cause: e });
      throw e;
    }
    return '(unknown: node.json is unreadable)';
  }
}

function checkCancelled(signal: AbortSignal): void {
  if (signal.aborted) throw new AgentError(ErrorCodes.CANCELLED, 'cancelled; nothing was written');
}

/** A one-line OpenSSH comment naming the node for whoever reads the SuperLink's key list. */
export function flowerKeyComment(name: string): string {
  return `sepal-agent@${name.replace(/[^A-Za-z0-9._-]/g, '-')}`;
}

export async function enroll(opts: EnrollOptions, deps: EnrollDeps): Promise<EnrollOutcome> {
  const now = deps.now ?? Date.now;
  const paths = statePaths(opts.stateDir);
  const { signal, log } = deps;

  // Read-only look first, so a refused run writes nothing at all; checked again under the lock.
  const existing = currentNodeId(paths, opts.force);
  if (existing !== null && !opts.force) throw alreadyEnrolled(paths, existing);

  const root = await fetchPinnedRoot(opts.hubUrl, opts.caSha256, { get: deps.get, signal });
  log.info({ event: 'hub.pinned', hub: opts.hubUrl.href, caSha256: root.fingerprint }, 'hub root CA matches the pin');
  const discovery: Discovery = await fetchDiscovery(opts.hubUrl, root, { get: deps.get, signal });
  log.info({ event: 'hub.discovered', federationId: discovery.federation_id, grpcAddress: discovery.grpc_address, idp: discovery.idp?.issuer ?? null }, 'discovery document');
  checkCancelled(signal);

  const createdRoot = !fs.existsSync(paths.root);
  const unlock = lockState(paths);
  let installed = false;
  try {
    const recovery = recoverState(paths, deps.fs);
    if (recovery.action !== 'none' || recovery.removed.length > 0) log.warn({ event: 'state.recovered', ...recovery }, 'recovered the state dir after an interrupted run');
    const current = currentNodeId(paths, opts.force);
    if (current !== null && !opts.force) throw alreadyEnrolled(paths, current);
    if (current !== null) deps.ui.replacing(current);

    let credential: EnrollCredential;
    if (opts.enrollmentToken !== undefined) {
      credential = { enrollmentToken: opts.enrollmentToken };
    } else {
      if (discovery.idp === null) {
        throw new AgentError(ErrorCodes.ENROLLMENT_UNAVAILABLE, 'this hub has no identity provider configured for the device flow; ask its operator for an enrollment token (--token)');
      }
      try {
        credential = { accessToken: await deps.deviceLogin(discovery.idp, { signal, onPrompt: (p) => deps.ui.devicePrompt(p) }) };
      } finally {
        deps.ui.deviceDone();
      }
    }
    checkCancelled(signal);

    const keys = generateNodeKeys();
    const comment = flowerKeyComment(opts.name);
    const flowerPub = opensshPublicKey(keys.flower.publicKey, comment);
    const res = await deps.enrollRpc(discovery.grpc_address, root.pem, {
      csrDer: buildCsr(keys.tls.privateKey, opts.name),
      flowerPublicKey: flowerPub,
      facts: deps.facts(),
      credential,
      name: opts.name,
      org: opts.org,
    }, signal);
    // From here on the hub has registered the node: finish writing even if a signal arrives, so
    // the host does not lose an identity the hub already knows.
    const issued = checkIssuedCertificate({
      certificateDer: res.certificateDer,
      chainDer: res.chainDer,
      caBundleDer: res.caBundleDer,
      anchors: [root.der],
      publicKey: keys.tls.publicKey,
      nodeId: res.nodeId,
      now: now(),
    });
    if (opts.org !== '' && res.org !== opts.org) {
      throw new AgentError(ErrorCodes.ORG_MISMATCH, `asked to enroll into ${opts.org}, but the hub enrolled node ${res.nodeId} into ${res.org}`);
    }
    installIdentity(paths, {
      tlsKeyPem: pkcs8Pem(keys.tls.privateKey),
      tlsCertPem: derToPem(issued.leaf.raw, 'CERTIFICATE'),
      chainPem: issued.chain.map((c) => derToPem(c.raw, 'CERTIFICATE')).join(''),
      caPem: issued.roots.map((c) => derToPem(c.raw, 'CERTIFICATE')).join(''),
      flowerKey: opensshPrivateKey(keys.flower.privateKey, comment),
      flowerPub,
      node: {
        nodeId: res.nodeId,
        org: res.org,
        name: opts.name,
        hubUrl: opts.hubUrl.href,
        issuer: discovery.issuer,
        grpcAddress: discovery.grpc_address,
        caSha256: root.fingerprint,
        federationId: discovery.federation_id,
        enrolledAt: new Date(now()).toISOString(),
      },
    }, deps.fs);
    installed = true;
    storeManifest(paths, res.manifest?.jws ?? null, deps.fs);
    log.info({ event: 'enrolled', nodeId: res.nodeId, org: res.org, notAfter: issued.leaf.validToDate.toISOString(), replaced: current }, 'enrolled');
    return {
      nodeId: res.nodeId,
      org: res.org,
      certNotAfter: issued.leaf.validToDate,
      stateDir: paths.root,
      replaced: current,
      manifestVersion: res.manifest?.version ?? null,
    };
  } finally {
    unlock();
    // A first enrollment that failed leaves no trace: remove the state dir if this run made it
    // and nothing but the (released) lock was ever put in it.
    if (!installed && createdRoot) {
      try {
        fs.rmdirSync(paths.root);
      } catch {
        // not empty (or gone): leave it
      }
    }
  }
}
