/**
 * Our post-quantum evidence (docs/PROTOCOL.md §7.4): when our latest acknowledged proof gets its ML-DSA-65
 * signature. Once it is `everyUpdates` above our latest evidenced proof, or `delayMs` after the first proof
 * without evidence was acknowledged, the signature is made in a worker thread (off the event loop that
 * carries payments) and sent alone as `Evidence`, in the channel's queue; if that lags far behind (the
 * worker is busy or failed), the next update carries the signature itself, signed in line, well inside the
 * receiver's bound. Before a cooperative settle or a withdraw the partner gets evidence for our latest proof.
 * Evidence is stored with its proof before it is sent.
 */
import type { Logger } from "pino";
import {
  EVIDENCE_MAX_DELAY_MS,
  EVIDENCE_MAX_UPDATES,
  MLDSA_CONTEXT_BALANCE_PROOF,
  QrwpError,
  balanceProofDigest,
  hasEvidence,
  signEvidence,
  type NodeKeys,
  type SignedBalanceProof,
} from "../../protocol/index.js";
import { MldsaSignerWorker } from "../../host/mldsa-worker.js";
import { errorFields } from "../../host/session-transport.js";
import type { NodeStore } from "../store/store.js";
import type { Partners } from "./partners.js";
import type { Live } from "./types.js";

/** Default of {@link EvidencePolicy.everyUpdates} (measured: docs/DECISIONS.md, "Amortized evidence"). */
export const DEFAULT_EVIDENCE_EVERY_UPDATES = 32;
/** Default of {@link EvidencePolicy.delayMs}. */
export const DEFAULT_EVIDENCE_DELAY_MS = 250;

/**
 * When our updates carry ML-DSA-65 evidence (docs/PROTOCOL.md §7.4); both stay well inside the receiver's
 * bound (`EVIDENCE_MAX_UPDATES`, `EVIDENCE_MAX_DELAY_MS`).
 */
export interface EvidencePolicy {
  /** An update carries evidence when its nonce is this many above our latest acknowledged evidenced proof. */
  everyUpdates: number;
  /** ... or when our oldest acknowledged proof without evidence is this old (ms); an idle channel sends it alone. */
  delayMs: number;
}

/** What an {@link EvidenceSender} needs. */
export interface EvidenceSenderInit {
  store: NodeStore;
  keys: NodeKeys;
  /** Our address (the signer of our proofs in the store). */
  address: string;
  partners: Partners;
  log: Logger;
  /** Default: {@link DEFAULT_EVIDENCE_EVERY_UPDATES}, {@link DEFAULT_EVIDENCE_DELAY_MS}. */
  evidence?: Partial<EvidencePolicy>;
  /** Sign in a worker thread (default true); false signs in line, on the update that is due. */
  worker?: boolean;
}

/** An update carries evidence signed in line once this many nonces past our latest evidence (the worker lags). */
const IN_LINE_AFTER_UPDATES = EVIDENCE_MAX_UPDATES - 8;
/** ... or once our oldest acknowledged proof without evidence is this old (ms). */
const IN_LINE_AFTER_MS = EVIDENCE_MAX_DELAY_MS / 2;

/** Longest wait between two attempts to send evidence to a partner that is away (ms). */
const MAX_EVIDENCE_RETRY_MS = 30_000;

export class EvidenceSender {
  readonly policy: EvidencePolicy;
  readonly #init: EvidenceSenderInit;
  /** Per channel (id as decimal), the timer that sends evidence alone on an idle channel. */
  readonly #timers = new Map<string, NodeJS.Timeout>();
  /** Channels (id as decimal) whose evidence is being signed in the worker. */
  readonly #signing = new Set<string>();
  readonly #worker: MldsaSignerWorker | null;
  #stopped = false;

