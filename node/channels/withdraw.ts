/**
 * Withdraw from an open channel (Raiden's WithdrawRequest / WithdrawConfirmation, ChannelHub
 * `setTotalWithdraw`): both participants sign the EIP-712 `Withdraw(channelId, participant, totalWithdraw,
 * expiryTimestamp)` of protocol/withdraw.ts; the withdrawer submits it and the hub pays the increase through
 * the Bridge.
 *
 * Capacity (docs/PROTOCOL.md, "Withdraw"): from the moment a withdraw is requested (ours) or co-signed (the
 * partner's), both sides count its total as withdrawn, persisted, until it is mined (the channel's total
 * takes over) or the chain's time passes its expiry; so neither side can spend off-chain what may still
 * leave on-chain. One withdraw per participant and channel is in flight at a time; a cooperative settle is
 * refused while one is (and a withdraw while the channel is closing).
 *
 * The partner co-signs only what the requester's balance allows (deposit − withdrawn + received − sent −
 * locked, every earlier withdraw counted), only a total above every earlier one (a replayed request is
 * refused), only for this chain, hub and channel, and only with an expiry between {@link MIN_EXPIRY_SECONDS}
 * and {@link MAX_EXPIRY_SECONDS} ahead of the chain's time. Refusals are coded and change nothing.
 */
import type { Logger } from "pino";
import {
  QrwpError,
  assertArgument,
  signWithdraw,
  verifyWithdrawSignature,
  type ChannelMessage,
  type NodeKeys,
  type WithdrawArgs,
} from "../../protocol/index.js";
import type { Deployment } from "../../chain/index.js";
import type { RemotePeer } from "../../host/session-transport.js";
import type { NodeStore, PendingWithdraw } from "../store/store.js";
import type { ChainCalls } from "./chain-calls.js";
import type { IncomingProofs } from "./incoming.js";
import type { OutgoingProofs } from "./outgoing.js";
import type { Partners } from "./partners.js";
import type { ChannelRegistry } from "./registry.js";
import { eqAddr, type ChannelView, type Live } from "./types.js";

/** How long a withdraw we request stays valid on chain (seconds of block.timestamp). */
export const WITHDRAW_EXPIRY_SECONDS = 600;
/** The partner co-signs only a withdraw that stays valid at least this long (seconds)... */
export const MIN_EXPIRY_SECONDS = 60;
/** ...and at most this long (seconds), so a signature cannot be held back for days. */
export const MAX_EXPIRY_SECONDS = 86_400;

/** What {@link Withdraws} needs. */
export interface WithdrawsInit {
  store: NodeStore;
  keys: NodeKeys;
  deployment: Deployment;
  registry: ChannelRegistry;
  chain: ChainCalls;
  partners: Partners;
  outgoing: OutgoingProofs;
  incoming: IncomingProofs;
  log: Logger;
}

export class Withdraws {
  readonly #init: WithdrawsInit;
  readonly #store: NodeStore;
  readonly #registry: ChannelRegistry;
  readonly #log: Logger;

  constructor(init: WithdrawsInit) {
    this.#init = init;
    this.#store = init.store;
    this.#registry = init.registry;
    this.#log = init.log;
  }

