/**
 * The channel manager: a channel's on-chain lifecycle as the node drives it (Raiden's TokenNetwork calls):
 * open (the partner reached and the wallet checked before any gas is spent), announce, deposit, close
 * (cooperative through {@link CooperativeSettle}, or unilateral with the partner's latest proof), settle;
 * and a partner's ChannelAnnounce and PeerInfo. Every change to our side runs in the channel's queue.
 */
import { peerIdFromString } from "@libp2p/peer-id";
import { RateLimiter } from "@libp2p/utils";
import { multiaddr } from "@multiformats/multiaddr";
import { getAddress } from "ethers";
import type { Logger } from "pino";
import {
  EMPTY_LOCKS_ROOT,
  QrwpError,
  assertArgument,
  balanceHash,
  isQrwpError,
  type ChannelMessage,
} from "../../protocol/index.js";
import type { RemotePeer } from "../../host/session-transport.js";
import { errorFields } from "../../host/session-transport.js";
import type { ChannelRecord, NodeStore } from "../store/store.js";
import { chainError, type ChainCalls } from "./chain-calls.js";
import type { CooperativeSettle } from "./cooperative-settle.js";
import type { Partners } from "./partners.js";
import type { ChannelRegistry } from "./registry.js";
import {
  DEFAULT_SETTLE_TIMEOUT_SECONDS,
  cosignedKey,
  eqAddr,
  stripP2p,
  type ChannelView,
  type Live,
  type OpenChannelParams,
} from "./types.js";

/** ChannelAnnounce messages of unknown channels one peer may send per minute (each is checked on chain). */
const ANNOUNCES_PER_PEER_PER_MINUTE = 10;
/** Times an opener asks again after its partner answered a ChannelAnnounce with RATE_LIMITED. */
const ANNOUNCE_RETRIES = 3;
/** ChannelAnnounce messages of unknown channels checked on chain per second, from all peers together. */
const ANNOUNCES_PER_SECOND = 20;

/**
 * A partner's `/.../p2p/<peerId>` multiaddr as a dial target (`peerId` and the address without it).
 * @throws QrwpError INVALID_ARGUMENT (field "partnerMultiaddr") when it is no multiaddr or names no valid peer id.
 */
function parsePartnerMultiaddr(text: string): { peerId: string; multiaddrs: string[] } {
  // "/ip4/…/tcp/…/p2p/<id>"; the same "/p2p/<id>" twice (a dialable address with its id appended) is accepted.
  const [addr, peerId, ...rest] = text.split("/p2p/");
  let valid = peerId !== undefined && rest.every((r) => r === peerId) && addr !== undefined && addr !== "";
  if (valid) {
    try {
      multiaddr(addr as string);
      peerIdFromString(peerId as string);
    } catch {
      valid = false;
    }
  }
  assertArgument(
    valid,
    "partnerMultiaddr must be a multiaddr ending with /p2p/<peerId>",
    "partnerMultiaddr",
    text,
  );
  return { peerId: peerId as string, multiaddrs: [addr as string] };
}

/** What {@link ChannelManager} needs. */
export interface ChannelManagerInit {
  store: NodeStore;
  registry: ChannelRegistry;
  chain: ChainCalls;
  partners: Partners;
  cooperative: CooperativeSettle;
  /** Our dialable multiaddrs (with /p2p/<peerId>), announced to partners. */
  listenAddrs: () => string[];
  log: Logger;
}

export class ChannelManager {
  readonly #store: NodeStore;
  readonly #registry: ChannelRegistry;
  readonly #chain: ChainCalls;
  readonly #partners: Partners;
  readonly #cooperative: CooperativeSettle;
  readonly #listenAddrs: () => string[];
  readonly #log: Logger;
  /** Chain reads a peer's ChannelAnnounce may cause: per peer, and in total (each costs three eth_calls). */
  readonly #announcesPerPeer = new RateLimiter({ points: ANNOUNCES_PER_PEER_PER_MINUTE, duration: 60 });
  readonly #announcesTotal = new RateLimiter({ points: ANNOUNCES_PER_SECOND, duration: 1 });

  constructor(init: ChannelManagerInit) {
    this.#store = init.store;
    this.#registry = init.registry;
    this.#chain = init.chain;
    this.#partners = init.partners;
    this.#cooperative = init.cooperative;
    this.#listenAddrs = init.listenAddrs;
    this.#log = init.log;
  }

