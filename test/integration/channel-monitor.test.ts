/**
 * The node's channel monitor and its one TxSender over every `--rpc` URL, against a `hardhat node` chain
 * with `qrwp node start` processes (real keys, real SQLite, libp2p on 127.0.0.1).
 *
 * bob, carol and dave are the nodes under test (one per scenario): their FIRST `--rpc` URL is a server
 * that accepts requests and never answers (`--rpc-timeout-ms 1000`), so every read and transaction must
 * fail over to the chain's URL. alice pays one of them over a channel only alice funded and then closes
 * unilaterally: her close submits the partner's (empty) proof and leaves her own off-chain (the hub's stored
 * nonce for alice is 0), the breach a contest repairs with alice's latest proof the partner holds.
 * Scenarios: the breach while bob is online (bob contests, the channel settles to the wei); a
 * reorganisation that removes alice's close (carol's channel is open again and usable; the close re-added
 * later is contested again); dave stopped during the close and restarted inside the settle window (its
 * cursor resumes, it contests).
 */
import { createServer, type Server } from "node:http";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Wallet, ZeroHash, parseUnits } from "ethers";
import { Devnet, freePort, type NodeProcess } from "../../devnet/harness.js";
import { waitUntil } from "./api-errors.js";
import { loadIdentity } from "../../host/keystore.js";
import { ChannelHub__factory } from "../../typechain-types/index.js";

interface ChannelJson {
  channelId: string;
  state: string;
}

const unit = parseUnits("1", 18);
const deposit = 100n * unit;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const until = waitUntil;

