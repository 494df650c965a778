/**
 * host/peer-guard.ts on real libp2p hosts over TCP on 127.0.0.1: puzzle difficulty (free for protected
 * peers within their budget, climbing with strangers' rate), pending-challenge eviction, rate-limited
 * warnings, and connection budgets that evict strangers and keep protected peers.
 */
import { Writable } from "node:stream";
import { expect } from "chai";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { Libp2p } from "@libp2p/interface";
import { pino } from "pino";
import { createHost, dialableMultiaddrs } from "../../host/libp2p.js";
import { PeerGuard } from "../../host/peer-guard.js";
import { dialNew, startAttackerHost } from "../../devnet/attacker.js";

function capturingLogger(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split("\n"))
        if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: "debug" }, sink), lines };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("host/peer-guard", function () {
  this.timeout(60_000);
  let host: Libp2p;

  before(async () => {
    host = await createHost({ privateKey: await generateKeyPair("Ed25519") });
  });
  after(async () => {
    await host?.stop();
  });

  it("asks strangers for the base puzzle; a protected peer goes free until its per-minute budget is spent", () => {
    const { log } = capturingLogger();
    const guard = new PeerGuard(host, log, { puzzleDifficultyBits: 12, protectedHandshakesPerMinute: 3 }, [
      "peerA",
    ]);
    expect(guard.puzzleDifficulty("stranger")).to.equal(12);
    expect([1, 2, 3].map(() => guard.puzzleDifficulty("peerA"))).to.deep.equal([null, null, null]);
    expect(guard.puzzleDifficulty("peerA")).to.equal(12);
    guard.protect("peerB");
    expect(guard.isProtected("peerB")).to.equal(true);
    expect(guard.puzzleDifficulty("peerB")).to.equal(null);
  });

  it("raises the difficulty one bit per doubling of strangers' handshakes above the target, up to a cap", () => {
    const { log } = capturingLogger();
    const guard = new PeerGuard(host, log, {
      puzzleDifficultyBits: 10,
      strangerHandshakesPerSecond: 10,
      maxExtraDifficultyBits: 3,
    });
    for (let i = 0; i < 10; i++) guard.strangerHandshakeDone();
    expect(guard.puzzleDifficulty("s")).to.equal(10);
    for (let i = 0; i < 30; i++) guard.strangerHandshakeDone();
    expect(guard.puzzleDifficulty("s")).to.equal(12); // 40/s = 4x the target
    for (let i = 0; i < 1000; i++) guard.strangerHandshakeDone();
    expect(guard.puzzleDifficulty("s")).to.equal(13); // capped at +3
  });

  it("refuses a difficulty beyond what the protocol allows", () => {
    const { log } = capturingLogger();
    expect(() => new PeerGuard(host, log, { puzzleDifficultyBits: 26, maxExtraDifficultyBits: 5 })).to.throw(
      RangeError,
    );
  });

  it("evicts the oldest handshake waiting for its solution when the waiting room is full", () => {
    const { log } = capturingLogger();
    const guard = new PeerGuard(host, log, { maxPendingChallenges: 2 });
    const aborted: number[] = [];
    const release1 = guard.holdChallenge(() => aborted.push(1));
    guard.holdChallenge(() => aborted.push(2));
    release1(); // solved: leaves the room
    guard.holdChallenge(() => aborted.push(3));
    expect(aborted).to.deep.equal([]);
    guard.holdChallenge(() => aborted.push(4));
    expect(aborted).to.deep.equal([2]);
  });

  it("logs at most peerWarningsPerMinute warnings per key", () => {
    const { log, lines } = capturingLogger();
    const guard = new PeerGuard(host, log, { peerWarningsPerMinute: 4 });
    for (let i = 0; i < 50; i++) guard.warn("10.0.0.1", { i }, "bad frame");
    guard.warn("10.0.0.2", {}, "bad frame");
    expect(lines.filter((l) => l.msg === "bad frame").length).to.equal(5);
  });

  it("closes strangers' connections beyond the per-IP budget and those without a session; keeps protected peers", async () => {
    const { log } = capturingLogger();
    const victim = await createHost({ privateKey: await generateKeyPair("Ed25519") });
    const guard = new PeerGuard(victim, log, { maxConnectionsPerIp: 3, preSessionTimeoutMs: 1_500 });
    guard.start();
    const friend = await startAttackerHost();
    const stranger = await startAttackerHost();
    try {
      guard.protect(friend.peerId.toString());
      const target = dialableMultiaddrs(victim)[0]!;
      const friendly = [await dialNew(friend, target), await dialNew(friend, target)];
      await sleep(1_100); // libp2p takes at most 5 new inbound connections per second from one host
      const held = [];
      for (let i = 0; i < 4; i++) {
        held.push(await dialNew(stranger, target));
        await sleep(250); // under libp2p's per-host inbound rate
      }
      await sleep(300);
      expect(victim.getConnections().length).to.be.at.most(3);
      expect(friendly.every((c) => c.status === "open")).to.equal(true);
      // No session ever opened: the strangers' remaining connections go at the pre-session deadline.
      await sleep(2_000);
      expect(held.every((c) => c.status !== "open")).to.equal(true);
      expect(friendly.every((c) => c.status === "open")).to.equal(true);
    } finally {
      guard.stop();
      await Promise.all([friend.stop(), stranger.stop(), victim.stop()]);
    }
  });
});
