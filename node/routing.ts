/**
 * The node's view of the network for routing: the deployment's public channel graph (router/NetworkGraph)
 * fed by the confirmed ChannelHub events the channel monitor delivers (node/monitor, one follower per node) and by
 * signed channel updates over gossipsub (router/ChannelGossip); our own channel updates (fee schedule,
 * expiry delta, capacity hint) are published whenever a channel of ours changes and every
 * `updateIntervalMs`. Implements the payments layer's {@link RouteProvider} with router/findPaymentRoutes,
 * using our exact spendable balances for our own channels.
 */
import type { GossipSub } from "@libp2p/gossipsub";
import type { Logger } from "pino";
import type { ChainEvent, ChainEventBatch, Deployment } from "../chain/index.js";
import type { FeeSchedule, LockTiming, NodeKeys } from "../protocol/index.js";
import {
  ChannelGossip,
  NetworkGraph,
  Scorer,
  findPaymentRoutes,
  signChannelUpdate,
  type ChannelUpdate,
  type NetworkChainEvent,
} from "../router/index.js";
import type { ChannelService } from "./channels/service.js";
import { errorFields } from "../host/session-transport.js";
import type { RouteCandidate, RouteProvider, RouteQuery } from "./payments/service.js";
import type { NodeStore } from "./store/store.js";

/** Balances move with every payment: learnt liquidity bounds are dropped after this long (crude decay). */
const SCORER_MEMORY_MS = 10 * 60_000;

export interface NetworkRoutingInit {
  store: NodeStore;
  keys: NodeKeys;
  deployment: Deployment;
  channels: ChannelService;
  pubsub: GossipSub;
  fees: FeeSchedule;
  timing: LockTiming;
  log: Logger;
  /**
   * Re-sign and publish our channel updates (fresh capacity hints) this often, ms (default 60,000). Each
   * publish reaches every node, so this is a slow refresh; chain events of our channels publish at once and
   * ChannelGossip re-sends the latest ones to peers that join.
   */
  updateIntervalMs?: number;
}

export class NetworkRouting implements RouteProvider {
  readonly graph: NetworkGraph;
  readonly #init: NetworkRoutingInit;
  readonly #gossip: ChannelGossip;
  #timer: NodeJS.Timeout | undefined;
  #lastNonce = 0n;
  /** Liquidity learnt from our payments (LDK-style bounds); forgotten every SCORER_MEMORY_MS. */
  readonly #scorer = new Scorer();
  #scorerResetAt = Date.now();

