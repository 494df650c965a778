import { bytesToHex } from "@noble/hashes/utils.js";
import { expect } from "chai";
import {
  Signature,
  SigningKey,
  computeAddress,
  getBytes,
  hexlify,
  keccak256,
  randomBytes,
  toUtf8Bytes,
} from "ethers";
import fc from "fast-check";
import {
  QrwpError,
  addressOf,
  assertArgument,
  generateNodeKeys,
  isQrwpError,
  mldsaSign,
  mldsaVerify,
  nodeKeysFromSecrets,
  recoverDigestSigner,
  signDigest,
} from "../../protocol/index.js";
import { expectCode } from "./helpers.js";

const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

describe("protocol/errors", () => {
  it("assertArgument throws INVALID_ARGUMENT naming the field, bigint-safe JSON", () => {
    const e = expectCode(
      () => assertArgument(false, "nonce must be positive", "nonce", 5n),
      "INVALID_ARGUMENT",
    );
    expect(e.name).to.equal("QrwpError");
    expect(e.details).to.deep.equal({ field: "nonce", value: "5" });
    expect(JSON.parse(JSON.stringify(e))).to.deep.equal({
      code: "INVALID_ARGUMENT",
      message: "nonce must be positive",
      details: { field: "nonce", value: "5" },
    });
    expect(() => assertArgument(1, "x", "f")).not.to.throw();
  });

  it("keeps the cause and is recognised by isQrwpError", () => {
    const cause = new Error("inner");
    const e = new QrwpError("CHAIN_ERROR", "rpc down", { url: "x" }, { cause });
    expect(e.cause).to.equal(cause);
    expect(e).to.be.instanceOf(Error);
    expect(isQrwpError(e)).to.equal(true);
    expect(isQrwpError(new Error("x"))).to.equal(false);
    expect(isQrwpError("QrwpError")).to.equal(false);
  });
});

describe("protocol/keys secp256k1", () => {
  it("signDigest equals ethers SigningKey (RFC 6979), v is 27/28, recovers the address", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        (seed, digest) => {
          const sk = getBytes(keccak256(seed)); // uniformly a valid scalar with overwhelming probability
          const sig = signDigest(digest, sk);
          const ethersSig = new SigningKey(sk).sign(digest);
          expect(sig).to.equal(ethersSig.serialized);
          const parsed = Signature.from(sig);
          expect([27, 28]).to.include(parsed.v);
          expect(BigInt(parsed.s) <= SECP256K1_N / 2n).to.equal(true);
          const expected = computeAddress(new SigningKey(sk).publicKey);
          expect(addressOf(sk)).to.equal(expected);
          expect(recoverDigestSigner(digest, sig)).to.equal(expected);
          expect(recoverDigestSigner(digest, ethersSig.serialized)).to.equal(expected);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("rejects high-s, bad v, zero r/s and malformed hex with INVALID_SIGNATURE", () => {
    const keys = generateNodeKeys();
    const digest = randomBytes(32);
    const sig = signDigest(digest, keys.secp256k1PrivateKey);
    const r = sig.slice(2, 66);
    const s = BigInt(`0x${sig.slice(66, 130)}`);
    const v = parseInt(sig.slice(130), 16);
    const highS = (SECP256K1_N - s).toString(16).padStart(64, "0");
    const flippedV = (v === 27 ? 28 : 27).toString(16);
    expectCode(() => recoverDigestSigner(digest, `0x${r}${highS}${flippedV}`), "INVALID_SIGNATURE");
    expectCode(() => recoverDigestSigner(digest, `0x${r}${sig.slice(66, 130)}00`), "INVALID_SIGNATURE");
    expectCode(() => recoverDigestSigner(digest, `0x${r}${sig.slice(66, 130)}1d`), "INVALID_SIGNATURE");
    expectCode(
      () => recoverDigestSigner(digest, `0x${"00".repeat(32)}${sig.slice(66)}`),
      "INVALID_SIGNATURE",
    );
    expectCode(() => recoverDigestSigner(digest, sig.slice(0, 120)), "INVALID_SIGNATURE");
    expectCode(() => recoverDigestSigner(digest, `${sig}00`), "INVALID_SIGNATURE");
    expectCode(() => recoverDigestSigner(digest, "0xzz" + sig.slice(4)), "INVALID_SIGNATURE");
    expectCode(() => recoverDigestSigner(digest, 42 as unknown as string), "INVALID_SIGNATURE");
    expectCode(() => recoverDigestSigner(digest.subarray(1), sig), "INVALID_ARGUMENT");
  });

  it("never crashes on random 65-byte signatures (either an address or INVALID_SIGNATURE)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 65, maxLength: 65 }), (raw) => {
        try {
          const address = recoverDigestSigner(new Uint8Array(32).fill(1), hexlify(raw));
          expect(address).to.match(/^0x[0-9a-fA-F]{40}$/);
        } catch (e) {
          expect((e as QrwpError).code).to.equal("INVALID_SIGNATURE");
        }
      }),
      { numRuns: 200 },
    );
  });

  it("validates secret keys", () => {
    expectCode(() => addressOf(new Uint8Array(32)), "INVALID_ARGUMENT");
    expectCode(() => addressOf(new Uint8Array(31).fill(1)), "INVALID_ARGUMENT");
    expectCode(() => signDigest(new Uint8Array(31), new Uint8Array(32).fill(1)), "INVALID_ARGUMENT");
  });
});