  constructor(init: EvidenceSenderInit) {
    this.#init = init;
    this.policy = {
      everyUpdates: init.evidence?.everyUpdates ?? DEFAULT_EVIDENCE_EVERY_UPDATES,
      delayMs: init.evidence?.delayMs ?? DEFAULT_EVIDENCE_DELAY_MS,
    };
    this.#worker = init.worker === false ? null : new MldsaSignerWorker(init.keys.mldsaSecretKey);
  }

  /**
   * Whether our proof `nonce` on the channel must carry evidence signed in line: with the worker, only when
   * the worker's evidence lags far behind; without it, at the policy's thresholds.
   */
  due(live: Live, nonce: bigint): boolean {
    const [updates, ms] = this.#worker
      ? [IN_LINE_AFTER_UPDATES, IN_LINE_AFTER_MS]
      : [this.policy.everyUpdates, this.policy.delayMs];
    if (nonce - live.ourEvidencedNonce >= BigInt(updates)) return true;
    const since = live.ourUnevidencedSinceMs;
    return since !== null && Date.now() - since >= ms;
  }

  /**
   * Our proof `signed`, now our latest acknowledged one: evidence bookkeeping; without evidence, its
   * signature is started in the worker when due, else the timer is armed.
   */
  acknowledged(live: Live, signed: SignedBalanceProof, createdAtMs: number): void {
    if (hasEvidence(signed)) {
      live.ourEvidencedNonce = signed.proof.nonce;
      live.ourUnevidencedSinceMs = null;
      return;
    }
    // From when the proof was signed: never later than the partner's acceptance, so our clock is not behind
    // the partner's (a re-delivered or HTTP-held proof may be acknowledged seconds after it was accepted).
    live.ourUnevidencedSinceMs ??= Math.min(createdAtMs, Date.now());
    if (this.#worker && signed.proof.nonce - live.ourEvidencedNonce >= BigInt(this.policy.everyUpdates)) {
      this.#signInWorker(live);
    } else {
      this.#schedule(live, this.policy.delayMs);
    }
  }

