/**
 * ChainEventFollower against a real `hardhat node` child process (devnet harness): every event type in
 * order and once, resume from a persisted block, redelivery after a failed handler, RPC failover (a URL
 * that refuses connections, one that stalls, one on another chain), backoff and stop, confirmation depth,
 * bounded block ranges.
 */
import { expect } from "chai";
import { ethers } from "ethers";
import { createServer, type Server } from "node:http";
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import { pino } from "pino";
import { ChainEventFollower, deployQrwp, HubClient } from "../../chain/index.js";
import type { ChainEvent, ChainEventBatch, ChainEventLogger, Deployment } from "../../chain/index.js";
import { freePort, startLocalChain, type LocalChain } from "../../devnet/harness.js";
import { TestToken__factory } from "../../typechain-types/index.js";
import {
  hubDomain,
  lockFor,
  locksRootOf,
  newSecret,
  signBalanceProof,
  signUpdate,
  signWithdrawBoth,
} from "./helpers.js";

const E = (n: string) => ethers.parseEther(n);

// A pino logger satisfies the follower's logger type (checked by the compiler).
const _pinoFits: ChainEventLogger = pino({ level: "silent" });

/** A logger that keeps every record. */
function captureLogger() {
  const records: { level: string; msg: string; obj: Record<string, unknown> }[] = [];
  const at = (level: string) => (obj: object, msg?: string) =>
    records.push({ level, msg: msg ?? "", obj: obj as Record<string, unknown> });
  const log: ChainEventLogger = {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
  };
  return { log, records };
}

