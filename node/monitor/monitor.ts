/**
 * The channel monitor (LDK's ChannelMonitor is the model): the node's one view of the chain. A
 * `ChainEventFollower` over every `--rpc` URL (failover, per-call timeout, chain id checked per URL) delivers
 * the ChannelHub and SecretRegistry events `confirmations` blocks below the head, range by range. For the
 * node's own channels the monitor applies them (deposits, a close by either side, a contest, settlement) and
 * persists its cursor with them, so a restarted node resumes after the last block it handled and misses
 * none; then it acts, every poll, on what the chain now requires:
 *
 * - a partner's close with an older proof than the partner's latest we hold (a **breach**): contest with
 *   that proof (`updateNonClosingBalanceProof`) while the settle window is open. The hub's stored nonce is
 *   read at the head before each contest, so a contest already mined is not sent twice, and one dropped by
 *   a reorganisation is sent again;
 * - a close by either side: register the secrets we know of the partner's pending locks (so an unlock after
 *   settlement pays them to us);
 * - the settle timeout passed: `settleChannel`;
 * - a settled channel with locks kept by the hub: `unlock` both sides once every lock expired;
 * - a close the chain no longer has (a reorganisation removed it, seen when reading the head): a partner's
 *   close is forgotten (the channel is open again); our own is submitted again.
 *
 * Subscribers get typed events (`MonitorEventMap`); every confirmed range goes to `chain` (the router's
 * graph follows the hub through it). Every range since the deployment block is delivered after a start (the
 * router's graph lives in memory); channel events at or below the persisted cursor were applied before and
 * are skipped.
 */
import { EventEmitter } from "node:events";
import type { Logger } from "pino";
import {
  ChainEventFollower,
  type ChainEvent,
  type ChainEventBatch,
  type Deployment,
} from "../../chain/index.js";
import { balanceHash, signBalanceProofUpdate, type NodeKeys } from "../../protocol/index.js";
import { errorFields } from "../../host/session-transport.js";
import type { NodeStore } from "../store/store.js";
import type { ChainCalls } from "../channels/chain-calls.js";
import type { ChannelManager } from "../channels/manager.js";
import type { ChannelRegistry } from "../channels/registry.js";
import type { Withdraws } from "../channels/withdraw.js";
import { eqAddr, type Live } from "../channels/types.js";

/** `meta` key of the last block whose channel events the monitor applied. */
export const MONITOR_CURSOR_KEY = "monitor:last-processed-block";
/**
 * `meta` key of the nonce the hub stores for a closed channel's closer: none at the close (the closer submits
 * its partner's proof only), the contested proof's after NonClosingBalanceProofUpdated.
 */
const closerNonceKey = (channelId: bigint) => `monitor:closer-nonce:${channelId}`;
const unlockedKey = (channelId: bigint) => `unlocked:${channelId}`;
/**
 * `meta` key of a channel whose close a reorganisation removed: its head is read on every pass, so a close
 * re-mined in a block at or below the cursor (never delivered again as an event) is still seen.
 */
const watchHeadKey = (channelId: bigint) => `monitor:watch-head:${channelId}`;
/** Consecutive passes that must read a closed channel as open at the head before its close is forgotten. */
const CLOSE_REMOVED_READS = 3;

/** A close seen on chain (at the confirmation depth). `closedAtSeconds`: block timestamp, unix seconds. */
export interface ChannelClosedNotice {
  channelId: bigint;
  closingParticipant: string;
  byPartner: boolean;
  /** Nonce of the non-closer's balance proof the closer submitted (ours when the partner closed). */
  nonce: bigint;
}

