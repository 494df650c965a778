/**
 * The incoming balance-proof path (PROTOCOL.md §7, Raiden's transfer validation): a partner's DirectTransfer,
 * LockedTransfer, Unlock or LockExpired is checked in full (chain and hub, channel and partner, state, both
 * signatures, nonce, the exact change it claims, capacity), then the proof and what it carries commit in one
 * transaction before `Processed` is answered. A partner's proofs run one at a time whatever path they came by
 * (libp2p, or relayed over HTTP by x402 direct streaming). Refusals are coded and change nothing.
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  QrwpError,
  checkProofMatches,
  distributableAmount,
  findLock,
  isQrwpError,
  secretHashOf,
  verifyBalanceProof,
  withDirect,
  withLock,
  withUnlock,
  withoutLock,
  type ChannelEnd,
  type ChannelMessage,
  type Lock,
  type LockedTransfer,
  type SignedBalanceProof,
} from "../../protocol/index.js";
import type { Deployment } from "../../chain/index.js";
import type { RemotePeer } from "../../host/session-transport.js";
import type { NodeStore, PaymentRecord } from "../store/store.js";
import type { ChainCalls } from "./chain-calls.js";
import { partnerFundsOf, type ChannelRegistry } from "./registry.js";
import { eqAddr, partnerKeyMetaKey, type Live, type TransferHooks } from "./types.js";

/** What {@link IncomingProofs} needs. */
export interface IncomingProofsInit {
  store: NodeStore;
  deployment: Deployment;
  registry: ChannelRegistry;
  chain: ChainCalls;
}

export class IncomingProofs {
  readonly #store: NodeStore;
  readonly #deployment: Deployment;
  readonly #registry: ChannelRegistry;
  readonly #chain: ChainCalls;
  #hooks: TransferHooks | undefined;
  /**
   * Per partner (lower-case address), the tail of the chain that runs the partner's proofs one at a time,
   * whether they came over libp2p or were relayed over HTTP.
   */
  readonly #inbound = new Map<string, Promise<unknown>>();

  constructor(init: IncomingProofsInit) {
    this.#store = init.store;
    this.#deployment = init.deployment;
    this.#registry = init.registry;
    this.#chain = init.chain;
  }

