/**
 * A stranger attacks a channel node process over real libp2p on 127.0.0.1 (devnet/attacker.ts), while the
 * node's partner keeps paying: forged hellos get a puzzle and no public-key work, idle connections and
 * sessions are closed, a frame that stalls drops its session, channel announcements cannot make the node
 * read the chain at will, and the warnings a stranger causes are rate-limited. The victim runs with small
 * limits (flags of `qrwp node start`) so each rule shows within seconds.
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Decoder } from "cbor-x";
import { parseUnits } from "ethers";
import type { Connection, Libp2p } from "@libp2p/interface";
import { Devnet, type NodeProcess } from "../../devnet/harness.js";
import {
  dialNew,
  openStrangerSession,
  sendForgedHello,
  startAttackerHost,
  streamEnds,
  type StrangerSession,
} from "../../devnet/attacker.js";
import { decodeEnvelope } from "../../protocol/index.js";

const unit = parseUnits("1", 18);
const cbor = new Decoder({ useRecords: false, mapsAsObjects: true });
const STRANGER_IDLE_MS = 6_000;
const FRAME_TIMEOUT_MS = 2_000;
const PRE_SESSION_TIMEOUT_MS = 3_000;
const MAX_STRANGER_SESSIONS = 3;

describe("integration: a stranger attacks a node; its partner keeps paying", function () {
  this.timeout(300_000);
  let devnet: Devnet;
  let alice: NodeProcess;
  let bob: NodeProcess;
  let token: string;
  let attacker: Libp2p;

  const payAlice = () =>
    bob.api.call<{ status: string }>("POST", "/v1/payments", {
      target: alice.address,
      token,
      amount: "1000",
    });
  const connectedPeers = async () =>
    (await alice.api.call<{ connectedPeers: string[] }>("GET", "/v1/info")).connectedPeers;
  const aliceLog = () => readFileSync(join(devnet.dir, "alice.log"), "utf8");

  before(async () => {
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-abuse-")));
    token = devnet.token;
    await devnet.initNode("alice", 1000n * unit);
    await devnet.initNode("bob", 1000n * unit);
    [alice, bob] = await Promise.all([
      devnet.startNode("alice", {
        extraArgs: [
          "--puzzle-bits",
          "10",
          "--max-stranger-sessions",
          String(MAX_STRANGER_SESSIONS),
          "--stranger-idle-ms",
          String(STRANGER_IDLE_MS),
          "--frame-timeout-ms",
          String(FRAME_TIMEOUT_MS),
          "--pre-session-timeout-ms",
          String(PRE_SESSION_TIMEOUT_MS),
          "--max-connections-per-ip",
          "8",
        ],
      }),
      devnet.startNode("bob"),
    ]);
    await bob.api.call("POST", "/v1/channels", {
      partner: alice.address,
      partnerMultiaddr: alice.multiaddr,
      token,
      deposit: (10n * unit).toString(),
    });
    expect((await payAlice()).status).to.equal("completed");
    attacker = await startAttackerHost();
  });

  after(async () => {
    await attacker?.stop();
    await devnet?.stop();
  });

  it("answers forged hellos with a small puzzle (no signed reply), closes a connection after 3 abandoned ones, logs a bounded number of lines, keeps paying", async () => {
    const answers: Array<Uint8Array | null> = [];
    const connections: Connection[] = [];
    const flood = (async () => {
      for (let c = 0; c < 5; c++) {
        const connection = await dialNew(attacker, alice.multiaddr);
        connections.push(connection);
        for (let i = 0; i < 6; i++) answers.push(await sendForgedHello(attacker, connection));
        await new Promise((r) => setTimeout(r, 250)); // under libp2p's 5 connections per second per host
      }
    })();
    for (let i = 0; i < 5; i++) expect((await payAlice()).status).to.equal("completed");
    await flood;
    const challenges = answers.filter((a): a is Uint8Array => a !== null);
    // 3 challenges per connection, then alice closes it: the other hellos never reach her.
    expect(challenges.length, "answered hellos").to.equal(15);
    expect(
      connections.every((c) => c.status !== "open"),
      "every flooding connection closed",
    ).to.equal(true);
    for (const a of challenges) {
      expect(a.length, "a challenge, not a ~6.5 KiB signed reply").to.be.lessThan(100);
      const msg = cbor.decode(a) as { t: number; difficultyBits: number };
      expect(msg.t).to.equal(4);
      expect(msg.difficultyBits).to.be.at.least(10);
    }
    // 15 abandoned handshakes from one IP: at most 10 warnings in a minute (plus one from a later window).
    const warned = aliceLog()
      .split("\n")
      .filter((l) => l.includes("inbound handshake failed")).length;
    expect(warned, "warning lines").to.be.at.most(11);
    expect(warned).to.be.at.least(1);
  });

  it("closes a stranger's idle connections; beyond the per-IP budget evicts strangers first; a new peer connects and pays", async () => {
    const held = [];
    for (let i = 0; i < 12; i++) {
      held.push(await dialNew(attacker, alice.multiaddr));
      await new Promise((r) => setTimeout(r, 250)); // under libp2p's 5 connections per second per host
    }
    // alice keeps at most 8 connections from 127.0.0.1: bob's (protected) survives, strangers go.
    await new Promise((r) => setTimeout(r, 500));
    const open = held.filter((c) => c.status === "open").length;
    expect(open, "attacker connections still open").to.be.at.most(7);
    expect((await payAlice()).status).to.equal("completed");

    // A new honest peer (carol) opens a channel with alice and pays, through the attacker's connections.
    await devnet.initNode("carol", 1000n * unit);
    const carol = await devnet.startNode("carol");
    await carol.api.call("POST", "/v1/channels", {
      partner: alice.address,
      partnerMultiaddr: alice.multiaddr,
      token,
      deposit: unit.toString(),
    });
    const paid = await carol.api.call<{ status: string }>("POST", "/v1/payments", {
      target: alice.address,
      token,
      amount: "7",
    });
    expect(paid.status).to.equal("completed");

    // None of the attacker's connections opened a session: all closed by the pre-session deadline.
    await new Promise((r) => setTimeout(r, PRE_SESSION_TIMEOUT_MS + 1_000));
    expect(held.filter((c) => c.status === "open").length).to.equal(0);
    expect(attacker.getConnections().filter((c) => c.status === "open").length).to.equal(0);
    expect((await payAlice()).status).to.equal("completed");
  });

  it("keeps at most a few strangers' sessions and closes them when idle; partners stay", async () => {
    const sessions: StrangerSession[] = [];
    for (let i = 0; i < MAX_STRANGER_SESSIONS + 2; i++) {
      sessions.push(await openStrangerSession(attacker, alice.multiaddr));
      await new Promise((r) => setTimeout(r, 250));
    }
    await new Promise((r) => setTimeout(r, 300));
    const peers = await connectedPeers();
    const strangers = sessions.filter((s) => peers.includes(s.keys.address));
    expect(strangers.length, "strangers' sessions kept").to.be.at.most(MAX_STRANGER_SESSIONS);
    expect(strangers.length).to.be.at.least(1);
    expect(peers).to.include(bob.address);
    // Nobody talks: every stranger's session ends by the idle deadline; bob's stays.
    const ended = await Promise.all(sessions.map((s) => streamEnds(s.stream, STRANGER_IDLE_MS + 4_000)));
    expect(ended.every(Boolean), "every stranger's stream ended").to.equal(true);
    const after = await connectedPeers();
    expect(after.filter((p) => sessions.some((s) => s.keys.address === p))).to.deep.equal([]);
    expect(after).to.include(bob.address);
    expect((await payAlice()).status).to.equal("completed");
  });

  it("drops a session whose frame stalls half-way, long before the idle deadline", async () => {
    const s = await openStrangerSession(attacker, alice.multiaddr);
    const started = Date.now();
    // The varint length of a 1000-byte frame, then 10 of its bytes; then nothing.
    s.stream.send(new Uint8Array([0xe8, 0x07, ...new Uint8Array(10)]));
    expect(await streamEnds(s.stream, STRANGER_IDLE_MS - 1_000), "stalled stream closed").to.equal(true);
    expect(Date.now() - started).to.be.lessThan(STRANGER_IDLE_MS);
  });

  it("refuses a flood of channel announcements after a few chain lookups (RATE_LIMITED)", async () => {
    const s = await openStrangerSession(attacker, alice.multiaddr);
    const codes: string[] = [];
    for (let i = 1; i <= 15; i++) {
      await s.send({ type: "ChannelAnnounce", channelId: 1_000_000n + BigInt(i), multiaddrs: [] }, i);
      // Skip the node's own requests (it asks a new session for its PeerInfo); take our reply.
      let reply = decodeEnvelope(await s.receive());
      while (reply.replyTo !== i) reply = decodeEnvelope(await s.receive());
      codes.push(reply.body.type === "Error" ? reply.body.code : reply.body.type);
    }
    expect(codes.slice(0, 10)).to.deep.equal(Array(10).fill("CHANNEL_NOT_FOUND"));
    expect(codes.slice(10)).to.deep.equal(Array(5).fill("RATE_LIMITED"));
    s.stream.abort(new Error("done"));
  });
});