  /** A partner's PeerInfo: only channel partners' addresses are kept, so unknown peers cannot grow the table. */
  onPeerInfo(from: RemotePeer, multiaddrs: string[]): ChannelMessage {
    if (this.#registry.isKnownPartner(from.address)) {
      this.#store.upsertPeer({
        address: from.address,
        peerId: from.peerId,
        multiaddrs: multiaddrs.map(stripP2p),
      });
      this.#registry.learnPartnerKey(from);
    }
    return { type: "Ok" };
  }

  /**
   * Dials the partners of our open channels after a start, so they learn our (possibly new) addresses from
   * the PeerInfo sent on each new session, and pending proofs can be re-sent. Failures are only logged.
   */
  async reconnectPartners(): Promise<void> {
    for (const live of this.#registry.all()) {
      if (live.record.state !== "opened" || this.#partners.transport.isConnected(live.record.partner))
        continue;
      const target = this.#partners.target(live.record.partner);
      if (!target) continue;
      await this.#partners.transport
        .connect(live.record.partner, target)
        .catch((err: unknown) =>
          this.#log.debug(
            { peer: live.record.partner, err: errorFields(err) },
            "partner not reachable at start",
          ),
        );
    }
  }

  /**
   * Opens a channel with `partner` on-chain (openChannel + setTotalDeposit through the Bridge) and announces
   * it to the partner, who checks it on-chain. The partner must be reachable first, and the wallet must hold
   * `depositAmount` (base units) of the token (no gas is spent otherwise).
   * @throws QrwpError INVALID_ARGUMENT (field "partnerMultiaddr" when the partner's address is unknown and
   *   none was given; "deposit" for a deposit the hub refuses) | INSUFFICIENT_FUNDS (field "deposit") |
   *   PEER_OFFLINE | HANDSHAKE_FAILED | CONFLICT | CHAIN_ERROR
   */
  async openChannel(params: OpenChannelParams): Promise<ChannelView> {
    const partner = getAddress(params.partner);
    assertArgument(
      !eqAddr(partner, this.#registry.address),
      "cannot open a channel with ourselves",
      "partner",
      partner,
    );
    const token = getAddress(params.token);
    assertArgument(params.depositAmount >= 0n, "deposit must be >= 0", "deposit", params.depositAmount);
    const settleTimeoutSeconds = params.settleTimeoutSeconds ?? DEFAULT_SETTLE_TIMEOUT_SECONDS;
    for (const l of this.#registry.all()) {
      if (
        eqAddr(l.record.partner, partner) &&
        eqAddr(l.record.token, token) &&
        l.record.state !== "settled"
      ) {
        throw new QrwpError("CONFLICT", `a channel with ${partner} for this token already exists`, {
          channelId: l.record.channelId.toString(),
        });
      }
    }
    let target = this.#partners.target(partner);
    if (params.partnerMultiaddr) target = parsePartnerMultiaddr(params.partnerMultiaddr);
    if (!target) {
      // A client mistake, not an outage: we never learnt where this partner listens.
      throw new QrwpError("INVALID_ARGUMENT", "partner's address is unknown: give partnerMultiaddr", {
        field: "partnerMultiaddr",
      });
    }
    if (params.depositAmount > 0n)
      await this.#chain.assertWalletHolds(token, params.depositAmount, "deposit");
    try {
      await this.#partners.transport.connect(partner, target);
    } catch (err) {
      // The node at the given multiaddr proved another address: the client named the wrong node.
      if (
        params.partnerMultiaddr &&
        isQrwpError(err) &&
        err.code === "HANDSHAKE_FAILED" &&
        err.details.field === "address"
      )
        throw new QrwpError("INVALID_ARGUMENT", "the node at partnerMultiaddr is not the partner", {
          field: "partnerMultiaddr",
          actual: err.details.actual,
        });
      throw err;
    }
    if (params.partnerMultiaddr && target.peerId)
      this.#store.upsertPeer({ address: partner, peerId: target.peerId, multiaddrs: target.multiaddrs });

    const { channelId } = await this.#chain.hub
      .openChannel(partner, token, settleTimeoutSeconds)
      .catch((err: unknown) => {
        throw chainError("openChannel", err, "partner");
      });
    const now = Date.now();
    const record: ChannelRecord = {
      channelId,
      partner,
      token,
      state: "opened",
      settleTimeoutSeconds,
      ourDeposit: 0n,
      partnerDeposit: 0n,
      ourWithdraw: 0n,
      partnerWithdraw: 0n,
      openedAtMs: now,
      updatedAtMs: now,
    };
    this.#store.insertChannel(record);
    const live = this.#registry.load(record);
    this.#log.info({ channelId: channelId.toString(), partner, token }, "channel opened on-chain");
    if (params.depositAmount > 0n) {
      await this.#chain.deposit("deposit", () =>
        this.#chain.hub.setTotalDeposit(channelId, params.depositAmount),
      );
      live.record.ourDeposit = params.depositAmount;
      this.#registry.save(live, "deposit");
    }
    await this.#announce(partner, channelId);
    return this.#registry.view(live);
  }

  /**
   * Sends ChannelAnnounce; a partner that answers RATE_LIMITED (its budget for checking announced channels on
   * chain is spent, perhaps by strangers) is asked again after 1, 2 and 4 s.
   * @throws QrwpError PEER_REJECTED (any other refusal, or still rate-limited) | PEER_OFFLINE | TIMEOUT
   */
  async #announce(partner: string, channelId: bigint): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.#partners.request(partner, {
          type: "ChannelAnnounce",
          channelId,
          multiaddrs: this.#listenAddrs(),
        });
        return;
      } catch (err) {
        const rateLimited = isQrwpError(err) && err.details.peerCode === "RATE_LIMITED";
        if (!rateLimited || attempt >= ANNOUNCE_RETRIES) throw err;
        await new Promise((r) => setTimeout(r, 1000 * 2 ** attempt));
      }
    }
  }

  /**
   * Raises our on-chain total deposit to `totalDeposit` (base units; monotonic, idempotent on retry). The
   * deposit is simulated before anything is approved or sent (chain/hub-client.ts `setTotalDeposit`).
   * @throws QrwpError CHANNEL_NOT_FOUND | CHANNEL_STATE | INVALID_ARGUMENT (field "totalDeposit") |
   *   INSUFFICIENT_FUNDS (field "totalDeposit": the wallet holds less than the increase) | CHAIN_ERROR
   */
  async deposit(channelId: bigint, totalDeposit: bigint): Promise<ChannelView> {
    const live = this.#registry.get(channelId);
    return (await live.queue.add(async () => {
      if (live.record.state !== "opened") throw this.#registry.stateError(live, "opened");
      assertArgument(
        totalDeposit > live.record.ourDeposit,
        "totalDeposit must exceed the current deposit",
        "totalDeposit",
        totalDeposit,
      );
      await this.#chain.deposit("totalDeposit", () =>
        this.#chain.hub.setTotalDeposit(channelId, totalDeposit),
      );
      live.record.ourDeposit = totalDeposit;
      this.#registry.save(live, "deposit"); // persisted, and `channel` listeners told
      return this.#registry.view(live);
    })) as ChannelView;
  }

  /**
   * Closes a channel. Cooperative (default): both sign the final balances and the chain pays out at once.
   * Unilateral: submits the partner's latest balance proof; the channel settles after the settle timeout.
   * @throws QrwpError CHANNEL_NOT_FOUND | CHANNEL_STATE | PEER_OFFLINE | PEER_REJECTED | CHAIN_ERROR
   */
  async close(channelId: bigint, options: { cooperative?: boolean } = {}): Promise<ChannelView> {
    const live = this.#registry.get(channelId);
    return (await live.queue.add(async () => {
      if (live.record.state !== "opened") throw this.#registry.stateError(live, "opened");
      const cooperative = options.cooperative ?? true;
      // Closing because we co-signed the partner's settle: only a unilateral close. Because our own earlier
      // request may be outstanding: asking again is fine (same channel, no transfer since).
      const ourRequestOut = this.#store.getMeta(cosignedKey(channelId)) === "requested";
      if (cooperative && live.closing && !ourRequestOut) throw this.#registry.stateError(live, "opened");
      const wasClosing = live.closing;
      live.closing = true;
      try {
        if (cooperative) await this.#cooperative.settle(live);
        else await this.#closeUnilaterally(live);
      } finally {
        // A cooperative request that may have reached the partner leaves the channel closing for good
        // (`cooperative-settle.ts`): its signature can still be completed and submitted.
        live.closing = wasClosing || this.#store.getMeta(cosignedKey(channelId)) !== null;
      }
      return this.#registry.view(live);
    })) as ChannelView;
  }

  async #closeUnilaterally(live: Live): Promise<void> {
    await this.#chain.registerKnownSecrets(live);
    const partnerProof = live.partnerLatest;
    await this.#chain.call("closeChannel", () =>
      this.#chain.hub.closeChannel(
        live.record.channelId,
        live.record.partner,
        partnerProof
          ? {
              nonce: partnerProof.proof.nonce,
              balanceHash: balanceHash(partnerProof.proof),
              signature: partnerProof.signature,
            }
          : null,
      ),
    );
    const onchain = await this.#chain.hub.getChannel(live.record.channelId);
    this.#registry.transition(live, {
      type: "closed",
      closingParticipant: this.#registry.address,
      closedAtSeconds: onchain.closedAtSeconds,
    });
    this.#log.info(
      { channelId: live.record.channelId.toString(), settleTimeoutSeconds: live.record.settleTimeoutSeconds },
      "channel closed unilaterally",
    );
  }

  /**
   * Settles a closed channel once its settle timeout has passed, with the balance data matching the proofs
   * stored on-chain for each side. Called by the channel monitor; callable directly.
   * @throws QrwpError CHANNEL_STATE (not closed or timeout not reached) | CHAIN_ERROR
   */
  async settle(channelId: bigint): Promise<ChannelView> {
    const live = this.#registry.get(channelId);
    return (await live.queue.add(async () => {
      const onchain = await this.#chain.hub.getChannel(channelId);
      if (onchain.state === "settled") this.#registry.transition(live, { type: "settled" });
      const record = live.record;
      if (record.state === "settled") return this.#registry.view(live);
      if (record.state !== "closed") throw this.#registry.stateError(live, "closed");
      const now = await this.#chain.hub.latestTimestamp();
      const deadline = record.closedAtSeconds + record.settleTimeoutSeconds;
      if (now <= deadline) {
        throw new QrwpError("CHANNEL_STATE", `settle timeout has not passed (${deadline - now} s left)`, {
          channelId: channelId.toString(),
          settleableAtSeconds: deadline + 1,
        });
      }
      const data = async (participant: string) => {
        const { nonce } = await this.#chain.hub.getParticipant(channelId, participant);
        const proof = nonce === 0n ? null : this.#store.balanceProofAt(channelId, participant, nonce);
        if (nonce !== 0n && !proof)
          throw new QrwpError("INTERNAL", `no balance proof of ${participant} with nonce ${nonce}`);
        return {
          participant,
          transferredAmount: proof?.proof.transferredAmount ?? 0n,
          lockedAmount: proof?.proof.lockedAmount ?? 0n,
          locksRoot: proof?.proof.locksRoot ?? EMPTY_LOCKS_ROOT,
        };
      };
      await this.#chain.call("settleChannel", async () =>
        this.#chain.hub.settleChannel(
          channelId,
          await data(onchain.participant1),
          await data(onchain.participant2),
        ),
      );
      this.#registry.transition(live, { type: "settled" });
      this.#log.info({ channelId: channelId.toString() }, "channel settled");
      return this.#registry.view(live);
    })) as ChannelView;
  }

  /**
   * A peer announces a channel it opened with us: checked on chain (rate-limited per peer and in total, each
   * check costs three eth_calls) before it is stored; the peer's addresses and ML-DSA key are kept.
   * @throws QrwpError RATE_LIMITED | CHANNEL_NOT_FOUND (field "channelId")
   */
  async onChannelAnnounce(
    from: RemotePeer,
    channelId: bigint,
    multiaddrs: string[],
  ): Promise<ChannelMessage> {
    if (this.#registry.has(channelId)) return { type: "Ok" };
    try {
      this.#announcesPerPeer.consume(from.peerId);
      this.#announcesTotal.consume("all");
    } catch {
      throw new QrwpError("RATE_LIMITED", "too many channel announcements; retry later", {
        field: "channelId",
      });
    }
    const onchain = await this.#chain.hub.getChannel(channelId);
    const parties = [onchain.participant1, onchain.participant2];
    if (
      onchain.state !== "opened" ||
      !parties.some((p) => eqAddr(p, from.address)) ||
      !parties.some((p) => eqAddr(p, this.#registry.address))
    ) {
      throw new QrwpError("CHANNEL_NOT_FOUND", `channel ${channelId} is not an open channel between us`, {
        field: "channelId",
      });
    }
    const [ours, theirs] = await Promise.all([
      this.#chain.hub.getParticipant(channelId, this.#registry.address),
      this.#chain.hub.getParticipant(channelId, from.address),
    ]);
    const now = Date.now();
    const record: ChannelRecord = {
      channelId,
      partner: getAddress(from.address),
      token: getAddress(onchain.token),
      state: "opened",
      settleTimeoutSeconds: onchain.settleTimeoutSeconds,
      ourDeposit: ours.totalDeposit,
      partnerDeposit: theirs.totalDeposit,
      ourWithdraw: ours.totalWithdraw,
      partnerWithdraw: theirs.totalWithdraw,
      openedAtMs: now,
      updatedAtMs: now,
    };
    this.#store.upsertPeer({
      address: from.address,
      peerId: from.peerId,
      multiaddrs: multiaddrs.slice(0, 8).map(stripP2p),
    });
    if (!this.#registry.has(channelId)) {
      this.#store.insertChannel(record);
      this.#registry.load(record);
      this.#log.info(
        { channelId: channelId.toString(), partner: record.partner },
        "partner opened a channel with us",
      );
    }
    // The session proved the partner's ML-DSA key: keep it, so its proofs relayed over HTTP can be verified.
    this.#registry.learnPartnerKey(from);
    return { type: "Ok" };
  }
}