describe("integration: channel monitor (one TxSender over every --rpc URL)", function () {
  this.timeout(600_000);
  let devnet: Devnet;
  let alice: NodeProcess;
  let bob: NodeProcess;
  let carol: NodeProcess;
  let dave: NodeProcess;
  let stalled: Server;
  let stalledUrl: string;
  let stopMining: (() => void) | undefined;
  let token: string;

  const hub = () => ChannelHub__factory.connect(devnet.deployment.hub, devnet.chain.provider);
  const startAlice = () => devnet.startNode("alice", { chainPollMs: 500 });
  /** A node whose first --rpc URL stalls. */
  const startVictim = (name: string) =>
    devnet.startNode(name, {
      chainPollMs: 500,
      rpcUrls: [stalledUrl, devnet.chain.rpcUrl],
      extraArgs: ["--rpc-timeout-ms", "1000"],
    });

  before(async () => {
    // An endpoint that accepts requests and never answers: the first URL of bob, carol and dave.
    stalled = createServer(() => undefined);
    const port = await freePort();
    await new Promise<void>((r) => stalled.listen(port, "127.0.0.1", r));
    stalledUrl = `http://127.0.0.1:${port}`;
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-monitor-")));
    token = devnet.token;
    await devnet.initNode("alice", 1000n * unit);
    for (const name of ["bob", "carol", "dave"]) await devnet.initNode(name, 0n);
    alice = await startAlice();
    [bob, carol, dave] = (await Promise.all(["bob", "carol", "dave"].map((n) => startVictim(n)))) as [
      NodeProcess,
      NodeProcess,
      NodeProcess,
    ];
    // A chain that keeps producing blocks (hardhat mines only on transactions otherwise): time passes.
    stopMining = devnet.chain.mineEvery(1000);
  });

  after(async () => {
    stopMining?.();
    await devnet?.stop();
    stalled?.closeAllConnections();
    stalled?.close();
  });

  /** alice opens a channel to `to` (only alice deposits) and pays it `amounts`; returns the channel id. */
  async function openAndPay(
    to: NodeProcess,
    amounts: bigint[],
    settleTimeoutSeconds: number,
  ): Promise<bigint> {
    const view = await alice.api.call<{ channelId: string }>("POST", "/v1/channels", {
      partner: to.address,
      partnerMultiaddr: to.multiaddr,
      token,
      deposit: deposit.toString(),
      settleTimeoutSeconds,
    });
    for (const amount of amounts) await pay(to, amount);
    return BigInt(view.channelId);
  }

  async function pay(to: NodeProcess, amount: bigint): Promise<void> {
    const p = await alice.api.call<{ status: string }>("POST", "/v1/payments", {
      target: to.address,
      token,
      amount: amount.toString(),
    });
    expect(p.status).to.equal("completed");
  }

  const stateAt = async (node: NodeProcess, channelId: bigint) =>
    (await node.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`)).state;
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

  /** The channel settles; `v` got `paid`, alice the rest of her deposit; `v`'s node says settled. */
  async function settledPaying(
    v: NodeProcess,
    channelId: bigint,
    victimBefore: bigint,
    aliceBefore: bigint,
    paid: bigint,
  ) {
    await until(
      "the channel to settle",
      async () => (await hub().getChannel(channelId)).state === 3n,
      120_000,
    );
    expect(await devnet.tokenBalance(v.address)).to.equal(victimBefore + paid);
    expect(await devnet.tokenBalance(alice.address)).to.equal(aliceBefore + deposit - paid);
    await until(`${v.name}'s view to be settled`, async () => (await stateAt(v, channelId)) === "settled");
  }

  it("contests a breach while its first RPC URL stalls; the channel settles with the victim's balance to the wei", async () => {
    const channelId = await openAndPay(bob, [5n * unit, 2n * unit], 15);
    const bobBefore = await devnet.tokenBalance(bob.address);
    const aliceBefore = await devnet.tokenBalance(alice.address);
    await alice.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: false });
    // bob's node put alice's latest proof (nonce 2) on-chain, through its second URL.
    expect(await contestedBy(channelId, 2n)).to.equal(bob.address);
    await settledPaying(bob, channelId, bobBefore, aliceBefore, 7n * unit);
  });

  it("after a reorganisation removes alice's close, carol's channel is open and usable; the close re-added is contested again", async () => {
    const channelId = await openAndPay(carol, [3n * unit, unit], 15);
    const carolBefore = await devnet.tokenBalance(carol.address);
    const aliceBefore = await devnet.tokenBalance(alice.address);
    // alice's node is offline (it would close again by itself when it saw its own close removed); her key
    // closes the channel directly, with carol's empty proof.
    await alice.stop();
    stopMining?.();
    const snapshot = (await devnet.chain.provider.send("evm_snapshot", [])) as string;
    const aliceKey = loadIdentity(join(devnet.dir, "alice", "keys.json")).keys.secp256k1PrivateKey;
    const aliceWallet = new Wallet(`0x${Buffer.from(aliceKey).toString("hex")}`, devnet.chain.provider);
    const close = await ChannelHub__factory.connect(devnet.deployment.hub, aliceWallet).closeChannel(
      channelId,
      carol.address,
      0n,
      ZeroHash,
      "0x",
    );
    await close.wait();
    await until("carol to see the close", async () =>
      (await stateAt(carol, channelId)) === "closed" ? true : undefined,
    );
    expect(await contestedBy(channelId, 2n)).to.equal(carol.address);

    expect(await devnet.chain.provider.send("evm_revert", [snapshot])).to.equal(true);
    for (let i = 0; i < 3; i++) await devnet.chain.provider.send("evm_mine", []);
    stopMining = devnet.chain.mineEvery(1000);
    expect((await hub().getChannel(channelId)).state).to.equal(1n);
    expect(await storedNonce(channelId, alice.address)).to.equal(0n);
    await until("carol's channel to be opened again", async () =>
      (await stateAt(carol, channelId)) === "opened" ? true : undefined,
    );

    // Still usable: alice comes back and pays again.
    alice = await startAlice();
    await until("alice's node to reach carol", async () => {
      await pay(carol, unit);
      return true;
    });
    // alice closes again (through her node): carol contests with her latest proof, nonce 3.
    await alice.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: false });
    expect(await contestedBy(channelId, 3n)).to.equal(carol.address);
    await settledPaying(carol, channelId, carolBefore, aliceBefore, 5n * unit);
  });

  it("contests after a restart inside the settle window: the cursor resumes and no close is missed", async () => {
    const channelId = await openAndPay(dave, [4n * unit, unit, unit], 30);
    await until("dave to hold alice's proof 3", async () => {
      const view = await dave.api.call<{ partnerBalance: string }>("GET", `/v1/channels/${channelId}`);
      return view.partnerBalance === (deposit - 6n * unit).toString() ? true : undefined;
    });
    const daveBefore = await devnet.tokenBalance(dave.address);
    const aliceBefore = await devnet.tokenBalance(alice.address);
    await dave.stop();
    await alice.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: false });
    expect(await storedNonce(channelId, alice.address)).to.equal(0n);
    await sleep(2000); // a few blocks pass while dave is down
    dave = await startVictim("dave");
    expect(await contestedBy(channelId, 3n)).to.equal(dave.address);
    await settledPaying(dave, channelId, daveBefore, aliceBefore, 6n * unit);
  });
});
