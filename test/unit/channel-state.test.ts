import { expect } from "chai";
import { concat, keccak256, sha256, solidityPacked, toBeHex } from "ethers";
import fc from "fast-check";
import type { BalanceProof, ChannelEnd, Lock } from "../../protocol/index.js";
import {
  EMPTY_CHANNEL_END,
  EMPTY_LOCKS_ROOT,
  MAX_PENDING_LOCKS,
  balanceDataOf,
  checkProofMatches,
  computeLocksRoot,
  distributableAmount,
  findLock,
  withDirect,
  withLock,
  withUnlock,
  withoutLock,
} from "../../protocol/index.js";
import { expectCode } from "./helpers.js";

const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

function lockN(i: number, amount = BigInt(i + 1)): Lock {
  return { amount, expiration: 1_700_000_000n + BigInt(i), secretHash: sha256(toBeHex(i, 32)) };
}

/** locksRoot computed independently with ethers. */
function ethersRoot(locks: readonly Lock[]): string {
  if (locks.length === 0) return `0x${"00".repeat(32)}`;
  return keccak256(
    concat(
      locks.map((l) =>
        solidityPacked(["uint256", "uint256", "bytes32"], [l.amount, l.expiration, l.secretHash]),
      ),
    ),
  );
}

function proofFor(end: ChannelEnd, nonce = end.nonce): BalanceProof {
  return { chainId: 31337n, hub: HUB, channelId: 1n, nonce, ...balanceDataOf(end) };
}

