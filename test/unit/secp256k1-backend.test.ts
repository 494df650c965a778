/**
 * The native (libsecp256k1) and noble secp256k1 backends give byte-identical signatures and the same
 * recovered signer on thousands of random vectors (random digests and real EIP-712 balance-proof digests),
 * both refuse the same bad signatures, and the native binding really loaded where `secp256k1@5` ships a build.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { expect } from "chai";
import { getAddress, hexlify } from "ethers";
import {
  SECP256K1_BACKEND_ENV,
  addressOf,
  balanceProofDigest,
  nativeSecp256k1,
  nobleSecp256k1,
  recoverDigestSigner,
  recoverDigestSignerWith,
  secp256k1Backend,
  secp256k1FallbackReason,
  signDigest,
  signDigestWith,
  type Secp256k1Primitives,
} from "../../protocol/index.js";
import { expectCode } from "./helpers.js";

const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const HALF_N = N >> 1n;
/** Platforms whose build ships in the `secp256k1@5` tarball (`prebuilds/<platform>-<arch>/`). */
const PREBUILT = ["linux-x64", "darwin-arm64", "win32-x64"];
const VECTORS = 3000;

const hex32 = (v: bigint): string => v.toString(16).padStart(64, "0");
const bytes32 = (v: bigint): Uint8Array => hexToBytes(hex32(v));

function randomSecretKey(): Uint8Array {
  for (;;) {
    const sk = new Uint8Array(randomBytes(32));
    if (secp256k1.utils.isValidSecretKey(sk)) return sk;
  }
}

function randomBalanceProofDigest(): Uint8Array {
  const u256 = () => BigInt(`0x${randomBytes(32).toString("hex")}`);
  return balanceProofDigest({
    chainId: BigInt(randomBytes(4).readUInt32BE()) + 1n,
    hub: getAddress(hexlify(randomBytes(20))),
    channelId: u256(),
    nonce: u256() | 1n,
    // Each below 2^255 so their sum fits a uint256, as balanceProofDigest requires.
    transferredAmount: u256() >> 1n,
    lockedAmount: u256() >> 1n,
    locksRoot: hexlify(randomBytes(32)),
  });
}

/** Keys and digests at the edges of the scalar field, then random ones; every other digest an EIP-712 one. */
function vectors(count: number): Array<{ sk: Uint8Array; digest: Uint8Array; kind: string }> {
  const edgeKeys = [1n, 2n, 0xffn, 1n << 255n, N - 2n, N - 1n].map(bytes32);
  const edgeDigests = [0n, 1n, N - 1n, N, (1n << 256n) - 1n].map(bytes32);
  const out: Array<{ sk: Uint8Array; digest: Uint8Array; kind: string }> = [];
  for (const sk of edgeKeys) for (const digest of edgeDigests) out.push({ sk, digest, kind: "edge" });
  for (let i = out.length; i < count; i++) {
    const eip712 = i % 2 === 0;
    out.push({
      sk: randomSecretKey(),
      digest: eip712 ? randomBalanceProofDigest() : new Uint8Array(randomBytes(32)),
      kind: eip712 ? "eip712" : "random",
    });
  }
  return out;
}

/** The same signature with s replaced by n - s and v flipped: valid ECDSA, refused by EIP-2 / OpenZeppelin. */
function highS(signature: string): string {
  const s = BigInt(`0x${signature.slice(66, 130)}`);
  const v = parseInt(signature.slice(130), 16);
  return `0x${signature.slice(2, 66)}${hex32(N - s)}${(v === 27 ? 28 : 27).toString(16)}`;
}

function expectBothRefuse(digest: Uint8Array, signature: string, backends: Secp256k1Primitives[]): void {
  for (const backend of backends) {
    expectCode(() => recoverDigestSignerWith(backend, digest, signature), "INVALID_SIGNATURE");
  }
}

