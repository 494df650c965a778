/**
 * Two channel nodes as real processes (`qrwp node start`) over libp2p TCP on 127.0.0.1, against a real
 * `hardhat node` chain: payments both ways, bad HTTP input, a rogue peer sending forged and stale balance
 * proofs, a crash in the middle of a run of payments, and a unilateral close that the partner contests.
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
import { expectApiError, type ApiError } from "./api-errors.js";
import { QrwpNodeApi, type NodeEvent } from "../../x402/node-api.js";
import { loadIdentity } from "../../host/keystore.js";
import { SessionTransport } from "../../host/session-transport.js";
import {
  generateNodeKeys,
  signBalanceProof,
  type BalanceProof,
  type ChannelMessage,
} from "../../protocol/index.js";

interface ChannelJson {
  channelId: string;
  state: string;
  ourDeposit: string;
  ourBalance: string;
  partnerBalance: string;
  ourNonce: string;
  partnerNonce: string;
  totals: { sent: string; received: string; sentCount: number; receivedCount: number };
}
const unit = parseUnits("1", 18);

/** A `GET /v1/events` subscriber (through x402's client of the node API): what it saw, and a bounded wait. */
async function subscribeEvents(node: NodeProcess) {
  const seen: NodeEvent[] = [];
  const ctl = new AbortController();
  const api = new QrwpNodeApi({ apiUrl: node.apiUrl, token: node.api.token });
  const sub = await api.subscribeEvents({ signal: ctl.signal, onEvent: (e) => seen.push(e) });
  return {
    seen,
    closed: sub.closed,
    close: () => ctl.abort(),
    /** The first event matching `pred`, waiting up to 30 s for it. */
    async waitFor(what: string, pred: (e: NodeEvent) => boolean): Promise<NodeEvent> {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const hit = seen.find(pred);
        if (hit) return hit;
        if (Date.now() > deadline)
          expect.fail(`no ${what} event; saw ${JSON.stringify(seen.map((e) => [e.type, e.data]))}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
}

describe("integration: two nodes over libp2p on a hardhat chain", function () {
  this.timeout(300_000);
  let devnet: Devnet;
  let alice: NodeProcess;
  let bob: NodeProcess;
  let channelId: string;
  let token: string;

  const pay = (from: NodeProcess, to: NodeProcess, amount: bigint, paymentId?: string) =>
    from.api.call<{ status: string; paymentId: string }>("POST", "/v1/payments", {
      target: to.address,
      token,
      amount: amount.toString(),
      ...(paymentId ? { paymentId } : {}),
    });
  const channelOf = (n: NodeProcess) => n.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`);

  /** Both nodes hold the same view of each other's latest balance proofs and balances. */
  async function expectAgreement(): Promise<{ a: ChannelJson; b: ChannelJson }> {
    const [a, b] = await Promise.all([channelOf(alice), channelOf(bob)]);
    expect(a.ourNonce).to.equal(b.partnerNonce);
    expect(a.partnerNonce).to.equal(b.ourNonce);
    expect(a.ourBalance).to.equal(b.partnerBalance);
    expect(a.partnerBalance).to.equal(b.ourBalance);
    expect(a.totals.sent).to.equal(b.totals.received);
    expect(a.totals.received).to.equal(b.totals.sent);
    return { a, b };
  }

  before(async () => {
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-it-")));
    token = devnet.token;
    await devnet.initNode("alice", 1000n * unit);
    await devnet.initNode("bob", 1000n * unit);
    [alice, bob] = await Promise.all([devnet.startNode("alice"), devnet.startNode("bob")]);
    const opened = await alice.api.call<ChannelJson>("POST", "/v1/channels", {
      partner: bob.address,
      partnerMultiaddr: bob.multiaddr,
      token,
      deposit: (100n * unit).toString(),
      settleTimeoutSeconds: 600,
    });
    channelId = opened.channelId;
  });

  after(async () => {
    await devnet?.stop();
  });

  it("opens a channel that both nodes see with the on-chain deposit", async () => {
    const a = await channelOf(alice);
    const b = await channelOf(bob);
    expect(a.state).to.equal("opened");
    expect(b.state).to.equal("opened");
    expect(a.ourBalance).to.equal((100n * unit).toString());
    expect(b.partnerBalance).to.equal((100n * unit).toString());
    expect(b.ourBalance).to.equal("0");
  });

  it("pays both ways; each payment is acknowledged and both views agree", async () => {
    for (let i = 0; i < 20; i++) expect((await pay(alice, bob, unit)).status).to.equal("completed");
    for (let i = 0; i < 10; i++) expect((await pay(bob, alice, unit / 2n)).status).to.equal("completed");
    const { a } = await expectAgreement();
    expect(a.ourBalance).to.equal((100n * unit - 20n * unit + 5n * unit).toString());
    expect(a.totals.sentCount).to.equal(20);
    expect(a.totals.receivedCount).to.equal(10);
    const p = await alice.api
      .call<{ status: string; direction: string }>("GET", "/v1/payments/fixed-id-1")
      .catch(() => null);
    expect(p).to.equal(null);
    await pay(alice, bob, 1n, "fixed-id-1");
    const fetched = await alice.api.call<{ status: string; direction: string; amount: string }>(
      "GET",
      "/v1/payments/fixed-id-1",
    );
    expect(fetched).to.include({ status: "completed", direction: "outgoing", amount: "1" });
    const received = await bob.api.call<{ direction: string }>("GET", "/v1/payments/fixed-id-1");
    expect(received.direction).to.equal("incoming");
  });

  it("GET /v1/events streams payment and channel events with their fields; 401 without the token", async () => {
    const noAuth = await fetch(`${alice.apiUrl}/v1/events`);
    expect(noAuth.status).to.equal(401);
    expect(((await noAuth.json()) as { error: { code: string } }).error.code).to.equal("UNAUTHORIZED");
    const a = await subscribeEvents(alice);
    const b = await subscribeEvents(bob);
    try {
      expect((await pay(alice, bob, 3n, "events-pay-1")).status).to.equal("completed");
      const isPay = (status: string) => (e: NodeEvent) =>
        e.type === "payment" && e.data.paymentId === "events-pay-1" && e.data.status === status;
      const created = await a.waitFor("pending payment", isPay("pending"));
      const done = await a.waitFor("completed payment", isPay("completed"));
      for (const e of [created, done]) {
        expect(e.data).to.include({ kind: "direct", direction: "outgoing", amount: "3", channelId });
        expect(e.data.partner).to.equal(bob.address);
      }
      expect(Number(done.id)).to.be.greaterThan(Number(created.id));
      const received = await b.waitFor("received payment", isPay("completed"));
      expect(received.data).to.include({ kind: "direct", direction: "incoming", amount: "3", channelId });

      const before = await channelOf(alice);
      const totalDeposit = (BigInt(before.ourDeposit) + unit).toString();
      await alice.api.call("POST", `/v1/channels/${channelId}/deposit`, { totalDeposit });
      const isDeposit = (e: NodeEvent) => e.type === "channel" && e.data.reason === "deposit";
      const ours = await a.waitFor("deposit", isDeposit);
      expect(ours.data).to.include({ channelId, state: "opened" });
      expect((ours.data.channel as ChannelJson).ourDeposit).to.equal(totalDeposit);
      // bob learns of alice's deposit from the chain (his monitor).
      const theirs = await b.waitFor("partner deposit", isDeposit);
      expect((theirs.data.channel as { partnerDeposit: string }).partnerDeposit).to.equal(totalDeposit);
    } finally {
      a.close();
      b.close();
    }
  });

  it("GET /v1/events holds at most 32 streams: the next is 503 UNAVAILABLE; a closed stream frees its place", async () => {
    const open: Awaited<ReturnType<typeof subscribeEvents>>[] = [];
    try {
      // Streams of the previous test may still be closing on the node: fill up to the cap by trying.
      for (let tries = 0; open.length < 32 && tries < 100; tries++) {
        try {
          open.push(await subscribeEvents(alice));
        } catch (err) {
          expect((err as { code?: string }).code).to.equal("UNAVAILABLE");
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      expect(open).to.have.length(32);
      const refused = await fetch(`${alice.apiUrl}/v1/events`, {
        headers: { authorization: `Bearer ${alice.api.token}` },
      });
      expect(refused.status).to.equal(503);
      expect(refused.headers.get("retry-after")).to.equal("5");
      const body = (await refused.json()) as { error: { code: string; details: { field: string } } };
      expect(body.error.code).to.equal("UNAVAILABLE");
      expect(body.error.details.field).to.equal("subscribers");
      open.pop()?.close();
      let again: Awaited<ReturnType<typeof subscribeEvents>> | null = null;
      for (let tries = 0; again === null && tries < 100; tries++) {
        again = await subscribeEvents(alice).catch(() => null);
        if (!again) await new Promise((r) => setTimeout(r, 100));
      }
      expect(again, "a place is free again after a stream closed").to.not.equal(null);
      if (again) open.push(again);
    } finally {
      for (const s of open) s.close();
    }
  });

  it("refuses bad HTTP input with coded errors naming the field, and changes no state", async () => {
    const before = await channelOf(alice);
    const noAuth = await fetch(`${alice.apiUrl}/v1/channels`);
    expect(noAuth.status).to.equal(401);
    expect(((await noAuth.json()) as { error: { code: string } }).error.code).to.equal("UNAUTHORIZED");
    let e = await expectApiError(
      alice.api.call("POST", "/v1/payments", { target: bob.address, token, amount: "12abc" }),
      400,
      "INVALID_ARGUMENT",
    );
    expect(e.body.error.details.field).to.equal("amount");
    e = await expectApiError(
      alice.api.call("POST", "/v1/payments", { target: bob.address, amount: "1" }),
      400,
      "INVALID_ARGUMENT",
    );
    expect(e.body.error.details.field).to.equal("token");
    e = await expectApiError(
      alice.api.call("POST", "/v1/payments", { target: "0x1234", token, amount: "1" }),
      400,
      "INVALID_ARGUMENT",
    );
    expect(e.body.error.details.field).to.equal("target");
    await expectApiError(
      alice.api.call("POST", "/v1/payments", { target: bob.address, token, amount: "0" }),
      400,
      "INVALID_ARGUMENT",
    );
    await expectApiError(
      alice.api.call("POST", "/v1/payments", {
        target: bob.address,
        token,
        amount: (10_000n * unit).toString(),
      }),
      409,
      "INSUFFICIENT_CAPACITY",
    );
    await expectApiError(
      alice.api.call("POST", "/v1/payments", { target: devnet.deployment.hub, token, amount: "1" }),
      422,
      "NO_ROUTE",
    );
    // A paymentId already used: the same payment again is answered with it (nothing paid twice), another
    // amount is a conflict.
    const sameAgain = await alice.api.call<{ status: string; nonce: string }>("POST", "/v1/payments", {
      target: bob.address,
      token,
      amount: "1",
      paymentId: "fixed-id-1",
    });
    expect(sameAgain.status).to.equal("completed");
    e = await expectApiError(
      alice.api.call("POST", "/v1/payments", {
        target: bob.address,
        token,
        amount: "2",
        paymentId: "fixed-id-1",
      }),
      409,
      "CONFLICT",
    );
    expect(e.body.error.details.field).to.equal("amount");
    await expectApiError(alice.api.call("GET", "/v1/channels/999"), 404, "CHANNEL_NOT_FOUND");
    await expectApiError(alice.api.call("GET", "/v1/channels/abc"), 400, "INVALID_ARGUMENT");
    await expectApiError(
      alice.api.call("POST", "/v1/channels", { partner: bob.address, token, deposit: "-1" }),
      400,
      "INVALID_ARGUMENT",
    );
    const after = await channelOf(alice);
    expect(after).to.deep.equal(before);
    // OpenAPI document is public (no token) and lists the payment route.
    const docs = await fetch(`${alice.apiUrl}/docs/json`);
    expect(docs.status).to.equal(200);
    const spec = (await docs.json()) as { openapi: string; paths: Record<string, unknown> };
    expect(spec.openapi).to.match(/^3\./);
    expect(spec.paths).to.have.property("/v1/payments");
  });

  it("refuses a peer's forged, PQ-forged, tampered and stale balance proofs, and the channel keeps working", async () => {
    // A rogue process holding alice's channel keys (so the handshake proves alice's address) but its own
    // libp2p identity sends bad transfers straight to bob over the channel protocol.
    const aliceIdentity = loadIdentity(join(alice.dataDir, "keys.json"));
    const rogueLibp2p: Libp2p = await createLibp2p({
      privateKey: await generateKeyPair("Ed25519"),
      addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
    });
    const rogue = new SessionTransport(rogueLibp2p, aliceIdentity.keys, pino({ level: "silent" }));
    await rogue.start();
    try {
      const b0 = await channelOf(bob);
      const target = { peerId: bob.peerId, multiaddrs: [bob.multiaddr.split("/p2p/")[0] as string] };
      const nonce = BigInt(b0.partnerNonce);
      const base = (await alice.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`)).totals.sent;
      const proof: BalanceProof = {
        chainId: BigInt(devnet.deployment.chainId),
        hub: devnet.deployment.hub,
        channelId: BigInt(channelId),
        nonce: nonce + 1n,
        transferredAmount: BigInt(base) + unit,
        lockedAmount: 0n,
        locksRoot: "0x" + "00".repeat(32),
      };
      const send = (body: ChannelMessage) => rogue.request(bob.address, body, target);
      const other = generateNodeKeys();

      // 1. secp256k1 signature by someone else
      const forged = signBalanceProof(proof, other);
      let reply = await send({
        type: "DirectTransfer",
        paymentId: "rogue-1",
        amount: unit,
        balanceProof: forged,
      });
      expect(reply).to.include({ type: "Error", code: "INVALID_SIGNATURE" });
      // 2. valid secp256k1 signature but an ML-DSA co-signature from another key
      const real = signBalanceProof(proof, aliceIdentity.keys);
      const pqForged = {
        ...real,
        pqSignature: signBalanceProof(proof, {
          ...aliceIdentity.keys,
          mldsaSecretKey: other.mldsaSecretKey,
          mldsaPublicKey: other.mldsaPublicKey,
        }).pqSignature,
      };
      reply = await send({
        type: "DirectTransfer",
        paymentId: "rogue-2",
        amount: unit,
        balanceProof: pqForged,
      });
      expect(reply).to.include({ type: "Error", code: "INVALID_SIGNATURE" });
      // 3. claimed amount does not match the proof's increase
      reply = await send({
        type: "DirectTransfer",
        paymentId: "rogue-3",
        amount: 2n * unit,
        balanceProof: real,
      });
      expect(reply).to.include({ type: "Error", code: "INVALID_TRANSFER" });
      // 4. stale nonce: a correctly signed proof whose nonce is not above bob's latest
      const stale = signBalanceProof({ ...proof, nonce }, aliceIdentity.keys);
      reply = await send({ type: "DirectTransfer", paymentId: "rogue-4", amount: unit, balanceProof: stale });
      expect(reply).to.include({ type: "Error", code: "STALE_NONCE" });
      // 5. a proof for another hub (replay across contracts)
      const otherHub = signBalanceProof({ ...proof, hub: devnet.deployment.bridge }, aliceIdentity.keys);
      reply = await send({
        type: "DirectTransfer",
        paymentId: "rogue-5",
        amount: unit,
        balanceProof: otherHub,
      });
      expect(reply).to.include({ type: "Error", code: "INVALID_TRANSFER" });

      // 6. a zero-amount transfer (new nonce, nothing moved)
      const zero = signBalanceProof({ ...proof, transferredAmount: BigInt(base) }, aliceIdentity.keys);
      reply = await send({ type: "DirectTransfer", paymentId: "rogue-6", amount: 0n, balanceProof: zero });
      expect(reply).to.include({ type: "Error", code: "INVALID_TRANSFER" });
      // 7. a cooperative settle naming participants that are not the channel's
      reply = await send({
        type: "CooperativeSettleRequest",
        channelId: BigInt(channelId),
        participant1: other.address,
        participant1Amount: 0n,
        participant2: bob.address,
        participant2Amount: 0n,
        signature: "0x" + "11".repeat(65),
      });
      expect(reply).to.include({ type: "Error", code: "INVALID_ARGUMENT" });

      const b1 = await channelOf(bob);
      expect(b1).to.deep.equal(b0);
    } finally {
      await rogue.stop();
      await rogueLibp2p.stop();
    }
    // The real alice keeps paying on the same channel.
    expect((await pay(alice, bob, unit)).status).to.equal("completed");
    await expectAgreement();
  });

  it("survives a crash of the payer in the middle of a run of payments", async () => {
    const listenPort = Number(alice.multiaddr.split("/tcp/")[1]?.split("/")[0]);
    const results: string[] = [];
    const run = (async () => {
      for (let i = 0; i < 40; i++) {
        try {
          results.push((await pay(alice, bob, unit / 10n, `crash-run-${i}`)).status);
        } catch {
          results.push("error");
          return;
        }
      }
    })();
    // Let some payments through, then kill -9 alice while payments are in flight.
    while (results.length < 12) await new Promise((r) => setTimeout(r, 20));
    await alice.kill();
    await run;
    alice = await devnet.startNode("alice", { listenPort });
    // Unacknowledged transfers are re-sent on restart; the next payment also waits for them.
    for (let i = 0; i < 10; i++) expect((await pay(alice, bob, unit / 10n)).status).to.equal("completed");
    const { a, b } = await expectAgreement();
    expect(a.totals.sentCount).to.equal(b.totals.receivedCount);
    const completedInRun = results.filter((s) => s === "completed").length;
    expect(completedInRun).to.be.greaterThanOrEqual(12);
  });

  it("survives a crash of the payee: payments fail fast, then resume after its restart", async () => {
    const listenPort = Number(bob.multiaddr.split("/tcp/")[1]?.split("/")[0]);
    await bob.kill();
    // Offline partner: refused before signing (PEER_OFFLINE), or, if the session was still half-open, the
    // transfer was signed but not acknowledged: 202 pending, delivered once the partner is back.
    const outcome = await pay(alice, bob, unit / 10n).then(
      (p) => p.status,
      (e: ApiError) => e.body.error.code,
    );
    expect(outcome).to.be.oneOf(["PEER_OFFLINE", "TIMEOUT", "pending"]);
    bob = await devnet.startNode("bob", { listenPort });
    for (let i = 0; i < 5; i++) expect((await pay(alice, bob, unit / 10n)).status).to.equal("completed");
    await expectAgreement();
  });

  /**
   * Runs `count` payments alice -> bob with 64 in flight (each batch of updates carries many) and kills
   * `victim` (-9) once `killAfter` completed; returns the ids the API reported completed.
   */
  async function batchRunWithCrash(
    label: string,
    victim: () => NodeProcess,
    killAfter: number,
  ): Promise<string[]> {
    const completed: string[] = [];
    let next = 0;
    let stop = false;
    const worker = async () => {
      while (!stop && next < 400) {
        const id = `${label}-${next++}`;
        try {
          if ((await pay(alice, bob, unit / 100n, id)).status === "completed") completed.push(id);
        } catch {
          // refused or cut off by the crash: its outcome is settled by re-delivery below
        }
      }
    };
    const workers = Array.from({ length: 64 }, worker);
    while (completed.length < killAfter) await new Promise((r) => setTimeout(r, 2));
    await victim().kill();
    stop = true;
    await Promise.all(workers);
    return completed;
  }

  /** Every id is a completed incoming payment in bob's store. */
  async function expectReceivedByBob(ids: string[]): Promise<void> {
    for (const id of ids) {
      const p = await bob.api.call<{ status: string; direction: string }>("GET", `/v1/payments/${id}`);
      expect(p, id).to.include({ status: "completed", direction: "incoming" });
    }
  }

  it("kill -9 of the payer with a batch in flight: both agree to the wei; every completed payment is bob's", async () => {
    const listenPort = Number(alice.multiaddr.split("/tcp/")[1]?.split("/")[0]);
    const completed = await batchRunWithCrash("batch-crash-payer", () => alice, 100);
    alice = await devnet.startNode("alice", { listenPort });
    // The next payment re-sends what was pending first (so does the restart itself).
    for (let i = 0; i < 3; i++) expect((await pay(alice, bob, unit / 100n)).status).to.equal("completed");
    const { a, b } = await expectAgreement();
    expect(a.totals.sentCount).to.equal(b.totals.receivedCount);
    expect(completed.length).to.be.greaterThanOrEqual(100);
    await expectReceivedByBob(completed);
  });

  it("kill -9 of the payee with a batch in flight: after its restart both agree; every completed payment is its", async () => {
    const listenPort = Number(bob.multiaddr.split("/tcp/")[1]?.split("/")[0]);
    const completed = await batchRunWithCrash("batch-crash-payee", () => bob, 100);
    bob = await devnet.startNode("bob", { listenPort });
    for (let i = 0; i < 3; i++) expect((await pay(alice, bob, unit / 100n)).status).to.equal("completed");
    const { a, b } = await expectAgreement();
    expect(a.totals.sentCount).to.equal(b.totals.receivedCount);
    await expectReceivedByBob(completed);
  });

  it("closes unilaterally; the partner contests with the closer's latest proof; settles after the timeout", async () => {
    const { a, b } = await expectAgreement();
    const events = await subscribeEvents(alice);
    const aliceBefore = await devnet.tokenBalance(alice.address);
    const bobBefore = await devnet.tokenBalance(bob.address);
    // bob closes with alice's latest proof; alice (online) contests with bob's latest proof.
    const closed = await bob.api.call<ChannelJson>("POST", `/v1/channels/${channelId}/close`, {
      cooperative: false,
    });
    expect(closed.state).to.equal("closed");
    await expectApiError(bob.api.call("POST", `/v1/channels/${channelId}/settle`), 409, "CHANNEL_STATE");
    // Wait for alice's poller to see the close and contest.
    const hub = devnet.deployment.hub;
    const { ChannelHub__factory } = await import("../../typechain-types/index.js");
    const contract = ChannelHub__factory.connect(hub, devnet.chain.provider);
    const deadline = Date.now() + 30_000;
    while ((await contract.getParticipant(channelId, bob.address)).nonce.toString() !== a.partnerNonce) {
      if (Date.now() > deadline) expect.fail("alice did not contest bob's close");
      await new Promise((r) => setTimeout(r, 300));
    }
    await devnet.chain.provider.send("evm_increaseTime", [700]);
    await devnet.chain.provider.send("evm_mine", []);
    const settleDeadline = Date.now() + 30_000;
    for (;;) {
      const [x, y] = await Promise.all([channelOf(alice), channelOf(bob)]);
      if (x.state === "settled" && y.state === "settled") break;
      if (Date.now() > settleDeadline) expect.fail(`not settled: alice ${x.state}, bob ${y.state}`);
      await new Promise((r) => setTimeout(r, 300));
    }
    const aliceAfter = await devnet.tokenBalance(alice.address);
    const bobAfter = await devnet.tokenBalance(bob.address);
    expect((aliceAfter - aliceBefore).toString()).to.equal(a.ourBalance);
    expect((bobAfter - bobBefore).toString()).to.equal(b.ourBalance);
    // alice's GET /v1/events: bob's close, her contest, the settlement.
    const isClose = (type: string) => (e: NodeEvent) =>
      e.type === "close" && e.data.type === type && e.data.channelId === channelId;
    const closedEvent = await events.waitFor("closed", isClose("closed"));
    expect(closedEvent.data).to.include({ closingParticipant: bob.address, byPartner: true });
    const contested = await events.waitFor("contested", isClose("contested"));
    expect(contested.data.nonce).to.equal(a.partnerNonce);
    const settled = await events.waitFor("settled", isClose("settled"));
    expect(settled.data).to.include({ cooperative: false });
    expect(Number(settled.id)).to.be.greaterThan(Number(closedEvent.id));
    events.close();
  });
});