  /**
   * Runs `fn` after every earlier proof of `partner` (over libp2p or HTTP) finished, so the partner's proofs
   * are accepted one at a time whatever path they came by.
   */
  serialized<T>(partner: string, fn: () => Promise<T>): Promise<T> {
    const key = partner.toLowerCase();
    const run = (this.#inbound.get(key) ?? Promise.resolve()).then(fn);
    const tail = run.catch(() => undefined);
    this.#inbound.set(key, tail);
    void tail.then(() => {
      if (this.#inbound.get(key) === tail) this.#inbound.delete(key);
    });
    return run;
  }

  /**
   * Accepts a partner's balance proof: checks chain/hub/channel/partner/state, both signatures, that it
   * commits to exactly `expected(partnerEnd)` with a higher nonce, and that the partner can afford it;
   * then stores it (with `persist`'s writes, in one transaction) and acknowledges with Processed.
   * An identical re-delivery is acknowledged again without any change.
   */
  async #acceptProof(
    from: RemotePeer,
    signed: SignedBalanceProof,
    expected: (partnerEnd: ChannelEnd) => ChannelEnd,
    persist: (live: Live, end: ChannelEnd) => (() => void) | void,
    isRedelivery: (live: Live) => boolean,
  ): Promise<ChannelMessage> {
    const p = signed.proof;
    if (p.chainId !== BigInt(this.#deployment.chainId) || !eqAddr(p.hub, this.#deployment.hub)) {
      throw new QrwpError("INVALID_TRANSFER", "balance proof is for another chain or hub", {
        field: "balanceProof.hub",
      });
    }
    const live = this.#registry.get(p.channelId);
    if (!eqAddr(live.record.partner, from.address)) {
      throw new QrwpError("CHANNEL_NOT_FOUND", "channel is not with this peer", {
        field: "balanceProof.channelId",
      });
    }
    verifyBalanceProof(signed, from.address, from.mldsaPublicKey);
    // A proof we already hold is acknowledged again whatever the channel's state (closing included): the
    // partner must not count it refused while we count it received (it came first over HTTP, say).
    if (p.nonce <= (live.partnerLatest?.proof.nonce ?? 0n)) {
      const earlier = this.#store.balanceProofAt(p.channelId, live.record.partner, p.nonce);
      if (earlier && earlier.signature === signed.signature && isRedelivery(live)) {
        return { type: "Processed", channelId: p.channelId, nonce: p.nonce }; // idempotent re-delivery
      }
    }
    // After we co-signed a cooperative settle, a new proof would not be in the co-signed amounts.
    if (live.record.state !== "opened" || live.closing) throw this.#registry.stateError(live, "opened");
    const check = () => {
      // Read at each check: the partner's latest may move while deposits are refreshed below.
      const lastNonce = live.partnerLatest?.proof.nonce ?? 0n;
      const end = checkProofMatches(p, lastNonce, expected(live.partnerEnd));
      if (distributableAmount(partnerFundsOf(live), end, live.ourEnd) < 0n) {
        throw new QrwpError("INSUFFICIENT_CAPACITY", "transfer exceeds the partner's balance", {
          field: "balanceProof.transferredAmount",
        });
      }
      return end;
    };
    let end: ChannelEnd;
    try {
      end = check();
    } catch (err) {
      if (!(isQrwpError(err) && err.code === "INSUFFICIENT_CAPACITY")) throw err;
      // The partner may have deposited since we last looked: refresh once from the chain and re-check.
      await this.#chain.refreshDeposits(live);
      end = check();
    }
    if (live.record.state !== "opened" || live.closing) throw this.#registry.stateError(live, "opened");
    let after: (() => void) | void = undefined;
    const newKey = this.#registry.changedPartnerKey(live.record.partner, from.mldsaPublicKey);
    this.#store.transaction(() => {
      this.#store.insertBalanceProof(live.record.partner, signed, { locks: end.locks, status: "acked" });
      // The key that verified the proof, durable with it: a watchtower appointment needs it after a restart.
      if (newKey) this.#store.setMeta(partnerKeyMetaKey(live.record.partner), bytesToHex(newKey));
      after = persist(live, end);
    });
    if (newKey) this.#registry.rememberPartnerKey(live.record.partner, newKey);
    live.partnerEnd = end;
    live.partnerLatest = signed;
    this.#registry.emit("partnerProof", p.channelId);
    const run = after as (() => void) | undefined;
    if (run) setImmediate(run);
    return { type: "Processed", channelId: p.channelId, nonce: p.nonce };
  }

