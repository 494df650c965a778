/**
 * Withdraw from an open channel between two `qrwp node start` processes over libp2p against a `hardhat node`
 * (ChannelHub.setTotalWithdraw through the Bridge): the happy path with both sides' capacity before and after
 * it is mined; the partner's refusals of a rogue WithdrawRequest (another channel, another chain, an expired
 * or too distant expiry, a replayed total, above the balance, a second one in flight) and the release of a
 * co-signed withdraw that expired unmined; a withdraw above the balance over HTTP; a withdraw racing a close.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { parseUnits } from "ethers";
import { createLibp2p, type Libp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { pino } from "pino";
import { Devnet, type NodeProcess } from "../../devnet/harness.js";
import { expectApiError } from "./api-errors.js";
import { loadIdentity } from "../../host/keystore.js";
import { SessionTransport } from "../../host/session-transport.js";
import { signWithdraw, type ChannelMessage, type NodeKeys, type WithdrawArgs } from "../../protocol/index.js";

interface ChannelJson {
  channelId: string;
  state: string;
  ourBalance: string;
  partnerBalance: string;
  ourDeposit: string;
  ourWithdraw: string;
  partnerWithdraw: string;
  pendingWithdraw: { ours: string | null; partner: string | null };
}
const unit = parseUnits("1", 18);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("integration: withdraw from an open channel", function () {
  this.timeout(300_000);
  let devnet: Devnet;
  let alice: NodeProcess;
  let bob: NodeProcess;
  let channelId: string;
  let token: string;

  const channelOf = (n: NodeProcess) => n.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`);
  const pay = (from: NodeProcess, to: NodeProcess, amount: bigint) =>
    from.api.call<{ status: string }>("POST", "/v1/payments", {
      target: to.address,
      token,
      amount: amount.toString(),
    });
  async function until<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const v = await fn();
      if (ok(v)) return v;
      if (Date.now() > deadline) expect.fail(`timed out waiting for ${what}`);
      await sleep(200);
    }
  }

  before(async () => {
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-withdraw-")));
    token = devnet.token;
    await devnet.initNode("alice", 1000n * unit);
    await devnet.initNode("bob", 1000n * unit);
    [alice, bob] = await Promise.all([
      devnet.startNode("alice", { chainPollMs: 250 }),
      devnet.startNode("bob", { chainPollMs: 250 }),
    ]);
    const opened = await alice.api.call<ChannelJson>("POST", "/v1/channels", {
      partner: bob.address,
      partnerMultiaddr: bob.multiaddr,
      token,
      deposit: (100n * unit).toString(),
      settleTimeoutSeconds: 600,
    });
    channelId = opened.channelId;
    await until(
      "bob to know the channel",
      () => bob.api.call<{ channels: unknown[] }>("GET", "/v1/channels"),
      (r) => r.channels.length === 1,
    );
  });

  after(async () => {
    await devnet?.stop();
  });

  it("pays out through the hub; both sides' capacity reflects it before and after it is mined; payments go on", async () => {
    expect((await pay(alice, bob, 10n * unit)).status).to.equal("completed");
    const walletBefore = await devnet.tokenBalance(alice.address);
    const view = await alice.api.call<ChannelJson>("POST", `/v1/channels/${channelId}/withdraw`, {
      amount: (30n * unit).toString(),
    });
    expect(view.ourWithdraw).to.equal((30n * unit).toString());
    expect(view.pendingWithdraw.ours).to.equal(null);
    expect(view.ourBalance).to.equal((60n * unit).toString()); // 100 deposited - 10 paid - 30 withdrawn
    expect((await devnet.tokenBalance(alice.address)) - walletBefore).to.equal(30n * unit);
    // bob counted it from the moment he co-signed; once mined (his monitor) it is the channel's total.
    const b = await until(
      "bob to see the mined withdraw",
      () => channelOf(bob),
      (c) => c.partnerWithdraw === (30n * unit).toString(),
    );
    expect(b.pendingWithdraw.partner).to.equal(null);
    expect(b.partnerBalance).to.equal((60n * unit).toString());
    // alice cannot spend what she took out; she can spend the rest, and receive.
    await expectApiError(pay(alice, bob, 61n * unit), 409, "INSUFFICIENT_CAPACITY");
    expect((await pay(alice, bob, 60n * unit)).status).to.equal("completed");
    expect((await pay(bob, alice, 5n * unit)).status).to.equal("completed");
    // bob withdraws part of what he received.
    const bobWallet = await devnet.tokenBalance(bob.address);
    const bv = await bob.api.call<ChannelJson>("POST", `/v1/channels/${channelId}/withdraw`, {
      amount: (50n * unit).toString(),
    });
    expect(bv.ourWithdraw).to.equal((50n * unit).toString());
    expect(bv.ourBalance).to.equal((15n * unit).toString()); // received 70, paid 5, withdrew 50
    expect((await devnet.tokenBalance(bob.address)) - bobWallet).to.equal(50n * unit);
    const a = await until(
      "alice to see bob's mined withdraw",
      () => channelOf(alice),
      (c) => c.partnerWithdraw === (50n * unit).toString() && c.pendingWithdraw.partner === null,
    );
    expect(a.partnerBalance).to.equal((15n * unit).toString());
  });

  it("refuses over HTTP a withdraw above the balance, of zero, or malformed, and changes nothing", async () => {
    const before = await channelOf(alice);
    const e = await expectApiError(
      alice.api.call("POST", `/v1/channels/${channelId}/withdraw`, {
        amount: (BigInt(before.ourBalance) + 1n).toString(),
      }),
      409,
      "INSUFFICIENT_CAPACITY",
    );
    expect(e.body.error.details.field).to.equal("amount");
    await expectApiError(
      alice.api.call("POST", `/v1/channels/${channelId}/withdraw`, { amount: "0" }),
      400,
      "INVALID_ARGUMENT",
    );
    await expectApiError(
      alice.api.call("POST", `/v1/channels/${channelId}/withdraw`, { amount: 5 }),
      400,
      "INVALID_ARGUMENT",
    );
    await expectApiError(
      alice.api.call("POST", `/v1/channels/999/withdraw`, { amount: "1" }),
      404,
      "CHANNEL_NOT_FOUND",
    );
    expect(await channelOf(alice)).to.deep.equal(before);
  });

  describe("a rogue peer with alice's keys asks bob to co-sign", () => {
    let rogueLibp2p: Libp2p;
    let rogue: SessionTransport;
    let keys: NodeKeys;
    let send: (body: ChannelMessage) => Promise<ChannelMessage>;

    before(async () => {
      keys = loadIdentity(join(alice.dataDir, "keys.json")).keys;
      rogueLibp2p = await createLibp2p({
        privateKey: await generateKeyPair("Ed25519"),
        addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
        transports: [tcp()],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
      });
      rogue = new SessionTransport(rogueLibp2p, keys, pino({ level: "silent" }));
      await rogue.start();
      const target = { peerId: bob.peerId, multiaddrs: [bob.multiaddr.split("/p2p/")[0] as string] };
      send = (body) => rogue.request(bob.address, body, target);
    });

    after(async () => {
      await rogue?.stop();
      await rogueLibp2p?.stop();
    });

    async function request(overrides: Partial<WithdrawArgs>, signAs: Partial<WithdrawArgs> = {}) {
      const now = BigInt((await devnet.chain.provider.getBlock("latest"))!.timestamp);
      const args: WithdrawArgs = {
        chainId: BigInt(devnet.deployment.chainId),
        hub: devnet.deployment.hub,
        channelId: BigInt(channelId),
        participant: alice.address,
        totalWithdraw: 30n * unit + 1n,
        expiryTimestamp: now + 600n,
        ...overrides,
      };
      const reply = await send({
        type: "WithdrawRequest",
        channelId: args.channelId,
        participant: args.participant,
        totalWithdraw: args.totalWithdraw,
        expiryTimestamp: args.expiryTimestamp,
        signature: signWithdraw({ ...args, ...signAs }, keys),
      });
      return reply as ChannelMessage & { code?: string };
    }

    it("refuses another channel, another chain or hub, a bad expiry, a replayed total and a total above the balance", async () => {
      const before = await channelOf(bob);
      expect((await request({ channelId: 999n })).code).to.equal("CHANNEL_NOT_FOUND");
      expect((await request({}, { chainId: 1n })).code).to.equal("INVALID_SIGNATURE");
      expect((await request({}, { hub: "0x" + "11".repeat(20) })).code).to.equal("INVALID_SIGNATURE");
      expect((await request({ participant: bob.address })).code).to.equal("INVALID_ARGUMENT");
      const now = BigInt((await devnet.chain.provider.getBlock("latest"))!.timestamp);
      expect((await request({ expiryTimestamp: now - 1n })).code).to.equal("INVALID_ARGUMENT");
      expect((await request({ expiryTimestamp: now + 10n * 86_400n })).code).to.equal("INVALID_ARGUMENT");
      // Replay: the total alice already withdrew (mined), and anything not above it.
      expect((await request({ totalWithdraw: 30n * unit })).code).to.equal("INVALID_ARGUMENT");
      const a = await channelOf(alice);
      const above = 30n * unit + BigInt(a.ourBalance) + 1n;
      expect((await request({ totalWithdraw: above })).code).to.equal("INSUFFICIENT_CAPACITY");
      expect(await channelOf(bob)).to.deep.equal(before);
    });

    it("co-signs a valid one once, counts it at once, refuses a second in flight, and releases it when it expires unmined", async () => {
      const before = await channelOf(bob);
      const ok = await request({ totalWithdraw: 30n * unit + 1n });
      expect(ok.type).to.equal("WithdrawConfirmation");
      const during = await channelOf(bob);
      expect(during.pendingWithdraw.partner).to.equal((30n * unit + 1n).toString());
      expect(BigInt(during.partnerBalance)).to.equal(BigInt(before.partnerBalance) - 1n);
      expect((await request({ totalWithdraw: 30n * unit + 2n })).code).to.equal("CHANNEL_STATE");
      // Never submitted: once the chain's time passes its expiry, bob's monitor releases it.
      await devnet.chain.provider.send("evm_increaseTime", [700]);
      await devnet.chain.provider.send("evm_mine", []);
      const after = await until(
        "bob to release the expired withdraw",
        () => channelOf(bob),
        (c) => c.pendingWithdraw.partner === null,
      );
      expect(after.partnerBalance).to.equal(before.partnerBalance);
    });
  });

  // Mocha runs a suite's own tests before its nested suites: the close comes last, in its own suite.
  describe("a withdraw racing a close", () => {
    it("refuses a withdraw racing a close (409 CHANNEL_STATE), and nothing leaves the channel", async () => {
      await bob.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: false });
      await until(
        "alice to see bob's close",
        () => channelOf(alice),
        (c) => c.state === "closed",
      );
      await expectApiError(
        alice.api.call("POST", `/v1/channels/${channelId}/withdraw`, { amount: unit.toString() }),
        409,
        "CHANNEL_STATE",
      );
      expect((await channelOf(alice)).ourWithdraw).to.equal((30n * unit).toString());
    });
  });
});