/** The monitor's events. Listeners run synchronously and must not throw (throws are logged). */
export interface MonitorEventMap {
  /** Every confirmed block range, with all its events, in order (also ranges without events). */
  chain: [batch: ChainEventBatch];
  closed: [notice: ChannelClosedNotice];
  /** We sent a contest of a partner's close with its proof of `nonce` (mined at the head). */
  contested: [event: { channelId: bigint; nonce: bigint }];
  settled: [event: { channelId: bigint; cooperative: boolean }];
  /** A secret registered on chain (any channel: mediators learn secrets they were not sent). */
  secretRevealed: [event: { secretHash: string; secret: string }];
  /** A reorganisation removed a close we had applied; `resubmitted` when it was ours. */
  closeReorged: [event: { channelId: bigint; resubmitted: boolean }];
}

/** What {@link ChannelMonitor} needs. */
export interface ChannelMonitorInit {
  store: NodeStore;
  keys: NodeKeys;
  deployment: Deployment;
  registry: ChannelRegistry;
  chain: ChainCalls;
  manager: ChannelManager;
  withdraws: Withdraws;
  /** JSON-RPC URLs, tried in order with failover; at least one. */
  rpcUrls: readonly string[];
  /** Blocks below the head an event must be before it is applied. Default 0. */
  confirmations?: number;
  /** Wait between polls once caught up, ms. Default 2000. */
  pollIntervalMs?: number;
  /** Timeout of one JSON-RPC call of the follower, ms. Default 10 000. */
  requestTimeoutMs?: number;
  log: Logger;
}

export class ChannelMonitor {
  readonly #init: ChannelMonitorInit;
  readonly #store: NodeStore;
  readonly #registry: ChannelRegistry;
  readonly #chain: ChainCalls;
  readonly #log: Logger;
  readonly #follower: ChainEventFollower;
  readonly events = new EventEmitter<MonitorEventMap>();
  /** The last block whose channel events were applied (persisted with them). */
  #cursor: number;
  #acting = false;
  #stopped = false;
  /** Per closed channel (id), how many passes in a row read it as open at the head (a lagging URL is one). */
  readonly #openedReads = new Map<string, number>();
  /** Acts on time alone too (a settle timeout passes without new blocks being scanned). */
  #timer: NodeJS.Timeout | undefined;

