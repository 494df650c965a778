import { bytesToHex } from "@noble/hashes/utils.js";
import { expect } from "chai";
import { concat, getBytes, hexlify, keccak256, sha256, solidityPacked } from "ethers";
import fc from "fast-check";
import type { Lock } from "../../protocol/index.js";
import {
  DEFAULT_SAFETY_MARGINS,
  DEVNET_SAFETY_MARGINS,
  EMPTY_LOCKS_ROOT,
  MAX_PENDING_LOCKS,
  PACKED_LOCK_BYTES,
  UINT256_MAX,
  ZERO_HASH,
  assertLock,
  computeLocksRoot,
  lockTiming,
  lockedAmountOf,
  packLock,
  packLocks,
  randomSecret,
  secretHashOf,
  unpackLocks,
} from "../../protocol/index.js";
import { expectCode } from "./helpers.js";

const hex = (b: Uint8Array) => `0x${bytesToHex(b)}`;

/** The packed lock computed independently with ethers. */
const ethersPacked = (l: Lock) =>
  solidityPacked(["uint256", "uint256", "bytes32"], [l.amount, l.expiration, l.secretHash]);

const lockArb: fc.Arbitrary<Lock> = fc.record({
  amount: fc.bigInt({ min: 1n, max: UINT256_MAX }),
  expiration: fc.bigInt({ min: 0n, max: UINT256_MAX }),
  secretHash: fc.uint8Array({ minLength: 32, maxLength: 32 }).map(hex),
});

function makeLock(i: number): Lock {
  return {
    amount: BigInt(i + 1),
    expiration: 1_700_000_000n + BigInt(i),
    secretHash: keccak256(`0x${i.toString(16).padStart(8, "0")}`),
  };
}

