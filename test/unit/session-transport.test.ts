/**
 * host/session-transport.ts between two real libp2p hosts on 127.0.0.1: a stranger solves the puzzle and
 * gets a session; when both sides dial each other, the replaced session closes once quiet and requests keep
 * working; a burst of requests on one session is answered request by request, in order, its frames coalesced
 * into a few stream writes; a stranger's quiet session closes at its idle deadline while a protected peer's
 * stays.
 */
import { expect } from "chai";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { Libp2p } from "@libp2p/interface";
import { pino } from "pino";
import { createHost, dialableMultiaddrs } from "../../host/libp2p.js";
import { PeerGuard } from "../../host/peer-guard.js";
import { SessionTransport } from "../../host/session-transport.js";
import {
  CHANNEL_PROTOCOL,
  generateNodeKeys,
  type ChannelMessage,
  type NodeKeys,
} from "../../protocol/index.js";

const log = pino({ level: "silent" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Side {
  host: Libp2p;
  keys: NodeKeys;
  guard: PeerGuard;
  transport: SessionTransport;
  requests: number;
}

async function side(options: { protect?: () => boolean; strangerIdleMs?: number } = {}): Promise<Side> {
  const host = await createHost({ privateKey: await generateKeyPair("Ed25519") });
  const guard = new PeerGuard(host, log, {
    puzzleDifficultyBits: 8,
    ...(options.strangerIdleMs ? { strangerSessionIdleMs: options.strangerIdleMs } : {}),
  });
  guard.start();
  const keys = generateNodeKeys();
  const transport = new SessionTransport(host, keys, log, {
    guard,
    requestTimeoutMs: 1_000,
    isProtected: options.protect ?? (() => false),
  });
  const s: Side = { host, keys, guard, transport, requests: 0 };
  transport.setHandler(async (): Promise<ChannelMessage> => {
    s.requests++;
    return { type: "Ok" };
  });
  await transport.start();
  return s;
}

const target = (s: Side) => ({
  peerId: s.host.peerId.toString(),
  multiaddrs: [dialableMultiaddrs(s.host)[0]!.split("/p2p/")[0]!],
});
const channelStreams = (a: Side, b: Side) =>
  a.host
    .getConnections(b.host.peerId)
    .flatMap((c) => c.streams)
    .filter((st) => st.protocol === CHANNEL_PROTOCOL && st.status === "open").length;

describe("host/session-transport", function () {
  this.timeout(60_000);
  const sides: Side[] = [];
  after(async () => {
    for (const s of sides) {
      await s.transport.stop();
      s.guard.stop();
      await s.host.stop();
    }
  });

  it("both sides dial: the replaced session closes once quiet, requests keep working both ways", async () => {
    const [a, b] = [await side({ protect: () => true }), await side({ protect: () => true })];
    sides.push(a, b);
    await Promise.all([
      a.transport.request(b.keys.address, { type: "Ok" }, target(b)),
      b.transport.request(a.keys.address, { type: "Ok" }, target(a)),
    ]);
    // Both dialed before either had a session: two sessions, one each way.
    expect(channelStreams(a, b), "two session streams").to.equal(2);
    // The one each side replaced goes after 1 s of quiet.
    await sleep(2_500);
    expect(channelStreams(a, b), "one session stream left").to.be.at.most(1);
    const before = a.requests + b.requests;
    expect((await a.transport.request(b.keys.address, { type: "Ok" }, target(b))).type).to.equal("Ok");
    expect((await b.transport.request(a.keys.address, { type: "Ok" }, target(a))).type).to.equal("Ok");
    expect(a.requests + b.requests).to.equal(before + 2);
  });

  it("a burst of 200 requests on one session: each answered with its own reply, handled in send order, written in a few stream writes", async () => {
    const [a, b] = [await side({ protect: () => true }), await side({ protect: () => true })];
    sides.push(a, b);
    const seen: string[] = [];
    b.transport.setHandler(async (_from, body): Promise<ChannelMessage> => {
      if (body.type !== "RevealSecret") return { type: "Ok" };
      seen.push(body.secret);
      return { type: "RevealSecret", secret: body.secret };
    });
    await a.transport.request(b.keys.address, { type: "Ok" }, target(b)); // the session exists from here
    let barriers = 0;
    a.transport.beforeSend = () => {
      barriers++;
    };
    const secrets = Array.from({ length: 200 }, (_, i) => `0x${i.toString(16).padStart(64, "0")}`);
    const replies = await Promise.all(
      secrets.map((secret) =>
        a.transport.request(b.keys.address, { type: "RevealSecret", secret }, target(b)),
      ),
    );
    expect(replies.map((r) => (r.type === "RevealSecret" ? r.secret : r.type))).to.deep.equal(secrets);
    expect(seen).to.deep.equal(secrets);
    // Queued together, they went out in batches of at most 64 frames (one barrier each), not one by one.
    expect(barriers).to.be.within(1, 10);
  });

  it("an envelope too large to seal fails alone: the rest of its burst is answered and the session goes on", async () => {
    const [a, b] = [await side({ protect: () => true }), await side({ protect: () => true })];
    sides.push(a, b);
    await a.transport.request(b.keys.address, { type: "Ok" }, target(b));
    const huge: ChannelMessage = { type: "Error", code: "INTERNAL", message: "x".repeat(2 * 1024 * 1024) };
    const results = await Promise.allSettled([
      a.transport.request(b.keys.address, { type: "Ok" }, target(b)),
      a.transport.request(b.keys.address, huge, target(b)),
      a.transport.request(b.keys.address, { type: "Ok" }, target(b)),
    ]);
    expect(results.map((r) => r.status)).to.deep.equal(["fulfilled", "rejected", "fulfilled"]);
    const refused = results[1] as PromiseRejectedResult;
    expect((refused.reason as { code?: string }).code).to.equal("INVALID_ARGUMENT");
    // The frame counters stayed in step: the same session answers the next request.
    expect((await a.transport.request(b.keys.address, { type: "Ok" }, target(b))).type).to.equal("Ok");
  });

  it("closes a stranger's quiet session at its idle deadline; a protected peer's session stays", async () => {
    const victim = await side({ strangerIdleMs: 1_000, protect: () => false });
    const friendVictim = await side({ strangerIdleMs: 1_000, protect: () => true });
    const stranger = await side();
    sides.push(victim, friendVictim, stranger);
    await stranger.transport.request(victim.keys.address, { type: "Ok" }, target(victim));
    await stranger.transport.request(friendVictim.keys.address, { type: "Ok" }, target(friendVictim));
    expect(victim.transport.connectedPeers()).to.include(stranger.keys.address);
    await sleep(2_000);
    expect(victim.transport.connectedPeers()).to.not.include(stranger.keys.address);
    expect(friendVictim.transport.connectedPeers()).to.include(stranger.keys.address);
  });
});
