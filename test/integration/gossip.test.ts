/**
 * Channel-update gossip between real libp2p nodes over TCP on 127.0.0.1 (tcp + noise + yamux + identify +
 * ping + gossipsub, as node/runtime.ts builds its node), in a line A - B - C:
 * - an update A published before it had peers reaches C once the line is connected (re-publish on
 *   subscribe), and a later one reaches C directly;
 * - a forged update (bad signature) is rejected by B, never delivered to or applied at C; a stale nonce is
 *   ignored;
 * - a node D that joins late, connected to C only, receives A's latest update through C's re-publish.
 * Each node's NetworkGraph is fed the same on-chain events (channel 1: A-B, channel 2: B-C), as a chain
 * follower would.
 */
import { expect } from "chai";
import { createLibp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { ping } from "@libp2p/ping";
import { gossipsub } from "@libp2p/gossipsub";
import { pino } from "pino";
import { addressOf } from "../../protocol/index.js";
import {
  ChannelGossip,
  NetworkGraph,
  channelGossipTopic,
  decodeChannelUpdate,
  encodeChannelUpdate,
  signChannelUpdate,
  type ChannelUpdate,
} from "../../router/index.js";

const CHAIN = 31337n;
const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const TOKEN = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512";
const TOPIC = channelGossipTopic(CHAIN, HUB);

interface TestKey {
  address: string;
  secp256k1PrivateKey: Uint8Array;
}

function key(i: number): TestKey {
  const sk = new Uint8Array(32);
  sk[30] = 0x90;
  sk[31] = i;
  return { secp256k1PrivateKey: sk, address: addressOf(sk) };
}

async function createPeer() {
  return createLibp2p({
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ping: ping(), pubsub: gossipsub() },
  });
}

type Peer = Awaited<ReturnType<typeof createPeer>>;

interface GossipNode {
  name: string;
  key: TestKey;
  libp2p: Peer;
  graph: NetworkGraph;
  gossip: ChannelGossip;
  /** Updates gossipsub delivered to this node's application (accepted by its validator). */
  delivered: ChannelUpdate[];
}

const keys = { A: key(1), B: key(2), C: key(3), D: key(4) };

function chainEvents(graph: NetworkGraph): void {
  for (const [channelId, p1, p2] of [
    [1n, keys.A, keys.B],
    [2n, keys.B, keys.C],
  ] as const) {
    graph.applyEvent({
      type: "ChannelOpened",
      channelId,
      participant1: p1.address,
      participant2: p2.address,
      token: TOKEN,
      settleTimeoutSeconds: 3600n,
    });
    graph.applyEvent({
      type: "ChannelNewDeposit",
      channelId,
      participant: p1.address,
      totalDeposit: 10n ** 20n,
    });
  }
}

async function startNode(name: keyof typeof keys): Promise<GossipNode> {
  const libp2p = await createPeer();
  const graph = new NetworkGraph({ chainId: CHAIN, hub: HUB });
  chainEvents(graph);
  const gossip = new ChannelGossip({
    pubsub: libp2p.services.pubsub,
    graph,
    republishDelayMs: 200,
    log: pino({ level: "silent" }).child({ node: name }),
  });
  const delivered: ChannelUpdate[] = [];
  libp2p.services.pubsub.addEventListener("message", (evt) => {
    if (evt.detail.topic === TOPIC) delivered.push(decodeChannelUpdate(evt.detail.data));
  });
  gossip.start();
  return { name, key: keys[name], libp2p, graph, gossip, delivered };
}

function update(from: TestKey, to: TestKey, channelId: bigint, nonce: bigint, feePpm: number): ChannelUpdate {
  return signChannelUpdate(
    {
      chainId: CHAIN,
      hub: HUB,
      token: TOKEN,
      channelId,
      participant: from.address,
      partner: to.address,
      nonce,
      feeFlat: 1000n,
      feePpm,
      expiryDeltaSeconds: 600,
      htlcMinimum: 1n,
      htlcMaximum: 10n ** 20n,
      capacityHint: 10n ** 20n,
      disabled: false,
    },
    from,
  );
}

/** Polls `cond` every 50 ms; fails (liveness guard, not a timing assertion) after `timeoutMs`. */
async function until(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) expect.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  try {
    await p;
  } catch (err) {
    expect((err as { code?: string }).code).to.equal(code);
    return;
  }
  expect.fail(`expected ${code}`);
}

const nonceAt = (n: GossipNode, channelId: bigint, participant: TestKey): bigint | undefined =>
  n.graph.latestUpdate(channelId, participant.address)?.nonce;

