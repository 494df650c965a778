/**
 * The node's channel monitor and its one TxSender over every `--rpc` URL, against a `hardhat node` chain
 * with `qrwp node start` processes (real keys, real SQLite, libp2p on 127.0.0.1).
 *
 * bob is the node under test: its FIRST `--rpc` URL is a TCP server that accepts requests and never
 * answers (`--rpc-timeout-ms 1000`), so every read and transaction of bob must fail over to the chain's URL.
 * alice pays bob over a channel only alice funded and then closes unilaterally: her close submits bob's
 * (empty) proof and leaves her own off-chain (the hub's stored nonce for alice is 0), the breach a contest
 * repairs with alice's latest proof bob holds. Scenarios: the breach while bob is online (bob contests, the
 * channel settles to the wei); a reorganisation that removes alice's close (bob's channel is open again and
 * usable; the close re-added later is contested again); bob stopped during the close and restarted inside
 * the settle window (its cursor resumes, it contests).
 */
import { createServer, type Server } from "node:http";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Wallet, ZeroHash, parseUnits } from "ethers";
import { Devnet, freePort, type NodeProcess } from "../../devnet/harness.js";
import { loadIdentity } from "../../host/keystore.js";
import { ChannelHub__factory } from "../../typechain-types/index.js";

interface ChannelJson {
  channelId: string;
  state: string;
}

const unit = parseUnits("1", 18);
const deposit = 100n * unit;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