describe("protocol/secp256k1-backend", function () {
  this.timeout(300_000);
  const platform = `${process.platform}-${process.arch}`;
  const forcedNoble = process.env[SECP256K1_BACKEND_ENV]?.trim().toLowerCase() === "noble";

  it(`the native binding loaded where secp256k1@5 ships a build (${platform})`, function () {
    if (!PREBUILT.includes(platform)) this.skip();
    expect(nativeSecp256k1, `native binding did not load: ${secp256k1FallbackReason()}`).to.not.equal(
      undefined,
    );
    expect(nativeSecp256k1!.name).to.equal("native");
    expect(secp256k1Backend()).to.equal(forcedNoble ? "noble" : "native");
    expect(secp256k1FallbackReason()).to.equal(forcedNoble ? `${SECP256K1_BACKEND_ENV}=noble` : undefined);
  });

  describe("native and noble agree", function () {
    let native: Secp256k1Primitives;
    before(function () {
      if (nativeSecp256k1 === undefined) this.skip();
      native = nativeSecp256k1;
    });

    it(`byte-identical low-s signatures, v 27/28, the same signer on ${VECTORS} vectors`, () => {
      const kinds = new Map<string, number>();
      for (const [i, { sk, digest, kind }] of vectors(VECTORS).entries()) {
        const at = `vector ${i} (${kind}) sk=${bytesToHex(sk)} digest=${bytesToHex(digest)}`;
        const fromNative = signDigestWith(native, digest, sk);
        const fromNoble = signDigestWith(nobleSecp256k1, digest, sk);
        expect(fromNative, at).to.equal(fromNoble);
        expect(BigInt(`0x${fromNative.slice(66, 130)}`) <= HALF_N, at).to.equal(true);
        expect(["1b", "1c"], at).to.include(fromNative.slice(130));

        const address = addressOf(sk);
        expect(recoverDigestSignerWith(native, digest, fromNative), at).to.equal(address);
        expect(recoverDigestSignerWith(nobleSecp256k1, digest, fromNative), at).to.equal(address);
        // The default functions are one of the two.
        expect(signDigest(digest, sk), at).to.equal(fromNative);
        expect(recoverDigestSigner(digest, fromNative), at).to.equal(address);
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      }
      expect(kinds.get("eip712")).to.be.greaterThan(VECTORS / 3);
      expect(kinds.get("random")).to.be.greaterThan(VECTORS / 3);
    });

    it("the EIP-55 address equals ethers' getAddress, computed and cached", () => {
      for (let i = 0; i < 300; i++) {
        const sk = randomSecretKey();
        const digest = new Uint8Array(randomBytes(32));
        const signature = signDigestWith(native, digest, sk);
        const address = recoverDigestSignerWith(native, digest, signature);
        expect(address).to.equal(getAddress(address.toLowerCase()));
        expect(recoverDigestSignerWith(native, digest, signature)).to.equal(address);
      }
    });

    it("both refuse the high-s twin of every signature, which the primitives would recover", () => {
      for (let i = 0; i < 300; i++) {
        const sk = randomSecretKey();
        const digest = i % 2 === 0 ? randomBalanceProofDigest() : new Uint8Array(randomBytes(32));
        const twin = highS(signDigestWith(native, digest, sk));
        expectBothRefuse(digest, twin, [native, nobleSecp256k1]);
        const raw = hexToBytes(twin.slice(2));
        const publicKey = bytesToHex(secp256k1.getPublicKey(sk, false));
        expect(bytesToHex(native.recover(digest, raw.subarray(0, 64), raw[64]! - 27))).to.equal(publicKey);
        expect(bytesToHex(nobleSecp256k1.recover(digest, raw.subarray(0, 64), raw[64]! - 27))).to.equal(
          publicKey,
        );
      }
    });

    it("both refuse malformed signatures with INVALID_SIGNATURE", () => {
      const digest = randomBalanceProofDigest();
      const sig = signDigestWith(native, digest, randomSecretKey());
      const r = sig.slice(2, 66);
      const s = sig.slice(66, 130);
      const v = sig.slice(130);
      const backends = [native, nobleSecp256k1];
      for (const bad of ["00", "01", "1a", "1d", "ff"])
        expectBothRefuse(digest, `0x${r}${s}${bad}`, backends);
      for (const bad of [0n, N, N + 1n, (1n << 256n) - 1n]) {
        expectBothRefuse(digest, `0x${hex32(bad)}${s}${v}`, backends);
        expectBothRefuse(digest, `0x${r}${hex32(bad)}${v}`, backends);
      }
      expectBothRefuse(digest, `0x${r}${hex32(HALF_N + 1n)}${v}`, backends);
      for (const bad of [sig.slice(0, 130), `${sig}00`, `0xzz${sig.slice(4)}`, sig.slice(2), "", "0x"]) {
        expectBothRefuse(digest, bad, backends);
      }
      for (const backend of backends) {
        expectCode(
          () => recoverDigestSignerWith(backend, digest, 42 as unknown as string),
          "INVALID_SIGNATURE",
        );
        expectCode(() => recoverDigestSignerWith(backend, digest.subarray(1), sig), "INVALID_ARGUMENT");
      }
    });

    it("random r, s and v agree: the same signer or INVALID_SIGNATURE from both", () => {
      let refused = 0;
      for (let i = 0; i < 1000; i++) {
        const digest = new Uint8Array(randomBytes(32));
        // s below n/2 and v 27/28 so most reach the curve; about half the r values are no point's x.
        const s = BigInt(`0x${randomBytes(32).toString("hex")}`) % HALF_N;
        const sig = `0x${randomBytes(32).toString("hex")}${hex32(s)}${i % 2 === 0 ? "1b" : "1c"}`;
        const outcome = (backend: Secp256k1Primitives): string => {
          try {
            return recoverDigestSignerWith(backend, digest, sig);
          } catch (error) {
            expectCode(() => {
              throw error;
            }, "INVALID_SIGNATURE");
            return "INVALID_SIGNATURE";
          }
        };
        const fromNative = outcome(native);
        expect(fromNative, sig).to.equal(outcome(nobleSecp256k1));
        if (fromNative === "INVALID_SIGNATURE") refused++;
      }
      expect(refused).to.be.greaterThan(100);
    });

    it("both refuse an out-of-range secret key with INVALID_ARGUMENT", () => {
      const digest = new Uint8Array(32).fill(7);
      for (const sk of [0n, N, (1n << 256n) - 1n].map(bytes32)) {
        for (const backend of [native, nobleSecp256k1]) {
          expectCode(() => signDigestWith(backend, digest, sk), "INVALID_ARGUMENT");
        }
      }
    });
  });

  it(`${SECP256K1_BACKEND_ENV}=noble selects noble in a fresh process, with the same signatures`, () => {
    const sk = bytesToHex(randomSecretKey());
    const digest = bytesToHex(randomBalanceProofDigest());
    const module = new URL("../../protocol/index.ts", import.meta.url).href;
    const script = `
      const p = await import(${JSON.stringify(module)});
      const { hexToBytes } = await import("@noble/hashes/utils.js");
      const sig = p.signDigest(hexToBytes(${JSON.stringify(digest)}), hexToBytes(${JSON.stringify(sk)}));
      console.log(JSON.stringify({ backend: p.secp256k1Backend(), reason: p.secp256k1FallbackReason(), sig,
        signer: p.recoverDigestSigner(hexToBytes(${JSON.stringify(digest)}), sig) }));`;
    const run = (value: string) =>
      JSON.parse(
        execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
          cwd: fileURLToPath(new URL("../..", import.meta.url)),
          env: { ...process.env, [SECP256K1_BACKEND_ENV]: value },
          encoding: "utf8",
        }),
      ) as { backend: string; reason?: string; sig: string; signer: string };
    const noble = run("noble");
    expect(noble.backend).to.equal("noble");
    expect(noble.reason).to.equal(`${SECP256K1_BACKEND_ENV}=noble`);
    const preferred = run("");
    expect(preferred.backend).to.equal(nativeSecp256k1 === undefined ? "noble" : "native");
    expect(preferred.sig).to.equal(noble.sig);
    expect(noble.signer).to.equal(addressOf(hexToBytes(sk)));
    expect(preferred.signer).to.equal(noble.signer);
  });
});
