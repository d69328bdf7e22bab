// PKCS#10 certification requests (RFC 2986). The hub takes nothing from a CSR but its public key:
// subject, SANs and requested extensions are ignored (the leaf is built from the hub's own data).
// What is checked: strict DER structure, an EC P-256/P-384 key, a valid ECDSA self-signature, and
// that the requester did not ask to become a CA (rejected outright as a red flag).
import crypto from 'node:crypto';
import { SepalError, ErrorCodes } from '../errors.ts';
import { DerReader, Tag, type DerElement } from './der.ts';
import { decodePemBlocks } from './pem.ts';

export interface VerifiedCsr {
  /** The SubjectPublicKeyInfo exactly as it appears in the CSR (validated, canonical DER). */
  readonly spkiDer: Buffer;
  readonly publicKey: crypto.KeyObject;
  readonly curve: 'P-256' | 'P-384';
}

export const MAX_CSR_BYTES = 16 * 1024;

const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
const CURVES: ReadonlyMap<string, { readonly curve: 'P-256' | 'P-384'; readonly pointBytes: number }> = new Map([
  ['1.2.840.10045.3.1.7', { curve: 'P-256', pointBytes: 65 }],
  ['1.3.132.0.34', { curve: 'P-384', pointBytes: 97 }],
] as const);
const SIG_HASHES: ReadonlyMap<string, string> = new Map([
  ['1.2.840.10045.4.3.2', 'sha256'], // ecdsa-with-SHA256
  ['1.2.840.10045.4.3.3', 'sha384'], // ecdsa-with-SHA384
]);
const OID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14'; // PKCS#9
const OID_MS_EXTENSION_REQUEST = '1.3.6.1.4.1.311.2.1.14'; // legacy Microsoft spelling, same syntax
const OID_BASIC_CONSTRAINTS = '2.5.29.19';

const PEM_PREFIX = '-----BEGIN ';
const CSR_LABELS = new Set(['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST']);

function malformed(message: string, detail?: Record<string, unknown>): never {
  throw new SepalError(ErrorCodes.CSR_MALFORMED, message, detail === undefined ? {} : { detail });
}

function unsupported(message: string, detail: Record<string, unknown>): never {
  throw new SepalError(ErrorCodes.CSR_UNSUPPORTED_KEY, message, { detail });
}

function toDer(input: Buffer | string): Buffer {
  if (typeof input === 'string') {
    if (input.length > MAX_CSR_BYTES) malformed('CSR too large', { limit: MAX_CSR_BYTES });
    return fromPem(input);
  }
  if (!Buffer.isBuffer(input)) throw new TypeError('parseAndVerifyCsr needs a Buffer or a string');
  if (input.length > MAX_CSR_BYTES) malformed('CSR too large', { limit: MAX_CSR_BYTES });
  if (input.length === 0) malformed('empty CSR');
  // DER starts with SEQUENCE; anything else is taken for PEM text (possibly after whitespace).
  if (input[0] === Tag.SEQUENCE) return input;
  return fromPem(input.toString('latin1'));
}

function fromPem(text: string): Buffer {
  if (!text.trimStart().startsWith(PEM_PREFIX)) malformed('CSR is neither DER nor PEM');
  const blocks = decodePemBlocks(text, ErrorCodes.CSR_MALFORMED);
  const [block] = blocks;
  if (blocks.length !== 1 || block === undefined || !CSR_LABELS.has(block.label)) malformed('expected exactly one CERTIFICATE REQUEST PEM block');
  return block.der;
}

/** Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }: checked for shape, otherwise ignored. */
function checkName(r: DerReader): void {
  const name = r.sequence();
  while (name.hasMore) {
    const rdn = name.set();
    if (!rdn.hasMore) rdn.fail('empty RelativeDistinguishedName');
    while (rdn.hasMore) {
      const atv = rdn.sequence();
      atv.oid();
      atv.next();
      atv.end();
    }
  }
}