  constructor(init: NetworkRoutingInit) {
    this.#init = init;
    this.graph = new NetworkGraph({ chainId: BigInt(init.deployment.chainId), hub: init.deployment.hub });
    this.#gossip = new ChannelGossip({
      pubsub: init.pubsub,
      graph: this.graph,
      republishIntervalMs: 15_000,
      log: init.log.child({ component: "gossip" }),
    });
  }

  /**
   * Applies one confirmed range of hub events to the graph (the channel monitor delivers every range since
   * the deployment block, in order); our own channels' events publish fresh updates at once.
   */
  applyBatch(batch: ChainEventBatch): void {
    let ours = false;
    for (const event of batch.events) {
      const e = toNetworkEvent(event);
      if (e) this.graph.applyEvent(e);
      if (involves(event, this.#init.keys.address)) ours = true;
    }
    if (ours) this.publishOwnUpdates();
  }

  /** Starts gossip and our periodic updates (the graph follows the chain through {@link applyBatch}). */
  async start(): Promise<void> {
    this.#gossip.start();
    this.publishOwnUpdates();
    this.#timer = setInterval(() => this.publishOwnUpdates(), this.#init.updateIntervalMs ?? 60_000);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.#gossip.stop();
  }

  /** Signs and gossips a fresh update for each direction we forward on (our open channels). */
  publishOwnUpdates(): void {
    const { keys, deployment, fees, timing } = this.#init;
    for (const c of this.#init.channels.channelSummaries()) {
      // Nothing to forward before a deposit (and htlcMaximum must be >= htlcMinimum = 1).
      if (
        c.state !== "opened" ||
        !this.graph.channel(c.channelId) ||
        c.ourDeposit + c.partnerDeposit === 0n
      ) {
        continue;
      }
      let nonce = BigInt(Date.now());
      if (nonce <= this.#lastNonce) nonce = this.#lastNonce + 1n;
      this.#lastNonce = nonce;
      let update: ChannelUpdate;
      try {
        update = signChannelUpdate(
          {
            chainId: BigInt(deployment.chainId),
            hub: deployment.hub,
            token: c.token,
            channelId: c.channelId,
            participant: keys.address,
            partner: c.partner,
            nonce,
            feeFlat: fees.feeFlat,
            feePpm: fees.feePpm,
            expiryDeltaSeconds: timing.expiryDeltaSeconds,
            htlcMinimum: 1n,
            htlcMaximum: c.ourDeposit + c.partnerDeposit,
            capacityHint: c.ourBalance > 0n ? c.ourBalance : 0n,
            disabled: false,
          },
          keys,
        );
      } catch (err) {
        // Never let one bad channel stop the chain-event handler (the follower would retry the range).
        this.#init.log.warn(
          { channelId: c.channelId.toString(), err: errorFields(err) },
          "cannot sign channel update",
        );
        continue;
      }
      this.#gossip
        .publish(update)
        .catch((err: unknown) =>
          this.#init.log.debug(
            { channelId: c.channelId.toString(), err: errorFields(err) },
            "channel update not published",
          ),
        );
    }
  }

  /** A hop could not forward `amount` for lack of liquidity: routes avoid it for such amounts a while. */
  reportFailure(channelId: bigint, from: string, amount: bigint): void {
    this.#scorer.recordFailure(channelId.toString(), amount, from);
  }

  /** A hop forwarded `amount`: it had at least that much. */
  reportSuccess(channelId: bigint, from: string, amount: bigint): void {
    this.#scorer.recordSuccess(channelId.toString(), amount, from);
  }

  /**
   * Up to `q.k` routes (best first) from router/findPaymentRoutes, with our exact spendable balances and
   * the liquidity learnt from earlier attempts.
   */
  findRoutes(q: RouteQuery): RouteCandidate[] {
    if (Date.now() - this.#scorerResetAt > SCORER_MEMORY_MS) {
      this.#scorer.reset();
      this.#scorerResetAt = Date.now();
    }
    const spendable = new Map<bigint, bigint>();
    for (const c of this.#init.channels.channelSummaries()) {
      if (c.state === "opened") spendable.set(c.channelId, c.ourBalance > 0n ? c.ourBalance : 0n);
    }
    const routes = findPaymentRoutes({
      graph: this.graph,
      token: q.token,
      source: q.source,
      target: q.target,
      amount: q.amount,
      ...(q.maxFee !== null ? { maxFee: q.maxFee } : {}),
      finalExpiryDeltaSeconds: q.finalExpiryDeltaSeconds,
      nowSeconds: q.nowSeconds,
      k: q.k,
      excludeChannels: [...q.excludeChannels].map((c) => BigInt(c)),
      localBalances: spendable,
      scorer: this.#scorer,
    });
    return routes.map((r) => ({
      fee: r.totalFee,
      hops: r.hops.map((h) => ({
        address: h.address,
        channelId: h.channelId,
        amount: h.lockAmount,
        expiration: h.expiration,
        fee: h.fee,
      })),
    }));
  }
}

function toNetworkEvent(e: ChainEvent): NetworkChainEvent | null {
  switch (e.type) {
    case "ChannelOpened":
      return {
        type: "ChannelOpened",
        channelId: e.channelId,
        participant1: e.participant1,
        participant2: e.participant2,
        token: e.token,
        settleTimeoutSeconds: e.settleTimeoutSeconds,
      };
    case "ChannelNewDeposit":
      return {
        type: "ChannelNewDeposit",
        channelId: e.channelId,
        participant: e.participant,
        totalDeposit: e.totalDeposit,
      };
    case "ChannelClosed":
      return { type: "ChannelClosed", channelId: e.channelId };
    case "ChannelSettled":
      return { type: "ChannelSettled", channelId: e.channelId };
    default:
      return null;
  }
}

function involves(e: ChainEvent, address: string): boolean {
  const a = address.toLowerCase();
  const fields = e as unknown as Record<string, unknown>;
  return ["participant1", "participant2", "participant", "closingParticipant"].some(
    (k) => typeof fields[k] === "string" && (fields[k] as string).toLowerCase() === a,
  );
}
