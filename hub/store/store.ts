// The hub's store contract. Every method is one transaction: it either happens whole or not at
// all, so a crash never leaves a half-issued certificate or a manifest without its audit entry.
// Implementations: SQLite (node:sqlite, default) and, later, PostgreSQL; both must pass
// test/unit/store.contract.ts. Times are Unix milliseconds; serials are lowercase hex strings.

export type NodeState = 'active' | 'revoked';

/**
 * Where a node's Flower public key stands with the SuperLink (hub/flower/registrar.ts moves it):
 *
 *   pending ──registered──▶ registered ──node revoked──▶ unregister-pending ──▶ unregistered
 *      │  ╰──node revoked (maybe registered by a call whose answer was lost)──▶ ┘
 *      ╰──key refused──▶ failed ──operator retry──▶ pending
 *
 * pending and unregister-pending are the registrar's work: retried with backoff until they leave
 * that state. A node enrolled with a Flower key starts pending; one without a key has no
 * registration (null). Revoking a failed node leaves it failed: nothing is on the SuperLink.
 */
export type FlowerState = 'pending' | 'registered' | 'unregister-pending' | 'unregistered' | 'failed';
export const FLOWER_STATES: readonly FlowerState[] = Object.freeze(['pending', 'registered', 'unregister-pending', 'unregistered', 'failed']);

export interface FlowerRegistration {
  readonly state: FlowerState;
  /** Flower's node id: an unsigned 64-bit integer as a decimal string, never a JS number. Null
   *  until the SuperLink has assigned one (and for unregister-pending when it may never have). */
  readonly flowerNodeId: string | null;
  /** Failed attempts since the registration entered its current state. */
  readonly attempts: number;
  /** ErrorCode of the last failed attempt (or of the refusal, when failed); null after success. */
  readonly lastError: string | null;
  /** What went wrong, for operators; never secrets. */
  readonly lastErrorMessage: string | null;
  /** When the registrar tries next (pending, unregister-pending); null otherwise. */
  readonly nextAttemptAt: number | null;
  /** When the current state was entered. */
  readonly since: number;
}

/** One due item of the registrar's work (see Store.dueFlowerWork). */
export interface FlowerWork {
  readonly nodeId: string;
  readonly org: string;
  readonly state: 'pending' | 'unregister-pending';
  /** The OpenSSH line stored at enrollment. */
  readonly flowerPublicKey: string;
  readonly flowerNodeId: string | null;
  readonly attempts: number;
}

export interface NodeRecord {
  readonly id: string;
  readonly org: string;
  readonly name: string;
  readonly state: NodeState;
  readonly createdAt: number;
  readonly revokedAt: number | null;
  /** JSON text of the host facts the agent last reported (or sent at enrollment). */
  readonly facts: string | null;
  /** Flower SuperNode public key (OpenSSH text), registered with the SuperLink. */
  readonly flowerPublicKey: string | null;
  readonly lastSeenAt: number | null;
  /** Highest manifest version published for this node, 0 when none. */
  readonly manifestVersion: number;
  /** Serial and expiry of the newest certificate issued to this node. */
  readonly certSerial: string | null;
  readonly certNotAfter: number | null;
  /** JSON text of the last status report, null until the agent reports. */
  readonly status: string | null;
  /** The Flower key's registration with the SuperLink; null for a node without a Flower key. */
  readonly flower: FlowerRegistration | null;
}

export type CertKind = 'enroll' | 'renew';

export interface CertRecord {
  readonly serial: string;
  readonly nodeId: string;
  readonly org: string;
  readonly kind: CertKind;
  readonly notBefore: number;
  readonly notAfter: number;
  /** SHA-256 of the DER, lowercase hex. */
  readonly fingerprint: string;
  readonly der: Buffer;
  readonly issuedAt: number;
  readonly revokedAt: number | null;
}

export interface ManifestRecord {
  readonly nodeId: string;
  readonly version: number;
  readonly kid: string;
  readonly jws: string;
  readonly issuedAt: number;
  readonly expiresAt: number;
}

export interface SigningKeyRecord {
  readonly kid: string;
  /** Public JWK as JSON text. The private key lives in the data dir, never in the store. */
  readonly publicJwk: string;
  readonly createdAt: number;
  /** When a newer key took over; null for the active key. */
  readonly retiredAt: number | null;
}

export type AuditEvent =
  | 'node.enrolled'
  | 'cert.renewed'
  | 'node.revoked'
  | 'manifest.published'
  | 'keys.rotated'
  | 'security.denied'
  | 'token.created'
  | 'token.revoked'
  | 'flower.registered'
  | 'flower.unregistered'
  | 'flower.registration_failed'
  | 'flower.registration_retried'
  | 'vpn.server_config_written'
  | 'vpn.secret_fetched'
  | 'ca.prepared'
  | 'ca.activated'
  | 'ca.pruned'
  | 'ca.server_renewed';

