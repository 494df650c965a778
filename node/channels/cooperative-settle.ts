/**
 * Cooperative settle (Raiden's `cooperativeSettle`, ChannelHub `CooperativeSettle` EIP-712 digest): the
 * closer re-sends pending proofs, computes both final amounts from acknowledged totals and signs; the
 * partner stops its own payments, waits for them to drain, recomputes the amounts, checks the signature and
 * co-signs (durably marking the channel closing first); the closer submits. Refused while any lock is pending.
 */
import { getAddress } from "ethers";
import type { Logger } from "pino";
import {
  QrwpError,
  cooperativeSettleDigest,
  isQrwpError,
  recoverDigestSigner,
  signDigest,
  type ChannelMessage,
  type NodeKeys,
} from "../../protocol/index.js";
import type { Deployment } from "../../chain/index.js";
import type { RemotePeer } from "../../host/session-transport.js";
import type { NodeStore } from "../store/store.js";
import type { ChainCalls } from "./chain-calls.js";
import type { OutgoingProofs } from "./outgoing.js";
import type { Partners } from "./partners.js";
import type { ChannelRegistry } from "./registry.js";
import { cosignedKey, eqAddr, stringify, type Live } from "./types.js";

/** What {@link CooperativeSettle} needs. */
export interface CooperativeSettleInit {
  store: NodeStore;
  keys: NodeKeys;
  deployment: Deployment;
  registry: ChannelRegistry;
  chain: ChainCalls;
  partners: Partners;
  outgoing: OutgoingProofs;
  log: Logger;
}

export class CooperativeSettle {
  readonly #store: NodeStore;
  readonly #keys: NodeKeys;
  readonly #deployment: Deployment;
  readonly #registry: ChannelRegistry;
  readonly #chain: ChainCalls;
  readonly #partners: Partners;
  readonly #outgoing: OutgoingProofs;
  readonly #log: Logger;

  constructor(init: CooperativeSettleInit) {
    this.#store = init.store;
    this.#keys = init.keys;
    this.#deployment = init.deployment;
    this.#registry = init.registry;
    this.#chain = init.chain;
    this.#partners = init.partners;
    this.#outgoing = init.outgoing;
    this.#log = init.log;
  }

