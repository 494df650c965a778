/**
 * HTLC handling under attack and under failure, with real `qrwp node start` processes against a
 * `hardhat node` chain (devnet margins: expiry delta 10 s, reveal timeout 5 s, min final expiry 7 s) and an
 * in-process rogue peer that speaks `/qrwp/channel/1.0.0` with a stopped node's real keys and libp2p identity.
 *
 * 1. Bad locks from a channel partner (mallory -> bob) are refused with coded errors, or declined with a
 *    coded TransferFailed, and move no value; bob keeps working afterwards.
 * 2. rogue alice -> carol -> dave: dave reveals, carol pays dave off-chain, alice goes offline without ever
 *    sending Unlock; carol registers the secret on-chain before the lock expires, closes, settles and
 *    unlocks, so nobody loses funds.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { parseUnits, Wallet } from "ethers";
import { createLibp2p, type Libp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { pino } from "pino";
import { Devnet, type NodeProcess } from "../../devnet/harness.js";
import { loadIdentity } from "../../host/keystore.js";
import { SessionTransport } from "../../host/session-transport.js";
import {
  balanceDataOf,
  secretHashOf,
  signBalanceProof,
  withDirect,
  type BalanceProof,
  type ChannelEnd,
  type ChannelMessage,
  type Lock,
  type LockedTransfer,
  type NodeKeys,
  type RouteHopInfo,
  type SignedBalanceProof,
} from "../../protocol/index.js";
import { ChannelHub__factory, SecretRegistry__factory } from "../../typechain-types/index.js";

interface ChannelJson {
  channelId: string;
  partner: string;
  state: string;
  ourDeposit: string;
  partnerDeposit: string;
  ourBalance: string;
  partnerBalance: string;
  ourNonce: string;
  partnerNonce: string;
  ourLocked: string;
  partnerLocked: string;
  pendingLocks: { ours: number; partner: number };
  closingParticipant: string | null;
  totals: { sent: string; received: string; sentCount: number; receivedCount: number };
}

const unit = parseUnits("1", 18);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nowSeconds = () => BigInt(Math.floor(Date.now() / 1000));
const randomHash = () => secretHashOf(`0x${randomBytes(32).toString("hex")}`);

/** Polls `fn` until it returns a value other than undefined, or fails after `timeoutMs`. */
async function waitUntil<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 30_000,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`);
    }
    await sleep(intervalMs);
  }
}

/**
 * A stopped node's identity (channel keys and libp2p key, same listen port) in this process: it signs
 * whatever balance proofs the test asks for and records every request its partner sends it.
 */
class RoguePeer {
  /** Requests received from the partner, in arrival order. */
  readonly inbox: ChannelMessage[] = [];
  /** The rogue's side of the channel as the partner accepted it (what the next honest proof builds on). */
  end: ChannelEnd = { nonce: 0n, transferredAmount: 0n, locks: [] };

  private constructor(
    private readonly libp2p: Libp2p,
    private readonly transport: SessionTransport,
    readonly keys: NodeKeys,
    private readonly partner: NodeProcess,
    private readonly domain: { chainId: bigint; hub: string; channelId: bigint },
  ) {}

  get address(): string {
    return this.keys.address;
  }

  static async start(
    stopped: NodeProcess,
    partner: NodeProcess,
    domain: { chainId: bigint; hub: string; channelId: bigint },
  ): Promise<RoguePeer> {
    const identity = loadIdentity(join(stopped.dataDir, "keys.json"));
    const port = stopped.multiaddr.split("/tcp/")[1]?.split("/")[0] ?? "0";
    const libp2p = await createLibp2p({
      privateKey: identity.libp2pKey,
      addresses: { listen: [`/ip4/127.0.0.1/tcp/${port}`] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
    });
    const transport = new SessionTransport(libp2p, identity.keys, pino({ level: "silent" }));
    const rogue = new RoguePeer(libp2p, transport, identity.keys, partner, domain);
    transport.setHandler(async (_from, body) => rogue.#answer(body));
    await transport.start();
    return rogue;
  }

  /** Acknowledges what an honest peer would; never reveals a secret and never answers with an Unlock. */
  #answer(body: ChannelMessage): ChannelMessage {
    this.inbox.push(body);
    switch (body.type) {
      case "PeerInfo":
      case "TransferFailed":
        return { type: "Ok" };
      case "DirectTransfer":
        return {
          type: "Processed",
          channelId: body.balanceProof.proof.channelId,
          nonce: body.balanceProof.proof.nonce,
        };
      case "BalanceUpdate":
        // Direct payments only: the rogue takes money, it never helps with locks.
        if (body.changes.every((c) => c.kind === "direct")) {
          return {
            type: "Processed",
            channelId: body.balanceProof.proof.channelId,
            nonce: body.balanceProof.proof.nonce,
          };
        }
        return { type: "Error", code: "PAYMENT_NOT_FOUND", message: "the rogue does not help" };
      default:
        return { type: "Error", code: "PAYMENT_NOT_FOUND", message: "the rogue does not help" };
    }
  }

  /** Signs a proof committing to `end`, with fields overridden by `tweak` (to forge a bad one). */
  sign(end: ChannelEnd, tweak: Partial<BalanceProof> = {}): SignedBalanceProof {
    const proof: BalanceProof = {
      chainId: this.domain.chainId,
      hub: this.domain.hub,
      channelId: this.domain.channelId,
      nonce: end.nonce,
      ...balanceDataOf(end),
      ...tweak,
    };
    return signBalanceProof(proof, this.keys);
  }

  /** The end after adding `lock` (no local limit check, so a 161st lock can be built). */
  withLock(lock: Lock): ChannelEnd {
    return {
      nonce: this.end.nonce + 1n,
      transferredAmount: this.end.transferredAmount,
      locks: [...this.end.locks, lock],
    };
  }

  /** A LockedTransfer adding `lock` (by default: the partner is the target, the rogue the initiator). */
  lockedTransfer(
    lock: Lock,
    options: {
      route?: RouteHopInfo[];
      target?: string;
      initiator?: string;
      initiatorMultiaddrs?: string[];
      tweak?: Partial<BalanceProof>;
      end?: ChannelEnd;
    } = {},
  ): { body: LockedTransfer; end: ChannelEnd } {
    const end = options.end ?? this.withLock(lock);
    const body: LockedTransfer = {
      type: "LockedTransfer",
      paymentId: `rogue-${lock.secretHash.slice(2, 14)}`,
      initiator: options.initiator ?? this.address,
      target: options.target ?? this.partner.address,
      lock,
      route: options.route ?? [
        { address: this.partner.address, amount: lock.amount, expiration: lock.expiration },
      ],
      initiatorMultiaddrs: options.initiatorMultiaddrs ?? [],
      balanceProof: this.sign(end, options.tweak),
    };
    return { body, end };
  }

  request(body: ChannelMessage): Promise<ChannelMessage> {
    return this.transport.request(this.partner.address, body, {
      peerId: this.partner.peerId,
      multiaddrs: [this.partner.multiaddr.split("/p2p/")[0] as string],
    });
  }

  /** Sends `body`; on Processed for the expected nonce, `end` becomes the accepted state. */
  async expectProcessed(body: ChannelMessage, end: ChannelEnd): Promise<void> {
    const reply = await this.request(body);
    expect(reply).to.deep.equal({ type: "Processed", channelId: this.domain.channelId, nonce: end.nonce });
    this.end = end;
  }

  async expectRefused(body: ChannelMessage, code: string): Promise<string> {
    const reply = await this.request(body);
    expect(reply).to.include({ type: "Error", code });
    return (reply as Extract<ChannelMessage, { type: "Error" }>).message;
  }

  async waitForRequest<T extends ChannelMessage["type"]>(
    type: T,
    match: (m: Extract<ChannelMessage, { type: T }>) => boolean,
  ): Promise<Extract<ChannelMessage, { type: T }>> {
    return waitUntil(`a ${type} from the partner`, async () =>
      this.inbox.find((m): m is Extract<ChannelMessage, { type: T }> => m.type === type && match(m as never)),
    );
  }

  async stop(): Promise<void> {
    await this.transport.stop();
    await this.libp2p.stop();
  }
}

describe("integration: adversarial and failing HTLCs between node processes", function () {
  this.timeout(300_000);
  let devnet: Devnet;
  let token: string;
  const n: Record<string, NodeProcess> = {};
  const carolFee = { feeFlat: 1000n, feePpm: 100 };
  const malloryDeposit = 10n * unit;
  const aliceDeposit = 50n * unit;
  const carolDeposit = 5n * unit;
  // Short, but longer than the lock carol receives: a node refuses locks that outlive the settle window.
  const settleTimeoutSeconds = 30;
  let malloryBob: string;
  let aliceCarol: string;

  const channel = (node: NodeProcess, id: string) => node.api.call<ChannelJson>("GET", `/v1/channels/${id}`);
  const openChannel = async (from: NodeProcess, to: NodeProcess, deposit: bigint, settle?: number) =>
    (
      await from.api.call<ChannelJson>("POST", "/v1/channels", {
        partner: to.address,
        partnerMultiaddr: to.multiaddr,
        token,
        deposit: deposit.toString(),
        ...(settle ? { settleTimeoutSeconds: settle } : {}),
      })
    ).channelId;
  const domain = (channelId: string) => ({
    chainId: BigInt(devnet.deployment.chainId),
    hub: devnet.deployment.hub,
    channelId: BigInt(channelId),
  });

  before(async () => {
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-htlc-adv-")));
    token = devnet.token;
    const names = ["mallory", "bob", "alice", "carol", "dave"];
    await Promise.all(names.map((name) => devnet.initNode(name, 1000n * unit)));
    const started = await Promise.all(
      names.map((name) =>
        devnet.startNode(name, { chainPollMs: 500, ...(name === "carol" ? carolFee : {}) }),
      ),
    );
    names.forEach((name, i) => (n[name] = started[i] as NodeProcess));
    // Every channel is opened here, early: the chain's clock runs ahead of the wall clock by about one
    // second per block mined in a burst, and this lead must have run out before the second scenario.
    const known = (node: NodeProcess, id: string) =>
      waitUntil(`${node.name} to know channel ${id}`, async () =>
        (await channel(node, id)).state === "opened" ? true : undefined,
      );
    [malloryBob, aliceCarol] = await Promise.all([
      openChannel(n.mallory!, n.bob!, malloryDeposit),
      openChannel(n.alice!, n.carol!, aliceDeposit, settleTimeoutSeconds),
    ]);
    await Promise.all([known(n.bob!, malloryBob), known(n.carol!, aliceCarol)]);
    await n.carol!.api.call("POST", `/v1/channels/${aliceCarol}/deposit`, {
      totalDeposit: carolDeposit.toString(),
    });
    await openChannel(n.carol!, n.dave!, 50n * unit);
    // mallory and alice live on only as in-process rogue peers with their keys.
    await Promise.all([n.mallory!.stop(), n.alice!.stop()]);
  });

  after(async () => {
    await devnet?.stop();
  });

  describe("bad locks from a channel partner are refused and change nothing", () => {
    let rogue: RoguePeer;
    /** A LockedTransfer bob accepted and whose lock was removed since. */
    let removedLock: LockedTransfer;
    const bobView = () => channel(n.bob!, malloryBob);
    /** What must not move when bob refuses a proof. */
    const valueOf = (c: ChannelJson) => ({
      partnerNonce: c.partnerNonce,
      partnerLocked: c.partnerLocked,
      pendingLocks: c.pendingLocks,
      ourBalance: c.ourBalance,
      partnerBalance: c.partnerBalance,
      totals: c.totals,
    });
    const lockFor = (amount: bigint, expiration: bigint): Lock => ({
      amount,
      expiration,
      secretHash: randomHash(),
    });

    before(async () => {
      rogue = await RoguePeer.start(n.mallory!, n.bob!, domain(malloryBob));
    });

    after(async () => {
      await rogue?.stop();
    });

    it("refuses a lock that has already expired with EXPIRY_TOO_SOON", async () => {
      const before = await bobView();
      const { body } = rogue.lockedTransfer(lockFor(unit, nowSeconds() - 5n));
      await rogue.expectRefused(body, "EXPIRY_TOO_SOON");
      expect(valueOf(await bobView())).to.deep.equal(valueOf(before));
    });

    it("takes a lock expiring in ~2 s but declines it (as target and as mediator) with TransferFailed EXPIRY_TOO_SOON; the lock is removed and no value moves", async () => {
      const before = await bobView();
      /** Sends the lock (bob stores it: not expired yet), waits for bob's decline, then removes the lock. */
      const declined = async (lock: Lock, asMediator: boolean): Promise<LockedTransfer> => {
        const { body, end } = asMediator
          ? // The route goes on from bob back to mallory: bob would need 10 s between the two expirations.
            rogue.lockedTransfer(lock, {
              target: rogue.address,
              route: [
                { address: n.bob!.address, amount: lock.amount, expiration: lock.expiration },
                { address: rogue.address, amount: lock.amount, expiration: lock.expiration },
              ],
            })
          : rogue.lockedTransfer(lock);
        await rogue.expectProcessed(body, end);
        const failed = await rogue.waitForRequest("TransferFailed", (m) => m.secretHash === lock.secretHash);
        expect(failed).to.include({ code: "EXPIRY_TOO_SOON", failedAt: n.bob!.address });
        const held = await bobView();
        expect(held.partnerLocked).to.equal(lock.amount.toString());
        expect(held.pendingLocks.partner).to.equal(1);
        // bob declined it, so it lets the rogue remove the lock at once (LockExpired before the expiration).
        const removed: ChannelEnd = {
          nonce: rogue.end.nonce + 1n,
          transferredAmount: rogue.end.transferredAmount,
          locks: rogue.end.locks.filter((l) => l.secretHash !== lock.secretHash),
        };
        await rogue.expectProcessed(
          { type: "LockExpired", secretHash: lock.secretHash, balanceProof: rogue.sign(removed) },
          removed,
        );
        return body;
      };
      // Nodes time locks by the later of their clock and the chain's (hardhat's runs ahead after bursts of
      // blocks): "in ~3 s" is measured from that.
      const nodeNow = async () => {
        const block = (await devnet.chain.provider.send("eth_getBlockByNumber", ["latest", false])) as {
          timestamp: string;
        };
        const chain = BigInt(block.timestamp);
        return chain > nowSeconds() ? chain : nowSeconds();
      };
      removedLock = await declined(lockFor(unit, (await nodeNow()) + 3n), false);
      await declined(lockFor(unit, (await nodeNow()) + 3n), true);
      const after = await bobView();
      expect(BigInt(after.partnerNonce)).to.equal(BigInt(before.partnerNonce) + 4n);
      expect({ ...valueOf(after), partnerNonce: before.partnerNonce }).to.deep.equal(valueOf(before));
    });

    it("refuses a lock that outlives the channel's settle timeout with INVALID_TRANSFER", async () => {
      const before = await bobView();
      const { body } = rogue.lockedTransfer(lockFor(unit, nowSeconds() + 3600n + 60n));
      expect(await rogue.expectRefused(body, "INVALID_TRANSFER")).to.match(/settle timeout/);
      expect(valueOf(await bobView())).to.deep.equal(valueOf(before));
    });

    it("refuses a lock above the partner's deposit with INSUFFICIENT_CAPACITY", async () => {
      const before = await bobView();
      const { body } = rogue.lockedTransfer(lockFor(BigInt(before.partnerBalance) + 1n, nowSeconds() + 600n));
      await rogue.expectRefused(body, "INSUFFICIENT_CAPACITY");
      expect(valueOf(await bobView())).to.deep.equal(valueOf(before));
    });

    it("refuses a wrong locksRoot or a lockedAmount that is not the sum of the locks with INVALID_TRANSFER naming the field", async () => {
      const before = await bobView();
      const lock = lockFor(unit, nowSeconds() + 600n);
      const badRoot = rogue.lockedTransfer(lock, { tweak: { locksRoot: randomHash() } });
      expect(await rogue.expectRefused(badRoot.body, "INVALID_TRANSFER")).to.match(/locksRoot/);
      const badAmount = rogue.lockedTransfer(lock, { tweak: { lockedAmount: lock.amount + 1n } });
      expect(await rogue.expectRefused(badAmount.body, "INVALID_TRANSFER")).to.match(/lockedAmount/);
      // The locks root of an empty list with the lock's amount claimed (lock hidden from the root).
      const hidden = rogue.lockedTransfer(lock, { tweak: { locksRoot: `0x${"00".repeat(32)}` } });
      expect(await rogue.expectRefused(hidden.body, "INVALID_TRANSFER")).to.match(/locksRoot/);
      expect(valueOf(await bobView())).to.deep.equal(valueOf(before));
    });

    it("refuses a stale nonce (fresh signature, and a replay of a lock already removed) with STALE_NONCE", async () => {
      const before = await bobView();
      const lock = lockFor(unit, nowSeconds() + 600n);
      const end = { ...rogue.withLock(lock), nonce: rogue.end.nonce };
      await rogue.expectRefused(rogue.lockedTransfer(lock, { end }).body, "STALE_NONCE");
      await rogue.expectRefused(removedLock, "STALE_NONCE");
      expect(valueOf(await bobView())).to.deep.equal(valueOf(before));
    });

    it("accepts 160 pending locks and refuses the 161st with TOO_MANY_LOCKS", async () => {
      // bob is the target without an invoice: it asks an initiator that does not exist for the secrets.
      const initiator = Wallet.createRandom().address;
      const expiration = nowSeconds() + 600n; // far, but inside the channel's settle timeout (3600 s)
      for (let i = 0; i < 160; i++) {
        const { body, end } = rogue.lockedTransfer(lockFor(1000n + BigInt(i), expiration), { initiator });
        await rogue.expectProcessed(body, end);
      }
      const full = await bobView();
      expect(full.pendingLocks.partner).to.equal(160);
      const sum = rogue.end.locks.reduce((s, l) => s + l.amount, 0n);
      expect(full.partnerLocked).to.equal(sum.toString());
      const { body } = rogue.lockedTransfer(lockFor(1000n, expiration), { initiator });
      await rogue.expectRefused(body, "TOO_MANY_LOCKS");
      expect(valueOf(await bobView())).to.deep.equal(valueOf(full));
    });

    it("answers a MessageBatch of messages about unknown payments with one coded Error each, in order, and changes nothing", async () => {
      const before = valueOf(await bobView());
      const hash = randomHash();
      const reply = await rogue.request({
        type: "MessageBatch",
        messages: [
          { type: "RevealSecret", secret: `0x${randomBytes(32).toString("hex")}` },
          {
            type: "TransferFailed",
            paymentId: "rogue-unknown",
            secretHash: hash,
            code: "NO_ROUTE",
            message: "no route",
            failedAt: rogue.address,
          },
          { type: "SecretRequest", paymentId: "rogue-unknown", secretHash: hash, amount: 1n, expiration: 1n },
        ],
      });
      expect(reply.type).to.equal("MessageBatchReply");
      const replies = (reply as Extract<ChannelMessage, { type: "MessageBatchReply" }>).replies;
      expect(replies.map((r) => (r.type === "Error" ? r.code : r.type))).to.deep.equal([
        "PAYMENT_NOT_FOUND",
        "PAYMENT_NOT_FOUND",
        "PAYMENT_NOT_FOUND",
      ]);
      expect(valueOf(await bobView())).to.deep.equal(before);
    });

    it("keeps working: a valid direct payment each way goes through with the 160 locks pending", async () => {
      const before = await bobView();
      const amount = unit / 4n;
      const end = withDirect(rogue.end, amount);
      await rogue.expectProcessed(
        { type: "DirectTransfer", paymentId: "rogue-valid-1", amount, balanceProof: rogue.sign(end) },
        end,
      );
      const mid = await bobView();
      expect(BigInt(mid.ourBalance) - BigInt(before.ourBalance)).to.equal(amount);
      expect(BigInt(before.partnerBalance) - BigInt(mid.partnerBalance)).to.equal(amount);
      expect(mid.pendingLocks.partner).to.equal(160);
      const paid = await n.bob!.api.call<{ status: string }>("POST", "/v1/payments", {
        target: rogue.address,
        token,
        amount: (amount / 2n).toString(),
        mode: "direct",
      });
      expect(paid.status).to.equal("completed");
      const after = await bobView();
      expect(BigInt(mid.ourBalance) - BigInt(after.ourBalance)).to.equal(amount / 2n);
      const seen = rogue.inbox.flatMap((m) =>
        m.type === "BalanceUpdate" ? m.changes.flatMap((c) => (c.kind === "direct" ? [c.amount] : [])) : [],
      );
      expect(seen).to.deep.equal([amount / 2n]);
    });
  });

  describe("a target reveals while the mediator's upstream is offline", () => {
    it("pays dave off-chain; carol registers the secret before the lock expires, closes, settles and unlocks: nobody loses funds", async () => {
      const provider = devnet.chain.provider;
      const registry = SecretRegistry__factory.connect(devnet.deployment.secretRegistry, provider);
      const hub = ChannelHub__factory.connect(devnet.deployment.hub, provider);
      const latestTimestamp = async () =>
        BigInt(
          ((await provider.send("eth_getBlockByNumber", ["latest", false])) as { timestamp: string })
            .timestamp,
        );
      const amount = 2n * unit;
      const fee = carolFee.feeFlat + (amount * BigInt(carolFee.feePpm)) / 1_000_000n;
      const invoice = await n.dave!.api.call<{ paymentHash: string; status: string }>(
        "POST",
        "/v1/invoices",
        {
          token,
          amount: amount.toString(),
        },
      );
      expect(invoice.status).to.equal("open");
      const daveChannel = await waitUntil("dave's channel with carol", async () => {
        const { channels } = await n.dave!.api.call<{ channels: ChannelJson[] }>("GET", "/v1/channels");
        return channels.find(
          (c) => c.partner.toLowerCase() === n.carol!.address.toLowerCase() && c.state === "opened",
        );
      });
      // The registry stamps block.timestamp, the nodes decide by their clock: once the chain's lead from the
      // setup's bursts of blocks has run out, pin the next block to the wall clock (hardhat keeps any lead).
      await waitUntil(
        "the chain clock's lead to run out",
        async () => ((await latestTimestamp()) < nowSeconds() ? true : undefined),
        60_000,
      );
      const pinned = Math.max(Number(await latestTimestamp()) + 1, Number(nowSeconds()));
      await provider.send("evm_setNextBlockTimestamp", [pinned]);
      await provider.send("evm_mine", []);
      // carol's balance in the channel: its deposit (nothing moved off-chain yet).
      expect((await channel(n.carol!, aliceCarol)).ourBalance).to.equal(carolDeposit.toString());
      const balancesBefore = {
        alice: await devnet.tokenBalance(n.alice!.address),
        carol: await devnet.tokenBalance(n.carol!.address),
      };

      const rogue = await RoguePeer.start(n.alice!, n.carol!, domain(aliceCarol));
      const exp2 = nowSeconds() + 15n;
      const exp1 = exp2 + 11n;
      const lock: Lock = { amount: amount + fee, expiration: exp1, secretHash: invoice.paymentHash };
      const { body, end } = rogue.lockedTransfer(lock, {
        target: n.dave!.address,
        route: [
          { address: n.carol!.address, amount: amount + fee, expiration: exp1 },
          { address: n.dave!.address, amount, expiration: exp2 },
        ],
      });
      try {
        await rogue.expectProcessed(body, end);
      } finally {
        await rogue.stop(); // offline for good, without ever sending Unlock
      }

      // dave is paid off-chain by carol's Unlock.
      await waitUntil("dave's invoice to be paid", async () => {
        const inv = await n.dave!.api.call<{ status: string; paidAmount: string }>(
          "GET",
          `/v1/invoices/${invoice.paymentHash}`,
        );
        return inv.status === "paid" ? inv : undefined;
      }).then((inv) => expect(inv.paidAmount).to.equal(amount.toString()));
      const daveAfter = await channel(n.dave!, daveChannel.channelId);
      expect(daveAfter.partnerLocked).to.equal("0");
      expect(BigInt(daveAfter.ourBalance) - BigInt(daveChannel.ourBalance)).to.equal(amount);

      // carol cannot get alice's Unlock: it registers the secret on-chain before alice's lock expires.
      const revealedAt = await waitUntil(
        "carol to register the secret on-chain",
        async () => {
          const at = await registry.getSecretRevealTimestamp(invoice.paymentHash);
          return at > 0n ? at : undefined;
        },
        60_000,
        500,
      );
      expect(Number(revealedAt)).to.be.below(Number(exp1));

      // ... closes the channel with alice's proof holding the lock, settles after the timeout and unlocks
      // once the lock has expired: the hub pays carol the lock, since its secret was registered in time.
      const unlocked = await waitUntil(
        "carol to close, settle and unlock alice's channel",
        async () => {
          // Nothing else mines: let block.timestamp follow the wall clock (never ahead of it).
          if ((await latestTimestamp()) < nowSeconds()) await provider.send("evm_mine", []);
          const events = await hub.queryFilter(hub.filters.ChannelUnlocked(aliceCarol, n.alice!.address));
          return events[0];
        },
        90_000,
        500,
      );
      expect(unlocked.args.receiver).to.equal(n.carol!.address);
      expect(unlocked.args.unlockedAmount).to.equal(amount + fee);
      expect(unlocked.args.returnedAmount).to.equal(0n);
      const settled = await channel(n.carol!, aliceCarol);
      expect(settled).to.include({ state: "settled", closingParticipant: n.carol!.address });
      expect((await hub.getLockedBalance(aliceCarol, n.alice!.address)).lockedAmount).to.equal(0n);
      const carolGain = (await devnet.tokenBalance(n.carol!.address)) - balancesBefore.carol;
      const aliceGain = (await devnet.tokenBalance(n.alice!.address)) - balancesBefore.alice;
      // carol's own channel balance (its deposit: nothing moved off-chain) plus the lock it paid dave for.
      expect(carolGain).to.equal(carolDeposit + amount + fee);
      // alice gets back her deposit minus the lock she sent.
      expect(aliceGain).to.equal(aliceDeposit - amount - fee);
    });
  });
});