/** What a caller asks to append; seq, time and hashes are filled in by the store. */
export interface AuditInput {
  readonly event: AuditEvent;
  /** Who did it: 'cli', 'node:<id>', 'admin:<subject>', 'peer:<addr>'. */
  readonly actor: string;
  readonly nodeId?: string | null;
  readonly org?: string | null;
  /** Reason code for denials (an ErrorCode), null otherwise. */
  readonly reason?: string | null;
  /** Small JSON-serialisable detail; never secrets. */
  readonly detail?: Readonly<Record<string, unknown>>;
}

export interface AuditEntry {
  readonly seq: number;
  readonly at: number;
  readonly event: AuditEvent;
  readonly actor: string;
  readonly nodeId: string | null;
  readonly org: string | null;
  readonly reason: string | null;
  /** Canonical JSON text of detail ('{}' when none). */
  readonly detail: string;
  readonly prevHash: string;
  readonly hash: string;
}

export interface NewNode {
  readonly id: string;
  readonly org: string;
  readonly name: string;
  readonly facts: string | null;
  readonly flowerPublicKey: string | null;
}

export interface NewCert {
  readonly serial: string;
  readonly nodeId: string;
  readonly org: string;
  readonly kind: CertKind;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly fingerprint: string;
  readonly der: Buffer;
  /** Hex subjectKeyIdentifier of the issuing CA that signed it; absent in older callers/tests. */
  readonly issuerKeyId?: string;
}

/** Builds the JWS for a node once the store has allocated its version (inside the transaction). */
export type ManifestBuilder = (nodeId: string, org: string, version: number) => {
  readonly kid: string;
  readonly jws: string;
  readonly expiresAt: number;
};

export interface EnrollmentTokenRecord {
  readonly id: string;
  readonly org: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly usesLeft: number;
  readonly usesTotal: number;
  readonly revokedAt: number | null;
  readonly createdBy: string;
}

export interface NewEnrollmentToken {
  readonly id: string;
  /** SHA-256 of the secret half, lowercase hex. The secret itself is never stored. */
  readonly secretHash: string;
  readonly org: string;
  readonly expiresAt: number;
  readonly uses: number;
  readonly createdBy: string;
}

/** What authorised an enrollment, consumed in the same transaction that creates the node. */
export type EnrollmentClaim =
  /** An OIDC access token: its (issuer, jti) may be used once; kept until expiresAt. */
  | { readonly kind: 'oidc'; readonly issuer: string; readonly jti: string; readonly expiresAt: number }
  /** An enrollment token: one use is taken; the node's org must be the token's org. */
  | { readonly kind: 'token'; readonly id: string; readonly secretHash: string }
  /** Administrative enrollment (tests, tooling): nothing to consume. */
  | { readonly kind: 'none' };

export interface CertAcceptance {
  readonly cert: CertRecord | null;
  readonly node: NodeRecord | null;
}

export interface Store {
  /** Applies pending migrations. Idempotent. */
  migrate(): Promise<void>;
  close(): Promise<void>;

  // nodes and certificates
  /** Creates the node and records its first certificate and the audit entry, atomically, after
   *  consuming the claim in the same transaction: a replayed jti fails with TOKEN_REPLAYED; an
   *  enrollment token that is unknown or whose secret does not match fails with
   *  ENROLLMENT_TOKEN_INVALID, revoked with ENROLLMENT_TOKEN_REVOKED, expired with
   *  ENROLLMENT_TOKEN_EXPIRED, used up with ENROLLMENT_TOKEN_EXHAUSTED, for another org with
   *  ORG_MISMATCH. A Flower key some other node already has (in any state: Flower never accepts
   *  a key twice) fails with FLOWER_KEY_INVALID. A node with a Flower key starts with a pending
   *  registration. On any failure nothing is written. */
  enrollNode(node: NewNode, cert: NewCert, audit: AuditInput, now: number, claim?: EnrollmentClaim): Promise<NodeRecord>;
  /** Records a renewal certificate for an active node (fails with NODE_REVOKED otherwise). */
  recordRenewal(cert: NewCert, audit: AuditInput, now: number): Promise<void>;
  getNode(id: string): Promise<NodeRecord | null>;
  listNodes(filter?: { readonly org?: string }): Promise<NodeRecord[]>;
  getCert(serial: string): Promise<CertRecord | null>;
  /** The latest notAfter of any certificate (revoked or not) signed by the issuing CA with this
   *  key id, counting certificates recorded without one (issued before issuers were recorded);
   *  null when there is none. Decides when a retired issuing CA may be pruned. */
  lastCertExpiryForIssuer(issuerKeyId: string): Promise<number | null>;
  /** The certificate with this serial and its node, in one read (the mTLS hot path). */
  certAcceptance(serial: string): Promise<CertAcceptance>;
  /** Marks the node and all its certificates revoked; returns the revoked serials. Idempotent: a
   *  second call returns [] and writes no audit entry. Throws NOT_FOUND for an unknown node. In the
   *  same transaction a registered or pending Flower registration becomes unregister-pending. */
  revokeNode(nodeId: string, audit: AuditInput, now: number): Promise<string[]>;
  /** Revoked certificates that have not expired yet (what the CRL lists). */
  listRevokedCerts(now: number): Promise<Array<{ serial: string; revokedAt: number; notAfter: number }>>;
  /** Stores a status report and bumps lastSeenAt. */
  recordStatus(nodeId: string, statusJson: string, now: number): Promise<void>;
  touchNode(nodeId: string, now: number): Promise<void>;

