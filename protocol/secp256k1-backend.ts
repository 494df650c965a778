/**
 * The two secp256k1 primitives on the hot path (sign a digest, recover a public key), from one of two backends:
 * - "native": libsecp256k1 through the `secp256k1` npm package, version 5 (N-API; its tarball ships the
 *   linux-x64, darwin-arm64 and win32-x64 builds). We load its `bindings.js` only, never its `index.js`, which
 *   silently falls back to the pure-JS `elliptic` when the build cannot load;
 * - "noble": `@noble/curves` (pure JS, audited), when the binding cannot load or `QRWP_SECP256K1=noble`.
 * Both sign with RFC 6979 deterministic nonces and normalise to low s (EIP-2), so they give byte-identical
 * signatures (test/unit/secp256k1-backend.test.ts checks thousands of vectors).
 *
 * The backend is chosen once, when this module loads: the one exception to protocol/'s "no I/O, no env" rule
 * (docs/DECISIONS.md, "Native libsecp256k1 with a noble fallback"). Callers use `signDigest` and
 * `recoverDigestSigner` in keys.ts; processes log {@link secp256k1Backend} at start-up.
 */
import { createRequire } from "node:module";
import { secp256k1 as noble } from "@noble/curves/secp256k1.js";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";

/** Which implementation signs and recovers. */
export type Secp256k1BackendName = "native" | "noble";

/** One implementation of the two primitives. Inputs are checked by the callers (keys.ts). */
export interface Secp256k1Primitives {
  readonly name: Secp256k1BackendName;
  /**
   * ECDSA over a 32-byte digest (no further hashing), RFC 6979 nonce, low s.
   * @param digest - 32 bytes.
   * @param secretKey - 32-byte scalar in `[1, n-1]`.
   * @returns 65 bytes `r || s || recovery` with the recovery id (0 or 1; 2 and 3 need `r >= n`, probability
   *   about 2^-127) in the last byte.
   * @throws Error on a scalar outside `[1, n-1]`.
   */
  sign(digest: Uint8Array, secretKey: Uint8Array): Uint8Array;
  /**
   * The public key that signed `digest` (ECDSA public-key recovery, SEC 1 §4.1.6).
   * @param digest - 32 bytes.
   * @param signature - 64 bytes `r || s`, `r` and `s` in `[1, n-1]` (high s is accepted here).
   * @param recovery - recovery id, 0 to 3.
   * @returns the 65-byte uncompressed public key `0x04 || x || y`.
   * @throws Error when no point recovers.
   */
  recover(digest: Uint8Array, signature: Uint8Array, recovery: number): Uint8Array;
}

/** The pure-JS backend (`@noble/curves`). */
export const nobleSecp256k1: Secp256k1Primitives = {
  name: "noble",
  sign(digest, secretKey) {
    // noble's "recovered" format is recovery || r || s.
    const sig = noble.sign(digest, secretKey, { prehash: false, lowS: true, format: "recovered" });
    const out = new Uint8Array(65);
    out.set(sig.subarray(1, 65), 0);
    out[64] = sig[0]!;
    return out;
  },
  recover(digest, signature, recovery) {
    // Straight from the recovered point: no compressed encoding to decompress again.
    return noble.Signature.fromBytes(signature, "compact")
      .addRecoveryBit(recovery)
      .recoverPublicKey(digest)
      .toBytes(false);
  },
};

/** The part of `secp256k1@5`'s API we call (its `lib/index.js` wrapper over the addon). */
interface NativeBinding {
  ecdsaSign(
    message: Uint8Array,
    secretKey: Uint8Array,
    options: object,
    output: Uint8Array,
  ): { signature: Uint8Array; recid: number };
  ecdsaRecover(signature: Uint8Array, recid: number, message: Uint8Array, compressed: boolean): Uint8Array;
}

