/**
 * The incoming balance-proof path (PROTOCOL.md §7, Raiden's transfer validation): a partner's BalanceUpdate
 * (a batch of changes under one proof), or a single DirectTransfer, LockedTransfer, Unlock or LockExpired, is
 * checked in full (chain and hub, channel and partner, state, the secp256k1 signature, the ML-DSA-65 evidence
 * or the evidence bound, nonce, the exact changes it claims, capacity), then the proof and everything it
 * carries commit in one transaction before `Processed` is answered; `Evidence` for an accepted proof is
 * checked and stored. A partner's proofs run one at a time whatever path they came by
 * (libp2p, or relayed over HTTP by x402 direct streaming). Refusals are coded and change nothing.
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  EVIDENCE_MAX_DELAY_MS,
  EVIDENCE_MAX_UPDATES,
  QrwpError,
  checkProofMatches,
  hasEvidence,
  verifyEvidence,
  distributableAmount,
  findLock,
  isQrwpError,
  lockChangeOf,
  secretHashOf,
  verifyBalanceProof,
  withDirect,
  withLock,
  withUnlock,
  withoutLock,
  type BalanceChange,
  type BalanceUpdate,
  type ChannelEnd,
  type ChannelMessage,
  type Evidence,
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

/** How one change of an update is checked and stored (see `IncomingProofs.#ruleFor`). */
interface ChangeRule {
  /** The partner's end after this change (throws a coded refusal). */
  expected(end: ChannelEnd): ChannelEnd;
  /** Its writes, inside the update's transaction; may return what to run after the commit. */
  persist(live: Live, end: ChannelEnd): (() => void) | void;
  /** Whether an identical, already stored proof carried this change (re-delivery). */
  isRedelivery(live: Live): boolean;
}

/**
 * The evidence bound (docs/PROTOCOL.md §7.4): an update without ML-DSA-65 evidence is refused once the
 * partner's evidence lags by more than {@link EVIDENCE_MAX_UPDATES} nonces or {@link EVIDENCE_MAX_DELAY_MS}.
 * @throws QrwpError EVIDENCE_REQUIRED (field "balanceProof.pqSignature")
 */
