import hre from "hardhat";
import { expect } from "chai";
import { ethers } from "ethers";
import { time } from "@nomicfoundation/hardhat-network-helpers";
import { ChannelHub__factory, RevertingReceiver__factory } from "../../typechain-types/index.js";
import {
  balanceHash,
  deployFixture,
  depositToken,
  eventsOf,
  expectRevert,
  hubDomain,
  hubErrors,
  lockedAmountOf,
  lockFor,
  locksRootOf,
  newSecret,
  openChannel,
  packLocks,
  signBalanceProof,
  signCooperativeSettle,
  signUpdate,
} from "./helpers.js";
import type { Fixture, TestLock, TestProof } from "./helpers.js";

const E = (n: string) => ethers.parseEther(n);
const TIMEOUT = 60n;
const OPENED = 1n;
const CLOSED = 2n;
const SETTLED = 3n;

describe("ChannelHub", function () {
  let f: Fixture;

  beforeEach(async function () {
    f = await deployFixture();
  });

  describe("open", function () {
    it("opens with ids from 1, rejects duplicates and bad parameters", async function () {
      const { hub, alice, bob, token } = f;
      const tokenAddress = await token.getAddress();
      expect(await hub.channelCounter()).to.equal(0n);
      const id = await openChannel(hub, alice.address, bob.address, tokenAddress, TIMEOUT);
      expect(id).to.equal(1n);
      const info = await hub.getChannel(id);
      expect(info.participant1).to.equal(alice.address);
      expect(info.participant2).to.equal(bob.address);
      expect(info.token).to.equal(tokenAddress);
      expect(info.settleTimeoutSeconds).to.equal(TIMEOUT);
      expect(info.state).to.equal(OPENED);
      expect(await hub.openChannelIdOf(bob.address, alice.address, tokenAddress)).to.equal(1n);
      await expectRevert(
        hub.openChannel(bob.address, alice.address, tokenAddress, TIMEOUT),
        hubErrors,
        "ChannelHubChannelAlreadyOpen",
        [1n],
      );
      // Same pair, other token (ETH) is a different channel.
      expect(await openChannel(hub, alice.address, bob.address, ethers.ZeroAddress)).to.equal(2n);
      await expectRevert(
        hub.openChannel(alice.address, alice.address, tokenAddress, TIMEOUT),
        hubErrors,
        "ChannelHubInvalidParticipants",
      );
      await expectRevert(
        hub.openChannel(alice.address, ethers.ZeroAddress, tokenAddress, TIMEOUT),
        hubErrors,
        "ChannelHubInvalidParticipants",
      );
      await expectRevert(
        hub.openChannel(alice.address, f.carol.address, tokenAddress, 9n),
        hubErrors,
        "ChannelHubInvalidSettleTimeout",
        [9n],
      );
      await expectRevert(
        hub.openChannel(alice.address, f.carol.address, tokenAddress, 365n * 86400n + 1n),
        hubErrors,
        "ChannelHubInvalidSettleTimeout",
      );
      await expectRevert(
        hub.openChannel(alice.address, f.carol.address, f.carol.address, TIMEOUT),
        hubErrors,
        "ChannelHubInvalidToken",
      );
    });
  });

  describe("deposit", function () {
    it("is monotonic, lets anyone deposit for a participant, and checks msg.value for ETH", async function () {
      const { hub, alice, bob, carol, bridge } = f;
      const tokenAddress = await f.token.getAddress();
      const id = await openChannel(hub, alice.address, bob.address, tokenAddress);
      await depositToken(f, alice, id, E("10"));
      await expectRevert(
        hub.connect(alice).setTotalDeposit(id, alice.address, E("10")),
        hubErrors,
        "ChannelHubDepositNotIncreasing",
        [id, alice.address, E("10"), E("10")],
      );
      await expectRevert(
        hub.connect(alice).setTotalDeposit(id, alice.address, E("5")),
        hubErrors,
        "ChannelHubDepositNotIncreasing",
      );
      // carol pays for bob
      await (await f.token.connect(carol).approve(f.deployment.bridge, E("3"))).wait();
      await (await hub.connect(carol).setTotalDeposit(id, bob.address, E("3"))).wait();
      expect((await hub.getParticipant(id, bob.address)).totalDeposit).to.equal(E("3"));
      expect(await f.token.balanceOf(carol.address)).to.equal(E("997"));
      expect(await bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(E("13"));
      await expectRevert(
        hub.connect(carol).setTotalDeposit(id, carol.address, E("1")),
        hubErrors,
        "ChannelHubNotParticipant",
      );
      await expectRevert(
        hub.connect(alice).setTotalDeposit(id, alice.address, E("11"), { value: 1n }),
        hubErrors,
        "ChannelHubInvalidDepositValue",
        [0n, 1n],
      );

      const ethId = await openChannel(hub, alice.address, bob.address, ethers.ZeroAddress);
      await expectRevert(
        hub.connect(alice).setTotalDeposit(ethId, alice.address, E("1"), { value: E("0.5") }),
        hubErrors,
        "ChannelHubInvalidDepositValue",
        [E("1"), E("0.5")],
      );
      await (
        await hub.connect(alice).setTotalDeposit(ethId, alice.address, E("1"), { value: E("1") })
      ).wait();
      await (
        await hub.connect(alice).setTotalDeposit(ethId, alice.address, E("1.5"), { value: E("0.5") })
      ).wait();
      expect(await bridge.balanceOf(f.deployment.hub, ethers.ZeroAddress)).to.equal(E("1.5"));
      expect(await hre.ethers.provider.getBalance(f.deployment.bridge)).to.equal(E("1.5"));
    });
  });

  describe("full lifecycle", function () {
    it("ERC-20: close with the partner's proof, third-party contest, settle after the timeout (to the wei)", async function () {
      const { hub, alice, bob, carol, domain, token } = f;
      const tokenAddress = await token.getAddress();
      const id = await openChannel(hub, alice.address, bob.address, tokenAddress);
      await depositToken(f, alice, id, E("100"));
      await depositToken(f, bob, id, E("50"));

      // Off-chain: alice -> bob and bob -> alice balance proofs.
      const locksRoot = ethers.keccak256(ethers.toUtf8Bytes("locks"));
      const a1 = await signBalanceProof(alice, domain, id, 1n, E("10"));
      const a2 = await signBalanceProof(alice, domain, id, 2n, E("30"), E("7"), locksRoot);
      const b2 = await signBalanceProof(bob, domain, id, 2n, E("15"));

      // Alice closes with bob's latest proof.
      await (
        await hub.connect(alice).closeChannel(id, bob.address, b2.nonce, b2.balanceHash, b2.signature)
      ).wait();
      const closed = await hub.getChannel(id);
      expect(closed.state).to.equal(CLOSED);
      expect(closed.closingParticipant).to.equal(alice.address);
      const bobInfo = await hub.getParticipant(id, bob.address);
      expect(bobInfo.nonce).to.equal(2n);
      expect(bobInfo.balanceHash).to.equal(b2.balanceHash);

      // Carol (a watchtower) holds bob's counter-signatures and contests twice.
      await (
        await hub
          .connect(carol)
          .updateNonClosingBalanceProof(
            id,
            alice.address,
            bob.address,
            a1.nonce,
            a1.balanceHash,
            a1.signature,
            await signUpdate(bob, domain, id, a1),
          )
      ).wait();
      expect((await hub.getParticipant(id, alice.address)).nonce).to.equal(1n);
      await (
        await hub
          .connect(carol)
          .updateNonClosingBalanceProof(
            id,
            alice.address,
            bob.address,
            a2.nonce,
            a2.balanceHash,
            a2.signature,
            await signUpdate(bob, domain, id, a2),
          )
      ).wait();
      const aliceInfo = await hub.getParticipant(id, alice.address);
      expect(aliceInfo.nonce).to.equal(2n);
      expect(aliceInfo.balanceHash).to.equal(a2.balanceHash);

      await expectRevert(
        hub
          .connect(carol)
          .settleChannel(
            id,
            alice.address,
            E("30"),
            E("7"),
            locksRoot,
            bob.address,
            E("15"),
            0n,
            ethers.ZeroHash,
          ),
        hubErrors,
        "ChannelHubSettleTimeoutNotExpired",
      );
      await time.increase(TIMEOUT + 1n);
      const aliceBefore = await token.balanceOf(alice.address);
      const bobBefore = await token.balanceOf(bob.address);
      // Participants in reverse order are accepted.
      await (
        await hub
          .connect(carol)
          .settleChannel(
            id,
            bob.address,
            E("15"),
            0n,
            ethers.ZeroHash,
            alice.address,
            E("30"),
            E("7"),
            locksRoot,
          )
      ).wait();
      // alice: 100 + 15 - 30 - 7 locked = 78; bob: 50 + 30 - 15 = 65; 7 kept for unlock.
      expect((await token.balanceOf(alice.address)) - aliceBefore).to.equal(E("78"));
      expect((await token.balanceOf(bob.address)) - bobBefore).to.equal(E("65"));
      expect(await f.bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(E("7"));
      const locked = await hub.getLockedBalance(id, alice.address);
      expect(locked.lockedAmount).to.equal(E("7"));
      expect(locked.locksRoot).to.equal(locksRoot);
      expect((await hub.getChannel(id)).state).to.equal(SETTLED);
      expect(await hub.openChannelIdOf(alice.address, bob.address, tokenAddress)).to.equal(0n);
      // A new channel for the same pair may be opened once settled.
      expect(await openChannel(hub, bob.address, alice.address, tokenAddress)).to.equal(2n);
    });

    it("ETH: close without a proof, settle pays deposits back exactly", async function () {
      const { hub, alice, bob, carol, domain } = f;
      const id = await openChannel(hub, alice.address, bob.address, ethers.ZeroAddress);
      await (await hub.connect(alice).setTotalDeposit(id, alice.address, E("1"), { value: E("1") })).wait();
      await (await hub.connect(bob).setTotalDeposit(id, bob.address, E("0.5"), { value: E("0.5") })).wait();
      const b1 = await signBalanceProof(bob, domain, id, 1n, E("0.2"));
      // bob closes with no proof from alice; alice's watchtower submits bob's proof.
      await (await hub.connect(bob).closeChannel(id, alice.address, 0n, ethers.ZeroHash, "0x")).wait();
      await (
        await hub
          .connect(carol)
          .updateNonClosingBalanceProof(
            id,
            bob.address,
            alice.address,
            b1.nonce,
            b1.balanceHash,
            b1.signature,
            await signUpdate(alice, domain, id, b1),
          )
      ).wait();
      await time.increase(TIMEOUT + 1n);
      const provider = hre.ethers.provider;
      const aliceBefore = await provider.getBalance(alice.address);
      const bobBefore = await provider.getBalance(bob.address);
      await (
        await hub
          .connect(carol)
          .settleChannel(
            id,
            alice.address,
            0n,
            0n,
            ethers.ZeroHash,
            bob.address,
            E("0.2"),
            0n,
            ethers.ZeroHash,
          )
      ).wait();
      expect((await provider.getBalance(alice.address)) - aliceBefore).to.equal(E("1.2"));
      expect((await provider.getBalance(bob.address)) - bobBefore).to.equal(E("0.3"));
      expect(await f.bridge.balanceOf(f.deployment.hub, ethers.ZeroAddress)).to.equal(0n);
    });

    it("clamps overstated transfers so nobody takes more than the channel holds", async function () {
      const { hub, alice, bob, domain, token } = f;
      const id = await openChannel(hub, alice.address, bob.address, await token.getAddress());
      await depositToken(f, alice, id, E("10"));
      await depositToken(f, bob, id, E("5"));
      // alice signed away far more than she ever had, with a lock on top.
      const a1 = await signBalanceProof(alice, domain, id, 1n, E("1000"), E("3"));
      await (
        await hub.connect(bob).closeChannel(id, alice.address, a1.nonce, a1.balanceHash, a1.signature)
      ).wait();
      await time.increase(TIMEOUT + 1n);
      const bobBefore = await token.balanceOf(bob.address);
      const aliceBefore = await token.balanceOf(alice.address);
      await (
        await hub.settleChannel(
          id,
          alice.address,
          E("1000"),
          E("3"),
          ethers.ZeroHash,
          bob.address,
          0n,
          0n,
          ethers.ZeroHash,
        )
      ).wait();
      expect((await token.balanceOf(bob.address)) - bobBefore).to.equal(E("15"));
      expect(await token.balanceOf(alice.address)).to.equal(aliceBefore);
      expect((await hub.getLockedBalance(id, alice.address)).lockedAmount).to.equal(0n);
      expect(await f.bridge.balanceOf(f.deployment.hub, await token.getAddress())).to.equal(0n);
    });

    it("a payout that fails is deferred and does not block the partner", async function () {
      const { hub, alice, deployer } = f;
      const receiver = await new RevertingReceiver__factory(deployer).deploy();
      const receiverAddress = await receiver.getAddress();
      const id = await openChannel(hub, receiverAddress, alice.address, ethers.ZeroAddress);
      await (await hub.connect(alice).setTotalDeposit(id, alice.address, E("2"), { value: E("2") })).wait();
      await (await hub.connect(alice).setTotalDeposit(id, receiverAddress, E("1"), { value: E("1") })).wait();
      await (await receiver.close(f.deployment.hub, id, alice.address)).wait();
      await time.increase(TIMEOUT + 1n);
      const aliceBefore = await hre.ethers.provider.getBalance(alice.address);
      await (
        await hub.settleChannel(
          id,
          alice.address,
          0n,
          0n,
          ethers.ZeroHash,
          receiverAddress,
          0n,
          0n,
          ethers.ZeroHash,
        )
      ).wait();
      expect((await hre.ethers.provider.getBalance(alice.address)) - aliceBefore).to.equal(E("2"));
      expect(await hub.deferredPayoutOf(receiverAddress, ethers.ZeroAddress)).to.equal(E("1"));
      await (await receiver.setRejecting(false)).wait();
      await (await receiver.claim(f.deployment.hub, ethers.ZeroAddress, receiverAddress)).wait();
      expect(await hre.ethers.provider.getBalance(receiverAddress)).to.equal(E("1"));
      expect(await hub.deferredPayoutOf(receiverAddress, ethers.ZeroAddress)).to.equal(0n);
      await expectRevert(
        receiver.claim(f.deployment.hub, ethers.ZeroAddress, receiverAddress),
        hubErrors,
        "ChannelHubNoDeferredPayout",
      );
    });
  });

  describe("cooperative settle", function () {
    it("pays both sides at once, in either participant order", async function () {
      const { hub, alice, bob, carol, domain, token } = f;
      const id = await openChannel(hub, alice.address, bob.address, await token.getAddress());
      await depositToken(f, alice, id, E("10"));
      await depositToken(f, bob, id, E("4"));
      // Given as (bob, alice): the signatures cover that order.
      const sigBob = await signCooperativeSettle(bob, domain, id, bob.address, E("6"), alice.address, E("8"));
      const sigAlice = await signCooperativeSettle(
        alice,
        domain,
        id,
        bob.address,
        E("6"),
        alice.address,
        E("8"),
      );
      const aliceBefore = await token.balanceOf(alice.address);
      const bobBefore = await token.balanceOf(bob.address);
      const receipt = await (
        await hub
          .connect(carol)
          .cooperativeSettle(id, bob.address, E("6"), alice.address, E("8"), sigBob, sigAlice)
      ).wait();
      expect((await token.balanceOf(alice.address)) - aliceBefore).to.equal(E("8"));
      expect((await token.balanceOf(bob.address)) - bobBefore).to.equal(E("6"));
      expect((await hub.getChannel(id)).state).to.equal(SETTLED);
      const settled = receipt?.logs
        .map((log) => {
          try {
            return hubErrors.parseLog(log);
          } catch {
            return null;
          }
        })
        .find((e) => e?.name === "ChannelSettled");
      // Event amounts are in the channel's order (alice is participant1).
      expect([...(settled?.args ?? [])]).to.deep.equal([id, E("8"), E("6"), true]);
      await expectRevert(
        hub.cooperativeSettle(id, bob.address, E("6"), alice.address, E("8"), sigBob, sigAlice),
        hubErrors,
        "ChannelHubInvalidChannelState",
        [id, SETTLED],
      );
    });

    it("rejects amounts that do not sum to the deposits and wrong signers", async function () {
      const { hub, alice, bob, carol, domain, token } = f;
      const id = await openChannel(hub, alice.address, bob.address, await token.getAddress());
      await depositToken(f, alice, id, E("10"));
      const s = (w: typeof alice, a1: bigint, a2: bigint) =>
        signCooperativeSettle(w, domain, id, alice.address, a1, bob.address, a2);
      await expectRevert(
        hub.cooperativeSettle(
          id,
          alice.address,
          E("6"),
          bob.address,
          E("5"),
          await s(alice, E("6"), E("5")),
          await s(bob, E("6"), E("5")),
        ),
        hubErrors,
        "ChannelHubInvalidSettleAmounts",
        [id, E("10"), E("6"), E("5")],
      );
      await expectRevert(
        hub.cooperativeSettle(
          id,
          alice.address,
          E("11"),
          bob.address,
          0n,
          await s(alice, E("11"), 0n),
          await s(bob, E("11"), 0n),
        ),
        hubErrors,
        "ChannelHubInvalidSettleAmounts",
      );
      await expectRevert(
        hub.cooperativeSettle(
          id,
          alice.address,
          E("4"),
          bob.address,
          E("6"),
          await s(alice, E("4"), E("6")),
          await s(carol, E("4"), E("6")),
        ),
        hubErrors,
        "ChannelHubInvalidSignature",
        [id, bob.address],
      );
      // A signature over different amounts does not verify.
      await expectRevert(
        hub.cooperativeSettle(
          id,
          alice.address,
          E("4"),
          bob.address,
          E("6"),
          await s(alice, E("5"), E("5")),
          await s(bob, E("4"), E("6")),
        ),
        hubErrors,
        "ChannelHubInvalidSignature",
        [id, alice.address],
      );
      await expectRevert(
        hub.cooperativeSettle(
          id,
          alice.address,
          E("4"),
          carol.address,
          E("6"),
          await s(alice, E("4"), E("6")),
          await s(bob, E("4"), E("6")),
        ),
        hubErrors,
        "ChannelHubNotParticipant",
      );
    });
  });

  describe("bad input", function () {
    let id: bigint;
    let tokenAddress: string;

    beforeEach(async function () {
      tokenAddress = await f.token.getAddress();
      id = await openChannel(f.hub, f.alice.address, f.bob.address, tokenAddress);
      await depositToken(f, f.alice, id, E("10"));
      await depositToken(f, f.bob, id, E("10"));
    });

    const close = (p: TestProof, by = f.alice, partner = f.bob.address) =>
      f.hub.connect(by).closeChannel(id, partner, p.nonce, p.balanceHash, p.signature);

    it("close: wrong signer, non-participant, malformed nonce-0 proof, double close", async function () {
      const { hub, alice, bob, carol, domain } = f;
      const byCarol = await signBalanceProof(carol, domain, id, 1n, E("1"));
      await expectRevert(close(byCarol), hubErrors, "ChannelHubInvalidSignature", [id, bob.address]);
      // alice's own proof is not bob's.
      await expectRevert(
        close(await signBalanceProof(alice, domain, id, 1n, E("1"))),
        hubErrors,
        "ChannelHubInvalidSignature",
      );
      const b1 = await signBalanceProof(bob, domain, id, 1n, E("1"));
      await expectRevert(close(b1, carol), hubErrors, "ChannelHubNotParticipant", [id, carol.address]);
      await expectRevert(close(b1, alice, carol.address), hubErrors, "ChannelHubNotParticipant", [
        id,
        carol.address,
      ]);
      await expectRevert(
        hub.connect(alice).closeChannel(id, bob.address, 0n, balanceHash(1n), "0x"),
        hubErrors,
        "ChannelHubInvalidBalanceProof",
      );
      await expectRevert(
        hub.connect(alice).closeChannel(id, bob.address, 1n, ethers.ZeroHash, b1.signature),
        hubErrors,
        "ChannelHubInvalidBalanceProof",
      );
      await expectRevert(
        hub.connect(alice).closeChannel(id, bob.address, 1n, b1.balanceHash, "0x1234"),
        hubErrors,
        "ChannelHubInvalidSignature",
      );
      await (await close(b1)).wait();
      await expectRevert(close(b1), hubErrors, "ChannelHubInvalidChannelState", [id, CLOSED]);
      await expectRevert(close(b1, bob, alice.address), hubErrors, "ChannelHubInvalidChannelState");
      await expectRevert(
        hub.connect(alice).setTotalDeposit(id, alice.address, E("20")),
        hubErrors,
        "ChannelHubInvalidChannelState",
      );
    });

    it("replay across channels, chains and hubs is rejected", async function () {
      const { hub, alice, bob, domain, deployer } = f;
      // Another channel of the same pair (ETH).
      const otherId = await openChannel(hub, alice.address, bob.address, ethers.ZeroAddress);
      const forOther = await signBalanceProof(bob, domain, otherId, 1n, E("1"));
      await expectRevert(close(forOther), hubErrors, "ChannelHubInvalidSignature");
      // Another chain id.
      const otherChain = await signBalanceProof(bob, hubDomain(f.deployment.hub, 1n), id, 1n, E("1"));
      await expectRevert(close(otherChain), hubErrors, "ChannelHubInvalidSignature");
      // Another hub deployment with the same channel id.
      const hub2 = await new ChannelHub__factory(deployer).deploy(
        f.deployment.bridge,
        f.deployment.secretRegistry,
      );
      const hub2Address = await hub2.getAddress();
      expect(await hub2.domainSeparator()).to.not.equal(await hub.domainSeparator());
      const forHub2 = await signBalanceProof(bob, hubDomain(hub2Address), id, 1n, E("1"));
      await expectRevert(close(forHub2), hubErrors, "ChannelHubInvalidSignature");
      // The right domain works.
      expect(await hub.domainSeparator()).to.equal(ethers.TypedDataEncoder.hashDomain(domain));
      await (await close(await signBalanceProof(bob, domain, id, 1n, E("1")))).wait();
    });

    it("contest: stale or equal nonce does not replace; wrong counter-signer; closer mismatch; after the window", async function () {
      const { hub, alice, bob, carol, domain } = f;
      const a3 = await signBalanceProof(alice, domain, id, 3n, E("3"));
      const a2 = await signBalanceProof(alice, domain, id, 2n, E("2"));
      await (await close(await signBalanceProof(bob, domain, id, 1n, E("1")))).wait();
      const contest = (p: TestProof, counter: string, closer = alice.address, nonCloser = bob.address) =>
        hub
          .connect(carol)
          .updateNonClosingBalanceProof(id, closer, nonCloser, p.nonce, p.balanceHash, p.signature, counter);
      await expectRevert(
        contest(a3, await signUpdate(carol, domain, id, a3)),
        hubErrors,
        "ChannelHubInvalidSignature",
        [id, bob.address],
      );
      await expectRevert(
        contest(a3, await signUpdate(bob, domain, id, a2)),
        hubErrors,
        "ChannelHubInvalidSignature",
      );
      await expectRevert(
        contest(a3, await signUpdate(alice, domain, id, a3), bob.address, alice.address),
        hubErrors,
        "ChannelHubNotClosingParticipant",
        [id, bob.address],
      );
      await expectRevert(
        contest(a3, await signUpdate(bob, domain, id, a3), alice.address, carol.address),
        hubErrors,
        "ChannelHubNotParticipant",
      );
      // A proof signed by bob passed off as alice's.
      const fake = await signBalanceProof(bob, domain, id, 5n, E("5"));
      await expectRevert(
        contest(fake, await signUpdate(bob, domain, id, fake)),
        hubErrors,
        "ChannelHubInvalidSignature",
        [id, alice.address],
      );
      await (await contest(a3, await signUpdate(bob, domain, id, a3))).wait();
      await expectRevert(
        contest(a2, await signUpdate(bob, domain, id, a2)),
        hubErrors,
        "ChannelHubStaleNonce",
        [id, 3n, 2n],
      );
      await expectRevert(
        contest(a3, await signUpdate(bob, domain, id, a3)),
        hubErrors,
        "ChannelHubStaleNonce",
        [id, 3n, 3n],
      );
      const stored = await hub.getParticipant(id, alice.address);
      expect(stored.nonce).to.equal(3n);
      expect(stored.balanceHash).to.equal(a3.balanceHash);

      const a4 = await signBalanceProof(alice, domain, id, 4n, E("4"));
      const closedAt = (await hub.getChannel(id)).closedAt;
      // Last second of the window is still accepted for a contest; one later is not.
      await time.setNextBlockTimestamp(closedAt + TIMEOUT + 1n);
      await expectRevert(
        contest(a4, await signUpdate(bob, domain, id, a4)),
        hubErrors,
        "ChannelHubContestWindowExpired",
        [id, closedAt + TIMEOUT],
      );
    });

    it("contest at the last second of the window succeeds; settle works from the next second", async function () {
      const { hub, alice, bob, carol, domain } = f;
      await (await close(await signBalanceProof(bob, domain, id, 1n, E("1")))).wait();
      const closedAt = (await hub.getChannel(id)).closedAt;
      const a1 = await signBalanceProof(alice, domain, id, 1n, E("2"));
      await time.setNextBlockTimestamp(closedAt + TIMEOUT);
      await (
        await hub
          .connect(carol)
          .updateNonClosingBalanceProof(
            id,
            alice.address,
            bob.address,
            a1.nonce,
            a1.balanceHash,
            a1.signature,
            await signUpdate(bob, domain, id, a1),
          )
      ).wait();
      const settle = () =>
        hub.settleChannel(
          id,
          alice.address,
          E("2"),
          0n,
          ethers.ZeroHash,
          bob.address,
          E("1"),
          0n,
          ethers.ZeroHash,
        );
      await (await settle()).wait();
      expect((await hub.getChannel(id)).state).to.equal(SETTLED);
    });

    it("settle: before the timeout, wrong balance data, non-participants, not closed", async function () {
      const { hub, alice, bob, carol, domain } = f;
      const settle = (t1: bigint, t2: bigint, p2 = bob.address) =>
        hub.settleChannel(id, alice.address, t1, 0n, ethers.ZeroHash, p2, t2, 0n, ethers.ZeroHash);
      await expectRevert(settle(0n, E("1")), hubErrors, "ChannelHubInvalidChannelState", [id, OPENED]);
      await (await close(await signBalanceProof(bob, domain, id, 1n, E("1")))).wait();
      const closedAt = (await hub.getChannel(id)).closedAt;
      await expectRevert(settle(0n, E("1")), hubErrors, "ChannelHubSettleTimeoutNotExpired", [
        id,
        closedAt + TIMEOUT,
      ]);
      await time.increase(TIMEOUT + 1n);
      await expectRevert(settle(0n, E("2")), hubErrors, "ChannelHubInvalidBalanceData", [id, bob.address]);
      await expectRevert(settle(1n, E("1")), hubErrors, "ChannelHubInvalidBalanceData", [id, alice.address]);
      await expectRevert(settle(0n, E("1"), carol.address), hubErrors, "ChannelHubNotParticipant");
      await (await settle(0n, E("1"))).wait();
      await expectRevert(settle(0n, E("1")), hubErrors, "ChannelHubInvalidChannelState", [id, SETTLED]);
    });
  });

  describe("unlock (pending HTLC locks)", function () {
    let id: bigint;
    let tokenAddress: string;

    beforeEach(async function () {
      tokenAddress = await f.token.getAddress();
      id = await openChannel(f.hub, f.alice.address, f.bob.address, tokenAddress);
      await depositToken(f, f.alice, id, E("100"));
      await depositToken(f, f.bob, id, E("50"));
    });

    /** bob closes with alice's proof, carol contests with bob's (alice counter-signs), carol settles. */
    async function closeAndSettle(a: TestProof, b: TestProof | null) {
      const { hub, alice, bob, carol, domain } = f;
      await (
        await hub.connect(bob).closeChannel(id, alice.address, a.nonce, a.balanceHash, a.signature)
      ).wait();
      if (b !== null) {
        const counter = await signUpdate(alice, domain, id, b);
        await (
          await hub
            .connect(carol)
            .updateNonClosingBalanceProof(
              id,
              bob.address,
              alice.address,
              b.nonce,
              b.balanceHash,
              b.signature,
              counter,
            )
        ).wait();
      }
      await time.increase(TIMEOUT + 1n);
      const receipt = await (
        await hub
          .connect(carol)
          .settleChannel(
            id,
            alice.address,
            a.transferredAmount,
            a.lockedAmount,
            a.locksRoot,
            bob.address,
            b?.transferredAmount ?? 0n,
            b?.lockedAmount ?? 0n,
            b?.locksRoot ?? ethers.ZeroHash,
          )
      ).wait();
      return eventsOf(receipt, hubErrors, "ChannelSettled").map((e) => [...e.args]);
    }

    /** Registers `secrets` in one block at `at` (seconds). */
    async function registerAt(at: bigint, ...secrets: string[]) {
      await time.setNextBlockTimestamp(at);
      await (await f.registry.connect(f.carol).registerSecretBatch(secrets)).wait();
    }

    /** carol (a third party) unlocks; returns the ChannelUnlocked args. */
    async function unlock(sender: string, receiver: string, locks: readonly TestLock[]) {
      const receipt = await (
        await f.hub.connect(f.carol).unlock(id, sender, receiver, packLocks(locks))
      ).wait();
      return eventsOf(receipt, hubErrors, "ChannelUnlocked").map((e) => [...e.args]);
    }

    const balances = async () => [
      await f.token.balanceOf(f.alice.address),
      await f.token.balanceOf(f.bob.address),
    ];

    it("settle keeps each side's locks; unlock pays locks registered in time to the receiver, the rest back (to the wei)", async function () {
      const { hub, alice, bob, domain } = f;
      const t0 = BigInt(await time.latest());
      const [s1, s2, s3, s4, s5, sb1, sb2] = Array.from({ length: 7 }, newSecret) as [string, ...string[]];
      const aliceLocks = [
        lockFor(E("3"), t0 + 1000n, s1), // registered at t0+200: in time
        lockFor(E("5"), t0 + 600n, s2!), // registered at t0+600 == expiration: too late
        lockFor(E("2"), t0 + 1000n, s3!), // never registered
        lockFor(E("1.5"), t0 + 700n, s4!), // registered at t0+699: the last second in time
        lockFor(7n, t0 + 1000n, s5!), // 7 wei, registered at t0+200
      ];
      const bobLocks = [
        lockFor(E("1"), t0 + 1000n, sb1!), // registered at t0+250: in time
        lockFor(E("0.25"), t0 + 300n, sb2!), // registered at t0+400: too late
      ];
      const lockedA = E("11.5") + 7n;
      const lockedB = E("1.25");
      expect(lockedAmountOf(aliceLocks)).to.equal(lockedA);
      const rootA = locksRootOf(aliceLocks);
      const rootB = locksRootOf(bobLocks);
      // The packed form: 96 bytes per lock, amount ‖ expiration ‖ secretHash.
      const packed = packLocks(aliceLocks);
      expect(ethers.dataLength(packed)).to.equal(5 * 96);
      expect(ethers.dataSlice(packed, 96, 128)).to.equal(ethers.toBeHex(E("5"), 32));
      expect(ethers.dataSlice(packed, 128, 160)).to.equal(ethers.toBeHex(t0 + 600n, 32));
      expect(ethers.dataSlice(packed, 160, 192)).to.equal(ethers.sha256(s2!));

      const a = await signBalanceProof(alice, domain, id, 4n, E("10"), lockedA, rootA);
      const b = await signBalanceProof(bob, domain, id, 2n, E("4"), lockedB, rootB);
      const [aliceBefore, bobBefore] = (await balances()) as [bigint, bigint];
      // alice: net 100 + 4 - 10 = 94, minus her locked 11.5 + 7 wei; bob: net 50 + 10 - 4 = 56, minus 1.25.
      expect(await closeAndSettle(a, b)).to.deep.equal([[id, E("82.5") - 7n, E("54.75"), false]]);
      const [aliceSettled, bobSettled] = (await balances()) as [bigint, bigint];
      expect(aliceSettled - aliceBefore).to.equal(E("82.5") - 7n);
      expect(bobSettled - bobBefore).to.equal(E("54.75"));
      expect([...(await hub.getLockedBalance(id, alice.address))]).to.deep.equal([lockedA, rootA]);
      expect([...(await hub.getLockedBalance(id, bob.address))]).to.deep.equal([lockedB, rootB]);
      expect(await f.bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(lockedA + lockedB);

      // Secrets may be registered after settlement: only registration time vs expiration counts.
      await registerAt(t0 + 200n, s1, s5!);
      await registerAt(t0 + 250n, sb1!);
      await registerAt(t0 + 400n, sb2!);
      await registerAt(t0 + 600n, s2!);
      await registerAt(t0 + 699n, s4!);

      expect(await unlock(alice.address, bob.address, aliceLocks)).to.deep.equal([
        [id, alice.address, bob.address, rootA, E("4.5") + 7n, E("7")],
      ]);
      expect(await unlock(bob.address, alice.address, bobLocks)).to.deep.equal([
        [id, bob.address, alice.address, rootB, E("1"), E("0.25")],
      ]);
      const [aliceAfter, bobAfter] = (await balances()) as [bigint, bigint];
      expect(aliceAfter - aliceSettled).to.equal(E("7") + E("1"));
      expect(bobAfter - bobSettled).to.equal(E("4.5") + 7n + E("0.25"));
      // Everything deposited is paid out, nothing more.
      expect(aliceAfter - aliceBefore + (bobAfter - bobBefore)).to.equal(E("150"));
      expect(await f.bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(0n);
      expect([...(await hub.getLockedBalance(id, alice.address))]).to.deep.equal([0n, ethers.ZeroHash]);

      // Never twice.
      await expectRevert(
        hub.unlock(id, alice.address, bob.address, packLocks(aliceLocks)),
        hubErrors,
        "ChannelHubNothingToUnlock",
        [id, alice.address],
      );
    });

    it("refuses reordered, tampered, incomplete or malformed locks, a wrong partner, and nothing kept", async function () {
      const { hub, alice, bob, carol, domain } = f;
      const t0 = BigInt(await time.latest());
      const locks = [1n, 2n, 3n].map((n) => lockFor(E(String(n)), t0 + 1000n, newSecret()));
      const root = locksRootOf(locks);
      const a = await signBalanceProof(alice, domain, id, 1n, E("1"), E("6"), root);
      const attempt = (packed: string, sender = alice.address, receiver = bob.address, channelId = id) =>
        hub.connect(carol).unlock(channelId, sender, receiver, packed);
      // Nothing is kept before settlement.
      await expectRevert(attempt(packLocks(locks)), hubErrors, "ChannelHubNothingToUnlock", [
        id,
        alice.address,
      ]);
      await closeAndSettle(a, null);

      const invalid = (packed: string) =>
        expectRevert(attempt(packed), hubErrors, "ChannelHubInvalidLocks", [id, alice.address, root]);
      const [l0, l1, l2] = locks as [TestLock, TestLock, TestLock];
      await invalid(packLocks([l1, l0, l2])); // wrong order
      await invalid(packLocks([l0, l1])); // one missing
      await invalid(packLocks([l0, l1, l2, l2])); // one extra
      await invalid(packLocks([{ ...l0, amount: l0.amount + 1n }, l1, l2])); // tampered amount
      await invalid(packLocks([l0, { ...l1, expiration: l1.expiration + 1n }, l2])); // tampered expiration
      await invalid(ethers.concat([packLocks(locks), "0x00"])); // not a multiple of 96 bytes
      await invalid(ethers.dataSlice(packLocks(locks), 0, 3 * 96 - 1));
      await invalid("0x"); // no locks only match a zero locksroot

      await expectRevert(
        attempt(packLocks(locks), alice.address, carol.address),
        hubErrors,
        "ChannelHubNotParticipant",
        [id, carol.address],
      );
      await expectRevert(
        attempt(packLocks(locks), alice.address, alice.address),
        hubErrors,
        "ChannelHubNotParticipant",
        [id, alice.address],
      );
      await expectRevert(
        attempt(packLocks(locks), carol.address, bob.address),
        hubErrors,
        "ChannelHubNotParticipant",
        [id, carol.address],
      );
      await expectRevert(
        attempt(packLocks(locks), alice.address, bob.address, id + 1n),
        hubErrors,
        "ChannelHubNotParticipant",
      );
      // bob had no locks: nothing was kept for him.
      await expectRevert(attempt("0x", bob.address, alice.address), hubErrors, "ChannelHubNothingToUnlock", [
        id,
        bob.address,
      ]);

      // The right locks, by the sender herself; no secret registered, so all of it goes back to alice.
      const before = await f.token.balanceOf(alice.address);
      await (await hub.connect(alice).unlock(id, alice.address, bob.address, packLocks(locks))).wait();
      expect((await f.token.balanceOf(alice.address)) - before).to.equal(E("6"));
      await expectRevert(attempt(packLocks(locks)), hubErrors, "ChannelHubNothingToUnlock", [
        id,
        alice.address,
      ]);
    });

    it("accepts 160 locks and refuses 161 even when they hash to the locksroot", async function () {
      const { alice, bob, domain } = f;
      const t0 = BigInt(await time.latest());
      const secretsB = Array.from({ length: 160 }, newSecret);
      const bobLocks = secretsB.map((s, i) => lockFor(BigInt(i + 1) * 1000n, t0 + 1000n, s));
      const aliceLocks = Array.from({ length: 161 }, () => lockFor(1000n, t0 + 1000n, newSecret()));
      const a = await signBalanceProof(alice, domain, id, 1n, 0n, 161_000n, locksRootOf(aliceLocks));
      const b = await signBalanceProof(
        bob,
        domain,
        id,
        1n,
        0n,
        lockedAmountOf(bobLocks),
        locksRootOf(bobLocks),
      );
      await closeAndSettle(a, b);

      await expectRevert(
        f.hub.unlock(id, alice.address, bob.address, packLocks(aliceLocks)),
        hubErrors,
        "ChannelHubInvalidLocks",
        [id, alice.address, locksRootOf(aliceLocks)],
      );
      // The secrets of the even-indexed locks (amounts 1000, 3000, ...) are registered in time.
      await registerAt(t0 + 500n, ...secretsB.filter((_, i) => i % 2 === 0));
      const toAlice = bobLocks.filter((_, i) => i % 2 === 0).reduce((sum, l) => sum + l.amount, 0n);
      expect(toAlice).to.equal(80n * 80n * 1000n);
      const [aliceBefore, bobBefore] = (await balances()) as [bigint, bigint];
      expect(await unlock(bob.address, alice.address, bobLocks)).to.deep.equal([
        [id, bob.address, alice.address, locksRootOf(bobLocks), toAlice, lockedAmountOf(bobLocks) - toAlice],
      ]);
      const [aliceAfter, bobAfter] = (await balances()) as [bigint, bigint];
      expect(aliceAfter - aliceBefore).to.equal(6_400_000n);
      expect(bobAfter - bobBefore).to.equal(12_880_000n - 6_400_000n);
    });

    it("never pays more than the clamped locked amount, even for locks summing past uint256", async function () {
      const { alice, bob, domain } = f;
      const t0 = BigInt(await time.latest());
      const secrets = [newSecret(), newSecret(), newSecret()];
      const locks = [
        lockFor(E("1"), t0 + 1000n, secrets[0]!),
        lockFor(ethers.MaxUint256, t0 + 1000n, secrets[1]!),
        lockFor(E("1"), t0 + 1000n, secrets[2]!),
      ];
      // alice transferred 98 of her 100 and signed 3 locked: only her remaining 2 can be kept.
      const a = await signBalanceProof(alice, domain, id, 1n, E("98"), E("3"), locksRootOf(locks));
      const [aliceBefore, bobBefore] = (await balances()) as [bigint, bigint];
      expect(await closeAndSettle(a, null)).to.deep.equal([[id, 0n, E("148"), false]]);
      expect((await f.hub.getLockedBalance(id, alice.address)).lockedAmount).to.equal(E("2"));
      await registerAt(t0 + 500n, ...secrets);
      expect(await unlock(alice.address, bob.address, locks)).to.deep.equal([
        [id, alice.address, bob.address, locksRootOf(locks), E("2"), 0n],
      ]);
      const [aliceAfter, bobAfter] = (await balances()) as [bigint, bigint];
      expect(aliceAfter - aliceBefore).to.equal(0n);
      expect(bobAfter - bobBefore).to.equal(E("150"));
      expect(await f.bridge.balanceOf(f.deployment.hub, tokenAddress)).to.equal(0n);
    });

    it("a locked amount kept with a zero locksroot goes back to the sender with no locks", async function () {
      const { alice, bob, domain } = f;
      const a = await signBalanceProof(alice, domain, id, 1n, E("1"), E("3"), ethers.ZeroHash);
      await closeAndSettle(a, null);
      const stray = [lockFor(E("3"), 1n, newSecret())];
      await expectRevert(
        f.hub.unlock(id, alice.address, bob.address, packLocks(stray)),
        hubErrors,
        "ChannelHubInvalidLocks",
        [id, alice.address, ethers.ZeroHash],
      );
      const before = await f.token.balanceOf(alice.address);
      expect(await unlock(alice.address, bob.address, [])).to.deep.equal([
        [id, alice.address, bob.address, ethers.ZeroHash, 0n, E("3")],
      ]);
      expect((await f.token.balanceOf(alice.address)) - before).to.equal(E("3"));
    });
  });
});