  async onDirectTransfer(from: RemotePeer, msg: Extract<ChannelMessage, { type: "DirectTransfer" }>) {
    const channelId = msg.balanceProof.proof.channelId;
    if (msg.amount <= 0n) throw new QrwpError("INVALID_TRANSFER", "amount must be > 0", { field: "amount" });
    return this.#acceptProof(
      from,
      msg.balanceProof,
      (end) => withDirect(end, msg.amount),
      (live, end) => {
        if (this.#store.getIncomingPayment(channelId, msg.paymentId)) {
          throw new QrwpError("CONFLICT", `payment ${msg.paymentId} was already received`, {
            field: "paymentId",
          });
        }
        const now = Date.now();
        const payment: PaymentRecord = {
          paymentId: msg.paymentId,
          direction: "incoming",
          channelId,
          partner: live.record.partner,
          token: live.record.token,
          amount: msg.amount,
          nonce: end.nonce,
          status: "completed",
          errorCode: null,
          errorMessage: null,
          createdAtMs: now,
          completedAtMs: now,
        };
        this.#store.insertPayment(payment);
        return () => this.#registry.emit("payment", payment); // after the commit
      },
      () => {
        // The payment id and amount are outside the signature: a re-delivery must name the payment that
        // this very proof carried, or any old proof could be wrapped as "payment X arrived".
        const earlier = this.#store.getIncomingPayment(channelId, msg.paymentId);
        return (
          earlier !== null && earlier.nonce === msg.balanceProof.proof.nonce && earlier.amount === msg.amount
        );
      },
    );
  }

  async onLockedTransfer(from: RemotePeer, msg: LockedTransfer): Promise<ChannelMessage> {
    const hooks = this.hooks();
    const nowSeconds = this.#registry.nowSeconds();
    if (msg.lock.expiration <= nowSeconds) {
      throw new QrwpError("EXPIRY_TOO_SOON", "the lock has already expired", { field: "lock.expiration" });
    }
    // A lock outliving the settle window could be unlocked back to its sender before we may register its
    // secret (ChannelHub.unlock reads the registry when called): refuse it.
    const live = this.#registry.find(msg.balanceProof.proof.channelId);
    if (live && msg.lock.expiration >= nowSeconds + BigInt(live.record.settleTimeoutSeconds)) {
      throw new QrwpError("INVALID_TRANSFER", "the lock expires after the channel's settle timeout", {
        field: "lock.expiration",
        settleTimeoutSeconds: live.record.settleTimeoutSeconds,
      });
    }
    return this.#acceptProof(
      from,
      msg.balanceProof,
      (end) => withLock(end, msg.lock),
      (live) =>
        hooks.lockReceived(msg, {
          channelId: live.record.channelId,
          partner: live.record.partner,
          token: live.record.token,
        }),
      (live) => findLock(live.partnerEnd, msg.lock.secretHash) !== undefined,
    );
  }

  async onUnlock(
    from: RemotePeer,
    msg: Extract<ChannelMessage, { type: "Unlock" }>,
  ): Promise<ChannelMessage> {
    const hooks = this.hooks();
    const secretHash = secretHashOf(msg.secret);
    let lock: Lock | undefined;
    return this.#acceptProof(
      from,
      msg.balanceProof,
      (end) => {
        lock = findLock(end, secretHash);
        return withUnlock(end, secretHash);
      },
      (live) => {
        this.#store.putSecret(secretHash, msg.secret);
        return hooks.unlockReceived(
          live.record.channelId,
          live.record.partner,
          secretHash,
          msg.secret,
          lock as Lock,
        );
      },
      () => true,
    );
  }

  async onLockExpired(
    from: RemotePeer,
    msg: Extract<ChannelMessage, { type: "LockExpired" }>,
  ): Promise<ChannelMessage> {
    const hooks = this.hooks();
    const nowSeconds = this.#registry.nowSeconds();
    return this.#acceptProof(
      from,
      msg.balanceProof,
      (end) => {
        const lock = findLock(end, msg.secretHash);
        if (lock) {
          const channelId = msg.balanceProof.proof.channelId;
          if (this.#store.getSecret(msg.secretHash) !== null) {
            throw new QrwpError("INVALID_TRANSFER", "we know this lock's secret: it is not expired for us", {
              field: "secretHash",
            });
          }
          if (!hooks.mayRemoveLock(channelId, from.address, lock, nowSeconds)) {
            throw new QrwpError("INVALID_TRANSFER", "the lock has not expired yet", { field: "secretHash" });
          }
        }
        return withoutLock(end, msg.secretHash);
      },
      (live) => hooks.lockExpiredReceived(live.record.channelId, live.record.partner, msg.secretHash),
      () => true,
    );
  }

  /** The payments layer's hooks. @throws QrwpError INTERNAL before {@link setTransferHooks}. */
  hooks(): TransferHooks {
    if (!this.#hooks) throw new QrwpError("INTERNAL", "mediated transfers are not enabled");
    return this.#hooks;
  }

  /** Plugs in the payments layer (mediated transfers). */
  setTransferHooks(hooks: TransferHooks): void {
    this.#hooks = hooks;
  }
}
