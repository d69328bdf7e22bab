// Fixtures for the agent-credentials unit tests (not a test file itself): a throwaway two-tier CA
// made with the hub's own CA code, leaves issued from it for any key, name, organisation and
// validity, cross certificates between two such CAs' roots (a root rotation), and a state dir
// holding an enrolled identity.
import crypto from 'node:crypto';
import { Writable } from 'node:stream';
import { createCaMaterial } from '../../hub/ca/bootstrap.ts';
import { LeafIssuer, randomSerial } from '../../hub/ca/certificate.ts';
import { parseAndVerifyCsr } from '../../hub/ca/csr.ts';
import { KeyUsageBit, OID, authorityKeyIdExt, basicConstraintsExt, buildCertificate, caInfo, extKeyUsageExt, keyIdFromSpki, keyUsageExt, nameDer, subjectKeyIdExt } from '../../hub/ca/x509.ts';
import { derToPem } from '../../agent/enroll/der.ts';
import { pkcs8Pem, spkiDer, type KeyPair } from '../../agent/enroll/keys.ts';
import { installIdentity, type NodeRecord, type StatePaths } from '../../agent/enroll/store.ts';
import { createLogger, type Logger } from '../../agent/log.ts';
import type { RenewResult } from '../../agent/credentials/rotate.ts';

export const HOUR = 3_600_000;

export interface TestCa {
  readonly rootDer: Buffer;
  readonly issuingDer: Buffer;
  readonly fingerprint: string;
  leaf(o: LeafOptions): Buffer;
  /** A leaf built by hand: any extended key usage. */
  leafWithEku(o: LeafOptions, eku: string): Buffer;
  /** A cross certificate for `other`'s root (its name and key) signed by this root, as a root
   *  rotation makes one (old root signs new); `ca: false` makes it an end-entity certificate. */
  crossSign(other: TestCa, validity: { notBefore: number; notAfter: number; ca?: boolean }): Buffer;
}

export interface LeafOptions {
  readonly spki: Buffer;
  readonly nodeId: string;
  readonly org: string;
  readonly notBefore: number;
  readonly notAfter: number;
}

export function createTestCa(now: number, federationId = 'fed-test'): TestCa {
  const m = createCaMaterial({ hostnames: ['localhost'], federationId, now: new Date(now) });
  const rootDer = new crypto.X509Certificate(m.rootCert).raw;
  const rootKey = crypto.createPrivateKey(m.rootKey);
  const issuingCert = new crypto.X509Certificate(m.issuingCert);
  const issuingKey = crypto.createPrivateKey(m.issuingKey);
  const issuer = new LeafIssuer({ cert: issuingCert, certDer: issuingCert.raw, key: issuingKey });
  return {
    rootDer,
    issuingDer: issuingCert.raw,
    fingerprint: crypto.hash('sha256', rootDer, 'hex'),
    leaf: (o) => issuer.issue({
      spkiDer: o.spki, nodeId: o.nodeId, org: o.org, uri: `sepal://fed/${o.org}/${o.nodeId}`,
      notBefore: new Date(o.notBefore), notAfter: new Date(o.notAfter), serial: randomSerial(),
    }).der,
    leafWithEku: (o, eku) => {
      const info = caInfo(issuingCert.raw);
      return buildCertificate({
        serial: randomSerial(),
        issuerName: info.subjectName,
        subjectName: nameDer([[OID.organizationName, o.org], [OID.commonName, o.nodeId]]),
        notBefore: new Date(o.notBefore),
        notAfter: new Date(o.notAfter),
        spkiDer: o.spki,
        extensions: [basicConstraintsExt(false), keyUsageExt([KeyUsageBit.digitalSignature]), extKeyUsageExt([eku]), subjectKeyIdExt(keyIdFromSpki(o.spki)), authorityKeyIdExt(info.keyId)],
      }, issuingKey);
    },
    crossSign: (other, v) => {
      const subject = caInfo(other.rootDer);
      const spki = spkiDer(new crypto.X509Certificate(other.rootDer).publicKey);
      return buildCertificate({
        serial: randomSerial(),
        issuerName: caInfo(rootDer).subjectName,
        subjectName: subject.subjectName,
        notBefore: new Date(v.notBefore),
        notAfter: new Date(v.notAfter),
        spkiDer: spki,
        extensions: [
          basicConstraintsExt(v.ca ?? true, 1),
          keyUsageExt([KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]),
          subjectKeyIdExt(subject.keyId),
          authorityKeyIdExt(caInfo(rootDer).keyId),
        ],
      }, rootKey);
    },
  };
}

/** The public key a CSR asks for (the hub's own parser: signature checked). */
export function csrSpki(csrDer: Buffer): Buffer {
  return parseAndVerifyCsr(csrDer).spkiDer;
}

/** A Renew answer from `ca` as the hub would give it. */
export function answer(ca: TestCa, leafDer: Buffer, roots: readonly Buffer[] = [ca.rootDer]): RenewResult {
  return { certificateDer: leafDer, chainDer: [ca.issuingDer], caBundleDer: [...roots], notAfterUnixMs: new crypto.X509Certificate(leafDer).validToDate.getTime() };
}

export function newKey(): KeyPair {
  return crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

const LABEL = ['OPENSSH', 'PRIVATE', 'KEY'].join(' ');
export const FLOWER_KEY = `-----BEGIN ${LABEL}-----\nnot really a key, carried over byte for byte\n-----END ${LABEL}-----\n`;
export const FLOWER_PUB = 'ecdsa-sha2-nistp384 AAAAcarried sepal-agent@host\n';

export function nodeRecord(ca: TestCa, nodeId: string, org: string, enrolledAt: number): NodeRecord {
  return {
    nodeId, org, name: 'host-1', hubUrl: 'https://localhost:8444/', grpcAddress: 'localhost:8443',
    caSha256: ca.fingerprint, federationId: 'fed-test', enrolledAt: new Date(enrolledAt).toISOString(),
  };
}

/** Writes an enrolled identity whose certificate is valid from notBefore to notAfter. */
export function enrollIdentity(paths: StatePaths, ca: TestCa, node: NodeRecord, validity: { notBefore: number; notAfter: number }): KeyPair {
  const key = newKey();
  const leaf = ca.leaf({ spki: spkiDer(key.publicKey), nodeId: node.nodeId, org: node.org, ...validity });
  installIdentity(paths, {
    tlsKeyPem: pkcs8Pem(key.privateKey),
    tlsCertPem: derToPem(leaf, 'CERTIFICATE'),
    chainPem: derToPem(ca.issuingDer, 'CERTIFICATE'),
    caPem: derToPem(ca.rootDer, 'CERTIFICATE'),
    flowerKey: FLOWER_KEY,
    flowerPub: FLOWER_PUB,
    node,
  });
  return key;
}

/** A logger whose JSON lines are kept for assertions. */
export function capturingLogger(): { log: Logger; lines: () => Array<Record<string, unknown>> } {
  const raw: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      raw.push(chunk.toString());
      cb();
    },
  });
  const log = createLogger({ level: 'debug', destination });
  return { log, lines: () => raw.join('').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>) };
}