  constructor(init: ChannelMonitorInit) {
    this.#init = init;
    this.#store = init.store;
    this.#registry = init.registry;
    this.#chain = init.chain;
    this.#log = init.log;
    const saved = init.store.getMeta(MONITOR_CURSOR_KEY);
    this.#cursor = saved === null ? init.deployment.deployBlock - 1 : Number(saved);
    this.#follower = new ChainEventFollower({
      rpcUrls: init.rpcUrls,
      deployment: init.deployment,
      fromBlock: init.deployment.deployBlock,
      confirmations: init.confirmations ?? 0,
      pollIntervalMs: init.pollIntervalMs ?? 2000,
      ...(init.requestTimeoutMs !== undefined ? { requestTimeoutMs: init.requestTimeoutMs } : {}),
      log: init.log.child({ component: "chain-events" }),
      onBatch: (batch) => this.#onBatch(batch),
    });
  }

  /** The last block whose events the monitor applied. */
  get lastProcessedBlock(): number {
    return this.#cursor;
  }

  /** Catches up with the chain (applying what happened while we were down and acting on it), then follows it. */
  async start(): Promise<void> {
    await this.#follower.catchUp();
    this.#follower.start();
    this.#timer = setInterval(() => void this.#act(), this.#init.pollIntervalMs ?? 2000);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    await this.#follower.stop();
  }

  #emit<K extends keyof MonitorEventMap>(type: K, ...args: MonitorEventMap[K]): void {
    try {
      (this.events.emit as (t: K, ...a: MonitorEventMap[K]) => boolean)(type, ...args);
    } catch (err) {
      this.#log.warn({ event: type, err: errorFields(err) }, "monitor listener failed");
    }
  }

  async #onBatch(batch: ChainEventBatch): Promise<void> {
    const fresh = batch.events.filter((e) => e.blockNumber > this.#cursor);
    if (batch.toBlock > this.#cursor) {
      // A close's time is its block's timestamp (read before the transaction: it does no I/O).
      const closeTimes = new Map<number, number>();
      for (const e of fresh) {
        if (e.type === "ChannelClosed" && this.#registry.has(e.channelId) && !closeTimes.has(e.blockNumber))
          closeTimes.set(e.blockNumber, await this.#chain.hub.blockTimestamp(e.blockNumber));
      }
      // Withdraw reservations expire by the time of the last block whose events are applied, never by the
      // head's: a withdraw mined just before its expiry must be applied before its reservation is dropped.
      const rangeEndSeconds = await this.#chain.hub.blockTimestamp(batch.toBlock);
      // Applied and the cursor moved in one transaction: a crash re-applies the whole range or none of it.
      // A failure rolls the transaction back, so the in-memory channels are reloaded from the store then.
      try {
        this.#store.transaction(() => {
          for (const event of fresh) this.#apply(event, closeTimes.get(event.blockNumber) ?? 0);
          this.#init.withdraws.expire(BigInt(rangeEndSeconds));
          this.#store.setMeta(MONITOR_CURSOR_KEY, String(batch.toBlock));
        });
      } catch (err) {
        for (const live of this.#registry.all()) this.#registry.refresh(live.record.channelId);
        throw err;
      }
      this.#cursor = batch.toBlock;
      for (const event of fresh) this.#announce(event);
    }
    this.#emit("chain", batch);
    await this.#act();
  }

  /**
   * Applies one confirmed event to our channel's record (inside the batch's transaction; no I/O).
   * `blockTimestamp`: the event's block timestamp (unix seconds) for a ChannelClosed.
   */
  #apply(event: ChainEvent, blockTimestamp: number): void {
    if (event.type === "SecretRevealed" || event.type === "ChannelOpened") return;
    const live = this.#registry.find(event.channelId);
    if (!live) return;
    const r = live.record;
    switch (event.type) {
      case "ChannelNewDeposit":
        if (eqAddr(event.participant, this.#registry.address) && event.totalDeposit > r.ourDeposit) {
          r.ourDeposit = event.totalDeposit;
          this.#registry.save(live, "deposit");
        } else if (eqAddr(event.participant, r.partner) && event.totalDeposit > r.partnerDeposit) {
          r.partnerDeposit = event.totalDeposit;
          this.#registry.save(live, "deposit");
        }
        return;
      case "ChannelClosed":
        this.#store.setMeta(closerNonceKey(r.channelId), "0");
        this.#registry.transition(live, {
          type: "closed",
          closingParticipant: event.closingParticipant,
          closedAtSeconds: blockTimestamp,
        });
        return;
      case "ChannelWithdraw":
        this.#init.withdraws.applyMined(live, event.participant, event.totalWithdraw);
        return;
      case "NonClosingBalanceProofUpdated":
        this.#store.setMeta(closerNonceKey(r.channelId), event.nonce.toString());
        return;
      case "ChannelSettled":
        this.#registry.transition(live, { type: "settled" });
        return;
      default:
        return;
    }
  }

  /** Tells subscribers and the log about an applied event (after its transaction committed). */
  #announce(event: ChainEvent): void {
    if (event.type === "SecretRevealed") {
      this.#emit("secretRevealed", { secretHash: event.secretHash, secret: event.secret });
      return;
    }
    if (event.type === "ChannelOpened") return;
    const live = this.#registry.find(event.channelId);
    if (!live) return;
    const channelId = event.channelId.toString();
    if (event.type === "ChannelClosed") {
      const byPartner = eqAddr(event.closingParticipant, live.record.partner);
      if (byPartner)
        this.#log.warn({ channelId, nonce: event.nonce.toString() }, "partner closed the channel");
      this.#emit("closed", {
        channelId: event.channelId,
        closingParticipant: event.closingParticipant,
        byPartner,
        nonce: event.nonce,
      });
    } else if (event.type === "ChannelSettled") {
      this.#log.info({ channelId, cooperative: event.cooperative }, "channel settled on-chain");
      this.#emit("settled", { channelId: event.channelId, cooperative: event.cooperative });
    }
  }

  /**
   * What the chain requires now, for every unsettled or not yet unlocked channel (see the module docs).
   * One pass at a time; a failure on one channel is logged and retried at the next poll.
   */
  async #act(): Promise<void> {
    if (this.#acting || this.#stopped) return;
    this.#acting = true;
    try {
      const nowSeconds = await this.#chain.hub.latestTimestamp();
      this.#registry.observeChainTime(nowSeconds);
      for (const live of [...this.#registry.all()]) {
        if (this.#stopped) return;
        try {
          if (live.record.state === "closed") await this.#actOnClosed(live, nowSeconds);
          else if (live.record.state === "opened" && this.#store.getMeta(watchHeadKey(live.record.channelId)))
            await this.#watchHead(live);
          else if (
            live.record.state === "settled" &&
            this.#store.getMeta(unlockedKey(live.record.channelId)) === null
          )
            await this.#unlockSettled(live, nowSeconds);
        } catch (err) {
          this.#log.warn(
            { channelId: live.record.channelId.toString(), err: errorFields(err) },
            "channel monitor action failed; will retry",
          );
        }
      }
    } catch (err) {
      this.#log.warn({ err: errorFields(err) }, "channel monitor cannot read the chain; will retry");
    } finally {
      this.#acting = false;
    }
  }

  async #actOnClosed(live: Live, nowSeconds: number): Promise<void> {
    const channelId = live.record.channelId;
    // The head's view: the close date, and whether a reorganisation removed the close we applied.
    const onchain = await this.#chain.hub.getChannel(channelId);
    const key = channelId.toString();
    if (onchain.state === "opened") {
      // One read may come from a URL that lags behind the close: forget it only after several passes agree.
      const reads = (this.#openedReads.get(key) ?? 0) + 1;
      this.#openedReads.set(key, reads);
      if (reads >= CLOSE_REMOVED_READS) {
        this.#openedReads.delete(key);
        return this.#closeRemoved(live);
      }
      return;
    }
    this.#openedReads.delete(key);
    if (onchain.state === "settled") return; // its ChannelSettled event reaches us at the confirmation depth
    // The head's close time (a close re-mined in another block by a reorganisation moves it).
    this.#registry.transition(live, {
      type: "closed",
      closingParticipant: onchain.closingParticipant,
      closedAtSeconds: onchain.closedAtSeconds,
    });
    await live.queue.add(() => this.#chain.registerKnownSecrets(live));
    const deadline = onchain.closedAtSeconds + onchain.settleTimeoutSeconds;
    if (eqAddr(onchain.closingParticipant, live.record.partner) && nowSeconds <= deadline)
      await live.queue.add(() => this.#contestIfStale(live));
    if (nowSeconds > deadline) await this.#init.manager.settle(channelId);
  }

  /** A partner's close with an older proof than its latest we hold: contest it (read at the head first). */
  async #contestIfStale(live: Live): Promise<void> {
    const latest = live.partnerLatest;
    if (!latest || latest.proof.nonce < 1n) return;
    const channelId = live.record.channelId;
    const known = this.#store.getMeta(closerNonceKey(channelId));
    if (known !== null && BigInt(known) >= latest.proof.nonce) return; // confirmed: nothing to do
    const stored = await this.#chain.hub.getParticipant(channelId, live.record.partner);
    if (stored.nonce >= latest.proof.nonce) return; // already contested (ours or a tower's), not yet confirmed
    const counter = signBalanceProofUpdate(latest.proof, latest.signature, this.#init.keys);
    await this.#chain.call("updateNonClosingBalanceProof", () =>
      this.#chain.hub.updateNonClosingBalanceProof(
        channelId,
        live.record.partner,
        this.#registry.address,
        { nonce: latest.proof.nonce, balanceHash: balanceHash(latest.proof), signature: latest.signature },
        counter,
      ),
    );
    this.#log.info(
      {
        channelId: channelId.toString(),
        nonce: latest.proof.nonce.toString(),
        staleNonce: stored.nonce.toString(),
      },
      "contested partner's close with its latest balance proof",
    );
    this.#emit("contested", { channelId, nonce: latest.proof.nonce });
  }

  /** The head says the channel is open again: a reorganisation removed the close. */
  async #closeRemoved(live: Live): Promise<void> {
    const r = live.record;
    if (r.state !== "closed") return;
    const ours = eqAddr(r.closingParticipant, this.#registry.address);
    const channelId = r.channelId;
    this.#store.transaction(() => {
      this.#store.deleteMeta(closerNonceKey(channelId));
      this.#store.setMeta(watchHeadKey(channelId), "1");
      this.#registry.transition(live, { type: "closeRemoved" });
    });
    this.#log.warn({ channelId: channelId.toString(), ours }, "a reorganisation removed the channel's close");
    if (ours) await this.#init.manager.close(channelId, { cooperative: false });
    this.#emit("closeReorged", { channelId, resubmitted: ours });
  }

  /**
   * A channel whose close a reorganisation removed: its close may come back in a block the follower already
   * passed, so the head is read; a close found there is applied as the event would have been.
   */
  async #watchHead(live: Live): Promise<void> {
    const channelId = live.record.channelId;
    const onchain = await this.#chain.hub.getChannel(channelId);
    if (onchain.state === "opened") return;
    this.#store.transaction(() => {
      this.#store.deleteMeta(watchHeadKey(channelId));
      if (onchain.state === "settled") {
        this.#registry.transition(live, { type: "settled" });
        return;
      }
      this.#store.setMeta(closerNonceKey(channelId), "0");
      this.#registry.transition(live, {
        type: "closed",
        closingParticipant: onchain.closingParticipant,
        closedAtSeconds: onchain.closedAtSeconds,
      });
    });
    if (onchain.state === "closed") {
      const byPartner = eqAddr(onchain.closingParticipant, live.record.partner);
      this.#log.warn({ channelId: channelId.toString(), byPartner }, "the channel's close is back on chain");
      this.#emit("closed", {
        channelId,
        closingParticipant: onchain.closingParticipant,
        byPartner,
        nonce: 0n,
      });
    }
  }

  /**
   * After settle, the hub keeps each side's locked amount; `unlock` pays every lock whose secret was
   * registered before its expiration to the receiver and the rest back to the sender, once. We call it for
   * both sides when every lock has expired (so no later registration can change the outcome).
   */
  async #unlockSettled(live: Live, nowSeconds: number): Promise<void> {
    const channelId = live.record.channelId;
    let remaining = 0;
    for (const [sender, receiver] of [
      [this.#registry.address, live.record.partner],
      [live.record.partner, this.#registry.address],
    ] as const) {
      const kept = await this.#chain.hub.getLockedBalance(channelId, sender);
      if (kept.lockedAmount === 0n) continue;
      const proof = this.#store.storedProofByLocksRoot(channelId, sender, kept.locksRoot);
      if (!proof) {
        this.#log.error(
          { channelId: channelId.toString(), sender },
          "no stored locks match the settled locksroot",
        );
        continue;
      }
      const lastExpiration = proof.locks.reduce((m, l) => (l.expiration > m ? l.expiration : m), 0n);
      if (BigInt(nowSeconds) <= lastExpiration) {
        remaining++;
        continue;
      }
      await this.#chain.call("unlock", () =>
        this.#chain.hub.unlock(channelId, sender, receiver, proof.locks),
      );
      this.#log.info(
        { channelId: channelId.toString(), sender, locks: proof.locks.length },
        "unlocked settled locks",
      );
    }
    if (remaining === 0) this.#store.setMeta(unlockedKey(channelId), String(Date.now()));
  }
}