  /**
   * Signs the evidence of our latest acknowledged proof in the worker, then sends it in the channel's queue
   * ({@link #deliver}); one at a time per channel. Failures are logged and retried by the timer.
   */
  #signInWorker(live: Live): void {
    const worker = this.#worker;
    const key = live.record.channelId.toString();
    if (!worker || this.#stopped || this.#signing.has(key)) return;
    const nonce = live.ourEnd.nonce;
    const stored = this.#init.store.storedProofAt(live.record.channelId, this.#init.address, nonce);
    if (!stored || nonce <= live.ourEvidencedNonce) return;
    this.#signing.add(key);
    let delivered = false;
    void worker
      .sign(balanceProofDigest(stored.signed.proof), MLDSA_CONTEXT_BALANCE_PROOF)
      .then((pqSignature) => live.queue.add(() => this.#deliver(live, nonce, pqSignature)))
      .then(() => {
        delivered = true;
      })
      .catch((err: unknown) => {
        this.#init.log.warn({ channelId: key, err: errorFields(err) }, "evidence not delivered; will retry");
        // Retried by the timer with back-off, signing in line (the worker may be gone).
        this.#schedule(live, Math.min(MAX_EVIDENCE_RETRY_MS, this.policy.delayMs * 2), 1);
      })
      .finally(() => {
        this.#signing.delete(key);
        // After a success only: more proofs may have been acknowledged meanwhile, their turn.
        const behind = live.ourEnd.nonce - live.ourEvidencedNonce >= BigInt(this.policy.everyUpdates);
        if (delivered && !this.#stopped && behind) this.#signInWorker(live);
      });
  }

  /** After a restart: arms the timer of a channel whose latest acknowledged proof lacks evidence. */
  resume(live: Live): void {
    if (live.ourUnevidencedSinceMs !== null) this.#schedule(live, this.policy.delayMs);
  }

  /** Stops the timers and the worker (the node is shutting down). */
  stop(): void {
    this.#stopped = true;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    void this.#worker?.stop();
  }

  /** Arms the channel's timer (once): {@link send} in the channel's queue after `delayMs`. */
  #schedule(live: Live, delayMs: number, attempt = 0): void {
    const key = live.record.channelId.toString();
    if (this.#stopped || this.#timers.has(key)) return;
    const timer = setTimeout(() => {
      this.#timers.delete(key);
      if (this.#worker && attempt === 0) {
        this.#signInWorker(live);
        return;
      }
      void live.queue
        .add(() => this.send(live))
        .catch((err: unknown) => {
          this.#init.log.warn(
            { channelId: key, err: errorFields(err) },
            "evidence not delivered; will retry",
          );
          // Backs off while the partner is away; the next update carries evidence anyway.
          const next = Math.min(MAX_EVIDENCE_RETRY_MS, this.policy.delayMs * 2 ** (attempt + 1));
          this.#schedule(live, next, attempt + 1);
        });
    }, delayMs);
    timer.unref();
    this.#timers.set(key, timer);
  }

  /**
   * Inside the channel's queue: makes sure the partner holds evidence for our latest acknowledged proof. If it
   * has none, signs it (ML-DSA-65), stores it with the proof (durable before it is sent), sends `Evidence`
   * and records the partner's Ok. A no-op when the proof already has evidence or a proof of ours is pending
   * (the pending one is re-sent first by the next update).
   * @throws QrwpError PEER_OFFLINE | TIMEOUT | ... when the partner was not reached; PEER_REJECTED on a refusal
   */
  async send(live: Live): Promise<void> {
    const { store, keys, address } = this.#init;
    const nonce = live.ourEnd.nonce;
    if (nonce === 0n || nonce <= live.ourEvidencedNonce || live.ourPending.length > 0) return;
    const stored = store.storedProofAt(live.record.channelId, address, nonce);
    if (!stored)
      throw new QrwpError("INTERNAL", "our acknowledged proof is not stored", { nonce: nonce.toString() });
    const pqSignature =
      stored.signed.pqSignature.length > 0
        ? stored.signed.pqSignature
        : signEvidence(stored.signed.proof, keys);
    await this.#deliver(live, nonce, pqSignature);
  }

  /**
   * Inside the channel's queue: stores `pqSignature` as the evidence of our proof `nonce` (durable before it
   * is sent) and sends `Evidence`; a no-op when newer evidence was acknowledged meanwhile.
   * @throws as {@link send}
   */
  async #deliver(live: Live, nonce: bigint, pqSignature: Uint8Array): Promise<void> {
    const { store, address, partners } = this.#init;
    if (nonce <= live.ourEvidencedNonce) return;
    store.setProofPqSignature(live.record.channelId, address, nonce, pqSignature);
    const reply = await partners.transport.request(
      live.record.partner,
      { type: "Evidence", channelId: live.record.channelId, nonce, pqSignature },
      partners.target(live.record.partner),
    );
    if (reply.type !== "Ok") {
      const code = reply.type === "Error" ? reply.code : "INVALID_MESSAGE";
      throw new QrwpError("PEER_REJECTED", `partner refused our evidence: ${code}`, { peerCode: code });
    }
    if (nonce > live.ourEvidencedNonce) live.ourEvidencedNonce = nonce;
    // Proofs acknowledged after `nonce` are still without evidence: their clock starts now (conservative).
    live.ourUnevidencedSinceMs = nonce === live.ourEnd.nonce ? null : Date.now();
    if (live.ourUnevidencedSinceMs !== null) this.#schedule(live, this.policy.delayMs);
  }

  /**
   * Inside the channel's queue, before anything leaves the channel (a cooperative settle, a withdraw):
   * {@link send}, best effort (a failure is logged; what follows goes on without it).
   */
  async sendBestEffort(live: Live): Promise<void> {
    try {
      await this.send(live);
    } catch (err) {
      this.#init.log.warn(
        { channelId: live.record.channelId.toString(), err: errorFields(err) },
        "evidence for our latest proof not delivered",
      );
    }
  }
}