  // Flower registration with the SuperLink (see FlowerState). Writes are conditional on the state
  // the registrar saw: each returns the registration after the write, or null when the node was
  // not in a state the write applies to (it changed meanwhile, or is unknown) and nothing changed.
  /** pending and unregister-pending registrations whose nextAttemptAt <= now, earliest first. */
  dueFlowerWork(now: number, limit: number): Promise<FlowerWork[]>;
  /** The earliest nextAttemptAt of any pending work, null when there is none. */
  nextFlowerAttemptAt(): Promise<number | null>;
  /** The node holding this Flower node id (registered or unregister-pending), if any. */
  nodeByFlowerId(flowerNodeId: string): Promise<NodeRecord | null>;
  /** The SuperLink registered the key as flowerNodeId: pending becomes registered. When the node
   *  was revoked meanwhile (unregister-pending) the id is recorded, the state stays and the work is
   *  due at once. Audited (`flower.registered`). ALREADY_EXISTS when another node holds the id. */
  recordFlowerRegistered(nodeId: string, flowerNodeId: string, audit: AuditInput, now: number): Promise<FlowerRegistration | null>;
  /** unregister-pending becomes unregistered; flowerNodeId (found by looking the key up) fills in
   *  an id the store did not have. Audited (`flower.unregistered`). */
  recordFlowerUnregistered(nodeId: string, flowerNodeId: string | null, audit: AuditInput, now: number): Promise<FlowerRegistration | null>;
  /** The SuperLink refused the key for good: pending becomes failed. Audited
   *  (`flower.registration_failed`, reason = code). */
  recordFlowerFailed(nodeId: string, error: { readonly code: string; readonly message: string }, audit: AuditInput, now: number): Promise<FlowerRegistration | null>;
  /** A failed attempt to retry later: attempts + 1, the error, nextAttemptAt; the state stays.
   *  Applies only while the state is still `state`. Not audited (the log and metrics show it). */
  recordFlowerRetry(nodeId: string, state: 'pending' | 'unregister-pending', error: { readonly code: string; readonly message: string }, nextAttemptAt: number, now: number): Promise<FlowerRegistration | null>;
  /** An operator asks to try a failed registration again: failed becomes pending, due now, for an
   *  active node. Audited (`flower.registration_retried`). NOT_FOUND for an unknown node,
   *  INVALID_ARGUMENT when the node is revoked or its registration is not failed. */
  retryFlowerRegistration(nodeId: string, audit: AuditInput, now: number): Promise<FlowerRegistration>;

  // manifests
  /** For each node: allocates version = previous + 1, calls build, stores the result; one audit
   *  entry per node. All or nothing. Returns the stored records. Revoked nodes are skipped. */
  publishManifests(nodeIds: readonly string[], build: ManifestBuilder, audit: (nodeId: string, org: string, version: number) => AuditInput, now: number): Promise<ManifestRecord[]>;
  latestManifest(nodeId: string): Promise<ManifestRecord | null>;
  /** Remembers the body last published to a whole organisation (JSON text), for new nodes. */
  setOrgManifest(org: string, bodyJson: string, now: number): Promise<void>;
  getOrgManifest(org: string): Promise<string | null>;
  /** Latest expiry among manifests signed with this key, null when it signed none. */
  lastManifestExpiryForKey(kid: string): Promise<number | null>;

  // manifest signing keys
  /** Adds a key, retires the previous active key, writes the audit entry. */
  addSigningKey(key: { readonly kid: string; readonly publicJwk: string }, audit: AuditInput, now: number): Promise<void>;
  listSigningKeys(): Promise<SigningKeyRecord[]>;

  // enrollment tokens
  createEnrollmentToken(token: NewEnrollmentToken, audit: AuditInput, now: number): Promise<EnrollmentTokenRecord>;
  listEnrollmentTokens(filter?: { readonly org?: string }): Promise<EnrollmentTokenRecord[]>;
  /** Returns false when already revoked; NOT_FOUND for an unknown id. */
  revokeEnrollmentToken(id: string, audit: AuditInput, now: number): Promise<boolean>;
  /** Looks a token up without consuming it (to tell the org before issuing). */
  getEnrollmentToken(id: string): Promise<EnrollmentTokenRecord | null>;

  // audit
  appendAudit(entry: AuditInput, now: number): Promise<AuditEntry>;
  /** Entries with seq > afterSeq, in order, at most `limit`. */
  readAudit(afterSeq: number, limit: number): Promise<AuditEntry[]>;
  /** Highest seq, 0 when empty. */
  auditHead(): Promise<number>;
}