describe("protocol/locks", () => {
  describe("packLock / packLocks", () => {
    it("packLock is abi.encodePacked(uint256 amount, uint256 expiration, bytes32 secretHash)", () => {
      const lock: Lock = {
        amount: 123_456_789n,
        expiration: 1_700_000_468n,
        secretHash: sha256("0x01"),
      };
      const packed = packLock(lock);
      expect(packed.length).to.equal(PACKED_LOCK_BYTES).and.to.equal(96);
      expect(hex(packed)).to.equal(ethersPacked(lock));
    });

    it("packLock handles the uint256 extremes", () => {
      const lock: Lock = { amount: UINT256_MAX, expiration: 0n, secretHash: `0x${"ff".repeat(32)}` };
      expect(hex(packLock(lock))).to.equal(ethersPacked(lock));
      expect(hex(packLock(lock))).to.equal(`0x${"ff".repeat(32)}${"00".repeat(32)}${"ff".repeat(32)}`);
    });

    it("packLock accepts an upper-case secret hash and packs the same bytes", () => {
      const secretHash = sha256("0x02");
      const lower: Lock = { amount: 5n, expiration: 9n, secretHash };
      const upper: Lock = { ...lower, secretHash: `0x${secretHash.slice(2).toUpperCase()}` };
      expect(hex(packLock(upper))).to.equal(hex(packLock(lower)));
    });

    it("property: packLock equals ethers.solidityPacked for random locks", () => {
      fc.assert(
        fc.property(lockArb, (lock) => {
          expect(hex(packLock(lock))).to.equal(ethersPacked(lock));
        }),
        { numRuns: 200 },
      );
    });

    it("packLocks is the concatenation in order; empty for no locks", () => {
      const locks = [makeLock(0), makeLock(1), makeLock(2)];
      expect(hex(packLocks(locks))).to.equal(concat(locks.map(ethersPacked)));
      expect(packLocks([]).length).to.equal(0);
      // Order matters.
      expect(hex(packLocks([locks[1] as Lock, locks[0] as Lock]))).to.not.equal(
        hex(packLocks([locks[0] as Lock, locks[1] as Lock])),
      );
    });

    it("refuses malformed locks with INVALID_ARGUMENT naming the field", () => {
      const good = makeLock(0);
      const cases: [Lock, string][] = [
        [{ ...good, amount: 0n }, "lock.amount"],
        [{ ...good, amount: -1n }, "lock.amount"],
        [{ ...good, amount: UINT256_MAX + 1n }, "lock.amount"],
        [{ ...good, expiration: -1n }, "lock.expiration"],
        [{ ...good, expiration: UINT256_MAX + 1n }, "lock.expiration"],
        [{ ...good, secretHash: "0x1234" }, "lock.secretHash"],
        [{ ...good, secretHash: good.secretHash.slice(2) }, "lock.secretHash"],
        [{ ...good, secretHash: `0x${"zz".repeat(32)}` }, "lock.secretHash"],
        [{ ...good, amount: 1 as unknown as bigint }, "lock.amount"],
      ];
      for (const [lock, field] of cases) {
        const err = expectCode(() => packLock(lock), "INVALID_ARGUMENT");
        expect(err.details.field, JSON.stringify(field)).to.equal(field);
        expectCode(() => packLocks([good, lock]), "INVALID_ARGUMENT");
        expectCode(() => computeLocksRoot([lock]), "INVALID_ARGUMENT");
      }
      const err = expectCode(() => assertLock({ ...good, amount: 0n }, "route.0"), "INVALID_ARGUMENT");
      expect(err.details.field).to.equal("route.0.amount");
    });
  });

  describe("unpackLocks", () => {
    it("property: unpackLocks(packLocks(x)) round-trips (secret hashes in lower case)", () => {
      fc.assert(
        fc.property(fc.array(lockArb, { maxLength: 12 }), (locks) => {
          const packed = packLocks(locks);
          expect(packed.length).to.equal(locks.length * PACKED_LOCK_BYTES);
          const back = unpackLocks(packed);
          expect(back).to.deep.equal(locks);
          expect(hex(packLocks(back))).to.equal(hex(packed));
        }),
        { numRuns: 200 },
      );
    });

    it("round-trips the maximum of 160 locks", () => {
      const locks = Array.from({ length: MAX_PENDING_LOCKS }, (_, i) => makeLock(i));
      expect(unpackLocks(packLocks(locks))).to.deep.equal(locks);
      expect(unpackLocks(new Uint8Array(0))).to.deep.equal([]);
    });

    it("refuses a length that is not a multiple of 96, and 161 locks, with INVALID_ARGUMENT", () => {
      for (const n of [1, 95, 97, 191, 96 * 3 + 1]) {
        const err = expectCode(() => unpackLocks(new Uint8Array(n)), "INVALID_ARGUMENT");
        expect(err.details.field).to.equal("locks");
        expect(err.details.length).to.equal(n);
      }
      const tooMany = new Uint8Array((MAX_PENDING_LOCKS + 1) * PACKED_LOCK_BYTES);
      expectCode(() => unpackLocks(tooMany), "INVALID_ARGUMENT");
    });
  });

  describe("computeLocksRoot", () => {
    it("is bytes32(0) for no locks", () => {
      expect(computeLocksRoot([])).to.equal(EMPTY_LOCKS_ROOT).and.to.equal(ZERO_HASH);
      expect(ZERO_HASH).to.equal(`0x${"00".repeat(32)}`);
    });

    it("equals ethers.keccak256 of the packed concatenation", () => {
      const one = [makeLock(7)];
      expect(computeLocksRoot(one)).to.equal(keccak256(ethersPacked(one[0] as Lock)));
      const three = [makeLock(1), makeLock(2), makeLock(3)];
      expect(computeLocksRoot(three)).to.equal(keccak256(concat(three.map(ethersPacked))));
    });

    it("property: equals keccak256(concat(solidityPacked)) and is lower-case hex", () => {
      fc.assert(
        fc.property(fc.array(lockArb, { minLength: 1, maxLength: 8 }), (locks) => {
          const root = computeLocksRoot(locks);
          expect(root).to.equal(keccak256(concat(locks.map(ethersPacked))));
          expect(root).to.match(/^0x[0-9a-f]{64}$/);
          expect(root).to.not.equal(EMPTY_LOCKS_ROOT);
        }),
        { numRuns: 100 },
      );
    });
  });

  describe("lockedAmountOf", () => {
    it("sums the amounts; 0 for no locks", () => {
      expect(lockedAmountOf([])).to.equal(0n);
      expect(lockedAmountOf([makeLock(0), makeLock(1), makeLock(9)])).to.equal(1n + 2n + 10n);
    });

    it("refuses a sum beyond uint256 with INVALID_ARGUMENT", () => {
      const big: Lock = { ...makeLock(0), amount: UINT256_MAX };
      expect(lockedAmountOf([big])).to.equal(UINT256_MAX);
      const err = expectCode(() => lockedAmountOf([big, makeLock(1)]), "INVALID_ARGUMENT");
      expect(err.details.field).to.equal("lockedAmount");
    });
  });

  describe("secrets", () => {
    it("secretHashOf equals ethers.sha256 of the 32 secret bytes", () => {
      const secret = `0x${"11".repeat(32)}`;
      expect(secretHashOf(secret)).to.equal(sha256(secret));
      fc.assert(
        fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (b) => {
          expect(secretHashOf(hexlify(b))).to.equal(sha256(b));
        }),
        { numRuns: 100 },
      );
    });

    it("secretHashOf accepts upper-case hex and returns lower-case", () => {
      const secret = `0x${"AB".repeat(32)}`;
      expect(secretHashOf(secret)).to.equal(sha256(secret.toLowerCase()));
      expect(secretHashOf(secret)).to.match(/^0x[0-9a-f]{64}$/);
    });

    it("secretHashOf refuses anything but 32 bytes of 0x-hex with INVALID_ARGUMENT", () => {
      for (const bad of [
        "0x",
        `0x${"11".repeat(31)}`,
        `0x${"11".repeat(33)}`,
        "11".repeat(32),
        `0x${"gg".repeat(32)}`,
        42 as unknown as string,
      ]) {
        const err = expectCode(() => secretHashOf(bad), "INVALID_ARGUMENT");
        expect(err.details.field).to.equal("secret");
      }
    });

    it("randomSecret gives distinct 32-byte 0x-hex values", () => {
      const seen = new Set<string>();
      for (let i = 0; i < 200; i++) {
        const s = randomSecret();
        expect(s).to.match(/^0x[0-9a-f]{64}$/);
        expect(getBytes(s).length).to.equal(32);
        seen.add(s);
      }
      expect(seen.size).to.equal(200);
      expect(secretHashOf(randomSecret())).to.match(/^0x[0-9a-f]{64}$/);
    });
  });

  describe("timing", () => {
    it("lockTiming(DEFAULT_SAFETY_MARGINS): expiry delta 3R+2G+2S, reveal timeout R+G+S", () => {
      const { reorgSeconds: R, graceSeconds: G, confirmationSeconds: S } = DEFAULT_SAFETY_MARGINS;
      const t = lockTiming(DEFAULT_SAFETY_MARGINS);
      expect(t.expiryDeltaSeconds)
        .to.equal(3 * R + 2 * G + 2 * S)
        .and.to.equal(468);
      expect(t.revealTimeoutSeconds)
        .to.equal(R + G + S)
        .and.to.equal(216);
      expect(t.minFinalExpirySeconds)
        .to.equal(R + G + S + S)
        .and.to.equal(276);
    });

    it("lockTiming(DEVNET_SAFETY_MARGINS) gives delta 10 s, reveal 5 s", () => {
      const t = lockTiming(DEVNET_SAFETY_MARGINS);
      expect(t).to.deep.equal({ expiryDeltaSeconds: 10, revealTimeoutSeconds: 5, minFinalExpirySeconds: 7 });
    });

    it("all-zero margins still give a positive delta and reveal timeout", () => {
      const t = lockTiming({ reorgSeconds: 0, graceSeconds: 0, confirmationSeconds: 0 });
      expect(t.expiryDeltaSeconds).to.equal(2);
      expect(t.revealTimeoutSeconds).to.equal(1);
      expect(t.minFinalExpirySeconds).to.equal(1);
    });

    it("property: delta = 3R+2G+2S >= reveal timeout = R+G+S for non-negative integer margins", () => {
      const m = fc.integer({ min: 0, max: 1_000_000 });
      fc.assert(
        fc.property(m, m, m, (R, G, S) => {
          fc.pre(R + G + S > 0);
          const t = lockTiming({ reorgSeconds: R, graceSeconds: G, confirmationSeconds: S });
          expect(t.expiryDeltaSeconds).to.equal(3 * R + 2 * G + 2 * S);
          expect(t.revealTimeoutSeconds).to.equal(R + G + S);
          expect(t.minFinalExpirySeconds).to.equal(R + G + 2 * S);
          expect(t.expiryDeltaSeconds).to.be.at.least(t.revealTimeoutSeconds);
        }),
        { numRuns: 200 },
      );
    });

    it("refuses negative, fractional or non-finite margins with INVALID_ARGUMENT naming the margin", () => {
      const cases: [Partial<typeof DEFAULT_SAFETY_MARGINS>, string][] = [
        [{ reorgSeconds: -1 }, "reorgSeconds"],
        [{ graceSeconds: 1.5 }, "graceSeconds"],
        [{ confirmationSeconds: -0.5 }, "confirmationSeconds"],
        [{ graceSeconds: Number.NaN }, "graceSeconds"],
        [{ reorgSeconds: Number.POSITIVE_INFINITY }, "reorgSeconds"],
        [{ confirmationSeconds: "60" as unknown as number }, "confirmationSeconds"],
      ];
      for (const [patch, field] of cases) {
        const err = expectCode(() => lockTiming({ ...DEFAULT_SAFETY_MARGINS, ...patch }), "INVALID_ARGUMENT");
        expect(err.details.field).to.equal(field);
      }
    });
  });
});
