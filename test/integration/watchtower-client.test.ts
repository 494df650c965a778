/**
 * The node's watchtower client (node/watchtowers.ts) against a scripted stand-in tower: a second libp2p host
 * on 127.0.0.1 serving `/qrwp/watchtower/1.0.0` over the real post-quantum session transport, which verifies
 * every appointment (all five signatures) and answers AppointmentAccepted or a coded Error as each test asks.
 * Covers: the startup sweep, coalescing (only the latest proof is sent), a tower that is down and comes
 * back, coded refusals (final, STALE_NONCE, CHANNEL_NOT_FOUND retried then given up), acknowledged nonces
 * kept across a restart, and a prompt stop while the tower never answers.
 */
import { expect } from "chai";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { pino } from "pino";
import {
  EMPTY_LOCKS_ROOT,
  WATCHTOWER_PROTOCOL,
  appointmentBatchDigest,
  appointmentId,
  generateNodeKeys,
  signBalanceProof,
  verifyAppointmentBatchSignatures,
  verifyAppointmentSlot,
  verifyAppointmentSlotEvidence,
  type AppointmentSlotResult,
  type ChannelMessage,
  type ErrorCode,
  type NodeKeys,
  type SignedBalanceProof,
} from "../../protocol/index.js";
import { createHost, dialableMultiaddrs } from "../../host/libp2p.js";
import { SessionTransport } from "../../host/session-transport.js";
import {
  CHANNEL_NOT_FOUND_ATTEMPTS,
  WatchtowerClient,
  type MetaStore,
  type PartnerProofSource,
  type WatchtowerClientInit,
} from "../../node/watchtowers.js";

const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const log = pino({ level: process.env.WT_TEST_LOG ?? "silent" });

/** Partner proofs as the channel service would hand them out. */
class FakeSource implements PartnerProofSource {
  readonly proofs = new Map<bigint, SignedBalanceProof>();
  constructor(private readonly partner: NodeKeys) {}
  set(channelId: bigint, nonce: bigint): void {
    this.proofs.set(
      channelId,
      signBalanceProof(
        {
          chainId: 31337n,
          hub: HUB,
          channelId,
          nonce,
          transferredAmount: nonce * 10n,
          lockedAmount: 0n,
          locksRoot: EMPTY_LOCKS_ROOT,
        },
        this.partner,
      ),
    );
  }
  channelsWithPartnerProofs(): bigint[] {
    return [...this.proofs.keys()];
  }
  partnerProof(channelId: bigint) {
    const signed = this.proofs.get(channelId);
    return signed
      ? { partner: this.partner.address, signed, mldsaPublicKey: this.partner.mldsaPublicKey }
      : null;
  }
}

/** What the stand-in tower saw of one slot (from a batch or a single appointment). */
interface Received {
  channelId: bigint;
  nonce: bigint;
  closingParticipant: string;
  nonClosingParticipant: string;
  closingSignature: string;
}

type Script = (a: Received) => { code: ErrorCode; message: string } | "accept" | "hang";

/** Refusals a real tower gives per slot; any other code refuses the whole batch. */
const PER_SLOT_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "STALE_NONCE",
  "CHANNEL_NOT_FOUND",
  "CHANNEL_STATE",
]);

/**
 * A stand-in tower: verifies batches (both batch signatures, every slot's secp256k1 signatures and evidence),
 * keeps the highest nonce per slot, answers per `script` (a per-slot code in the slot's result, another code
 * refuses the whole batch, as a real tower does).
 */
class FakeTower {
  readonly keys = generateNodeKeys();
  readonly received: Received[] = [];
  readonly batches: number[] = [];
  readonly stored = new Map<string, bigint>();
  script: Script = () => "accept";
  /** Each batch's reply waits this long (ms). */
  delayMs = 0;
  host: Libp2p | null = null;
  transport: SessionTransport | null = null;
  listen = "/ip4/127.0.0.1/tcp/0";
  multiaddr = "";

  constructor(private readonly libp2pKey: PrivateKey) {}