describe("integration: channel monitor (one TxSender over every --rpc URL)", function () {
  this.timeout(600_000);
  let devnet: Devnet;
  let alice: NodeProcess;
  let bob: NodeProcess;
  let stalled: Server;
  let stalledUrl: string;
  let stopMining: (() => void) | undefined;
  let token: string;

  const hub = () => ChannelHub__factory.connect(devnet.deployment.hub, devnet.chain.provider);
  const startAlice = () => devnet.startNode("alice", { chainPollMs: 500 });
  const startBob = () =>
    devnet.startNode("bob", {
      chainPollMs: 500,
      rpcUrls: [stalledUrl, devnet.chain.rpcUrl],
      extraArgs: ["--rpc-timeout-ms", "1000"],
    });

  before(async () => {
    // An endpoint that accepts requests and never answers: bob's first URL.
    stalled = createServer(() => undefined);
    const port = await freePort();
    await new Promise<void>((r) => stalled.listen(port, "127.0.0.1", r));
    stalledUrl = `http://127.0.0.1:${port}`;
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-monitor-")));
    token = devnet.token;
    await devnet.initNode("alice", 1000n * unit);
    await devnet.initNode("bob", 0n);
    alice = await startAlice();
    bob = await startBob();
    // A chain that keeps producing blocks (hardhat mines only on transactions otherwise): time passes.
    stopMining = devnet.chain.mineEvery(1000);
  });

  after(async () => {
    stopMining?.();
    await devnet?.stop();
    stalled?.closeAllConnections();
    stalled?.close();
  });

  /** alice opens a channel to bob (only alice deposits) and pays it `amounts`; returns the channel id. */
  async function openAndPay(amounts: bigint[], settleTimeoutSeconds: number): Promise<bigint> {
    const view = await alice.api.call<{ channelId: string }>("POST", "/v1/channels", {
      partner: bob.address,
      partnerMultiaddr: bob.multiaddr,
      token,
      deposit: deposit.toString(),
      settleTimeoutSeconds,
    });
    for (const amount of amounts) await pay(amount);
    return BigInt(view.channelId);
  }

  async function pay(amount: bigint): Promise<void> {
    const p = await alice.api.call<{ status: string }>("POST", "/v1/payments", {
      target: bob.address,
      token,
      amount: amount.toString(),
    });
    expect(p.status).to.equal("completed");
  }

  const bobState = async (channelId: bigint) =>
    (await bob.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`)).state;
  const storedNonce = async (channelId: bigint, who: string) =>
    (await hub().getParticipant(channelId, who)).nonce;

  /** Waits until the hub stores `nonce` for alice (a contest), and returns who sent it. */
  async function contestedBy(channelId: bigint, nonce: bigint): Promise<string> {
    await until(`the hub to store alice's nonce ${nonce}`, async () =>
      (await storedNonce(channelId, alice.address)) === nonce ? true : undefined,
    );
    const h = hub();
    const logs = await h.queryFilter(h.filters.NonClosingBalanceProofUpdated(channelId));
    const last = logs[logs.length - 1];
    if (!last) throw new Error("no NonClosingBalanceProofUpdated log");
    const tx = await devnet.chain.provider.getTransaction(last.transactionHash);
    return tx!.from;
  }

  async function settledPaying(channelId: bigint, bobBefore: bigint, aliceBefore: bigint, paid: bigint) {
    await until(
      "the channel to settle",
      async () => (await hub().getChannel(channelId)).state === 3n,
      120_000,
    );
    expect(await devnet.tokenBalance(bob.address)).to.equal(bobBefore + paid);
    expect(await devnet.tokenBalance(alice.address)).to.equal(aliceBefore + deposit - paid);
    await until("bob's view to be settled", async () => (await bobState(channelId)) === "settled");
  }

  it("contests a breach while its first RPC URL stalls; the channel settles with bob's balance to the wei", async () => {
    const channelId = await openAndPay([5n * unit, 2n * unit], 15);
    const bobBefore = await devnet.tokenBalance(bob.address);
    const aliceBefore = await devnet.tokenBalance(alice.address);
    await alice.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: false });
    // bob's node put alice's latest proof (nonce 2) on-chain, through its second URL.
    expect(await contestedBy(channelId, 2n)).to.equal(bob.address);
    await settledPaying(channelId, bobBefore, aliceBefore, 7n * unit);
  });

  it("after a reorganisation removes alice's close, bob's channel is open and usable; the close re-added is contested again", async () => {
    const channelId = await openAndPay([3n * unit, unit], 15);
    const bobBefore = await devnet.tokenBalance(bob.address);
    const aliceBefore = await devnet.tokenBalance(alice.address);
    // alice's node is offline (it would close again by itself when it saw its own close removed); her key
    // closes the channel directly, with bob's empty proof.
    await alice.stop();
    stopMining?.();
    const snapshot = (await devnet.chain.provider.send("evm_snapshot", [])) as string;
    const aliceKey = loadIdentity(join(devnet.dir, "alice", "keys.json")).keys.secp256k1PrivateKey;
    const aliceWallet = new Wallet(`0x${Buffer.from(aliceKey).toString("hex")}`, devnet.chain.provider);
    const close = await ChannelHub__factory.connect(devnet.deployment.hub, aliceWallet).closeChannel(
      channelId,
      bob.address,
      0n,
      ZeroHash,
      "0x",
    );
    await close.wait();
    await until("bob to see the close", async () =>
      (await bobState(channelId)) === "closed" ? true : undefined,
    );
    expect(await contestedBy(channelId, 2n)).to.equal(bob.address);

    expect(await devnet.chain.provider.send("evm_revert", [snapshot])).to.equal(true);
    for (let i = 0; i < 3; i++) await devnet.chain.provider.send("evm_mine", []);
    stopMining = devnet.chain.mineEvery(1000);
    expect((await hub().getChannel(channelId)).state).to.equal(1n);
    expect(await storedNonce(channelId, alice.address)).to.equal(0n);
    await until("bob's channel to be opened again", async () =>
      (await bobState(channelId)) === "opened" ? true : undefined,
    );

    // Still usable: alice comes back and pays again.
    alice = await startAlice();
    await until("alice's node to reach bob", async () => {
      await pay(unit);
      return true;
    });
    // alice closes again (through her node): bob contests with her latest proof, nonce 3.
    await alice.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: false });
    expect(await contestedBy(channelId, 3n)).to.equal(bob.address);
    await settledPaying(channelId, bobBefore, aliceBefore, 5n * unit);
  });

  it("contests after a restart inside the settle window: the cursor resumes and no close is missed", async () => {
    const channelId = await openAndPay([4n * unit, unit, unit], 30);
    await until("bob to hold alice's proof 3", async () => {
      const view = await bob.api.call<{ partnerBalance: string }>("GET", `/v1/channels/${channelId}`);
      return view.partnerBalance === (deposit - 6n * unit).toString() ? true : undefined;
    });
    const bobBefore = await devnet.tokenBalance(bob.address);
    const aliceBefore = await devnet.tokenBalance(alice.address);
    await bob.stop();
    await alice.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: false });
    expect(await storedNonce(channelId, alice.address)).to.equal(0n);
    await sleep(2000); // a few blocks pass while bob is down
    bob = await startBob();
    expect(await contestedBy(channelId, 3n)).to.equal(bob.address);
    await settledPaying(channelId, bobBefore, aliceBefore, 6n * unit);
  });
});