  /** Inside the channel's queue, with `live.closing` set: settles cooperatively (see the module docs). */
  async settle(live: Live): Promise<void> {
    await this.#outgoing.resendPending(live);
    // Evidence before anything leaves the channel (docs/PROTOCOL.md §7.4).
    await this.#outgoing.evidence.sendBestEffort(live);
    this.#assertNothingInFlight(live);
    await this.#chain.refreshDeposits(live);
    const onchain = await this.#chain.hub.getChannel(live.record.channelId);
    const amounts = this.#settleAmounts(live, onchain.participant1, onchain.participant2);
    const args = {
      chainId: BigInt(this.#deployment.chainId),
      hub: this.#deployment.hub,
      channelId: live.record.channelId,
      ...amounts,
    };
    const ourSignature = signDigest(cooperativeSettleDigest(args), this.#keys.secp256k1PrivateKey);
    // `CooperativeSettle` has no expiry: once our signature may have left, the partner can add its own at any
    // time. So the channel stays closing (no transfers in, no withdraws) until it settles or is closed
    // unilaterally, across restarts; persisted before the request leaves. Only a request that provably never
    // left (the partner was never reached) undoes it.
    this.#store.setMeta(cosignedKey(live.record.channelId), "requested");
    let reply: ChannelMessage;
    try {
      reply = await this.#partners.request(live.record.partner, {
        type: "CooperativeSettleRequest",
        channelId: live.record.channelId,
        ...amounts,
        signature: ourSignature,
      });
    } catch (err) {
      const neverSent = isQrwpError(err) && (err.code === "PEER_OFFLINE" || err.code === "HANDSHAKE_FAILED");
      if (neverSent) this.#store.deleteMeta(cosignedKey(live.record.channelId));
      throw err;
    }
    if (reply.type !== "CooperativeSettleResponse")
      throw new QrwpError("PEER_REJECTED", `unexpected reply ${reply.type}`);
    const signer = recoverDigestSigner(cooperativeSettleDigest(args), reply.signature);
    if (!eqAddr(signer, live.record.partner)) {
      throw new QrwpError(
        "INVALID_SIGNATURE",
        "partner's cooperative settle signature is not the partner's",
        { field: "signature" },
      );
    }
    const weAreP1 = eqAddr(amounts.participant1, this.#registry.address);
    await this.#chain.call("cooperativeSettle", () =>
      this.#chain.hub.cooperativeSettle(
        live.record.channelId,
        amounts.participant1,
        amounts.participant1Amount,
        amounts.participant2,
        amounts.participant2Amount,
        weAreP1 ? ourSignature : reply.signature,
        weAreP1 ? reply.signature : ourSignature,
      ),
    );
    this.#registry.transition(live, { type: "settled" });
    this.#log.info(
      { channelId: live.record.channelId.toString(), ...stringify(amounts) },
      "channel settled cooperatively",
    );
  }

  #settleAmounts(live: Live, participant1: string, participant2: string) {
    const b = this.#registry.balances(live);
    // The hub pays deposits minus withdraws: a withdraw in flight would change that (refused before).
    const ourAmount =
      live.record.ourDeposit - live.record.ourWithdraw - b.sentTransferred + b.receivedTransferred;
    const partnerAmount =
      live.record.partnerDeposit - live.record.partnerWithdraw - b.receivedTransferred + b.sentTransferred;
    const weAreP1 = eqAddr(participant1, this.#registry.address);
    return {
      participant1: getAddress(participant1),
      participant1Amount: weAreP1 ? ourAmount : partnerAmount,
      participant2: getAddress(participant2),
      participant2Amount: weAreP1 ? partnerAmount : ourAmount,
    };
  }

  /** A cooperative settle pays no locks and fixes deposits − withdraws: refuse it while a lock or a withdraw is in flight. */
  #assertNothingInFlight(live: Live): void {
    if (live.ourPendingWithdraw || live.partnerPendingWithdraw) {
      throw new QrwpError(
        "CHANNEL_STATE",
        "a withdraw is in flight on this channel: wait until it is mined or expired",
        {
          channelId: live.record.channelId.toString(),
        },
      );
    }
    if (live.ourEnd.locks.length > 0 || live.partnerEnd.locks.length > 0) {
      throw new QrwpError(
        "CHANNEL_STATE",
        "locks are pending on this channel: wait for them or close unilaterally",
        {
          channelId: live.record.channelId.toString(),
          ourLocks: live.ourEnd.locks.length,
          partnerLocks: live.partnerEnd.locks.length,
        },
      );
    }
  }

  /** The partner asks us to co-sign its cooperative settle of a channel with it. */
  async onRequest(
    from: RemotePeer,
    msg: Extract<ChannelMessage, { type: "CooperativeSettleRequest" }>,
  ): Promise<ChannelMessage> {
    const live = this.#registry.get(msg.channelId);
    if (!eqAddr(live.record.partner, from.address)) {
      throw new QrwpError("CHANNEL_NOT_FOUND", "channel is not with this peer", { field: "channelId" });
    }
    if (live.record.state !== "opened" || live.closing) throw this.#registry.stateError(live, "opened");
    // Stop our own payments and wait for any in flight, so the balances we sign are final.
    live.closing = true;
    try {
      await live.queue.onIdle();
      this.#assertNothingInFlight(live);
      const onchain = await this.#chain.hub.getChannel(msg.channelId);
      if (
        !eqAddr(onchain.participant1, msg.participant1) ||
        !eqAddr(onchain.participant2, msg.participant2)
      ) {
        throw new QrwpError("INVALID_ARGUMENT", "participants are not the channel's on-chain participants", {
          field: "participant1",
        });
      }
      await this.#chain.refreshDeposits(live);
      const expected = this.#settleAmounts(live, msg.participant1, msg.participant2);
      if (
        expected.participant1Amount !== msg.participant1Amount ||
        expected.participant2Amount !== msg.participant2Amount
      ) {
        throw new QrwpError("INVALID_ARGUMENT", "cooperative settle amounts do not match our balances", {
          field: "participant1Amount",
          expected: stringify(expected),
        });
      }
      const args = {
        chainId: BigInt(this.#deployment.chainId),
        hub: this.#deployment.hub,
        channelId: msg.channelId,
        ...expected,
      };
      const digest = cooperativeSettleDigest(args);
      if (!eqAddr(recoverDigestSigner(digest, msg.signature), from.address)) {
        throw new QrwpError("INVALID_SIGNATURE", "cooperative settle signature is not the partner's", {
          field: "signature",
        });
      }
      // Persisted before the signature leaves: after a restart we still refuse transfers on this channel.
      this.#store.setMeta(cosignedKey(msg.channelId), "1");
      const signature = signDigest(digest, this.#keys.secp256k1PrivateKey);
      this.#log.info({ channelId: msg.channelId.toString() }, "co-signed cooperative settle");
      return { type: "CooperativeSettleResponse", channelId: msg.channelId, signature };
    } catch (err) {
      live.closing = false;
      throw err;
    }
    // `closing` stays set for good: the channel monitor marks the channel settled when the partner's
    // transaction lands; we can still close unilaterally if it never does.
  }
}