describe("protocol/channel-state", () => {
  it("EMPTY_CHANNEL_END is frozen and commits to nothing", () => {
    expect(EMPTY_CHANNEL_END).to.be.frozen;
    expect(balanceDataOf(EMPTY_CHANNEL_END)).to.deep.equal({
      transferredAmount: 0n,
      lockedAmount: 0n,
      locksRoot: EMPTY_LOCKS_ROOT,
    });
  });

  describe("transitions", () => {
    it("withDirect adds to transferredAmount and bumps the nonce by one", () => {
      const a = withDirect(EMPTY_CHANNEL_END, 100n);
      expect(a).to.deep.equal({ nonce: 1n, transferredAmount: 100n, locks: [] });
      const b = withDirect(a, 5n);
      expect(b).to.deep.equal({ nonce: 2n, transferredAmount: 105n, locks: [] });
      expect(a.transferredAmount).to.equal(100n); // inputs are not mutated
      for (const bad of [0n, -1n]) {
        const err = expectCode(() => withDirect(a, bad), "INVALID_TRANSFER");
        expect(err.details.field).to.equal("amount");
      }
    });

    it("withLock appends the lock (secret hash lower-cased), bumps the nonce, leaves transferred alone", () => {
      const start = withDirect(EMPTY_CHANNEL_END, 7n);
      const l0 = lockN(0, 30n);
      const upper = { ...lockN(1, 12n), secretHash: `0x${lockN(1).secretHash.slice(2).toUpperCase()}` };
      const a = withLock(start, l0);
      const b = withLock(a, upper);
      expect(a.nonce).to.equal(2n);
      expect(b.nonce).to.equal(3n);
      expect(b.transferredAmount).to.equal(7n);
      expect(b.locks).to.deep.equal([l0, { ...upper, secretHash: upper.secretHash.toLowerCase() }]);
      expect(start.locks).to.deep.equal([]);
      expect(a.locks).to.have.length(1);
      expect(balanceDataOf(b)).to.deep.equal({
        transferredAmount: 7n,
        lockedAmount: 42n,
        locksRoot: ethersRoot(b.locks),
      });
      expect(findLock(b, upper.secretHash.toLowerCase())).to.deep.equal(b.locks[1]);
      expect(findLock(b, l0.secretHash.toUpperCase().replace("0X", "0x"))).to.deep.equal(l0);
      expect(findLock(b, sha256("0x99"))).to.equal(undefined);
    });

    it("withLock refuses a zero amount and a duplicate secret hash (any case) with INVALID_TRANSFER", () => {
      const a = withLock(EMPTY_CHANNEL_END, lockN(0));
      let err = expectCode(() => withLock(a, { ...lockN(1), amount: 0n }), "INVALID_TRANSFER");
      expect(err.details.field).to.equal("lock.amount");
      err = expectCode(
        () => withLock(a, { ...lockN(5), secretHash: lockN(0).secretHash }),
        "INVALID_TRANSFER",
      );
      expect(err.details.field).to.equal("lock.secretHash");
      const shouting = `0x${lockN(0).secretHash.slice(2).toUpperCase()}`;
      expectCode(() => withLock(a, { ...lockN(5), secretHash: shouting }), "INVALID_TRANSFER");
    });

    it("accepts 160 pending locks and refuses the 161st with TOO_MANY_LOCKS", () => {
      let end: ChannelEnd = EMPTY_CHANNEL_END;
      for (let i = 0; i < MAX_PENDING_LOCKS; i++) end = withLock(end, lockN(i));
      expect(end.locks).to.have.length(160);
      expect(end.nonce).to.equal(160n);
      expect(balanceDataOf(end).locksRoot).to.equal(ethersRoot(end.locks));
      const err = expectCode(() => withLock(end, lockN(MAX_PENDING_LOCKS)), "TOO_MANY_LOCKS");
      expect(err.details.pending).to.equal(160);
      // Removing one makes room again.
      const fewer = withoutLock(end, lockN(3).secretHash);
      expect(withLock(fewer, lockN(MAX_PENDING_LOCKS)).locks).to.have.length(160);
    });

    it("withUnlock moves the lock's amount from locked to transferred and bumps the nonce", () => {
      let end = withDirect(EMPTY_CHANNEL_END, 10n);
      end = withLock(end, lockN(0, 100n));
      end = withLock(end, lockN(1, 20n));
      end = withLock(end, lockN(2, 3n));
      const after = withUnlock(end, lockN(1).secretHash.toUpperCase().replace("0X", "0x"));
      expect(after.nonce).to.equal(end.nonce + 1n);
      expect(after.transferredAmount).to.equal(30n);
      expect(after.locks).to.deep.equal([lockN(0, 100n), lockN(2, 3n)]);
      expect(balanceDataOf(after)).to.deep.equal({
        transferredAmount: 30n,
        lockedAmount: 103n,
        locksRoot: ethersRoot([lockN(0, 100n), lockN(2, 3n)]),
      });
      expect(end.locks).to.have.length(3);
      const err = expectCode(() => withUnlock(after, lockN(1).secretHash), "PAYMENT_NOT_FOUND");
      expect(err.details.field).to.equal("secretHash");
    });

    it("withoutLock drops the lock without paying it and bumps the nonce", () => {
      let end = withLock(EMPTY_CHANNEL_END, lockN(0, 100n));
      end = withLock(end, lockN(1, 20n));
      const after = withoutLock(end, lockN(0).secretHash);
      expect(after).to.deep.equal({ nonce: 3n, transferredAmount: 0n, locks: [lockN(1, 20n)] });
      const empty = withoutLock(after, lockN(1).secretHash);
      expect(balanceDataOf(empty)).to.deep.equal({
        transferredAmount: 0n,
        lockedAmount: 0n,
        locksRoot: EMPTY_LOCKS_ROOT,
      });
      expect(empty.nonce).to.equal(4n);
      expectCode(() => withoutLock(empty, lockN(1).secretHash), "PAYMENT_NOT_FOUND");
    });
  });

  describe("checkProofMatches", () => {
    let previous: ChannelEnd;
    let expected: ChannelEnd;

    beforeEach(() => {
      previous = withLock(withDirect(EMPTY_CHANNEL_END, 50n), lockN(0, 40n));
      expected = withLock(previous, lockN(1, 9n));
    });

    it("accepts the exact next state and returns it with the proof's nonce", () => {
      const next = checkProofMatches(proofFor(expected), previous.nonce, expected);
      expect(next).to.deep.equal(expected);
    });

    it("accepts a gap in nonces (a refused proof burnt one)", () => {
      const next = checkProofMatches(proofFor(expected, previous.nonce + 5n), previous.nonce, expected);
      expect(next.nonce).to.equal(previous.nonce + 5n);
      expect(next.locks).to.deep.equal(expected.locks);
      expect(next.transferredAmount).to.equal(expected.transferredAmount);
    });

    it("accepts an upper-case locksRoot", () => {
      const p = proofFor(expected);
      p.locksRoot = `0x${p.locksRoot.slice(2).toUpperCase()}`;
      expect(checkProofMatches(p, previous.nonce, expected).nonce).to.equal(expected.nonce);
    });

    it("refuses a nonce not above the previous one with STALE_NONCE", () => {
      for (const nonce of [previous.nonce, previous.nonce - 1n, 0n]) {
        const err = expectCode(
          () => checkProofMatches(proofFor(expected, nonce), previous.nonce, expected),
          "STALE_NONCE",
        );
        expect(err.details.field).to.equal("balanceProof.nonce");
      }
    });

    it("refuses a wrong transferredAmount, lockedAmount or locksRoot naming the field", () => {
      const good = proofFor(expected);
      const cases: [Partial<BalanceProof>, string][] = [
        [{ transferredAmount: good.transferredAmount + 1n }, "balanceProof.transferredAmount"],
        [{ transferredAmount: good.transferredAmount - 1n }, "balanceProof.transferredAmount"],
        [{ lockedAmount: good.lockedAmount - 1n }, "balanceProof.lockedAmount"],
        [{ lockedAmount: 0n }, "balanceProof.lockedAmount"],
        [{ locksRoot: EMPTY_LOCKS_ROOT }, "balanceProof.locksRoot"],
        // The right locks in the wrong order.
        [{ locksRoot: ethersRoot([...expected.locks].reverse()) }, "balanceProof.locksRoot"],
        // The previous state's root.
        [{ locksRoot: computeLocksRoot(previous.locks) }, "balanceProof.locksRoot"],
      ];
      for (const [patch, field] of cases) {
        const err = expectCode(
          () => checkProofMatches({ ...good, ...patch }, previous.nonce, expected),
          "INVALID_TRANSFER",
        );
        expect(
          err.details.field,
          JSON.stringify(patch, (_k, v) => String(v)),
        ).to.equal(field);
      }
    });

    it("the nonce is checked before the amounts", () => {
      const bad = { ...proofFor(expected, previous.nonce), transferredAmount: 0n };
      expectCode(() => checkProofMatches(bad, previous.nonce, expected), "STALE_NONCE");
    });
  });

  describe("distributableAmount", () => {
    it("is deposit - sent - locked(ours) + received", () => {
      let ours = withDirect(EMPTY_CHANNEL_END, 100n);
      ours = withLock(ours, lockN(0, 50n));
      ours = withLock(ours, lockN(1, 25n));
      const partner = withLock(withDirect(EMPTY_CHANNEL_END, 30n), lockN(2, 1_000n));
      // The partner's pending locks do not count for us until unlocked.
      expect(distributableAmount(1_000n, ours, partner)).to.equal(1_000n - 100n - 75n + 30n);
      expect(distributableAmount(0n, EMPTY_CHANNEL_END, EMPTY_CHANNEL_END)).to.equal(0n);
      expect(distributableAmount(10n, EMPTY_CHANNEL_END, EMPTY_CHANNEL_END)).to.equal(10n);
      // Unlocking one of ours keeps our distributable amount unchanged; removing it frees it.
      const unlocked = withUnlock(ours, lockN(0).secretHash);
      expect(distributableAmount(1_000n, unlocked, partner)).to.equal(855n);
      const removed = withoutLock(ours, lockN(0).secretHash);
      expect(distributableAmount(1_000n, removed, partner)).to.equal(905n);
      // The partner unlocking its lock to us raises ours.
      const partnerPaid = withUnlock(partner, lockN(2).secretHash);
      expect(distributableAmount(1_000n, ours, partnerPaid)).to.equal(1_855n);
    });

    it("may go negative on inconsistent inputs", () => {
      const ours = withDirect(EMPTY_CHANNEL_END, 100n);
      expect(distributableAmount(10n, ours, EMPTY_CHANNEL_END)).to.equal(-90n);
    });
  });

  describe("property: random sequences of lock / unlock / remove / direct", () => {
    type Op =
      | { kind: "add"; amount: bigint; expiration: bigint }
      | { kind: "unlock"; pick: number }
      | { kind: "remove"; pick: number }
      | { kind: "direct"; amount: bigint };
    const opArb: fc.Arbitrary<Op> = fc.oneof(
      fc.record({
        kind: fc.constant("add" as const),
        amount: fc.bigInt({ min: 1n, max: 10n ** 30n }),
        expiration: fc.bigInt({ min: 0n, max: 2n ** 40n }),
      }),
      fc.record({ kind: fc.constant("unlock" as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant("remove" as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant("direct" as const), amount: fc.bigInt({ min: 1n, max: 10n ** 20n }) }),
    );

    it("lockedAmount = sum of locks, transferred only grows, nonce +1 each, locksRoot = root of the remaining locks in order", () => {
      fc.assert(
        fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => {
          let end: ChannelEnd = EMPTY_CHANNEL_END;
          const model: Lock[] = [];
          let modelTransferred = 0n;
          let counter = 0;
          for (const op of ops) {
            const before = end;
            switch (op.kind) {
              case "add": {
                const lock: Lock = {
                  amount: op.amount,
                  expiration: op.expiration,
                  secretHash: sha256(toBeHex(counter++, 32)),
                };
                end = withLock(end, lock);
                model.push(lock);
                break;
              }
              case "unlock":
              case "remove": {
                if (model.length === 0) {
                  const missing = sha256(toBeHex(999_999, 32));
                  expectCode(
                    () => (op.kind === "unlock" ? withUnlock(end, missing) : withoutLock(end, missing)),
                    "PAYMENT_NOT_FOUND",
                  );
                  continue;
                }
                const [lock] = model.splice(op.pick % model.length, 1) as [Lock];
                if (op.kind === "unlock") {
                  end = withUnlock(end, lock.secretHash);
                  modelTransferred += lock.amount;
                } else {
                  end = withoutLock(end, lock.secretHash);
                }
                break;
              }
              case "direct":
                end = withDirect(end, op.amount);
                modelTransferred += op.amount;
                break;
            }
            expect(end.nonce).to.equal(before.nonce + 1n);
            expect(end.transferredAmount - before.transferredAmount).to.satisfy(
              (d: bigint) => d >= 0n,
              "transferred only grows",
            );
            expect(end.transferredAmount).to.equal(modelTransferred);
            expect(end.locks).to.deep.equal(model);
            const data = balanceDataOf(end);
            expect(data.lockedAmount).to.equal(model.reduce((s, l) => s + l.amount, 0n));
            expect(data.locksRoot).to.equal(computeLocksRoot(model)).and.to.equal(ethersRoot(model));
            // A receiver that computed the same next state accepts the sender's proof.
            expect(checkProofMatches(proofFor(end), before.nonce, end)).to.deep.equal(end);
          }
        }),
        { numRuns: 150 },
      );
    });
  });
});