describe("protocol/keys ML-DSA-65", () => {
  const seed = getBytes(keccak256(toUtf8Bytes("mldsa seed")));
  const sk = getBytes(keccak256(toUtf8Bytes("secp seed")));

  it("nodeKeysFromSecrets is deterministic and matches addressOf", () => {
    const a = nodeKeysFromSecrets(sk, seed);
    const b = nodeKeysFromSecrets(sk, seed);
    expect(bytesToHex(a.mldsaPublicKey)).to.equal(bytesToHex(b.mldsaPublicKey));
    expect(a.mldsaPublicKey.length).to.equal(1952);
    expect(a.mldsaSecretKey.length).to.equal(4032);
    expect(a.address).to.equal(computeAddress(new SigningKey(sk).publicKey));
    expectCode(() => nodeKeysFromSecrets(sk, seed.subarray(1)), "INVALID_ARGUMENT");
  });

  it("signs and verifies with domain-separated contexts; garbage returns false", () => {
    const keys = nodeKeysFromSecrets(sk, seed);
    const other = generateNodeKeys();
    const msg = toUtf8Bytes("hello");
    const sig = mldsaSign(msg, keys.mldsaSecretKey, "qrwp-bp-v1");
    expect(sig.length).to.equal(3309);
    expect(mldsaVerify(sig, msg, keys.mldsaPublicKey, "qrwp-bp-v1")).to.equal(true);
    expect(mldsaVerify(sig, msg, keys.mldsaPublicKey, "qrwp-hs-v1")).to.equal(false);
    expect(mldsaVerify(sig, msg, keys.mldsaPublicKey)).to.equal(false);
    expect(mldsaVerify(sig, toUtf8Bytes("hellp"), keys.mldsaPublicKey, "qrwp-bp-v1")).to.equal(false);
    expect(mldsaVerify(sig, msg, other.mldsaPublicKey, "qrwp-bp-v1")).to.equal(false);
    const plain = mldsaSign(msg, keys.mldsaSecretKey);
    expect(mldsaVerify(plain, msg, keys.mldsaPublicKey)).to.equal(true);
    expect(mldsaVerify(new Uint8Array(3309), msg, keys.mldsaPublicKey)).to.equal(false);
    expect(mldsaVerify(sig.subarray(1), msg, keys.mldsaPublicKey, "qrwp-bp-v1")).to.equal(false);
    expect(mldsaVerify(sig, msg, keys.mldsaPublicKey.subarray(1), "qrwp-bp-v1")).to.equal(false);
    expect(mldsaVerify(sig, msg, keys.mldsaPublicKey, "x".repeat(300))).to.equal(false);
    expect(mldsaVerify(null as unknown as Uint8Array, msg, keys.mldsaPublicKey)).to.equal(false);
    expect(mldsaVerify(sig, "hello" as unknown as Uint8Array, keys.mldsaPublicKey)).to.equal(false);
  });

  it("mldsaVerify never throws on random signatures and keys", () => {
    const keys = nodeKeysFromSecrets(sk, seed);
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 3309, maxLength: 3309 }),
        fc.uint8Array({ minLength: 1952, maxLength: 1952 }),
        (sig, pk) => {
          expect(mldsaVerify(sig, new Uint8Array(32), keys.mldsaPublicKey)).to.equal(false);
          expect(mldsaVerify(sig, new Uint8Array(32), pk)).to.equal(false);
        },
      ),
      { numRuns: 20 },
    );
  });
});
