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
});