/** The group order n, big-endian. */
const N_BYTES = hexToBytes("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

/**
 * `digest mod n` as 32 bytes (`digest` itself when below n, the usual case). RFC 6979 §3.2 step d seeds the
 * nonce with `bits2octets(h) = int2octets(h mod n)`, as noble and ethers do; the libsecp256k1 inside
 * secp256k1@5 seeds it with h unreduced, so for the ~2^-128 of digests at or above n it would pick another
 * (valid) nonce than noble. Reducing first makes both sign identically; ECDSA itself uses h mod n anyway.
 */
function reducedDigest(digest: Uint8Array): Uint8Array {
  for (let i = 0; i < 32; i++) {
    if (digest[i] !== N_BYTES[i]) {
      if (digest[i]! < N_BYTES[i]!) return digest;
      break;
    }
  }
  return hexToBytes((BigInt(`0x${bytesToHex(digest)}`) - N).toString(16).padStart(64, "0"));
}

function nativePrimitives(binding: NativeBinding): Secp256k1Primitives {
  return {
    name: "native",
    sign(digest, secretKey) {
      // libsecp256k1's secp256k1_ecdsa_sign_recoverable: RFC 6979 nonce, s normalised to low.
      const out = new Uint8Array(65);
      out[64] = binding.ecdsaSign(reducedDigest(digest), secretKey, {}, out.subarray(0, 64)).recid;
      return out;
    },
    recover(digest, signature, recovery) {
      return binding.ecdsaRecover(signature, recovery, digest, false);
    },
  };
}

/** Known answer checked on the binding before it is used: key 0x01…01, digest 0x02…02 (noble and ethers agree). */
const KAT_SIGNATURE =
  "97ef30233ead25d10f7bb2bf9eaf571a16f2deb33a75f20819284f0cb8ff3cc1" +
  "4870ca05940199c113b4dc77866f001702691cde269f6835581e7aea1ead2660" +
  "00";
const KAT_PUBLIC_KEY =
  "041b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f" +
  "70beaf8f588b541507fed6a642c5ab42dfdf8120a7f639de5122d47a69a8e8d1";

function loadNative(): { primitives: Secp256k1Primitives } | { reason: string } {
  let binding: NativeBinding;
  try {
    const require = createRequire(import.meta.url);
    const { version } = require("secp256k1/package.json") as { version: string };
    if (!version.startsWith("5.")) return { reason: `secp256k1 ${version} is installed, 5.x is needed` };
    // bindings.js loads the N-API build (prebuilds/<platform>-<arch>/ or build/Release/) and throws if there
    // is none; the package's index.js would catch that and hand back elliptic instead.
    binding = require("secp256k1/bindings") as NativeBinding;
  } catch (error) {
    return { reason: `secp256k1 native binding did not load: ${(error as Error).message}` };
  }
  const primitives = nativePrimitives(binding);
  try {
    const digest = new Uint8Array(32).fill(2);
    const signature = primitives.sign(digest, new Uint8Array(32).fill(1));
    const publicKey = primitives.recover(digest, signature.subarray(0, 64), signature[64]!);
    if (bytesToHex(signature) === KAT_SIGNATURE && bytesToHex(publicKey) === KAT_PUBLIC_KEY)
      return { primitives };
    return { reason: "secp256k1 native binding failed its known-answer test" };
  } catch (error) {
    return { reason: `secp256k1 native binding failed its known-answer test: ${(error as Error).message}` };
  }
}

/** Environment variable that forces the noble backend when set to "noble" (cross-checks, debugging). */
export const SECP256K1_BACKEND_ENV = "QRWP_SECP256K1";

const forced = globalThis.process?.env?.[SECP256K1_BACKEND_ENV]?.trim().toLowerCase() === "noble";
const loaded = loadNative();

/** The native backend when its binding loaded and passed its known answer (even if noble is forced), else undefined. */
export const nativeSecp256k1: Secp256k1Primitives | undefined =
  "primitives" in loaded ? loaded.primitives : undefined;

const selected: Secp256k1Primitives =
  !forced && nativeSecp256k1 !== undefined ? nativeSecp256k1 : nobleSecp256k1;
const fallbackReason: string | undefined =
  selected === nativeSecp256k1
    ? undefined
    : forced
      ? `${SECP256K1_BACKEND_ENV}=noble`
      : (loaded as { reason: string }).reason;

/** The backend `signDigest` and `recoverDigestSigner` use in this process. */
export function secp256k1Backend(): Secp256k1BackendName {
  return selected.name;
}

/** Why this process runs on noble (`QRWP_SECP256K1=noble`, or the binding's load error); undefined on native. */
export function secp256k1FallbackReason(): string | undefined {
  return fallbackReason;
}

/** The selected backend's {@link Secp256k1Primitives.sign}. */
export function secp256k1Sign(digest: Uint8Array, secretKey: Uint8Array): Uint8Array {
  return selected.sign(digest, secretKey);
}

/** The selected backend's {@link Secp256k1Primitives.recover}. */
export function secp256k1Recover(digest: Uint8Array, signature: Uint8Array, recovery: number): Uint8Array {
  return selected.recover(digest, signature, recovery);
}