function assertWithinEvidenceBound(live: Live, nonce: bigint): void {
  const evidencedNonce = live.partnerEvidenced?.proof.nonce ?? 0n;
  const lagMs = live.partnerUnevidencedSinceMs === null ? 0 : Date.now() - live.partnerUnevidencedSinceMs;
  if (nonce - evidencedNonce > BigInt(EVIDENCE_MAX_UPDATES) || lagMs > EVIDENCE_MAX_DELAY_MS) {
    throw new QrwpError("EVIDENCE_REQUIRED", "this update must carry ML-DSA-65 evidence", {
      field: "balanceProof.pqSignature",
      evidencedNonce: evidencedNonce.toString(),
      lagMs,
    });
  }
}

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
   * Accepts a partner's balance proof carrying `rules` (one per change, applied in order): checks
   * chain/hub/channel/partner/state, the secp256k1 signature and the ML-DSA-65 evidence if present (else
   * the evidence bound, docs/PROTOCOL.md §7.4), that it commits to exactly the changes applied to the
   * partner's last end with a higher nonce, and that the partner can afford it; then stores it with every
   * rule's writes in one transaction and acknowledges with Processed. An identical re-delivery (every rule
   * says so) is acknowledged again without any change.
   */
  async #acceptProof(
    from: RemotePeer,
    signed: SignedBalanceProof,
    rules: ChangeRule[],
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
    verifyBalanceProof(signed, from.address, from.mldsaPublicKey, { requireEvidence: false });
    const evidenced = hasEvidence(signed);
    // A proof we already hold is acknowledged again whatever the channel's state (closing included): the
    // partner must not count it refused while we count it received (it came first over HTTP, say).
    if (p.nonce <= (live.partnerLatest?.proof.nonce ?? 0n)) {
      const earlier = this.#store.balanceProofAt(p.channelId, live.record.partner, p.nonce);
      if (earlier && earlier.signature === signed.signature && rules.every((r) => r.isRedelivery(live))) {
        return { type: "Processed", channelId: p.channelId, nonce: p.nonce }; // idempotent re-delivery
      }
    }
    // After we co-signed a cooperative settle, a new proof would not be in the co-signed amounts.
    if (live.record.state !== "opened" || live.closing) throw this.#registry.stateError(live, "opened");
    if (!evidenced) assertWithinEvidenceBound(live, p.nonce);
    const check = () => {
      // Read at each check: the partner's latest may move while deposits are refreshed below.
      const lastNonce = live.partnerLatest?.proof.nonce ?? 0n;
      const expected = rules.reduce((end, rule) => rule.expected(end), live.partnerEnd);
      const end = checkProofMatches(p, lastNonce, expected);
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
    const after: (() => void)[] = [];
    const newKey = this.#registry.changedPartnerKey(live.record.partner, from.mldsaPublicKey);
    // Group commit: the proof and everything its changes carry, durable together before Processed.
    this.#store.transaction(() => {
      this.#store.insertBalanceProof(live.record.partner, signed, { locks: end.locks, status: "acked" });
      // The key that verified the proof, durable with it: a watchtower appointment needs it after a restart.
      if (newKey) this.#store.setMeta(partnerKeyMetaKey(live.record.partner), bytesToHex(newKey));
      for (const rule of rules) {
        const run = rule.persist(live, end);
        if (run) after.push(run);
      }
    });
    if (newKey) this.#registry.rememberPartnerKey(live.record.partner, newKey);
    live.partnerEnd = end;
    live.partnerLatest = signed;
    if (evidenced) {
      live.partnerEvidenced = signed;
      live.partnerUnevidencedSinceMs = null;
    } else {
      live.partnerUnevidencedSinceMs ??= Date.now();
    }
    if (evidenced || newKey) this.#registry.emit("partnerProof", p.channelId);
    if (after.length > 0) setImmediate(() => after.forEach((run) => run()));
    return { type: "Processed", channelId: p.channelId, nonce: p.nonce };
  }

  /**
   * A partner's BalanceUpdate: its changes, in order, under one proof (docs/PROTOCOL.md §7.3). A payment id
   * or secret hash named twice is refused (CONFLICT), as is anything one change alone would be refused for.
   */
  async onBalanceUpdate(from: RemotePeer, msg: BalanceUpdate): Promise<ChannelMessage> {
    const paymentIds = new Set<string>();
    const secretHashes = new Set<string>();
    const rules = msg.changes.map((change, index) => {
      const field = `changes.${index}`;
      if (change.kind === "direct") {
        if (paymentIds.has(change.paymentId)) {
          throw new QrwpError("CONFLICT", `payment ${change.paymentId} appears twice in the update`, {
            field: `${field}.paymentId`,
          });
        }
        paymentIds.add(change.paymentId);
      } else {
        const secretHash =
          change.kind === "unlock"
            ? secretHashOf(change.secret)
            : change.kind === "lock"
              ? change.lock.secretHash
              : change.secretHash;
        if (secretHashes.has(secretHash)) {
          throw new QrwpError("CONFLICT", "a lock appears twice in the update", {
            field: `${field}.secretHash`,
          });
        }
        secretHashes.add(secretHash);
      }
      return this.#ruleFor(from, change, msg.balanceProof);
    });
    return this.#acceptProof(from, msg.balanceProof, rules);
  }

  async onDirectTransfer(from: RemotePeer, msg: Extract<ChannelMessage, { type: "DirectTransfer" }>) {
    const { paymentId, amount } = msg;
    return this.#acceptProof(from, msg.balanceProof, [
      this.#ruleFor(from, { kind: "direct", paymentId, amount }, msg.balanceProof),
    ]);
  }

  async onLockedTransfer(from: RemotePeer, msg: LockedTransfer): Promise<ChannelMessage> {
    const change = lockChangeOf(msg, msg.lock);
    return this.#acceptProof(from, msg.balanceProof, [this.#ruleFor(from, change, msg.balanceProof)]);
  }

  async onUnlock(
    from: RemotePeer,
    msg: Extract<ChannelMessage, { type: "Unlock" }>,
  ): Promise<ChannelMessage> {
    const change: BalanceChange = { kind: "unlock", paymentId: msg.paymentId, secret: msg.secret };
    return this.#acceptProof(from, msg.balanceProof, [this.#ruleFor(from, change, msg.balanceProof)]);
  }

  async onLockExpired(
    from: RemotePeer,
    msg: Extract<ChannelMessage, { type: "LockExpired" }>,
  ): Promise<ChannelMessage> {
    const change: BalanceChange = { kind: "expire", secretHash: msg.secretHash };
    return this.#acceptProof(from, msg.balanceProof, [this.#ruleFor(from, change, msg.balanceProof)]);
  }

  /**
   * Evidence for a partner proof we already hold (docs/PROTOCOL.md §7.4): its ML-DSA-65 signature is checked
   * against that proof and stored with it; the proof becomes what watchtowers are given. Evidence for a
   * proof older than the latest evidenced one changes nothing. Accepted in any channel state.
   * @throws QrwpError CHANNEL_NOT_FOUND | INVALID_EVIDENCE (no such proof, or the signature does not cover it)
   */
  async onEvidence(from: RemotePeer, msg: Evidence): Promise<ChannelMessage> {
    const live = this.#registry.get(msg.channelId);
    if (!eqAddr(live.record.partner, from.address)) {
      throw new QrwpError("CHANNEL_NOT_FOUND", "channel is not with this peer", { field: "channelId" });
    }
    const stored = this.#store.storedProofAt(msg.channelId, live.record.partner, msg.nonce);
    if (!stored) {
      throw new QrwpError("INVALID_EVIDENCE", "no balance proof of yours has this nonce", { field: "nonce" });
    }
    verifyEvidence(stored.signed.proof, msg.pqSignature, from.mldsaPublicKey);
    if (msg.nonce <= (live.partnerEvidenced?.proof.nonce ?? 0n)) return { type: "Ok" };
    const newKey = this.#registry.changedPartnerKey(live.record.partner, from.mldsaPublicKey);
    this.#store.transaction(() => {
      this.#store.setProofPqSignature(msg.channelId, live.record.partner, msg.nonce, msg.pqSignature);
      if (newKey) this.#store.setMeta(partnerKeyMetaKey(live.record.partner), bytesToHex(newKey));
    });
    if (newKey) this.#registry.rememberPartnerKey(live.record.partner, newKey);
    const signed: SignedBalanceProof = { ...stored.signed, pqSignature: msg.pqSignature };
    live.partnerEvidenced = signed;
    if (msg.nonce === live.partnerLatest?.proof.nonce) {
      live.partnerLatest = signed;
      live.partnerUnevidencedSinceMs = null;
    } else {
      // The proofs after `nonce` are still without evidence: their clock restarts now (the count bound is exact).
      live.partnerUnevidencedSinceMs = Date.now();
    }
    this.#registry.emit("partnerProof", msg.channelId);
    return { type: "Ok" };
  }

  /**
   * How one change is checked and stored: its prechecks (thrown now, before anything is verified or
   * stored), what it does to the partner's end, its writes, and whether a re-delivered proof carried it.
   */
  #ruleFor(from: RemotePeer, change: BalanceChange, signed: SignedBalanceProof): ChangeRule {
    const channelId = signed.proof.channelId;
    switch (change.kind) {
      case "direct":
        return {
          expected: (end) => withDirect(end, change.amount),
          persist: (live, end) => {
            if (this.#store.getIncomingPayment(channelId, change.paymentId)) {
              throw new QrwpError("CONFLICT", `payment ${change.paymentId} was already received`, {
                field: "paymentId",
              });
            }
            const now = Date.now();
            const payment: PaymentRecord = {
              paymentId: change.paymentId,
              direction: "incoming",
              channelId,
              partner: live.record.partner,
              token: live.record.token,
              amount: change.amount,
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
          // The payment id and amount are outside the signature: a re-delivery must name the payment that
          // this very proof carried, or any old proof could be wrapped as "payment X arrived".
          isRedelivery: () => {
            const earlier = this.#store.getIncomingPayment(channelId, change.paymentId);
            return (
              earlier !== null && earlier.nonce === signed.proof.nonce && earlier.amount === change.amount
            );
          },
        };
      case "lock":
        return this.#lockRule(change, signed);
      case "unlock": {
        const hooks = this.hooks();
        const secretHash = secretHashOf(change.secret);
        let lock: Lock | undefined;
        return {
          expected: (end) => {
            lock = findLock(end, secretHash);
            return withUnlock(end, secretHash);
          },
          persist: (live) => {
            this.#store.putSecret(secretHash, change.secret);
            return hooks.unlockReceived(
              live.record.channelId,
              live.record.partner,
              secretHash,
              change.secret,
              lock as Lock,
            );
          },
          isRedelivery: () => true,
        };
      }
      case "expire": {
        const hooks = this.hooks();
        const nowSeconds = this.#registry.nowSeconds();
        return {
          expected: (end) => {
            const lock = findLock(end, change.secretHash);
            if (lock) {
              if (this.#store.getSecret(change.secretHash) !== null) {
                throw new QrwpError(
                  "INVALID_TRANSFER",
                  "we know this lock's secret: it is not expired for us",
                  {
                    field: "secretHash",
                  },
                );
              }
              if (!hooks.mayRemoveLock(channelId, from.address, lock, nowSeconds)) {
                throw new QrwpError("INVALID_TRANSFER", "the lock has not expired yet", {
                  field: "secretHash",
                });
              }
            }
            return withoutLock(end, change.secretHash);
          },
          persist: (live) =>
            hooks.lockExpiredReceived(live.record.channelId, live.record.partner, change.secretHash),
          isRedelivery: () => true,
        };
      }
    }
  }

  /** A new lock: refused now if already expired or outliving the channel's settle window. */
  #lockRule(change: Extract<BalanceChange, { kind: "lock" }>, signed: SignedBalanceProof): ChangeRule {
    const hooks = this.hooks();
    const nowSeconds = this.#registry.nowSeconds();
    // The time checks run in `expected`, after the re-delivery check: a proof we already accepted is
    // acknowledged again even once its lock has expired (refusing it would desync the channel).
    const checkTimes = () => {
      if (change.lock.expiration <= nowSeconds) {
        throw new QrwpError("EXPIRY_TOO_SOON", "the lock has already expired", { field: "lock.expiration" });
      }
      // A lock outliving the settle window could be unlocked back to its sender before we may register its
      // secret (ChannelHub.unlock reads the registry when called): refuse it.
      const live = this.#registry.find(signed.proof.channelId);
      if (live && change.lock.expiration >= nowSeconds + BigInt(live.record.settleTimeoutSeconds)) {
        throw new QrwpError("INVALID_TRANSFER", "the lock expires after the channel's settle timeout", {
          field: "lock.expiration",
          settleTimeoutSeconds: live.record.settleTimeoutSeconds,
        });
      }
    };
    const { kind: _kind, ...fields } = change;
    const msg: LockedTransfer = { type: "LockedTransfer", ...fields, balanceProof: signed };
    return {
      expected: (end) => {
        checkTimes();
        return withLock(end, change.lock);
      },
      persist: (live) =>
        hooks.lockReceived(msg, {
          channelId: live.record.channelId,
          partner: live.record.partner,
          token: live.record.token,
        }),
      isRedelivery: (live) => findLock(live.partnerEnd, change.lock.secretHash) !== undefined,
    };
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