  async start(): Promise<void> {
    this.host = await createHost({ privateKey: this.libp2pKey, listen: this.listen });
    this.transport = new SessionTransport(this.host, this.keys, log, { protocol: WATCHTOWER_PROTOCOL });
    this.transport.setHandler(async (_from, body): Promise<ChannelMessage> => {
      if (body.type !== "AppointmentBatch") return { type: "Error", code: "INVALID_MESSAGE", message: "?" };
      const b = body.batch;
      expect(b.tower).to.equal(this.keys.address);
      verifyAppointmentBatchSignatures(b, appointmentBatchDigest(b));
      const ctx = { chainId: b.chainId, hub: b.hub, client: b.client };
      this.batches.push(b.slots.length);
      const outcomes = b.slots.map((s) => {
        verifyAppointmentSlot(ctx, s);
        verifyAppointmentSlotEvidence(ctx, s);
        const r: Received = { ...s, nonClosingParticipant: b.client };
        this.received.push(r);
        return this.script(r);
      });
      if (outcomes.includes("hang")) return new Promise<ChannelMessage>(() => undefined);
      if (this.delayMs > 0) await sleep(this.delayMs);
      const whole = outcomes.find((o) => o !== "accept" && o !== "hang" && !PER_SLOT_CODES.has(o.code));
      if (whole && whole !== "accept" && whole !== "hang") return { type: "Error", ...whole };
      const results = b.slots.map((s, i): AppointmentSlotResult => {
        const id = appointmentId(b.chainId, b.hub, s.channelId, b.client);
        const o = outcomes[i]!;
        if (o !== "accept" && o !== "hang") return { id, nonce: s.nonce, outcome: "refused", ...o };
        const previous = this.stored.get(id) ?? 0n;
        if (s.nonce < previous) return { id, nonce: s.nonce, outcome: "refused", code: "STALE_NONCE" };
        this.stored.set(id, s.nonce);
        return { id, nonce: s.nonce, outcome: s.nonce > previous ? "stored" : "replayed" };
      });
      return { type: "AppointmentBatchAccepted", results };
    });
    await this.transport.start();
    this.multiaddr = dialableMultiaddrs(this.host)[0] as string;
    this.listen = this.multiaddr.split("/p2p/")[0] as string; // restarts reuse the port
  }

  async stop(): Promise<void> {
    await this.transport?.stop();
    await this.host?.stop();
    this.host = null;
  }

