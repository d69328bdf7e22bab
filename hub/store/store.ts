// The hub's store contract. Every method is one transaction: it either happens whole or not at
// all, so a crash never leaves a half-issued certificate or a manifest without its audit entry.
// Implementations: SQLite (node:sqlite, default) and, later, PostgreSQL; both must pass
// test/unit/store.contract.ts. Times are Unix milliseconds; serials are lowercase hex strings.

export type NodeState = 'active' | 'revoked';

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
  | 'token.revoked';

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
   *  ORG_MISMATCH. On any failure nothing is written. */
  enrollNode(node: NewNode, cert: NewCert, audit: AuditInput, now: number, claim?: EnrollmentClaim): Promise<NodeRecord>;
  /** Records a renewal certificate for an active node (fails with NODE_REVOKED otherwise). */
  recordRenewal(cert: NewCert, audit: AuditInput, now: number): Promise<void>;
  getNode(id: string): Promise<NodeRecord | null>;
  listNodes(filter?: { readonly org?: string }): Promise<NodeRecord[]>;
  getCert(serial: string): Promise<CertRecord | null>;
  /** The certificate with this serial and its node, in one read (the mTLS hot path). */
  certAcceptance(serial: string): Promise<CertAcceptance>;
  /** Marks the node and all its certificates revoked; returns the revoked serials. Idempotent: a
   *  second call returns [] and writes no audit entry. Throws NOT_FOUND for an unknown node. */
  revokeNode(nodeId: string, audit: AuditInput, now: number): Promise<string[]>;
  /** Revoked certificates that have not expired yet (what the CRL lists). */
  listRevokedCerts(now: number): Promise<Array<{ serial: string; revokedAt: number; notAfter: number }>>;
  /** Stores a status report and bumps lastSeenAt. */
  recordStatus(nodeId: string, statusJson: string, now: number): Promise<void>;
  touchNode(nodeId: string, now: number): Promise<void>;

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
