import hre from "hardhat";
import { expect } from "chai";
import { ethers } from "ethers";
import fc from "fast-check";
import { time } from "@nomicfoundation/hardhat-network-helpers";
import { BlockingToken__factory } from "../../typechain-types/index.js";
import {
  deployFixture,
  depositToken,
  eventsOf,
  expectRevert,
  hubDomain,
  hubErrors,
  lockFor,
  locksRootOf,
  newSecret,
  openChannel,
  packLocks,
  signBalanceProof,
  signCooperativeSettle,
  signUpdate,
  signWithdraw,
  signWithdrawBoth,
  submitWithdraw,
} from "./helpers.js";
import type { Fixture, TestProof } from "./helpers.js";

const E = (n: string) => ethers.parseEther(n);
const TIMEOUT = 60n;
const CLOSED = 2n;
const SETTLED = 3n;
const UINT256_MAX = ethers.MaxUint256;

describe("ChannelHub withdraw", function () {
  let f: Fixture;
  let tokenAddress: string;

  beforeEach(async function () {
    f = await deployFixture();
    tokenAddress = await f.token.getAddress();
  });

  /** An ERC-20 channel alice <-> bob with the given deposits; returns its id. */
  async function fundedChannel(aliceDeposit: bigint, bobDeposit: bigint): Promise<bigint> {
    const id = await openChannel(f.hub, f.alice.address, f.bob.address, tokenAddress, TIMEOUT);
    if (aliceDeposit > 0n) await depositToken(f, f.alice, id, aliceDeposit);
    if (bobDeposit > 0n) await depositToken(f, f.bob, id, bobDeposit);
    return id;
  }

  async function expiry(secondsFromNow = 3600n): Promise<bigint> {
    return BigInt(await time.latest()) + secondsFromNow;
  }

  /** Closes as alice with bob's proof, contests with alice's proof (bob's counter-signature, sent by carol). */
  async function closeAndContest(id: bigint, aliceProof: TestProof, bobProof: TestProof): Promise<void> {
    const { hub, alice, bob, carol, domain } = f;
    await (
      await hub
        .connect(alice)
        .closeChannel(id, bob.address, bobProof.nonce, bobProof.balanceHash, bobProof.signature)
    ).wait();
    await (
      await hub
        .connect(carol)
        .updateNonClosingBalanceProof(
          id,
          alice.address,
          bob.address,
          aliceProof.nonce,
          aliceProof.balanceHash,
          aliceProof.signature,
          await signUpdate(bob, domain, id, aliceProof),
        )
    ).wait();
  }

  function settle(id: bigint, aliceProof: TestProof, bobProof: TestProof) {
    return f.hub
      .connect(f.carol)
      .settleChannel(
        id,
        f.alice.address,
        aliceProof.transferredAmount,
        aliceProof.lockedAmount,
        aliceProof.locksRoot,
        f.bob.address,
        bobProof.transferredAmount,
        bobProof.lockedAmount,
        bobProof.locksRoot,
      );
  }

  it("pays the increase of the total withdraw to the participant (any submitter), event and getParticipant", async function () {
    const { hub, alice, bob, carol, domain, token, bridge } = f;
    const id = await fundedChannel(E("10"), E("5"));
    const aliceBefore = await token.balanceOf(alice.address);
    const w1 = await signWithdrawBoth(alice, bob, domain, id, E("3"), await expiry());
    const receipt = await (await submitWithdraw(hub.connect(carol), w1)).wait();
    const events = eventsOf(receipt, hubErrors, "ChannelWithdraw");
    expect(events).to.have.length(1);
    expect(events[0]!.args.channelId).to.equal(id);
    expect(events[0]!.args.participant).to.equal(alice.address);
    expect(events[0]!.args.totalWithdraw).to.equal(E("3"));
    expect((await token.balanceOf(alice.address)) - aliceBefore).to.equal(E("3"));
    expect(await bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(E("12"));
    const info = await hub.getParticipant(id, alice.address);
    expect(info.totalWithdraw).to.equal(E("3"));
    expect(info.totalDeposit).to.equal(E("10"));
    expect(info.nonce).to.equal(0n);
    expect((await hub.getParticipant(id, bob.address)).totalWithdraw).to.equal(0n);

    // The next withdraw is a new total: only the increase (1) is paid. Bob may withdraw too, past his own
    // deposit (he may have received transfers; the bound is on the channel's deposits).
    await (
      await submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("4"), await expiry()))
    ).wait();
    await (
      await submitWithdraw(hub, await signWithdrawBoth(bob, alice, domain, id, E("6"), await expiry()))
    ).wait();
    expect((await token.balanceOf(alice.address)) - aliceBefore).to.equal(E("4"));
    expect((await hub.getParticipant(id, bob.address)).totalWithdraw).to.equal(E("6"));
    expect(await bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(E("5"));
  });

  it("ETH: the withdraw is sent as ETH to the participant", async function () {
    const { hub, alice, bob, carol, domain } = f;
    const id = await openChannel(hub, alice.address, bob.address, ethers.ZeroAddress);
    await (await hub.connect(alice).setTotalDeposit(id, alice.address, E("2"), { value: E("2") })).wait();
    const before = await hre.ethers.provider.getBalance(alice.address);
    const w = await signWithdrawBoth(alice, bob, domain, id, E("1.25"), await expiry());
    await (await submitWithdraw(hub.connect(carol), w)).wait();
    expect((await hre.ethers.provider.getBalance(alice.address)) - before).to.equal(E("1.25"));
    expect(await f.bridge.balanceOf(f.deployment.hub, ethers.ZeroAddress)).to.equal(E("0.75"));
  });

  it("withdraw then close/contest/settle pays exactly what is left, to the wei, both sides", async function () {
    const { hub, alice, bob, domain, token, bridge } = f;
    const id = await fundedChannel(E("10"), E("5"));
    await (
      await submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("3"), await expiry()))
    ).wait();
    await (
      await submitWithdraw(hub, await signWithdrawBoth(bob, alice, domain, id, E("2"), await expiry()))
    ).wait();
    const aliceProof = await signBalanceProof(alice, domain, id, 4n, E("4") + 7n);
    const bobProof = await signBalanceProof(bob, domain, id, 2n, E("1"));
    await closeAndContest(id, aliceProof, bobProof);
    await expectRevert(
      submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("4"), await expiry())),
      hubErrors,
      "ChannelHubInvalidChannelState",
      [id, CLOSED],
    );
    await time.increase(TIMEOUT + 1n);
    const aliceBefore = await token.balanceOf(alice.address);
    const bobBefore = await token.balanceOf(bob.address);
    const receipt = await (await settle(id, aliceProof, bobProof)).wait();
    // R = 15 - 5 = 10; alice: 10 - 3 + 1 - (4 + 7 wei) = 4 - 7 wei; bob: 5 - 2 + (4 + 7 wei) - 1 = 6 + 7 wei.
    expect((await token.balanceOf(alice.address)) - aliceBefore).to.equal(E("4") - 7n);
    expect((await token.balanceOf(bob.address)) - bobBefore).to.equal(E("6") + 7n);
    const settled = eventsOf(receipt, hubErrors, "ChannelSettled")[0]!;
    expect(settled.args.participant1Amount + settled.args.participant2Amount).to.equal(E("10"));
    expect(await bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(0n);
    expect((await hub.getChannel(id)).state).to.equal(SETTLED);
    await expectRevert(
      submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("4"), await expiry())),
      hubErrors,
      "ChannelHubInvalidChannelState",
      [id, SETTLED],
    );
  });

  it("settle clamps to what is left: an overstated balance proof cannot reach withdrawn funds", async function () {
    const { hub, alice, bob, domain, token, bridge } = f;
    const id = await fundedChannel(E("10"), E("10"));
    // bob withdrew 15 (alice signed it), so 5 are left; bob's proof then claims he transferred all of
    // uint256 to alice: alice gets the 5 left, never funds that were withdrawn (or other channels').
    await (
      await submitWithdraw(hub, await signWithdrawBoth(bob, alice, domain, id, E("15"), await expiry()))
    ).wait();
    const aliceProof = await signBalanceProof(alice, domain, id, 1n, 0n);
    const bobProof = await signBalanceProof(bob, domain, id, 1n, UINT256_MAX);
    await closeAndContest(id, aliceProof, bobProof);
    await time.increase(TIMEOUT + 1n);
    const aliceBefore = await token.balanceOf(alice.address);
    const bobBefore = await token.balanceOf(bob.address);
    await (await settle(id, aliceProof, bobProof)).wait();
    expect((await token.balanceOf(alice.address)) - aliceBefore).to.equal(E("5"));
    expect(await token.balanceOf(bob.address)).to.equal(bobBefore);
    expect(await bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(0n);
  });

  it("pending locks kept at settlement are bounded by what is left after the withdraws", async function () {
    const { hub, alice, bob, carol, domain, token, bridge, registry } = f;
    const id = await fundedChannel(E("10"), 0n);
    await (
      await submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("6"), await expiry()))
    ).wait();
    const secret = newSecret();
    const locks = [lockFor(E("5"), await expiry(), secret)];
    const aliceProof = await signBalanceProof(alice, domain, id, 1n, 0n, E("5"), locksRootOf(locks));
    const bobProof = await signBalanceProof(bob, domain, id, 1n, 0n);
    await closeAndContest(id, aliceProof, bobProof);
    await (await registry.connect(carol).registerSecret(secret)).wait();
    await time.increase(TIMEOUT + 1n);
    await (await settle(id, aliceProof, bobProof)).wait();
    // alice's net is 10 - 6 = 4: only 4 of the 5 locked can be kept.
    expect((await hub.getLockedBalance(id, alice.address)).lockedAmount).to.equal(E("4"));
    expect(await bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(E("4"));
    const bobBefore = await token.balanceOf(bob.address);
    await (await hub.connect(carol).unlock(id, alice.address, bob.address, packLocks(locks))).wait();
    expect((await token.balanceOf(bob.address)) - bobBefore).to.equal(E("4"));
    expect(await bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(0n);
  });

  it("refuses a replay of the same signatures and a lower total", async function () {
    const { hub, alice, bob, domain } = f;
    const id = await fundedChannel(E("10"), E("5"));
    const w = await signWithdrawBoth(alice, bob, domain, id, E("3"), await expiry());
    await (await submitWithdraw(hub, w)).wait();
    await expectRevert(submitWithdraw(hub, w), hubErrors, "ChannelHubWithdrawNotIncreasing", [
      id,
      alice.address,
      E("3"),
      E("3"),
    ]);
    await expectRevert(
      submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("2"), await expiry())),
      hubErrors,
      "ChannelHubWithdrawNotIncreasing",
      [id, alice.address, E("3"), E("2")],
    );
    await expectRevert(
      submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, 0n, await expiry())),
      hubErrors,
      "ChannelHubWithdrawNotIncreasing",
    );
  });

  it("accepts a withdraw at its expiry second and refuses it one second later", async function () {
    const { hub, alice, bob, domain } = f;
    const id = await fundedChannel(E("10"), 0n);
    const at = await expiry(100n);
    const w1 = await signWithdrawBoth(alice, bob, domain, id, E("1"), at);
    await time.setNextBlockTimestamp(at);
    await (await submitWithdraw(hub, w1)).wait();
    const w2 = await signWithdrawBoth(alice, bob, domain, id, E("2"), at);
    await time.setNextBlockTimestamp(at + 1n);
    await expectRevert(submitWithdraw(hub, w2), hubErrors, "ChannelHubWithdrawExpired", [id, at]);
    expect((await hub.getParticipant(id, alice.address)).totalWithdraw).to.equal(E("1"));
  });

  it("refuses signatures for another channel, participant, total, expiry, chain id or hub", async function () {
    const { hub, alice, bob, domain } = f;
    const id = await fundedChannel(E("10"), E("10"));
    const at = await expiry();
    const good = await signWithdrawBoth(alice, bob, domain, id, E("1"), at);
    const refused = async (
      w: typeof good,
      expectedSigner: string = alice.address,
      channelId: bigint = id,
    ): Promise<void> =>
      expectRevert(submitWithdraw(hub, w), hubErrors, "ChannelHubInvalidSignature", [
        channelId,
        expectedSigner,
      ]);

    // Signed for channel 2 (same pair, ETH), submitted for the ERC-20 channel.
    const other = await openChannel(hub, alice.address, bob.address, ethers.ZeroAddress);
    await refused({ ...(await signWithdrawBoth(alice, bob, domain, other, E("1"), at)), channelId: id });
    // Signed for bob as the participant, submitted as alice's withdraw.
    const forBob = await signWithdrawBoth(bob, alice, domain, id, E("1"), at);
    await refused({ ...forBob, participant: alice.address });
    // Another total or expiry than signed.
    await refused({ ...good, totalWithdraw: E("2") });
    await refused({ ...good, expiryTimestamp: at + 1n });
    // Another chain id or another hub in the domain.
    await refused(await signWithdrawBoth(alice, bob, hubDomain(f.deployment.hub, 1n), id, E("1"), at));
    await refused(await signWithdrawBoth(alice, bob, hubDomain(f.deployment.bridge), id, E("1"), at));
    // The genuine message still works.
    await (await submitWithdraw(hub, good)).wait();
  });

  it("refuses a forged or missing partner signature, a high-s twin, and a non-participant", async function () {
    const { hub, alice, bob, carol, domain } = f;
    const id = await fundedChannel(E("10"), E("10"));
    const at = await expiry();
    const good = await signWithdrawBoth(alice, bob, domain, id, E("1"), at);
    const refusedFor = (w: typeof good, signer: string) =>
      expectRevert(submitWithdraw(hub, w), hubErrors, "ChannelHubInvalidSignature", [id, signer]);
    // carol signs in bob's place; alice signs twice; the partner signature is empty.
    await refusedFor(
      { ...good, partnerSignature: await signWithdraw(carol, domain, id, alice.address, E("1"), at) },
      bob.address,
    );
    await refusedFor({ ...good, partnerSignature: good.participantSignature }, bob.address);
    await refusedFor({ ...good, partnerSignature: "0x" }, bob.address);
    await refusedFor({ ...good, participantSignature: good.partnerSignature }, alice.address);
    // The malleable twin (s' = n - s, v flipped) recovers the same key but is refused (low-s only).
    const sig = ethers.Signature.from(good.partnerSignature);
    const n = BigInt("0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
    const highS = ethers.concat([
      sig.r,
      ethers.toBeHex(n - BigInt(sig.s), 32),
      sig.v === 27 ? "0x1c" : "0x1b",
    ]);
    await refusedFor({ ...good, partnerSignature: highS }, bob.address);
    // carol is no participant, even with both of "her" signatures.
    await expectRevert(
      submitWithdraw(hub, await signWithdrawBoth(carol, bob, domain, id, E("1"), at)),
      hubErrors,
      "ChannelHubNotParticipant",
      [id, carol.address],
    );
    await expectRevert(
      submitWithdraw(hub, { ...good, channelId: 99n }),
      hubErrors,
      "ChannelHubInvalidChannelState",
      [99n, 0n],
    );
  });

  it("refuses totals that, with the partner's, exceed both deposits", async function () {
    const { hub, alice, bob, domain, bridge } = f;
    const id = await fundedChannel(E("10"), E("5"));
    await expectRevert(
      submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("15") + 1n, await expiry())),
      hubErrors,
      "ChannelHubWithdrawExceedsDeposits",
      [id, alice.address, E("15"), E("15") + 1n],
    );
    await (
      await submitWithdraw(hub, await signWithdrawBoth(bob, alice, domain, id, E("9"), await expiry()))
    ).wait();
    await expectRevert(
      submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("7"), await expiry())),
      hubErrors,
      "ChannelHubWithdrawExceedsDeposits",
      [id, alice.address, E("6"), E("7")],
    );
    await expectRevert(
      submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, UINT256_MAX, await expiry())),
      hubErrors,
      "ChannelHubWithdrawExceedsDeposits",
    );
    // Exactly what is left: the channel is empty, and a deposit makes room again.
    await (
      await submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("6"), await expiry()))
    ).wait();
    expect(await bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(0n);
    await depositToken(f, bob, id, E("6"));
    await (
      await submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("7"), await expiry()))
    ).wait();
    expect(await bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(0n);
  });

  it("cooperative settle after a withdraw pays what is left; amounts summing to the deposits are refused", async function () {
    const { hub, alice, bob, carol, domain, token, bridge } = f;
    const id = await fundedChannel(E("10"), E("5"));
    // A cooperative settle signed before the withdraw (amounts summing to the deposits).
    const stale = [id, alice.address, E("8"), bob.address, E("7")] as const;
    const staleSigs = [
      await signCooperativeSettle(alice, domain, ...stale),
      await signCooperativeSettle(bob, domain, ...stale),
    ] as const;
    await (
      await submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("3"), await expiry()))
    ).wait();
    await expectRevert(
      hub.connect(carol).cooperativeSettle(...stale, ...staleSigs),
      hubErrors,
      "ChannelHubInvalidSettleAmounts",
      [id, E("12"), E("8"), E("7")],
    );
    const final = [id, bob.address, E("7"), alice.address, E("5")] as const;
    const aliceBefore = await token.balanceOf(alice.address);
    const bobBefore = await token.balanceOf(bob.address);
    await (
      await hub
        .connect(carol)
        .cooperativeSettle(
          ...final,
          await signCooperativeSettle(bob, domain, ...final),
          await signCooperativeSettle(alice, domain, ...final),
        )
    ).wait();
    expect((await token.balanceOf(alice.address)) - aliceBefore).to.equal(E("5"));
    expect((await token.balanceOf(bob.address)) - bobBefore).to.equal(E("7"));
    expect(await bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(0n);
  });

  it("a withdraw payout that fails is deferred and claimable later", async function () {
    const { hub, alice, bob, domain, deployer } = f;
    const blocking = await new BlockingToken__factory(deployer).deploy();
    const blockingAddress = await blocking.getAddress();
    await (await blocking.mint(bob.address, E("10"))).wait();
    const id = await openChannel(hub, alice.address, bob.address, blockingAddress);
    await (await blocking.connect(bob).approve(f.deployment.bridge, E("10"))).wait();
    await (await hub.connect(bob).setTotalDeposit(id, bob.address, E("10"))).wait();
    await (await blocking.setBlocked(alice.address, true)).wait();
    const receipt = await (
      await submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, E("4"), await expiry()))
    ).wait();
    const deferred = eventsOf(receipt, hubErrors, "PayoutDeferred");
    expect(deferred).to.have.length(1);
    expect(deferred[0]!.args.amount).to.equal(E("4"));
    expect((await hub.getParticipant(id, alice.address)).totalWithdraw).to.equal(E("4"));
    expect(await hub.deferredPayoutOf(alice.address, blockingAddress)).to.equal(E("4"));
    expect(await blocking.balanceOf(alice.address)).to.equal(0n);
    await (await blocking.setBlocked(alice.address, false)).wait();
    await (await hub.connect(alice).claimDeferredPayout(blockingAddress, alice.address)).wait();
    expect(await blocking.balanceOf(alice.address)).to.equal(E("4"));
    expect(await hub.deferredPayoutOf(alice.address, blockingAddress)).to.equal(0n);
  });

  it("property: the hub never pays out more than was deposited; settle amounts + kept locks = deposits - withdraws", async function () {
    this.timeout(600_000);
    const { hub, alice, bob, domain, token, bridge } = f;
    // Deposits up to 2^200 (minted here); transfers and locks anywhere in uint256.
    for (const w of [alice, bob]) await (await token.mint(w.address, 1n << 210n)).wait();
    for (const w of [alice, bob])
      await (await token.connect(w).approve(f.deployment.bridge, UINT256_MAX)).wait();
    const amount = fc.oneof(
      fc.bigInt({ min: 0n, max: 1000n }),
      fc.bigInt({ min: 0n, max: 1n << 200n }),
      fc.constantFrom(0n, 1n, UINT256_MAX),
    );
    const fraction = fc.integer({ min: 0, max: 1000 });
    await fc.assert(
      fc.asyncProperty(
        fc.bigInt({ min: 0n, max: 1n << 200n }),
        fc.bigInt({ min: 0n, max: 1n << 200n }),
        fraction,
        fraction,
        amount,
        amount,
        amount,
        amount,
        async (d1, d2, f1, f2, t1, t2, l1, l2) => {
          const id = await openChannel(hub, alice.address, bob.address, tokenAddress, TIMEOUT);
          if (d1 > 0n) await (await hub.connect(alice).setTotalDeposit(id, alice.address, d1)).wait();
          if (d2 > 0n) await (await hub.connect(bob).setTotalDeposit(id, bob.address, d2)).wait();
          const w1 = ((d1 + d2) * BigInt(f1)) / 1000n;
          const w2 = ((d1 + d2 - w1) * BigInt(f2)) / 1000n;
          const aliceStart = await token.balanceOf(alice.address);
          const bobStart = await token.balanceOf(bob.address);
          const hubStart = await bridge.balanceOf(f.deployment.hub, tokenAddress);
          const at = await expiry();
          if (w1 > 0n)
            await (await submitWithdraw(hub, await signWithdrawBoth(alice, bob, domain, id, w1, at))).wait();
          if (w2 > 0n)
            await (await submitWithdraw(hub, await signWithdrawBoth(bob, alice, domain, id, w2, at))).wait();
          const root = l1 === 0n ? ethers.ZeroHash : ethers.keccak256("0x01");
          const aliceProof = await signBalanceProof(alice, domain, id, 1n, t1, l1, root);
          const bobProof = await signBalanceProof(bob, domain, id, 1n, t2, l2, ethers.ZeroHash);
          await closeAndContest(id, aliceProof, bobProof);
          await time.increase(TIMEOUT + 1n);
          const receipt = await (await settle(id, aliceProof, bobProof)).wait();
          const settled = eventsOf(receipt, hubErrors, "ChannelSettled")[0]!;
          const amount1: bigint = settled.args.participant1Amount;
          const amount2: bigint = settled.args.participant2Amount;
          const kept1 = (await hub.getLockedBalance(id, alice.address)).lockedAmount;
          const kept2 = (await hub.getLockedBalance(id, bob.address)).lockedAmount;

          // The model: R = D - W, net1 = clamp(d1 - w1 + t2 - t1, 0, R), locks out of the sender's net.
          const remaining = d1 + d2 - w1 - w2;
          const raw = d1 - w1 + t2 - t1;
          const net1 = raw < 0n ? 0n : raw > remaining ? remaining : raw;
          const net2 = remaining - net1;
          const locked1 = l1 < net1 ? l1 : net1;
          const locked2 = l2 < net2 ? l2 : net2;
          expect([amount1, amount2, kept1, kept2]).to.deep.equal([
            net1 - locked1,
            net2 - locked2,
            locked1,
            locked2,
          ]);
          expect(amount1 + amount2 + kept1 + kept2).to.equal(remaining);
          // Paid out so far (withdraws + settlement) plus what stays for unlocks is exactly the deposits.
          const paidAlice = (await token.balanceOf(alice.address)) - aliceStart;
          const paidBob = (await token.balanceOf(bob.address)) - bobStart;
          expect(paidAlice).to.equal(w1 + amount1);
          expect(paidBob).to.equal(w2 + amount2);
          expect(paidAlice + paidBob + kept1 + kept2).to.equal(d1 + d2);
          expect(await bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(
            hubStart - paidAlice - paidBob,
          );
        },
      ),
      { numRuns: 25 },
    );
  });
});
