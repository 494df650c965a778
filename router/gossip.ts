/**
 * `ChannelGossip`: channel-update gossip over libp2p gossipsub (`@libp2p/gossipsub` 17) on the topic
 * `/qrwp/gossip/1.0.0/<chainId>/<hub lowercase>`, feeding a {@link NetworkGraph}.
 *
 * Every message is one CBOR {@link ChannelUpdate} (channel-update.ts). A topic validator decides, before
 * gossipsub delivers or forwards a message (gossipsub v1.1 extended validation):
 * - Reject (not forwarded, the sending peer's score is penalised): malformed, bad signature, wrong chain or
 *   hub, or a signer/partner/token that does not match the known channel;
 * - Ignore (not forwarded, no penalty): nonce not greater than the stored one (replays and re-publishes),
 *   closed channel, or unknown channel (kept in the graph's bounded pending buffer and applied when the
 *   channel's `ChannelOpened` event arrives);
 * - Accept (delivered and forwarded): applied to the graph inside the validator, so the nonce check and
 *   the write happen together.
 *
 * gossipsub keeps no history for peers that join later, so the node re-publishes its own latest updates
 * every `republishIntervalMs` (default 30 s) and, `republishDelayMs` (default 1 s) after a peer subscribes
 * to the topic, its own updates plus up to `maxRelayedOnSubscribe` (default 1,000) of the newest updates it
 * knows from others. Peers that already have an update ignore the copy (same nonce) and do not forward it;
 * the newcomer accepts it. Re-publishing creates a new gossipsub message (new seqno), so gossipsub's
 * duplicate cache does not swallow it.
 *
 * Memory: the node's own directions (at most `maxOwnUpdates`), counters and one timer each; the graph
 * bounds the rest.
 */
import { TopicValidatorResult } from "@libp2p/gossipsub";
import type { GossipSub, Message, SubscriptionChangeData, TopicValidatorFn } from "@libp2p/gossipsub";
import type { PeerId } from "@libp2p/interface";
import { GOSSIP_PROTOCOL, QrwpError, assertArgument, normalizeAddress } from "../protocol/index.js";
import {
  decodeChannelUpdate,
  encodeChannelUpdate,
  normalizeChannelUpdateFields,
  type ChannelUpdate,
} from "./channel-update.js";
import type { NetworkGraph } from "./network.js";

/** Default of {@link ChannelGossipInit.republishIntervalMs}. */
export const DEFAULT_REPUBLISH_INTERVAL_MS = 30_000;
/** Default of {@link ChannelGossipInit.republishDelayMs}. */
export const DEFAULT_REPUBLISH_DELAY_MS = 1_000;
/** Default of {@link ChannelGossipInit.maxRelayedOnSubscribe}. */
export const DEFAULT_MAX_RELAYED_ON_SUBSCRIBE = 1_000;
/** Default of {@link ChannelGossipInit.maxOwnUpdates}. */
export const DEFAULT_MAX_OWN_UPDATES = 4_096;

/** A pino-compatible logger (pino's `Logger` fits). */
export interface GossipLogger {
  debug(obj: Record<string, unknown>, msg: string): void;
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
}

/** Options of a {@link ChannelGossip}; every option but `pubsub` and `graph` is optional. */
export interface ChannelGossipInit {
  /** The libp2p node's gossipsub service (`libp2p.services.pubsub`). */
  pubsub: GossipSub;
  /** The graph updates are checked against and applied to; its chainId and hub name the topic. */
  graph: NetworkGraph;
  /** Topic; default {@link channelGossipTopic}(graph.chainId, graph.hub). */
  topic?: string;
  /** Period of the re-publish of own updates, ms; 0 turns it off. Default 30,000. */
  republishIntervalMs?: number;
  /** Delay between a peer subscribing and the re-publish it triggers (bursts coalesce), ms. Default 1,000. */
  republishDelayMs?: number;
  /** Newest updates of others re-published when a peer subscribes. Default 1,000; 0 relays none. */
  maxRelayedOnSubscribe?: number;
  /** Largest number of own directions {@link ChannelGossip.publish} keeps. Default 4,096. */
  maxOwnUpdates?: number;
  log?: GossipLogger;
}