  #args(
    channelId: bigint,
    participant: string,
    totalWithdraw: bigint,
    expiryTimestamp: bigint,
  ): WithdrawArgs {
    return {
      chainId: BigInt(this.#init.deployment.chainId),
      hub: this.#init.deployment.hub,
      channelId,
      participant,
      totalWithdraw,
      expiryTimestamp,
    };
  }

  /**
   * Withdraws `amount` base units of our balance from an open channel to our wallet: in the channel's queue,
   * pending proofs re-sent, our balance checked (deposits refreshed once if short), the request persisted
   * (our capacity drops at once), the partner's confirmation verified, `setTotalWithdraw` submitted.
   * @returns the channel as it stands once the withdraw is mined.
   * @throws QrwpError INVALID_ARGUMENT (field "amount") | CHANNEL_NOT_FOUND | CHANNEL_STATE (not open, closing,
   *   or a withdraw of ours is already in flight) | INSUFFICIENT_CAPACITY (field "amount") | PEER_REJECTED (the
   *   partner refused: nothing is reserved any more) | PEER_OFFLINE | TIMEOUT | INVALID_SIGNATURE (the
   *   confirmation) | CHAIN_ERROR (the reservation stays until the expiry: the partner could still submit it)
   */
  async withdraw(channelId: bigint, amount: bigint): Promise<ChannelView> {
    assertArgument(amount > 0n, "amount must be > 0", "amount", amount);
    const live = this.#registry.get(channelId);
    return (await live.queue.add(async () => {
      if (live.record.state !== "opened" || live.closing) throw this.#registry.stateError(live, "opened");
      if (live.ourPendingWithdraw)
        throw new QrwpError("CHANNEL_STATE", "a withdraw of ours is already in flight on this channel", {
          channelId: channelId.toString(),
          totalWithdraw: live.ourPendingWithdraw.totalWithdraw.toString(),
        });
      await this.#init.outgoing.resendPending(live);
      // Evidence before anything leaves the channel (docs/PROTOCOL.md §7.4).
      await this.#init.outgoing.evidence.sendBestEffort(live);
      if (this.#registry.balances(live).ourBalance < amount) await this.#init.chain.refreshDeposits(live);
      const balance = this.#registry.balances(live).ourBalance;
      if (balance < amount)
        throw new QrwpError("INSUFFICIENT_CAPACITY", `balance ${balance} is below the withdraw`, {
          field: "amount",
          balance: balance.toString(),
        });
      if (live.record.state !== "opened" || live.closing) throw this.#registry.stateError(live, "opened");
      const totalWithdraw = live.record.ourWithdraw + amount;
      const now = BigInt(await this.#init.chain.hub.latestTimestamp());
      const expiryTimestamp =
        (now > this.#registry.nowSeconds() ? now : this.#registry.nowSeconds()) +
        BigInt(WITHDRAW_EXPIRY_SECONDS);
      const args = this.#args(channelId, this.#registry.address, totalWithdraw, expiryTimestamp);
      const pending: PendingWithdraw = {
        channelId,
        participant: this.#registry.address,
        totalWithdraw,
        expiryTimestamp,
        participantSignature: signWithdraw(args, this.#init.keys),
        partnerSignature: null,
        createdAtMs: Date.now(),
      };
      // Durable before the request leaves: our capacity counts it from now on.
      this.#store.putWithdraw(pending);
      live.ourPendingWithdraw = pending;
      let reply: ChannelMessage;
      try {
        reply = await this.#init.partners.request(live.record.partner, {
          type: "WithdrawRequest",
          channelId,
          participant: this.#registry.address,
          totalWithdraw,
          expiryTimestamp,
          signature: pending.participantSignature,
        });
      } catch (err) {
        // Refused or unanswered: our own reservation is dropped. Should the partner have co-signed after all,
        // the pair can only pay us our own money; its reservation (on its side) is what protects it.
        this.#release(live, "ours");
        throw err;
      }
      if (
        reply.type !== "WithdrawConfirmation" ||
        reply.channelId !== channelId ||
        reply.totalWithdraw !== totalWithdraw
      ) {
        this.#release(live, "ours");
        throw new QrwpError("PEER_REJECTED", `unexpected reply ${reply.type} to WithdrawRequest`);
      }
      try {
        verifyWithdrawSignature(args, reply.signature, live.record.partner);
      } catch (err) {
        this.#release(live, "ours");
        throw err;
      }
      const signed = { ...pending, partnerSignature: reply.signature };
      this.#store.putWithdraw(signed);
      live.ourPendingWithdraw = signed;
      const result = await this.#init.chain.call(
        "setTotalWithdraw",
        () =>
          this.#init.chain.hub.setTotalWithdraw(
            channelId,
            this.#registry.address,
            totalWithdraw,
            expiryTimestamp,
            signed.participantSignature,
            reply.signature,
          ),
        "amount",
      );
      this.#mined(live, this.#registry.address, result.totalWithdraw);
      this.#log.info(
        {
          channelId: channelId.toString(),
          amount: amount.toString(),
          totalWithdraw: totalWithdraw.toString(),
        },
        "withdrew from the channel",
      );
      return this.#registry.view(live);
    })) as ChannelView;
  }

  /**
   * The partner asks us to co-sign its withdraw (see the module docs for the checks). Serialized with the
   * partner's balance proofs, so its balance cannot move while we check it.
   * @throws QrwpError CHANNEL_NOT_FOUND | CHANNEL_STATE | INVALID_ARGUMENT (field "participant",
   *   "totalWithdraw" or "expiryTimestamp") | INSUFFICIENT_CAPACITY (field "totalWithdraw") | INVALID_SIGNATURE
   */
  onRequest(
    from: RemotePeer,
    msg: Extract<ChannelMessage, { type: "WithdrawRequest" }>,
  ): Promise<ChannelMessage> {
    return this.#init.incoming.serialized(from.address, async () => {
      const live = this.#registry.find(msg.channelId);
      if (!live || !eqAddr(live.record.partner, from.address))
        throw new QrwpError("CHANNEL_NOT_FOUND", "channel is not with this peer", { field: "channelId" });
      if (!eqAddr(msg.participant, from.address))
        throw new QrwpError("INVALID_ARGUMENT", "a peer may only withdraw for itself", {
          field: "participant",
        });
      if (live.record.state !== "opened" || live.closing) throw this.#registry.stateError(live, "opened");
      const now = this.#registry.nowSeconds();
      if (
        msg.expiryTimestamp < now + BigInt(MIN_EXPIRY_SECONDS) ||
        msg.expiryTimestamp > now + BigInt(MAX_EXPIRY_SECONDS)
      )
        throw new QrwpError(
          "INVALID_ARGUMENT",
          `expiryTimestamp must be ${MIN_EXPIRY_SECONDS} to ${MAX_EXPIRY_SECONDS} s ahead of the chain's time`,
          { field: "expiryTimestamp", nowSeconds: now.toString() },
        );
      const pending = live.partnerPendingWithdraw;
      const previous =
        pending && pending.totalWithdraw > live.record.partnerWithdraw
          ? pending.totalWithdraw
          : live.record.partnerWithdraw;
      if (msg.totalWithdraw <= previous)
        throw new QrwpError("INVALID_ARGUMENT", "totalWithdraw must exceed every earlier withdraw", {
          field: "totalWithdraw",
          previous: previous.toString(),
        });
      if (pending)
        throw new QrwpError("CHANNEL_STATE", "a withdraw of yours is already in flight on this channel", {
          field: "totalWithdraw",
        });
      const args = this.#args(msg.channelId, from.address, msg.totalWithdraw, msg.expiryTimestamp);
      verifyWithdrawSignature(args, msg.signature, from.address);
      const increase = msg.totalWithdraw - live.record.partnerWithdraw;
      if (this.#registry.balances(live).partnerBalance < increase)
        await this.#init.chain.refreshDeposits(live);
      const balance = this.#registry.balances(live).partnerBalance;
      if (balance < increase)
        throw new QrwpError("INSUFFICIENT_CAPACITY", `the withdraw exceeds your balance ${balance}`, {
          field: "totalWithdraw",
        });
      if (live.record.state !== "opened" || live.closing) throw this.#registry.stateError(live, "opened");
      const signature = signWithdraw(args, this.#init.keys);
      const record: PendingWithdraw = {
        channelId: msg.channelId,
        participant: live.record.partner,
        totalWithdraw: msg.totalWithdraw,
        expiryTimestamp: msg.expiryTimestamp,
        participantSignature: msg.signature,
        partnerSignature: signature,
        createdAtMs: Date.now(),
      };
      // Durable before our signature leaves: the partner's capacity counts it from now on.
      this.#store.putWithdraw(record);
      live.partnerPendingWithdraw = record;
      this.#registry.save(live, "withdraw");
      this.#log.info(
        { channelId: msg.channelId.toString(), totalWithdraw: msg.totalWithdraw.toString() },
        "co-signed the partner's withdraw",
      );
      return {
        type: "WithdrawConfirmation",
        channelId: msg.channelId,
        totalWithdraw: msg.totalWithdraw,
        signature,
      };
    });
  }

  /**
   * A `ChannelWithdraw` of one of our channels was confirmed on chain (the channel monitor, inside its
   * batch transaction): the participant's total moves up and a pending withdraw it covers is done.
   */
  applyMined(live: Live, participant: string, totalWithdraw: bigint): void {
    this.#mined(live, participant, totalWithdraw);
  }

  /**
   * Releases pending withdraws whose expiry the chain's time (`nowSeconds`, block.timestamp) has passed
   * without them being mined: they can never be mined any more.
   */
  expire(nowSeconds: bigint): void {
    for (const live of this.#registry.all()) {
      if (live.ourPendingWithdraw && live.ourPendingWithdraw.expiryTimestamp < nowSeconds)
        this.#release(live, "ours");
      if (live.partnerPendingWithdraw && live.partnerPendingWithdraw.expiryTimestamp < nowSeconds)
        this.#release(live, "partner's");
    }
  }

  #mined(live: Live, participant: string, totalWithdraw: bigint): void {
    const ours = eqAddr(participant, this.#registry.address);
    if (!ours && !eqAddr(participant, live.record.partner)) return;
    const r = live.record;
    if (ours && totalWithdraw > r.ourWithdraw) r.ourWithdraw = totalWithdraw;
    if (!ours && totalWithdraw > r.partnerWithdraw) r.partnerWithdraw = totalWithdraw;
    const pending = ours ? live.ourPendingWithdraw : live.partnerPendingWithdraw;
    this.#store.transaction(() => {
      if (pending && pending.totalWithdraw <= totalWithdraw) {
        this.#store.deleteWithdraw(r.channelId, participant);
        if (ours) live.ourPendingWithdraw = null;
        else live.partnerPendingWithdraw = null;
      }
      this.#registry.save(live, "withdraw");
    });
  }

  #release(live: Live, whose: "ours" | "partner's"): void {
    const participant = whose === "ours" ? this.#registry.address : live.record.partner;
    this.#store.deleteWithdraw(live.record.channelId, participant);
    if (whose === "ours") live.ourPendingWithdraw = null;
    else live.partnerPendingWithdraw = null;
    this.#registry.save(live, "withdraw");
    this.#log.info({ channelId: live.record.channelId.toString(), whose }, "pending withdraw released");
  }
}