  noncesFor(channelId: bigint): bigint[] {
    return this.received.filter((a) => a.channelId === channelId).map((a) => a.nonce);
  }
}

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("node/watchtowers: WatchtowerClient against a stand-in tower", function () {
  this.timeout(60_000);
  let alice: NodeKeys;
  let bob: NodeKeys;
  let nodeHost: Libp2p;
  let tower: FakeTower;
  let source: FakeSource;
  let meta: Map<string, string>;
  const clients: WatchtowerClient[] = [];

  const metaStore = (): MetaStore => ({
    getMeta: (k) => meta.get(k) ?? null,
    setMeta: (k, v) => void meta.set(k, v),
  });

  function client(extra: Partial<WatchtowerClientInit> = {}): WatchtowerClient {
    const c = new WatchtowerClient({
      libp2p: nodeHost,
      keys: alice,
      log,
      towers: [tower.multiaddr],
      source,
      meta: metaStore(),
      minBackoffMs: 50,
      maxBackoffMs: 200,
      coalesceMs: 50,
      requestTimeoutMs: 2_000,
      ...extra,
    });
    clients.push(c);
    return c;
  }

  beforeEach(async () => {
    alice = generateNodeKeys();
    bob = generateNodeKeys();
    source = new FakeSource(bob);
    meta = new Map();
    nodeHost = await createHost({ privateKey: await generateKeyPair("Ed25519") });
    tower = new FakeTower(await generateKeyPair("Ed25519"));
    await tower.start();
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.stop();
    await tower.stop();
    await nodeHost.stop();
  });

  it("sends every channel's latest proof at start, then only the latest of a burst", async () => {
    source.set(1n, 3n);
    source.set(2n, 1n);
    const c = client();
    c.start();
    await until("both appointments", () => tower.stored.size === 2);
    expect(tower.noncesFor(1n)).to.deep.equal([3n]);
    expect(tower.noncesFor(2n)).to.deep.equal([1n]);
    for (let n = 4n; n <= 10n; n++) {
      source.set(1n, n);
      c.notify(1n);
    }
    await until("nonce 10", () => tower.noncesFor(1n).includes(10n));
    await sleep(200);
    expect(tower.noncesFor(1n)).to.deep.equal([3n, 10n]);
    const [s] = c.status();
    expect(s).to.deep.include({
      multiaddr: tower.multiaddr,
      address: tower.keys.address,
      connected: true,
      lastError: null,
      pendingChannels: 0,
      acceptedAppointments: 3,
    });
    expect(s?.lastAcceptedAtMs).to.be.a("number");
    // The appointments name us and our partner and carry the partner's exact signatures.
    const last = tower.received.at(-1) as Received;
    expect(last.nonClosingParticipant).to.equal(alice.address);
    expect(last.closingParticipant).to.equal(bob.address);
    expect(last.closingSignature).to.equal(source.proofs.get(1n)?.signature);
  });

  it("a notify for a proof the tower already holds sends nothing", async () => {
    source.set(1n, 2n);
    const c = client();
    c.start();
    await until("appointment", () => tower.received.length === 1);
    c.notify(1n);
    c.notify(1n);
    await sleep(300);
    expect(tower.received).to.have.length(1);
    expect(c.status()[0]?.pendingChannels).to.equal(0);
  });

  it("retries a tower that is down with backoff and sends only the latest proof when it is back", async () => {
    source.set(1n, 1n);
    const c = client();
    c.start();
    await until("first appointment", () => tower.received.length === 1);
    await tower.stop();
    for (let n = 2n; n <= 6n; n++) {
      source.set(1n, n);
      c.notify(1n);
      await sleep(30);
    }
    await until("an error in status", () => c.status()[0]?.lastError !== null);
    const down = c.status()[0];
    expect(down?.connected).to.equal(false);
    expect(down?.pendingChannels).to.equal(1);
    expect(down?.lastError?.code).to.match(/PEER_OFFLINE|HANDSHAKE_FAILED|TIMEOUT/);
    await sleep(500); // several retries at the 200 ms cap
    await tower.start();
    await until("nonce 6 after the restart", () => tower.noncesFor(1n).includes(6n));
    await sleep(200);
    // Nothing in between reached the restarted tower: only the latest proof was sent.
    expect(tower.noncesFor(1n)).to.deep.equal([1n, 6n]);
    expect(c.status()[0]).to.deep.include({ connected: true, lastError: null, pendingChannels: 0 });
  });

  it("a coded refusal is not retried for that nonce; STALE_NONCE counts as held; a newer nonce is sent", async () => {
    tower.script = (a) =>
      a.channelId === 1n && a.nonce === 1n
        ? { code: "NOT_PARTICIPANT", message: "no" }
        : a.channelId === 2n
          ? { code: "STALE_NONCE", message: "have newer" }
          : "accept";
    source.set(1n, 1n);
    source.set(2n, 1n);
    const c = client();
    c.start();
    // NOT_PARTICIPANT refuses the whole batch [1, 2]: each channel is then sent alone, and only the bad one
    // is refused for good.
    await until("both refusals", () => tower.received.length === 4);
    await sleep(400);
    expect(tower.batches).to.deep.equal([2, 1, 1]);
    expect(tower.received).to.have.length(4);
    expect(c.status()[0]?.pendingChannels).to.equal(0);
    expect(c.status()[0]?.lastError?.code).to.be.oneOf(["NOT_PARTICIPANT", "STALE_NONCE"]);
    source.set(1n, 2n);
    c.notify(1n);
    await until("nonce 2 accepted", () => c.status()[0]?.acceptedAppointments === 1);
    expect(tower.stored.size).to.equal(1);
    expect(tower.noncesFor(1n)).to.deep.equal([1n, 1n, 2n]);
    expect(c.status()[0]?.lastError).to.equal(null);
  });

  it("coalesces the channels marked while a batch is in flight into the next batch (one signature each)", async () => {
    for (let ch = 1n; ch <= 70n; ch++) source.set(ch, 1n);
    const c = client();
    c.start();
    await until("70 appointments", () => tower.stored.size === 70);
    // 70 channels at start: a full batch of 64 and one of 6.
    expect(tower.batches).to.deep.equal([64, 6]);
    // The next batch is held in flight 300 ms; channels marked meanwhile go together in the one after it.
    tower.delayMs = 300;
    source.set(1n, 2n);
    c.notify(1n);
    await until("nonce 2 of channel 1 in flight", () => tower.noncesFor(1n).includes(2n));
    for (let ch = 2n; ch <= 11n; ch++) {
      source.set(ch, 2n);
      c.notify(ch);
    }
    await until("the ten others", () => [...tower.stored.values()].filter((n) => n === 2n).length === 11);
    expect(tower.batches.slice(2)).to.deep.equal([1, 10]);
    // The tower stores before it answers: the client counts the last batch once its reply is in.
    await until("81 accepted", () => c.status()[0]?.acceptedAppointments === 81);
    expect(tower.batches).to.have.length(4);
  });

  it("CHANNEL_NOT_FOUND is retried with backoff (the tower may lag the chain), then given up", async () => {
    let refusals = 0;
    tower.script = (a) => {
      if (a.channelId === 1n && refusals < 2) {
        refusals += 1;
        return { code: "CHANNEL_NOT_FOUND", message: "not yet" };
      }
      if (a.channelId === 2n) return { code: "CHANNEL_NOT_FOUND", message: "never" };
      return "accept";
    };
    source.set(1n, 1n);
    source.set(2n, 1n);
    const c = client();
    c.start();
    await until("channel 1 accepted on the third try", () => tower.stored.size === 1);
    expect(tower.noncesFor(1n)).to.deep.equal([1n, 1n, 1n]);
    await until(
      "channel 2 given up",
      () => c.status()[0]?.pendingChannels === 0 && tower.noncesFor(2n).length === CHANNEL_NOT_FOUND_ATTEMPTS,
    );
    await sleep(400);
    expect(tower.noncesFor(2n)).to.have.length(CHANNEL_NOT_FOUND_ATTEMPTS);
  });

  it("after a restart, nonces the tower acknowledged are not resent; newer ones are", async () => {
    source.set(1n, 5n);
    source.set(2n, 1n);
    const first = client();
    first.start();
    await until("both appointments", () => tower.stored.size === 2);
    await first.stop();
    expect([...meta.keys()]).to.have.length(1);
    source.set(2n, 2n); // accepted while "down", before the tower heard of it
    source.set(3n, 1n);
    const second = client();
    second.start();
    await until("the two new ones", () => tower.received.length === 4);
    await sleep(300);
    expect(tower.noncesFor(1n)).to.deep.equal([5n]);
    expect(tower.noncesFor(2n)).to.deep.equal([1n, 2n]);
    expect(tower.noncesFor(3n)).to.deep.equal([1n]);
  });

  it("stop() returns promptly while a tower never answers", async () => {
    tower.script = () => "hang";
    source.set(1n, 1n);
    const c = client({ requestTimeoutMs: 30_000 });
    c.start();
    await until("the request in flight", () => tower.received.length === 1);
    const t0 = Date.now();
    await c.stop();
    expect(Date.now() - t0).to.be.lessThan(5_000);
    c.notify(1n); // after stop: ignored
    expect(c.status()[0]?.pendingChannels).to.equal(1);
  });

  it("refuses a tower multiaddr without /p2p/<peerId>", () => {
    expect(() => client({ towers: ["/ip4/127.0.0.1/tcp/9000"] })).to.throw(/p2p/);
  });
});