/** Counters since start. */
export interface ChannelGossipStats {
  /** Received updates accepted and applied. */
  accepted: number;
  /** Received messages rejected (malformed, forged, wrong deployment or participants). */
  rejected: number;
  /** Received updates ignored (not newer, closed channel). */
  ignored: number;
  /** Received updates buffered for a channel not known yet. */
  pending: number;
  /** Messages handed to gossipsub by publish() and re-publishes. */
  published: number;
  /** Sends that reached no peer or failed (re-published later). */
  unsent: number;
}

/** The gossip topic of a deployment: `${GOSSIP_PROTOCOL}/<chainId>/<hub lowercase>`. @throws QrwpError INVALID_ARGUMENT */
export function channelGossipTopic(chainId: bigint, hub: string): string {
  assertArgument(typeof chainId === "bigint" && chainId >= 0n, "chainId must be a uint", "chainId", chainId);
  return `${GOSSIP_PROTOCOL}/${chainId}/${normalizeAddress(hub, "hub").toLowerCase()}`;
}

const ownKey = (u: ChannelUpdate): string => `${u.channelId}:${u.participant}`;

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Channel-update gossip service; see the module docs. Call {@link start}, then {@link stop}. */
export class ChannelGossip {
  readonly topic: string;
  readonly #pubsub: GossipSub;
  readonly #graph: NetworkGraph;
  readonly #intervalMs: number;
  readonly #delayMs: number;
  readonly #maxRelayed: number;
  readonly #maxOwn: number;
  readonly #log: GossipLogger | undefined;
  readonly #own = new Map<string, ChannelUpdate>();
  readonly #stats: ChannelGossipStats = {
    accepted: 0,
    rejected: 0,
    ignored: 0,
    pending: 0,
    published: 0,
    unsent: 0,
  };
  #started = false;
  #interval: ReturnType<typeof setInterval> | undefined;
  #delayed: ReturnType<typeof setTimeout> | undefined;
  #delayedRelay = false;
  #running: Promise<void> = Promise.resolve();

  /** @throws QrwpError INVALID_ARGUMENT on a bad option. */
  constructor(init: ChannelGossipInit) {
    assertArgument(
      typeof init.pubsub?.publish === "function",
      "pubsub must be a gossipsub service",
      "pubsub",
    );
    this.#pubsub = init.pubsub;
    this.#graph = init.graph;
    this.topic = init.topic ?? channelGossipTopic(init.graph.chainId, init.graph.hub);
    this.#intervalMs = init.republishIntervalMs ?? DEFAULT_REPUBLISH_INTERVAL_MS;
    this.#delayMs = init.republishDelayMs ?? DEFAULT_REPUBLISH_DELAY_MS;
    this.#maxRelayed = init.maxRelayedOnSubscribe ?? DEFAULT_MAX_RELAYED_ON_SUBSCRIBE;
    this.#maxOwn = init.maxOwnUpdates ?? DEFAULT_MAX_OWN_UPDATES;
    for (const [v, field] of [
      [this.#intervalMs, "republishIntervalMs"],
      [this.#delayMs, "republishDelayMs"],
      [this.#maxRelayed, "maxRelayedOnSubscribe"],
      [this.#maxOwn, "maxOwnUpdates"],
    ] as const) {
      assertArgument(Number.isSafeInteger(v) && v >= 0, `${field} must be a non-negative integer`, field, v);
    }
    this.#log = init.log;
  }

  /** Whether {@link start} ran and {@link stop} did not. */
  get started(): boolean {
    return this.#started;
  }

  /** Registers the topic validator, subscribes, and starts the re-publish timer. Idempotent. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#pubsub.topicValidators.set(this.topic, this.#validate);
    this.#pubsub.addEventListener("subscription-change", this.#onSubscriptionChange);
    this.#pubsub.subscribe(this.topic);
    if (this.#intervalMs > 0) {
      this.#interval = setInterval(() => this.#enqueueRepublish(false), this.#intervalMs);
      this.#interval.unref?.();
    }
    if (this.#own.size > 0) this.#scheduleRepublish(false);
    this.#log?.info({ topic: this.topic }, "channel gossip started");
  }

  /** Stops timers, unsubscribes and removes the validator; waits for a running re-publish. Idempotent. */
  async stop(): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    if (this.#interval !== undefined) clearInterval(this.#interval);
    if (this.#delayed !== undefined) clearTimeout(this.#delayed);
    this.#interval = undefined;
    this.#delayed = undefined;
    this.#pubsub.removeEventListener("subscription-change", this.#onSubscriptionChange);
    if (this.#pubsub.topicValidators.get(this.topic) === this.#validate) {
      this.#pubsub.topicValidators.delete(this.topic);
    }
    try {
      this.#pubsub.unsubscribe(this.topic);
    } catch (err) {
      this.#log?.debug({ err: errorText(err) }, "unsubscribe failed");
    }
    await this.#running;
    this.#log?.info({ topic: this.topic }, "channel gossip stopped");
  }

  /**
   * Applies one of this node's own updates to the graph, remembers it for re-publishing and sends it.
   * Publishing the same update again is allowed (it is re-sent).
   * @returns the number of peers gossipsub sent it to (0 when none: it is re-sent later).
   * @throws QrwpError INVALID_ARGUMENT / INVALID_SIGNATURE on an update the graph rejects; STALE_NONCE when
   *   a newer update of the direction is known; CHANNEL_STATE for a closed channel; INVALID_ARGUMENT when
   *   `maxOwnUpdates` directions are already kept.
   */
  async publish(update: ChannelUpdate): Promise<number> {
    const r = this.#graph.applyUpdate(update);
    if (r.status === "rejected") {
      const code = r.code === "INVALID_SIGNATURE" ? "INVALID_SIGNATURE" : "INVALID_ARGUMENT";
      throw new QrwpError(code, `channel update refused: ${r.reason}`, { field: r.field });
    }
    // the graph accepted its shape: normalize (EIP-55 addresses) before keying
    const u: ChannelUpdate = { ...normalizeChannelUpdateFields(update), signature: update.signature };
    const k = ownKey(u);
    const own = this.#own.get(k);
    if (r.status === "closed") {
      throw new QrwpError("CHANNEL_STATE", "channel is closed", { channelId: update.channelId });
    }
    const known = this.#graph.latestUpdate(u.channelId, u.participant) ?? own;
    const same = known !== undefined && known.nonce === u.nonce && known.signature === u.signature;
    if (r.status === "stale" && !same) {
      throw new QrwpError("STALE_NONCE", "a newer update of this direction is known", {
        field: "nonce",
        nonce: u.nonce,
        storedNonce: r.storedNonce,
      });
    }
    if (!own && this.#own.size >= this.#maxOwn) {
      throw new QrwpError("INVALID_ARGUMENT", "too many own channel directions", { field: "maxOwnUpdates" });
    }
    this.#own.delete(k);
    this.#own.set(k, u);
    if (!this.#started) return 0;
    return this.#send(encodeChannelUpdate(u), "publish");
  }

  /**
   * Re-publishes now: the node's own latest updates and, with `relay`, up to `maxRelayedOnSubscribe` of
   * the newest updates known from others. Runs after any re-publish in progress.
   */
  async republish(options: { relay?: boolean } = {}): Promise<void> {
    this.#enqueueRepublish(options.relay ?? false);
    await this.#running;
  }

  /** Counters since construction (a copy). */
  stats(): ChannelGossipStats {
    return { ...this.#stats };
  }

  /** The node's own latest updates being re-published (copies). */
  ownUpdates(): ChannelUpdate[] {
    return [...this.#own.values()].map((u) => ({ ...u }));
  }

  #validate: TopicValidatorFn = (peer: PeerId, msg: Message): TopicValidatorResult => {
    let update: ChannelUpdate;
    try {
      update = decodeChannelUpdate(msg.data);
    } catch (err) {
      this.#stats.rejected++;
      const field = (err as QrwpError).details?.field;
      this.#log?.debug({ peer: peer.toString(), field, err: errorText(err) }, "malformed channel update");
      return TopicValidatorResult.Reject;
    }
    const r = this.#graph.applyUpdate(update);
    const ctx = {
      peer: peer.toString(),
      channelId: update.channelId.toString(),
      participant: update.participant,
    };
    switch (r.status) {
      case "applied":
        this.#stats.accepted++;
        this.#log?.debug({ ...ctx, nonce: update.nonce.toString() }, "channel update applied");
        return TopicValidatorResult.Accept;
      case "pending":
        this.#stats.pending++;
        this.#log?.debug(ctx, "channel update for an unknown channel kept pending");
        return TopicValidatorResult.Ignore;
      case "stale":
      case "closed":
        this.#stats.ignored++;
        return TopicValidatorResult.Ignore;
      case "rejected":
        this.#stats.rejected++;
        this.#log?.debug({ ...ctx, field: r.field, reason: r.reason }, "channel update rejected");
        return TopicValidatorResult.Reject;
    }
  };

  #onSubscriptionChange = (evt: CustomEvent<SubscriptionChangeData>): void => {
    if (evt.detail.subscriptions.some((s) => s.subscribe && s.topic === this.topic)) {
      this.#scheduleRepublish(true);
    }
  };

  #scheduleRepublish(relay: boolean): void {
    if (!this.#started) return;
    this.#delayedRelay ||= relay;
    if (this.#delayed !== undefined) return;
    this.#delayed = setTimeout(() => {
      this.#delayed = undefined;
      const r = this.#delayedRelay;
      this.#delayedRelay = false;
      this.#enqueueRepublish(r);
    }, this.#delayMs);
    this.#delayed.unref?.();
  }

  #enqueueRepublish(relay: boolean): void {
    this.#running = this.#running.then(() => this.#republishNow(relay));
  }

  async #republishNow(relay: boolean): Promise<void> {
    if (!this.#started) return;
    const sent = new Set<string>();
    for (const [k, own] of [...this.#own]) {
      if (!this.#started) return;
      if (this.#graph.isClosed(own.channelId)) {
        this.#own.delete(k);
        continue;
      }
      // the graph may hold a newer update of ours (e.g. relayed back after a restart)
      const latest = this.#graph.latestUpdate(own.channelId, own.participant);
      const u = latest && latest.nonce > own.nonce ? latest : own;
      if (u !== own) this.#own.set(k, u);
      sent.add(k);
      await this.#send(encodeChannelUpdate(u), "republish");
    }
    if (!relay || this.#maxRelayed === 0) return;
    for (const u of this.#graph.updates(this.#maxRelayed)) {
      if (!this.#started) return;
      if (sent.has(ownKey(u))) continue;
      await this.#send(encodeChannelUpdate(u), "relay");
    }
  }

  async #send(data: Uint8Array, why: string): Promise<number> {
    try {
      const r = await this.#pubsub.publish(this.topic, data);
      this.#stats.published++;
      if (r.recipients.length === 0) this.#stats.unsent++;
      return r.recipients.length;
    } catch (err) {
      this.#stats.unsent++;
      // gossipsub throws "PublishError.NoPeersSubscribedToTopic" when nobody listens yet: not an error here
      const msg = errorText(err);
      if (msg.includes("NoPeersSubscribedToTopic")) this.#log?.debug({ why }, "no gossip peers yet");
      else this.#log?.warn({ why, err: msg }, "channel update publish failed");
      return 0;
    }
  }
}
