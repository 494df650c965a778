/**
 * host/peer-guard.ts on real libp2p hosts over TCP on 127.0.0.1: puzzle difficulty (free for protected
 * peers within their budget, climbing with strangers' rate), pending-challenge eviction, rate-limited
 * warnings, and connection budgets that evict strangers and keep protected peers.
 */
import { Writable } from "node:stream";
import { expect } from "chai";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import type { Libp2p } from "@libp2p/interface";
import { pino } from "pino";
import { createHost, dialableMultiaddrs } from "../../host/libp2p.js";
import { PeerGuard, ipv6Prefix64 } from "../../host/peer-guard.js";
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
const newPeerId = async () => peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();

describe("host/peer-guard", function () {
  this.timeout(60_000);
  let host: Libp2p;

  before(async () => {
    host = await createHost({ privateKey: await generateKeyPair("Ed25519") });
  });
  after(async () => {
    await host?.stop();
  });

  it("asks strangers for the base puzzle; a protected peer goes free until its per-minute budget is spent", async () => {
    const { log } = capturingLogger();
    const [a, b] = await Promise.all([newPeerId(), newPeerId()]);
    const guard = new PeerGuard(host, log, { puzzleDifficultyBits: 12, protectedHandshakesPerMinute: 3 }, [
      a,
    ]);
    expect(guard.puzzleDifficulty("stranger")).to.equal(12);
    expect([1, 2, 3].map(() => guard.puzzleDifficulty(a))).to.deep.equal([null, null, null]);
    expect(guard.puzzleDifficulty(a)).to.equal(12);
    guard.protect(b);
    expect(guard.isProtected(b)).to.equal(true);
    expect(guard.puzzleDifficulty(b)).to.equal(null);
    guard.protect("not a peer id");
    expect(guard.isProtected("not a peer id")).to.equal(false);
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

  it("refuses a difficulty an initiator would not solve (base + climb above 22 bits)", () => {
    const { log } = capturingLogger();
    expect(() => new PeerGuard(host, log, { puzzleDifficultyBits: 18, maxExtraDifficultyBits: 5 })).to.throw(
      RangeError,
    );
    expect(
      new PeerGuard(host, log, { puzzleDifficultyBits: 17, maxExtraDifficultyBits: 5 }).limits
        .puzzleDifficultyBits,
    ).to.equal(17);
  });

  it("counts a /64 of IPv6 as one host", () => {
    expect(ipv6Prefix64("2001:db8:0:1:aaaa::1")).to.equal(ipv6Prefix64("2001:db8::1:bbbb:0:0:2"));
    expect(ipv6Prefix64("2001:db8:0:1::1")).to.equal("2001:db8:0:1::/64");
    expect(ipv6Prefix64("2001:db8:0:2::1")).to.not.equal(ipv6Prefix64("2001:db8:0:1::1"));
    expect(ipv6Prefix64("::1")).to.equal("0:0:0:0::/64");
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
