import { expect } from "chai";
import { ethers } from "ethers";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { time } from "@nomicfoundation/hardhat-network-helpers";
import { HubCallError, HubClient, readDeployment, writeDeployment } from "../../chain/index.js";
import {
  deployFixture,
  lockFor,
  locksRootOf,
  newSecret,
  signBalanceProof,
  signCooperativeSettle,
  signUpdate,
} from "./helpers.js";
import type { Fixture } from "./helpers.js";
import {
  WITHDRAW_TYPEHASH,
  isQrwpError,
  signDigest,
  verifyWithdrawSignature,
  withdrawDigest,
} from "../../protocol/index.js";
import type { WithdrawArgs } from "../../protocol/index.js";
import { TestToken__factory } from "../../typechain-types/index.js";

const E = (n: string) => ethers.parseEther(n);

describe("chain/HubClient", function () {
  let f: Fixture;
  let alice: HubClient;
  let bob: HubClient;
  let tower: HubClient;
  let token: string;

  beforeEach(async function () {
    f = await deployFixture();
    alice = new HubClient(f.alice, f.deployment);
    bob = new HubClient(f.bob, f.deployment);
    tower = new HubClient(f.carol, f.deployment);
    token = f.deployment.token ?? "";
  });

  it("runs open, deposit (with approve), close, contest by a watchtower and settle", async function () {
    const opened = await alice.openChannel(f.bob.address, token, 30);
    expect(opened.channelId).to.equal(1n);
    expect(opened.gasUsed > 0n).to.equal(true);
    const id = opened.channelId;

    const d1 = await alice.setTotalDeposit(id, E("20"));
    expect(d1.approve).to.not.equal(null);
    const d2 = await bob.setTotalDeposit(id, E("5"));
    expect(d2.approve).to.not.equal(null);
    expect((await alice.getParticipant(id, f.alice.address)).totalDeposit).to.equal(E("20"));

    const channel = await bob.getChannel(id);
    expect(channel).to.deep.include({
      state: "opened",
      participant1: f.alice.address,
      participant2: f.bob.address,
      token,
      settleTimeoutSeconds: 30,
      closedAtSeconds: 0,
      closingParticipant: ethers.ZeroAddress,
    });

    const a1 = await signBalanceProof(f.alice, f.domain, id, 1n, E("4"));
    const a2 = await signBalanceProof(f.alice, f.domain, id, 2n, E("9"));
    const b1 = await signBalanceProof(f.bob, f.domain, id, 1n, E("1"));
    // alice closes (breach attempt: her own latest proof is not on chain).
    await alice.closeChannel(id, f.bob.address, b1);
    const closed = await tower.getChannel(id);
    expect(closed.state).to.equal("closed");
    expect(closed.closingParticipant).to.equal(f.alice.address);
    expect(closed.closedAtSeconds).to.equal(await tower.latestTimestamp());

    await tower.updateNonClosingBalanceProof(
      id,
      f.alice.address,
      f.bob.address,
      a2,
      await signUpdate(f.bob, f.domain, id, a2),
    );
    const stale = tower.updateNonClosingBalanceProof(
      id,
      f.alice.address,
      f.bob.address,
      a1,
      await signUpdate(f.bob, f.domain, id, a1),
    );
    const error = await stale.then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).to.be.instanceOf(HubCallError);
    expect((error as HubCallError).errorName).to.equal("ChannelHubStaleNonce");
    expect((error as Error).message).to.contain("ChannelHubStaleNonce(1, 2, 1)");

    await time.increase(31);
    const aliceBefore = await tower.tokenBalance(token, f.alice.address);
    const bobBefore = await tower.tokenBalance(token, f.bob.address);
    const settled = await tower.settleChannel(
      id,
      {
        participant: f.alice.address,
        transferredAmount: E("9"),
        lockedAmount: 0n,
        locksRoot: ethers.ZeroHash,
      },
      { participant: f.bob.address, transferredAmount: E("1"), lockedAmount: 0n, locksRoot: ethers.ZeroHash },
    );
    expect(settled.txHash).to.match(/^0x[0-9a-f]{64}$/);
    expect((await tower.tokenBalance(token, f.alice.address)) - aliceBefore).to.equal(E("12"));
    expect((await tower.tokenBalance(token, f.bob.address)) - bobBefore).to.equal(E("13"));
    expect((await tower.getChannel(id)).state).to.equal("settled");
  });

  it("ETH deposits send value; cooperative settle; reverts name the custom error", async function () {
    const { channelId: id } = await bob.openChannel(f.alice.address, ethers.ZeroAddress, 60);
    const dep = await bob.setTotalDeposit(id, E("2"));
    expect(dep.approve).to.equal(null);
    const retry = await bob.setTotalDeposit(id, E("2")).catch((e: unknown) => e as Error);
    expect(retry).to.be.instanceOf(HubCallError);
    expect((retry as Error).message).to.contain("ChannelHubDepositNotIncreasing");
    const again = await alice
      .openChannel(f.bob.address, ethers.ZeroAddress, 60)
      .catch((e: unknown) => e as Error);
    expect((again as Error).message).to.contain("ChannelHubChannelAlreadyOpen(1)");
    // The nonce manager recovered from the failed sends.
    await alice.setTotalDeposit(id, E("1"));

    const args = [id, f.bob.address, E("1.5"), f.alice.address, E("1.5")] as const;
    const sigBob = await signCooperativeSettle(f.bob, f.domain, ...args);
    const sigAlice = await signCooperativeSettle(f.alice, f.domain, ...args);
    const aliceBefore = await alice.tokenBalance(ethers.ZeroAddress, f.alice.address);
    await tower.cooperativeSettle(...args, sigBob, sigAlice);
    expect((await alice.tokenBalance(ethers.ZeroAddress, f.alice.address)) - aliceBefore).to.equal(E("1.5"));
    expect((await alice.getChannel(id)).state).to.equal("settled");
    expect(await alice.openChannelIdOf(f.alice.address, f.bob.address, ethers.ZeroAddress)).to.equal(0n);
  });

  describe("setTotalWithdraw", function () {
    const nonceOf = (owner: string) => f.deployer.provider!.getTransactionCount(owner, "latest");
    const refusal = (p: Promise<unknown>) =>
      p.then(
        () => expect.fail("the withdraw succeeded"),
        (e: unknown) => e as HubCallError,
      );
    /** Both signatures made by protocol/withdraw.ts (the node's code path), not by ethers. */
    function signBoth(args: WithdrawArgs, participant: ethers.Wallet, partner: ethers.Wallet) {
      const digest = withdrawDigest(args);
      return [participant, partner].map((w) => signDigest(digest, ethers.getBytes(w.privateKey))) as [
        string,
        string,
      ];
    }

    it("a withdraw signed with protocol/ is paid to the participant; the participant view has the total", async function () {
      expect(await f.hub.WITHDRAW_TYPEHASH()).to.equal(ethers.hexlify(WITHDRAW_TYPEHASH));
      const { channelId: id } = await alice.openChannel(f.bob.address, token, 30);
      await alice.setTotalDeposit(id, E("10"));
      await bob.setTotalDeposit(id, E("4"));
      const args: WithdrawArgs = {
        chainId: BigInt(f.deployment.chainId),
        hub: f.deployment.hub,
        channelId: id,
        participant: f.bob.address,
        totalWithdraw: E("6"),
        expiryTimestamp: BigInt(await tower.latestTimestamp()) + 600n,
      };
      const [bobSig, aliceSig] = signBoth(args, f.bob, f.alice);
      verifyWithdrawSignature(args, bobSig, f.bob.address, "participantSignature");
      verifyWithdrawSignature(args, aliceSig, f.alice.address, "partnerSignature");
      const before = await tower.tokenBalance(token, f.bob.address);
      const result = await tower.setTotalWithdraw(
        id,
        f.bob.address,
        E("6"),
        args.expiryTimestamp,
        bobSig,
        aliceSig,
      );
      expect(result.totalWithdraw).to.equal(E("6"));
      expect(result.deferredAmount).to.equal(0n);
      expect(result.gasUsed > 0n).to.equal(true);
      expect((await tower.tokenBalance(token, f.bob.address)) - before).to.equal(E("6"));
      expect(await tower.getParticipant(id, f.bob.address)).to.deep.equal({
        totalDeposit: E("4"),
        totalWithdraw: E("6"),
        nonce: 0n,
        balanceHash: ethers.ZeroHash,
      });
      expect((await tower.getParticipant(id, f.alice.address)).totalWithdraw).to.equal(0n);

      // A retry of the mined withdraw is refused by the hub, decoded, and nothing is sent.
      const nonceBefore = await nonceOf(f.carol.address);
      const retry = await refusal(
        tower.setTotalWithdraw(id, f.bob.address, E("6"), args.expiryTimestamp, bobSig, aliceSig),
      );
      expect(retry).to.be.instanceOf(HubCallError);
      expect(retry.errorName).to.equal("ChannelHubWithdrawNotIncreasing");
      expect(retry.message).to.contain(
        `ChannelHubWithdrawNotIncreasing(${id}, ${f.bob.address}, ${E("6")}, ${E("6")})`,
      );
      // Above the deposits, and expired: each decoded by name.
      const more = { ...args, totalWithdraw: E("15") };
      const tooMuch = await refusal(
        tower.setTotalWithdraw(
          id,
          f.bob.address,
          E("15"),
          args.expiryTimestamp,
          ...signBoth(more, f.bob, f.alice),
        ),
      );
      expect(tooMuch.errorName).to.equal("ChannelHubWithdrawExceedsDeposits");
      const past = { ...args, totalWithdraw: E("7"), expiryTimestamp: 1n };
      const expired = await refusal(
        tower.setTotalWithdraw(id, f.bob.address, E("7"), 1n, ...signBoth(past, f.bob, f.alice)),
      );
      expect(expired.errorName).to.equal("ChannelHubWithdrawExpired");
      expect(await nonceOf(f.carol.address)).to.equal(nonceBefore);
    });

    it("malformed arguments are INVALID_ARGUMENT naming the field; nothing is sent", async function () {
      const { channelId: id } = await alice.openChannel(f.bob.address, token, 30);
      const sig = `0x${"11".repeat(65)}`;
      const nonceBefore = await nonceOf(f.carol.address);
      const cases: [Parameters<HubClient["setTotalWithdraw"]>, string][] = [
        [[id, "0x1234", 1n, 1n, sig, sig], "participant"],
        [[id, f.alice.address, -1n, 1n, sig, sig], "totalWithdraw"],
        [[id, f.alice.address, ethers.MaxUint256 + 1n, 1n, sig, sig], "totalWithdraw"],
        [[id, f.alice.address, 1n, -5n, sig, sig], "expiryTimestamp"],
        [[id, f.alice.address, 1n, 1n, "0x", sig], "participantSignature"],
        [[id, f.alice.address, 1n, 1n, sig, `${sig}00`], "partnerSignature"],
      ];
      for (const [args, field] of cases) {
        const err = await tower.setTotalWithdraw(...args).then(
          () => expect.fail(`accepted a malformed ${field}`),
          (e: unknown) => e as Error,
        );
        expect(isQrwpError(err) && err.code, err.message).to.equal("INVALID_ARGUMENT");
        expect((err as { details?: Record<string, unknown> }).details?.field).to.equal(field);
      }
      expect(await nonceOf(f.carol.address)).to.equal(nonceBefore);
    });
  });

  it("serialises concurrent transactions of one client without nonce clashes", async function () {
    const partners = [f.bob.address, f.carol.address, ethers.Wallet.createRandom().address];
    const results = await Promise.all(partners.map((p) => alice.openChannel(p, token, 30)));
    expect(results.map((r) => r.channelId).sort()).to.deep.equal([1n, 2n, 3n]);
    await Promise.all(results.map((r, i) => alice.setTotalDeposit(r.channelId, E(String(i + 1)))));
    for (const [i, r] of results.entries()) {
      expect((await alice.getParticipant(r.channelId, f.alice.address)).totalDeposit).to.equal(
        E(String(i + 1)),
      );
    }
  });

  it("writes and reads a validated deployment file", async function () {
    const dir = await mkdtemp(join(tmpdir(), "qrwp-deploy-"));
    const path = join(dir, "nested", "deployment.json");
    await writeDeployment(path, f.deployment);
    expect(await readDeployment(path)).to.deep.equal(f.deployment);
    const bad = join(dir, "bad.json");
    await writeFile(bad, JSON.stringify({ ...f.deployment, hub: "0x1234", chainId: 31337 }));
    const error = await readDeployment(bad).catch((e: unknown) => e as Error);
    expect((error as Error).message).to.match(
      /invalid deployment .*chainId.*hub|invalid deployment .*hub.*chainId/,
    );
    const { secretRegistry: _omitted, ...withoutRegistry } = f.deployment;
    await writeFile(bad, JSON.stringify(withoutRegistry));
    const missing = await readDeployment(bad).catch((e: unknown) => e as Error);
    expect((missing as Error).message).to.contain("secretRegistry");
  });

  it("registers secrets, reads reveal times and kept locks, and unlocks pending locks", async function () {
    const { channelId: id } = await alice.openChannel(f.bob.address, token, 30);
    await alice.setTotalDeposit(id, E("10"));
    const t0 = BigInt(await alice.latestTimestamp());
    const [s1, s2, s3] = [newSecret(), newSecret(), newSecret()] as const;
    const locks = [
      lockFor(E("1"), t0 + 1000n, s1),
      lockFor(E("2"), t0 + 1000n, s2),
      lockFor(E("3"), t0 + 1000n, s3),
    ];
    const root = locksRootOf(locks);
    const a1 = await signBalanceProof(f.alice, f.domain, id, 1n, E("1"), E("6"), root);
    await bob.closeChannel(id, f.alice.address, a1);
    await time.increase(31);
    await tower.settleChannel(
      id,
      { participant: f.alice.address, transferredAmount: E("1"), lockedAmount: E("6"), locksRoot: root },
      { participant: f.bob.address, transferredAmount: 0n, lockedAmount: 0n, locksRoot: ethers.ZeroHash },
    );
    expect(await bob.getLockedBalance(id, f.alice.address)).to.deep.equal({
      lockedAmount: E("6"),
      locksRoot: root,
    });
    expect(await bob.getLockedBalance(id, f.bob.address)).to.deep.equal({
      lockedAmount: 0n,
      locksRoot: ethers.ZeroHash,
    });

    const first = await bob.registerSecret(s1);
    expect(first).to.deep.include({ secretHash: ethers.sha256(s1), registered: true });
    expect(await tower.secretRevealedAt(ethers.sha256(s1))).to.equal(BigInt(await tower.latestTimestamp()));
    expect((await bob.registerSecret(s1)).registered).to.equal(false);
    const batch = await bob.registerSecretBatch([s1, s2]);
    expect(batch).to.deep.include({ allRegistered: false, registeredSecretHashes: [ethers.sha256(s2)] });
    expect(await tower.secretRevealedAt(ethers.sha256(s3))).to.equal(0n);

    const bobBefore = await tower.tokenBalance(token, f.bob.address);
    const aliceBefore = await tower.tokenBalance(token, f.alice.address);
    const unlocked = await tower.unlock(id, f.alice.address, f.bob.address, locks);
    expect(unlocked).to.deep.include({ unlockedAmount: E("3"), returnedAmount: E("3") });
    expect((await tower.tokenBalance(token, f.bob.address)) - bobBefore).to.equal(E("3"));
    expect((await tower.tokenBalance(token, f.alice.address)) - aliceBefore).to.equal(E("3"));

    const again = await tower.unlock(id, f.alice.address, f.bob.address, locks).catch((e: unknown) => e);
    expect(again).to.be.instanceOf(HubCallError);
    expect((again as HubCallError).errorName).to.equal("ChannelHubNothingToUnlock");
    const badSecret = await bob.registerSecret("0x1234").catch((e: unknown) => e);
    expect(badSecret).to.be.instanceOf(HubCallError);
    expect((badSecret as Error).message).to.match(/^SecretRegistry\.registerSecret failed/);
    // The queue and the nonce manager still work after the failures.
    expect((await bob.registerSecret(s3)).registered).to.equal(true);
  });

  describe("setTotalDeposit: nothing approved for a deposit that would fail", function () {
    const allowanceOf = (owner: string) =>
      TestToken__factory.connect(token, f.deployer).allowance(owner, f.deployment.bridge);
    const nonceOf = (owner: string) => f.deployer.provider!.getTransactionCount(owner, "latest");
    const failure = (p: Promise<unknown>) =>
      p.then(
        () => expect.fail("the deposit succeeded"),
        (e: unknown) => e as Error,
      );

    it("a deposit above the wallet's balance is INSUFFICIENT_FUNDS: no approve, no transaction", async function () {
      const { channelId: id } = await alice.openChannel(f.bob.address, token, 30);
      const nonceBefore = await nonceOf(f.alice.address);
      // Above the wallet (1000 tokens), and the largest uint256 (the old client approved almost 2^256).
      for (const total of [E("1000.000000000000000001"), ethers.MaxUint256]) {
        const err = await failure(alice.setTotalDeposit(id, total));
        expect(isQrwpError(err) && err.code, err.message).to.equal("INSUFFICIENT_FUNDS");
        expect((err as { details?: Record<string, unknown> }).details?.field).to.equal("totalDeposit");
      }
      expect(await allowanceOf(f.alice.address)).to.equal(0n);
      expect(await nonceOf(f.alice.address)).to.equal(nonceBefore);
      expect((await alice.getParticipant(id, f.alice.address)).totalDeposit).to.equal(0n);
    });

    it("a deposit the hub refuses (not increasing, channel closed, above uint256) sends nothing", async function () {
      const { channelId: id } = await alice.openChannel(f.bob.address, token, 30);
      await alice.setTotalDeposit(id, E("5"));
      const nonceBefore = await nonceOf(f.alice.address);
      const same = await failure(alice.setTotalDeposit(id, E("5")));
      expect(same).to.be.instanceOf(HubCallError);
      expect((same as HubCallError).errorName).to.equal("ChannelHubDepositNotIncreasing");
      const tooBig = await failure(alice.setTotalDeposit(id, ethers.MaxUint256 + 1n));
      expect(isQrwpError(tooBig) && tooBig.code).to.equal("INVALID_ARGUMENT");
      expect(await nonceOf(f.alice.address)).to.equal(nonceBefore);
      expect(await allowanceOf(f.alice.address)).to.equal(0n);

      await bob.closeChannel(id, f.alice.address, null);
      const closedNonce = await nonceOf(f.alice.address);
      const closed = await failure(alice.setTotalDeposit(id, E("6")));
      expect((closed as HubCallError).errorName).to.equal("ChannelHubInvalidChannelState");
      expect(await nonceOf(f.alice.address)).to.equal(closedNonce);
      expect(await allowanceOf(f.alice.address)).to.equal(0n);
    });

    it("a good deposit approves exactly the increase, and nothing when the allowance already covers it", async function () {
      const { channelId: id } = await alice.openChannel(f.bob.address, token, 30);
      const erc20 = TestToken__factory.connect(token, f.deployer);
      const approvedValue = async (txHash: string) => {
        const receipt = await f.deployer.provider!.getTransactionReceipt(txHash);
        const approval = receipt!.logs
          .map((l) => erc20.interface.parseLog(l))
          .find((l) => l?.name === "Approval");
        return approval?.args[2] as bigint;
      };
      const first = await alice.setTotalDeposit(id, E("7"));
      expect(first.approve).to.not.equal(null);
      expect(await approvedValue(first.approve!.txHash)).to.equal(E("7"));
      const second = await alice.setTotalDeposit(id, E("10"));
      expect(await approvedValue(second.approve!.txHash)).to.equal(E("3"));
      expect(await allowanceOf(f.alice.address)).to.equal(0n); // each approve was spent exactly
      // An allowance that already covers the increase: no approve.
      await (await TestToken__factory.connect(token, f.alice).approve(f.deployment.bridge, E("2"))).wait();
      const aliceAgain = new HubClient(f.alice, f.deployment); // a fresh nonce manager after that approve
      const third = await aliceAgain.setTotalDeposit(id, E("12"));
      expect(third.approve).to.equal(null);
      expect((await aliceAgain.getParticipant(id, f.alice.address)).totalDeposit).to.equal(E("12"));
    });
  });
});