function parseSpki(el: DerElement, r: DerReader): { curve: 'P-256' | 'P-384' } {
  const spki = r.enter(el);
  const alg = spki.sequence();
  const key = spki.bitString();
  spki.end();
  const algOid = alg.oid();
  if (algOid !== OID_EC_PUBLIC_KEY) unsupported('only EC P-256 and P-384 keys are accepted', { algorithm: algOid });
  if (alg.peekTag() !== Tag.OID) unsupported('EC keys must name their curve', { algorithm: algOid });
  const curveOid = alg.oid();
  alg.end();
  const curve = CURVES.get(curveOid);
  if (curve === undefined) unsupported('only EC P-256 and P-384 keys are accepted', { curve: curveOid });
  if (key.unusedBits !== 0) malformed('bad public key BIT STRING');
  if (key.bytes[0] === 0x02 || key.bytes[0] === 0x03) unsupported('compressed EC points are not accepted', { curve: curve.curve });
  if (key.bytes[0] !== 0x04 || key.bytes.length !== curve.pointBytes) malformed('bad EC public key');
  return { curve: curve.curve };
}

/** Walks the [0] attributes; returns true when an extensionRequest asks for basicConstraints cA=TRUE. */
function asksForCa(attrs: DerReader): boolean {
  let ca = false;
  while (attrs.hasMore) {
    const attr = attrs.sequence();
    const type = attr.oid();
    const values = attr.set();
    attr.end();
    if (type !== OID_EXTENSION_REQUEST && type !== OID_MS_EXTENSION_REQUEST) continue;
    while (values.hasMore) {
      const exts = values.sequence();
      while (exts.hasMore) {
        const ext = exts.sequence();
        const id = ext.oid();
        if (ext.peekTag() === Tag.BOOLEAN) ext.boolean();
        const value = ext.octetString();
        ext.end();
        if (id !== OID_BASIC_CONSTRAINTS) continue;
        const bcOuter = new DerReader(value, ErrorCodes.CSR_MALFORMED);
        const bc = bcOuter.sequence();
        bcOuter.end();
        // cA BOOLEAN DEFAULT FALSE: an explicit FALSE is not DER, but harmless, so it is tolerated.
        if (bc.peekTag() === Tag.BOOLEAN && bc.boolean()) ca = true;
        if (bc.hasMore) bc.smallInteger();
        bc.end();
      }
    }
  }
  return ca;
}

/**
 * Parse a PKCS#10 CSR (PEM text, or DER / PEM in a Buffer) and verify its self-signature.
 * Throws SepalError CSR_MALFORMED, CSR_UNSUPPORTED_KEY, CSR_BAD_SIGNATURE or CSR_CA_REQUESTED.
 */
export function parseAndVerifyCsr(input: Buffer | string): VerifiedCsr {
  const der = toDer(input);
  const top = new DerReader(der, ErrorCodes.CSR_MALFORMED);
  const csr = top.sequence();
  top.end();
  const criEl = csr.next(Tag.SEQUENCE);
  const sigAlg = csr.sequence();
  const sig = csr.bitString();
  csr.end();

  const cri = csr.enter(criEl);
  const version = cri.integer();
  if (version.length !== 1 || version[0] !== 0) malformed('unsupported CSR version', { version: version.toString('hex') });
  checkName(cri);
  const spkiEl = cri.next(Tag.SEQUENCE);
  // attributes [0] IMPLICIT SET OF Attribute: required by RFC 2986, but some encoders omit it when empty.
  const attrsEl = cri.optional(0xa0);
  cri.end();

  const { curve } = parseSpki(spkiEl, cri);
  const caRequested = attrsEl !== undefined && asksForCa(cri.enter(attrsEl));

  const sigOid = sigAlg.oid();
  const hash = SIG_HASHES.get(sigOid);
  // RFC 5758: the parameters of ecdsa-with-SHA* are absent.
  if (hash === undefined) unsupported('CSR signature must be ecdsa-with-SHA256 or ecdsa-with-SHA384', { signatureAlgorithm: sigOid });
  sigAlg.end();
  if (sig.unusedBits !== 0) malformed('bad signature BIT STRING');

  const spkiDer = Buffer.from(spkiEl.raw); // a copy: callers keep it, the input buffer may be reused
  let publicKey: crypto.KeyObject;
  try {
    publicKey = crypto.createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  } catch (cause) {
    throw new SepalError(ErrorCodes.CSR_MALFORMED, 'CSR public key is not a valid EC point', { cause });
  }
  let ok: boolean;
  try {
    ok = crypto.verify(hash, criEl.raw, publicKey, sig.bytes);
  } catch {
    ok = false;
  }
  if (!ok) throw new SepalError(ErrorCodes.CSR_BAD_SIGNATURE, 'CSR signature does not verify');
  if (caRequested) throw new SepalError(ErrorCodes.CSR_CA_REQUESTED, 'CSR asks for a CA certificate (basicConstraints cA=TRUE)');
  return { spkiDer, publicKey, curve };
}
