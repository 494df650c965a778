/**
 * Node identity keys and the two signature schemes every QRWP node uses:
 * - secp256k1 ECDSA over 32-byte digests, in Ethereum's 65-byte `r || s || v` form (v = 27/28, low-s),
 *   exactly what OpenZeppelin `ECDSA.recover` / `ecrecover` accept (SEC 1, EIP-2 low-s, RFC 6979 nonces);
 * - ML-DSA-65 (FIPS 204) with a domain-separating context string.
 * ECDSA signing and recovery run on native libsecp256k1 when its binding loads, else on @noble/curves
 * (secp256k1-backend.ts); keys, addresses and ML-DSA-65 use @noble/curves and @noble/post-quantum (pure JS).
 */
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { keccak_256 } from "@noble/hashes/sha3.js";
import { hexToBytes, randomBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { ml_dsa65 } from "@noble/post-quantum/ml-dsa.js";
import { QrwpError, assertArgument } from "./errors.js";
import {
  secp256k1Backend,
  secp256k1Recover,
  secp256k1Sign,
  type Secp256k1Primitives,
} from "./secp256k1-backend.js";
import { assertBytes } from "./validation.js";

/** A node's long-term signing keys. Secret fields must never be logged or sent. */
export interface NodeKeys {
  /** secp256k1 secret scalar, 32 bytes big-endian. */
  secp256k1PrivateKey: Uint8Array;
  /** Ethereum address of the secp256k1 key, EIP-55 checksummed. */
  address: string;
  /** ML-DSA-65 public key (FIPS 204), 1952 bytes. */
  mldsaPublicKey: Uint8Array;
  /** ML-DSA-65 secret key (FIPS 204), 4032 bytes. */
  mldsaSecretKey: Uint8Array;
}

/** ML-DSA-65 byte lengths (FIPS 204 table 2). */
export const MLDSA65_PUBLIC_KEY_BYTES = 1952;
export const MLDSA65_SECRET_KEY_BYTES = 4032;
export const MLDSA65_SIGNATURE_BYTES = 3309;
/** Length of an Ethereum `r || s || v` signature, in bytes. */
export const ECDSA_SIGNATURE_BYTES = 65;

/** The group order n and n/2 (floor), 32 bytes big-endian each, for the range checks on r and s. */
const SECP256K1_N = hexToBytes("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
const SECP256K1_HALF_N = hexToBytes("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0");
const SIGNATURE_RE = /^0x[0-9a-fA-F]{130}$/;
/** The backend this process selected (secp256k1-backend.ts). */
const SELECTED: Secp256k1Primitives = {
  name: secp256k1Backend(),
  sign: secp256k1Sign,
  recover: secp256k1Recover,
};

/**
 * Generates fresh random node keys (CSPRNG): a secp256k1 key and an ML-DSA-65 key pair from a random
 * 32-byte seed.
 * @returns {@link NodeKeys}
 */
export function generateNodeKeys(): NodeKeys {
  return nodeKeysFromSecrets(secp256k1.utils.randomSecretKey(), randomBytes(32));
}

/**
 * Rebuilds node keys deterministically from stored secrets.
 * @param secp256k1PrivateKey - 32-byte secp256k1 secret scalar in `[1, n-1]`.
 * @param mldsaSeed - 32-byte ML-DSA-65 key-generation seed ξ (FIPS 204 ML-DSA.KeyGen_internal).
 * @returns {@link NodeKeys} (copies; the inputs are not retained).
 * @throws QrwpError INVALID_ARGUMENT on a wrong length or an out-of-range scalar.
 */
export function nodeKeysFromSecrets(secp256k1PrivateKey: Uint8Array, mldsaSeed: Uint8Array): NodeKeys {
  assertBytes(secp256k1PrivateKey, "secp256k1PrivateKey", 32);
  assertBytes(mldsaSeed, "mldsaSeed", 32);
  const sk = Uint8Array.from(secp256k1PrivateKey);
  const { publicKey, secretKey } = ml_dsa65.keygen(Uint8Array.from(mldsaSeed));
  return {
    secp256k1PrivateKey: sk,
    address: addressOf(sk),
    mldsaPublicKey: publicKey,
    mldsaSecretKey: secretKey,
  };
}

/**
 * Ethereum address of a secp256k1 secret key: last 20 bytes of keccak256(uncompressed public key without
 * the 0x04 prefix), EIP-55 checksummed (Yellow Paper, EIP-55).
 * @throws QrwpError INVALID_ARGUMENT if the key is not 32 bytes or not in `[1, n-1]`.
 */
export function addressOf(secp256k1PrivateKey: Uint8Array): string {
  assertBytes(secp256k1PrivateKey, "secp256k1PrivateKey", 32);
  assertArgument(
    secp256k1.utils.isValidSecretKey(secp256k1PrivateKey),
    "secp256k1PrivateKey is not a valid secp256k1 scalar",
    "secp256k1PrivateKey",
  );
  return addressFromPublicKey(secp256k1.getPublicKey(secp256k1PrivateKey, false));
}

function addressFromPublicKey(uncompressed: Uint8Array): string {
  return checksumAddress(keccak_256(uncompressed.subarray(1)).subarray(12));
}

/**
 * Checksummed forms of the addresses seen last, by lower-case hex: a node recovers the same few partners'
 * addresses over and over, and the checksum's keccak is a fifth of a native recovery. Oldest out first.
 */
const CHECKSUMMED = new Map<string, string>();
const CHECKSUMMED_MAX = 1024;

/**
 * EIP-55 mixed-case checksum of a 20-byte address: hex digit i is upper case when nibble i of
 * keccak256(lower-case hex) is >= 8. Equal to ethers' `getAddress`, without its parsing and validation.
 */
function checksumAddress(address: Uint8Array): string {
  const hex = toHex(address);
  const cached = CHECKSUMMED.get(hex);
  if (cached !== undefined) return cached;
  const hash = keccak_256(utf8ToBytes(hex));
  let out = "0x";
  for (let i = 0; i < 40; i++) {
    const nibble = i % 2 === 0 ? hash[i >> 1]! >> 4 : hash[i >> 1]! & 0x0f;
    out += nibble >= 8 ? hex[i]!.toUpperCase() : hex[i]!;
  }
  if (CHECKSUMMED.size >= CHECKSUMMED_MAX) CHECKSUMMED.delete(CHECKSUMMED.keys().next().value!);
  CHECKSUMMED.set(hex, out);
  return out;
}

/** Lower-case hex of `bytes` by Node's encoder (the hot paths' one hex conversion each). */
function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex");
}

/** Compares `bytes[offset, offset + 32)` with the 32-byte big-endian `bound`: negative, zero or positive. */
function compare32(bytes: Uint8Array, offset: number, bound: Uint8Array): number {
  for (let i = 0; i < 32; i++) {
    const d = bytes[offset + i]! - bound[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

function isZero32(bytes: Uint8Array, offset: number): boolean {
  for (let i = 0; i < 32; i++) if (bytes[offset + i] !== 0) return false;
  return true;
}

/**
 * Signs a precomputed 32-byte digest (e.g. an EIP-712 digest) with secp256k1 — no further hashing.
 * Deterministic RFC 6979 nonce, low-s (EIP-2), so it equals ethers' `SigningKey.sign(digest)`, on either
 * backend (native libsecp256k1 or noble; secp256k1-backend.ts).
 * @param digest - 32 bytes.
 * @param secp256k1PrivateKey - 32-byte secret scalar.
 * @returns 0x-hex of 65 bytes `r || s || v`, v in {27, 28} (what OpenZeppelin `ECDSA.recover` accepts).
 * @throws QrwpError INVALID_ARGUMENT on wrong lengths or a scalar outside `[1, n-1]`.
 */
export function signDigest(digest: Uint8Array, secp256k1PrivateKey: Uint8Array): string {
  return signDigestWith(SELECTED, digest, secp256k1PrivateKey);
}

/**
 * {@link signDigest} on a given backend, for the cross-check test and the benchmark; everything else calls
 * {@link signDigest}, which uses the backend this process selected.
 */
export function signDigestWith(
  backend: Secp256k1Primitives,
  digest: Uint8Array,
  secp256k1PrivateKey: Uint8Array,
): string {
  assertBytes(digest, "digest", 32);
  assertBytes(secp256k1PrivateKey, "secp256k1PrivateKey", 32);
  let sig: Uint8Array;
  try {
    sig = backend.sign(digest, secp256k1PrivateKey);
  } catch (cause) {
    throw new QrwpError(
      "INVALID_ARGUMENT",
      "secp256k1PrivateKey is not a valid secp256k1 scalar",
      { field: "secp256k1PrivateKey" },
      { cause },
    );
  }
  sig[64] = 27 + sig[64]!;
  return `0x${toHex(sig)}`;
}

/**
 * Recovers the signer address of a 65-byte `r || s || v` signature over a 32-byte digest (ecrecover).
 * Applies OpenZeppelin `ECDSA.recover`'s rules: v must be 27 or 28, s must be low (<= n/2), r and s non-zero.
 * @param digest - 32 bytes.
 * @param signature - 0x-hex, 65 bytes.
 * @returns the EIP-55 checksummed signer address.
 * @throws QrwpError INVALID_SIGNATURE on a malformed, high-s or unrecoverable signature;
 *   QrwpError INVALID_ARGUMENT if `digest` is not 32 bytes.
 */
export function recoverDigestSigner(digest: Uint8Array, signature: string): string {
  return recoverDigestSignerWith(SELECTED, digest, signature);
}

/**
 * {@link recoverDigestSigner} on a given backend, for the cross-check test and the benchmark; everything else
 * calls {@link recoverDigestSigner}, which uses the backend this process selected.
 */
export function recoverDigestSignerWith(
  backend: Secp256k1Primitives,
  digest: Uint8Array,
  signature: string,
): string {
  assertBytes(digest, "digest", 32);
  if (typeof signature !== "string" || !SIGNATURE_RE.test(signature)) {
    throw new QrwpError("INVALID_SIGNATURE", "signature must be 0x-hex of 65 bytes", { field: "signature" });
  }
  // Node's hex decoder (the regex above has checked every digit): a few µs less than a JS loop per call.
  const raw: Uint8Array = Buffer.from(signature.slice(2), "hex");
  const v = raw[64]!;
  if (
    (v !== 27 && v !== 28) ||
    isZero32(raw, 0) ||
    compare32(raw, 0, SECP256K1_N) >= 0 ||
    isZero32(raw, 32) ||
    compare32(raw, 32, SECP256K1_HALF_N) > 0
  ) {
    throw new QrwpError("INVALID_SIGNATURE", "signature has an invalid v, r or s (v must be 27/28, s low)", {
      field: "signature",
    });
  }
  let publicKey: Uint8Array;
  try {
    publicKey = backend.recover(digest, raw.subarray(0, 64), v - 27);
  } catch (cause) {
    throw new QrwpError(
      "INVALID_SIGNATURE",
      "no public key recovers from this signature",
      { field: "signature" },
      { cause },
    );
  }
  return addressFromPublicKey(publicKey);
}

function contextBytes(context: string | Uint8Array | undefined): Uint8Array | undefined {
  if (context === undefined) return undefined;
  const bytes = typeof context === "string" ? utf8ToBytes(context) : context;
  assertArgument(
    bytes instanceof Uint8Array && bytes.length <= 255,
    "context must be at most 255 bytes",
    "context",
  );
  return bytes;
}

/**
 * ML-DSA-65 signature (FIPS 204 ML-DSA.Sign, hedged/randomised) over `message` with an optional context
 * string ctx (FIPS 204 §5.2; at most 255 bytes; a string is UTF-8 encoded). Use a distinct context per
 * purpose (see `MLDSA_CONTEXT_*` in constants.ts).
 * @param message - any bytes.
 * @param secretKey - 4032-byte ML-DSA-65 secret key.
 * @returns 3309-byte signature.
 * @throws QrwpError INVALID_ARGUMENT on a wrong key length or an oversized context.
 */
export function mldsaSign(
  message: Uint8Array,
  secretKey: Uint8Array,
  context?: string | Uint8Array,
): Uint8Array {
  assertBytes(message, "message");
  assertBytes(secretKey, "mldsaSecretKey", MLDSA65_SECRET_KEY_BYTES);
  const ctx = contextBytes(context);
  return ml_dsa65.sign(message, secretKey, ctx === undefined ? undefined : { context: ctx });
}

/**
 * An ML-DSA-65 verification with {@link mldsaVerify}'s contract (same arguments, `false` for any malformed
 * input), possibly run elsewhere: host/mldsa-verify-pool.ts runs it on worker threads. Never rejects.
 */
export type MldsaVerifier = (
  signature: Uint8Array,
  message: Uint8Array,
  publicKey: Uint8Array,
  context?: string | Uint8Array,
) => Promise<boolean>;

/**
 * The input checks of {@link mldsaVerify}: lengths (FIPS 204 table 2) and a context of at most 255 bytes.
 * @returns the context's bytes (undefined for none), or null when the input is malformed (verification is false).
 */
export function mldsaVerifyInput(
  signature: unknown,
  message: unknown,
  publicKey: unknown,
  context: unknown,
): { context: Uint8Array | undefined } | null {
  if (!(signature instanceof Uint8Array) || signature.length !== MLDSA65_SIGNATURE_BYTES) return null;
  if (!(message instanceof Uint8Array)) return null;
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== MLDSA65_PUBLIC_KEY_BYTES) return null;
  if (context !== undefined && typeof context !== "string" && !(context instanceof Uint8Array)) return null;
  const bytes = typeof context === "string" ? utf8ToBytes(context) : context;
  if (bytes !== undefined && bytes.length > 255) return null;
  return { context: bytes };
}

/**
 * ML-DSA-65 verification (FIPS 204 ML-DSA.Verify) with the same optional context as {@link mldsaSign}.
 * Never throws: any malformed input (wrong lengths, non-bytes, bad context) returns `false`.
 * @returns true only for a valid signature.
 */
export function mldsaVerify(
  signature: Uint8Array,
  message: Uint8Array,
  publicKey: Uint8Array,
  context?: string | Uint8Array,
): boolean {
  try {
    const input = mldsaVerifyInput(signature, message, publicKey, context);
    if (input === null) return false;
    const ctx = input.context;
    return ml_dsa65.verify(signature, message, publicKey, ctx === undefined ? undefined : { context: ctx });
  } catch {
    return false;
  }
}