describe("integration: channel-update gossip over libp2p gossipsub (A - B - C line)", function () {
  this.timeout(120_000);
  const nodes: GossipNode[] = [];
  let A: GossipNode;
  let B: GossipNode;
  let C: GossipNode;

  before(async () => {
    [A, B, C] = await Promise.all([startNode("A"), startNode("B"), startNode("C")]);
    nodes.push(A, B, C);
  });

  after(async () => {
    for (const n of nodes) await n.gossip.stop();
    await Promise.all(nodes.map((n) => n.libp2p.stop()));
  });

  it("an update A published before having peers reaches C after the line connects; a new one follows", async () => {
    // no peer yet: gossipsub has nobody to send to; the update is kept and re-published later
    expect(await A.gossip.publish(update(keys.A, keys.B, 1n, 1000n, 100))).to.equal(0);
    expect(A.gossip.ownUpdates().map((u) => u.nonce)).to.deep.equal([1000n]);
    await A.libp2p.dial(B.libp2p.getMultiaddrs()[0]!);
    await B.libp2p.dial(C.libp2p.getMultiaddrs()[0]!);
    await until("C to learn A's update 1000", () => nonceAt(C, 1n, keys.A) === 1000n);

    await A.gossip.publish(update(keys.A, keys.B, 1n, 2000n, 200));
    await until("C to learn A's update 2000", () => nonceAt(C, 1n, keys.A) === 2000n);
    expect(C.graph.latestUpdate(1n, keys.A.address)?.feePpm).to.equal(200);
    expect(C.delivered.filter((u) => u.participant === keys.A.address).map((u) => u.nonce)).to.include(2000n);
    // C's copy is routable: its policy is the one A signed
    expect(C.graph.policy(1n, keys.A.address)).to.deep.include({ feeFlat: 1000n, feePpm: 200 });
  });

  it("a forged update is rejected by B and never reaches C; a stale nonce is ignored", async () => {
    const before = { rejected: B.gossip.stats().rejected, ignored: B.gossip.stats().ignored };
    const forged = { ...update(keys.A, keys.B, 1n, 3000n, 300), feePpm: 0 };
    const stale = update(keys.A, keys.B, 1n, 1500n, 150);
    // publish() refuses both
    await expectCode(A.gossip.publish(forged), "INVALID_SIGNATURE");
    await expectCode(A.gossip.publish(stale), "STALE_NONCE");
    // so A's node sends them raw, bypassing its own checks
    await A.libp2p.services.pubsub.publish(TOPIC, encodeChannelUpdate(forged));
    await A.libp2p.services.pubsub.publish(TOPIC, encodeChannelUpdate(stale));
    // a valid update sent after them travels the same A -> B -> C path
    await A.gossip.publish(update(keys.A, keys.B, 1n, 4000n, 400));
    await until("C to learn A's update 4000", () => nonceAt(C, 1n, keys.A) === 4000n);
    await until("B to reject the forged update", () => B.gossip.stats().rejected > before.rejected);
    await until("B to ignore the stale update", () => B.gossip.stats().ignored > before.ignored);

    for (const n of [B, C]) {
      expect(n.graph.latestUpdate(1n, keys.A.address)?.feePpm, n.name).to.equal(400);
      const nonces = n.delivered.map((u) => u.nonce);
      expect(nonces, n.name).to.include(4000n);
      expect(nonces, n.name).to.not.include(3000n);
      expect(nonces, n.name).to.not.include(1500n);
    }
    expect(C.gossip.stats().rejected).to.equal(0);
  });

  it("a node joining late (connected to C only) receives A's latest update through the re-publish", async () => {
    const publishedByC = C.gossip.stats().published;
    const D = await startNode("D");
    nodes.push(D);
    expect(nonceAt(D, 1n, keys.A)).to.equal(undefined);
    await D.libp2p.dial(C.libp2p.getMultiaddrs()[0]!);
    await until("D to learn A's update 4000", () => nonceAt(D, 1n, keys.A) === 4000n);
    expect(D.graph.latestUpdate(1n, keys.A.address)?.feePpm).to.equal(400);
    expect(D.gossip.stats().accepted).to.be.greaterThan(0);
    // C never called publish(): what it sent were re-publishes of updates it knew
    expect(C.gossip.stats().published).to.be.greaterThan(publishedByC);
    expect(D.libp2p.getPeers().map(String)).to.deep.equal([C.libp2p.peerId.toString()]);
  });
});