async function waitUntil(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const position = (e: ChainEvent) => [e.blockNumber, e.logIndex] as const;
/** A number that orders events like (blockNumber, logIndex). */
const orderKey = (e: ChainEvent) => e.blockNumber * 1_000_000 + e.logIndex;

describe("chain/ChainEventFollower (hardhat node)", function () {
  this.timeout(120_000);
  let chain: LocalChain;
  let deployment: Deployment;
  let funder: ethers.Signer;
  const servers: (Server | TcpServer)[] = [];
  const sockets: Socket[] = [];
  const followers: ChainEventFollower[] = [];

  before(async function () {
    chain = await startLocalChain();
    funder = await chain.provider.getSigner(0);
    deployment = await deployQrwp(funder, { testToken: true });
  });

  afterEach(async function () {
    await Promise.all(followers.splice(0).map((f) => f.stop()));
  });

  after(async function () {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    await chain?.stop();
  });

  const head = async () => Number(await chain.provider.send("eth_blockNumber", []));
  const mine = async (blocks: number) => chain.provider.send("hardhat_mine", [ethers.toQuantity(blocks)]);

  /** A follower that records its batches; stopped after each test. */
  function follow(
    options: Partial<ConstructorParameters<typeof ChainEventFollower>[0]> & { fromBlock: number },
  ) {
    const batches: ChainEventBatch[] = [];
    const follower = new ChainEventFollower({
      rpcUrls: [chain.rpcUrl],
      deployment,
      pollIntervalMs: 50,
      retryMinDelayMs: 20,
      retryMaxDelayMs: 200,
      onBatch: async (batch) => {
        batches.push(batch);
      },
      ...options,
    });
    followers.push(follower);
    const events = () => batches.flatMap((b) => b.events);
    return { follower, batches, events };
  }

  async function fundedWallet(): Promise<ethers.Wallet> {
    const wallet = new ethers.Wallet(ethers.hexlify(ethers.randomBytes(32)), chain.provider);
    await (await funder.sendTransaction({ to: wallet.address, value: E("10") })).wait();
    const token = TestToken__factory.connect(deployment.token ?? "", funder);
    await (await token.mint(wallet.address, E("100"))).wait();
    return wallet;
  }

  /** open, two deposits, a withdraw, close with locks, contest, secret, settle, unlock: each event type. */
  async function lifecycle() {
    const [alice, bob, carol] = [await fundedWallet(), await fundedWallet(), await fundedWallet()];
    const [a, b, t] = [alice, bob, carol].map((w) => new HubClient(w, deployment)) as [
      HubClient,
      HubClient,
      HubClient,
    ];
    const domain = hubDomain(deployment.hub, BigInt(deployment.chainId));
    const token = deployment.token ?? "";
    const opened = await a.openChannel(bob.address, token, 10);
    const id = opened.channelId;
    const depositA = await a.setTotalDeposit(id, E("10"));
    const depositB = await b.setTotalDeposit(id, E("5"));
    const t0 = BigInt(await a.latestTimestamp());
    const w = await signWithdrawBoth(alice, bob, domain, id, E("2"), t0 + 1000n);
    const withdraw = await t.setTotalWithdraw(
      id,
      w.participant,
      w.totalWithdraw,
      w.expiryTimestamp,
      w.participantSignature,
      w.partnerSignature,
    );
    const secret = newSecret();
    const locks = [lockFor(E("1"), t0 + 1000n, secret), lockFor(E("2"), t0 + 1000n, newSecret())];
    const locksRoot = locksRootOf(locks);
    const a1 = await signBalanceProof(alice, domain, id, 1n, E("1"), E("3"), locksRoot);
    const b1 = await signBalanceProof(bob, domain, id, 1n, E("2"));
    const close = await b.closeChannel(id, alice.address, a1);
    const contest = await t.updateNonClosingBalanceProof(
      id,
      bob.address,
      alice.address,
      b1,
      await signUpdate(alice, domain, id, b1),
    );
    const reveal = await b.registerSecret(secret);
    await chain.provider.send("evm_increaseTime", [11]);
    await mine(1);
    const settle = await t.settleChannel(
      id,
      { participant: alice.address, transferredAmount: E("1"), lockedAmount: E("3"), locksRoot },
      { participant: bob.address, transferredAmount: E("2"), lockedAmount: 0n, locksRoot: ethers.ZeroHash },
    );
    const unlock = await t.unlock(id, alice.address, bob.address, locks);
    return {
      id,
      alice: alice.address,
      bob: bob.address,
      token,
      secret,
      locksRoot,
      a1,
      b1,
      txs: [opened, depositA, depositB, withdraw, close, contest, reveal, settle, unlock].map(
        (r) => r.txHash,
      ),
    };
  }

  it("delivers every event type once, in (block, logIndex) order, decoded, in contiguous ranges", async function () {
    const { follower, batches, events } = follow({ fromBlock: deployment.deployBlock });
    follower.start();
    expect(follower.running).to.equal(true);
    const run = await lifecycle();
    await waitUntil("ChannelUnlocked", () => events().some((e) => e.type === "ChannelUnlocked"));
    const got = events();

    expect(got.map((e) => e.type)).to.deep.equal([
      "ChannelOpened",
      "ChannelNewDeposit",
      "ChannelNewDeposit",
      "ChannelWithdraw",
      "ChannelClosed",
      "NonClosingBalanceProofUpdated",
      "SecretRevealed",
      "ChannelSettled",
      "ChannelUnlocked",
    ]);
    expect(got.map((e) => e.txHash)).to.deep.equal(run.txs);
    for (let i = 1; i < got.length; i++) {
      const [prev, cur] = [got[i - 1] as ChainEvent, got[i] as ChainEvent];
      expect(orderKey(cur)).to.be.greaterThan(orderKey(prev));
    }
    // Ranges start at the deploy block, follow each other without gaps or overlaps.
    expect(batches[0]?.fromBlock).to.equal(deployment.deployBlock);
    for (let i = 1; i < batches.length; i++) {
      expect(batches[i]?.fromBlock).to.equal((batches[i - 1]?.toBlock ?? 0) + 1);
    }
    for (const batch of batches) {
      for (const e of batch.events) expect(e.blockNumber).to.be.within(batch.fromBlock, batch.toBlock);
    }

    const [opened, depositA, depositB, withdrew, closed, updated, revealed, settled, unlocked] = got;
    const meta = (e: ChainEvent | undefined) => {
      const { blockNumber: _b, blockHash: _h, logIndex: _l, txHash: _t, ...rest } = e as ChainEvent;
      return rest;
    };
    expect(meta(opened)).to.deep.equal({
      type: "ChannelOpened",
      channelId: run.id,
      participant1: run.alice,
      participant2: run.bob,
      token: run.token,
      settleTimeoutSeconds: 10n,
    });
    // Checksummed addresses, as ethers.getAddress returns them.
    expect((opened as { participant1: string }).participant1).to.equal(
      ethers.getAddress(run.alice.toLowerCase()),
    );
    expect(meta(depositA)).to.deep.equal({
      type: "ChannelNewDeposit",
      channelId: run.id,
      participant: run.alice,
      totalDeposit: E("10"),
    });
    expect(meta(depositB)).to.deep.include({ participant: run.bob, totalDeposit: E("5") });
    expect(meta(withdrew)).to.deep.equal({
      type: "ChannelWithdraw",
      channelId: run.id,
      participant: run.alice,
      totalWithdraw: E("2"),
    });
    expect(meta(closed)).to.deep.equal({
      type: "ChannelClosed",
      channelId: run.id,
      closingParticipant: run.bob,
      nonce: 1n,
      balanceHash: run.a1.balanceHash,
    });
    expect(meta(updated)).to.deep.equal({
      type: "NonClosingBalanceProofUpdated",
      channelId: run.id,
      closingParticipant: run.bob,
      nonce: 1n,
      balanceHash: run.b1.balanceHash,
    });
    expect(meta(revealed)).to.deep.equal({
      type: "SecretRevealed",
      secretHash: ethers.sha256(run.secret),
      secret: run.secret,
    });
    // alice: 10 - 2 withdrawn + 2 - 1 - 3 locked = 6; bob: 5 + 1 - 2 = 4 (13 left, 3 kept for unlock).
    expect(meta(settled)).to.deep.equal({
      type: "ChannelSettled",
      channelId: run.id,
      participant1Amount: E("6"),
      participant2Amount: E("4"),
      cooperative: false,
    });
    expect(meta(unlocked)).to.deep.equal({
      type: "ChannelUnlocked",
      channelId: run.id,
      sender: run.alice,
      receiver: run.bob,
      locksRoot: run.locksRoot,
      unlockedAmount: E("1"),
      returnedAmount: E("2"),
    });
    const block = await chain.provider.getBlock(unlocked?.blockNumber ?? 0);
    expect(unlocked?.blockHash).to.equal(block?.hash);

    await follower.stop();
    expect(follower.running).to.equal(false);
    const stoppedAt = follower.lastProcessedBlock;
    expect(stoppedAt).to.be.at.least(unlocked?.blockNumber ?? Infinity);

    // A second follower from the deploy block sees exactly the same events (catchUp, no background loop).
    const replay = follow({ fromBlock: deployment.deployBlock, maxBlockRange: 3 });
    expect(await replay.follower.catchUp()).to.equal(await head());
    expect(replay.events()).to.deep.equal(got);
    for (const b of replay.batches) expect(b.toBlock - b.fromBlock + 1).to.be.within(1, 3);
  });

  it("resumes after the persisted block without redelivery; a failed handler gets the same range again", async function () {
    const first = follow({ fromBlock: deployment.deployBlock });
    const persisted = await first.follower.catchUp();
    const before = first.events().length;

    const a = new HubClient(await fundedWallet(), deployment);
    const opened = await a.openChannel(ethers.Wallet.createRandom().address, deployment.token ?? "", 10);
    const deposit = await a.setTotalDeposit(opened.channelId, E("1"));

    let failuresLeft = 1;
    const delivered: ChainEventBatch[] = [];
    const attempts: ChainEventBatch[] = [];
    const { log, records } = captureLogger();
    const resumed = follow({
      fromBlock: persisted + 1,
      log,
      onBatch: async (batch) => {
        attempts.push(batch);
        if (failuresLeft-- > 0) throw new Error("disk full");
        delivered.push(batch);
      },
    });
    // catchUp() surfaces the handler's error and does not move the cursor.
    const error = await resumed.follower.catchUp().catch((e: unknown) => e as Error);
    expect((error as Error).message).to.contain("disk full");
    expect(resumed.follower.lastProcessedBlock).to.equal(persisted);
    // The background loop retries the same range.
    resumed.follower.start();
    await waitUntil("two events", () => delivered.flatMap((b) => b.events).length >= 2);
    const events = delivered.flatMap((b) => b.events);
    expect(events.map((e) => [e.type, e.txHash])).to.deep.equal([
      ["ChannelOpened", opened.txHash],
      ["ChannelNewDeposit", deposit.txHash],
    ]);
    expect(attempts[0]?.fromBlock).to.equal(persisted + 1);
    expect(delivered[0]?.fromBlock).to.equal(persisted + 1);
    expect(attempts[1]).to.deep.equal(attempts[0]);
    // Nothing the first follower had already handled comes again.
    expect(before).to.be.greaterThan(0);
    await first.follower.catchUp();
    expect(first.events().slice(before).map(position)).to.deep.equal(events.map(position));
    expect(records.filter((r) => r.level === "info").map((r) => r.msg)).to.include(
      "chain event follower started",
    );
  });

  it("fails over past a refused, a stalled and a wrong-chain URL; backs off when all fail; stops cleanly", async function () {
    // Refuses connections: a free port nobody listens on.
    const refused = `http://127.0.0.1:${await freePort()}`;
    // Accepts connections and never answers.
    const stall = createTcpServer((socket) => sockets.push(socket));
    servers.push(stall);
    await new Promise<void>((r) => stall.listen(0, "127.0.0.1", () => r()));
    const stalled = `http://127.0.0.1:${(stall.address() as { port: number }).port}`;
    // Answers as another chain (chain id 1).
    const other = createServer((req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => (body += d.toString()));
      req.on("end", () => {
        const { id } = JSON.parse(body) as { id: number };
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ jsonrpc: "2.0", id, result: "0x1" }));
      });
    });
    servers.push(other);
    await new Promise<void>((r) => other.listen(0, "127.0.0.1", () => r()));
    const otherChain = `http://127.0.0.1:${(other.address() as { port: number }).port}`;

    const { log, records } = captureLogger();
    const from = (await head()) + 1;
    const a = new HubClient(await fundedWallet(), deployment);
    const opened = await a.openChannel(ethers.Wallet.createRandom().address, ethers.ZeroAddress, 10);
    const { follower, events } = follow({
      fromBlock: from,
      rpcUrls: [refused, stalled, otherChain, chain.rpcUrl],
      requestTimeoutMs: 300,
      log,
    });
    const started = Date.now();
    await follower.catchUp();
    expect(Date.now() - started).to.be.below(5_000);
    expect(events().map((e) => e.txHash)).to.include(opened.txHash);
    const warnings = records.filter((r) => r.level === "warn").map((r) => String(r.obj.err));
    expect(warnings.join("\n")).to.match(/fetch failed|ECONNREFUSED/);
    expect(warnings.join("\n")).to.contain("eth_chainId timed out after 300 ms");
    expect(warnings.join("\n")).to.contain("chain id 1, expected 31337");
    const switched = records.filter((r) => r.msg === "chain event follower switched RPC URL");
    expect(switched.map((r) => r.obj.rpc)).to.deep.equal([chain.rpcUrl]);
    // Later calls stay on the working URL: no new warnings.
    const warned = warnings.length;
    await mine(1);
    await follower.catchUp();
    expect(records.filter((r) => r.level === "warn").length).to.equal(warned);

    // Every URL fails: the loop retries with a doubling, capped delay and stop() ends it.
    const down = captureLogger();
    const dead = follow({
      fromBlock: from,
      rpcUrls: [refused],
      log: down.log,
      retryMinDelayMs: 10,
      retryMaxDelayMs: 40,
    });
    dead.follower.start();
    await waitUntil(
      "five failed polls",
      () => down.records.filter((r) => r.msg.includes("retrying")).length >= 5,
    );
    const delays = down.records.filter((r) => r.msg.includes("retrying")).map((r) => r.obj.delayMs);
    expect(delays.slice(0, 5)).to.deep.equal([10, 20, 40, 40, 40]);
    const stopping = Date.now();
    await dead.follower.stop();
    expect(Date.now() - stopping).to.be.below(1_000);
    expect(dead.follower.running).to.equal(false);
    expect(dead.batches).to.deep.equal([]);
    expect(() => dead.follower.start()).to.throw(/already started or stopped/);
  });

  it("waits for the confirmation depth and keeps ranges within maxBlockRange", async function () {
    const from = (await head()) + 1;
    const { follower, events, batches } = follow({ fromBlock: from, confirmations: 3, maxBlockRange: 4 });
    const a = new HubClient(await fundedWallet(), deployment);
    const opened = await a.openChannel(ethers.Wallet.createRandom().address, ethers.ZeroAddress, 10);
    const openedBlock = (await chain.provider.getTransactionReceipt(opened.txHash))?.blockNumber ?? 0;
    const seen = () =>
      events()
        .filter((e) => e.txHash === opened.txHash)
        .map((e) => e.type);

    expect(await follower.catchUp()).to.equal((await head()) - 3);
    expect(seen()).to.deep.equal([]);
    await mine(2);
    expect(await follower.catchUp()).to.equal(openedBlock - 1);
    expect(seen()).to.deep.equal([]);
    await mine(1);
    expect(await follower.catchUp()).to.equal(openedBlock);
    expect(seen()).to.deep.equal(["ChannelOpened"]);

    await mine(11);
    expect(await follower.catchUp()).to.equal((await head()) - 3);
    expect(batches[0]?.fromBlock).to.equal(from);
    for (const [i, b] of batches.entries()) {
      expect(b.toBlock - b.fromBlock + 1).to.be.within(1, 4);
      if (i > 0) expect(b.fromBlock).to.equal((batches[i - 1]?.toBlock ?? 0) + 1);
    }
    expect(seen()).to.deep.equal(["ChannelOpened"]);
  });
});
