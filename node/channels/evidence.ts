/**
 * Our post-quantum evidence (docs/PROTOCOL.md §7.4): when one of our balance updates carries its ML-DSA-65
 * signature, and sending it alone. An update carries evidence when its nonce is `everyUpdates` above our
 * latest acknowledged evidenced proof, or when our oldest acknowledged proof without evidence is `delayMs`
 * old; an idle channel whose latest acknowledged proof lacks evidence gets an `Evidence` message for it
 * `delayMs` after the acknowledgement (retried with back-off), and so does the partner before a cooperative
 * settle or a withdraw. Evidence is stored with its proof before it is sent.
 */
import type { Logger } from "pino";
import {
  QrwpError,
  hasEvidence,
  signEvidence,
  type NodeKeys,
  type SignedBalanceProof,
} from "../../protocol/index.js";
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
}

/** Longest wait between two attempts to send evidence to a partner that is away (ms). */
const MAX_EVIDENCE_RETRY_MS = 30_000;

export class EvidenceSender {
  readonly policy: EvidencePolicy;
  readonly #init: EvidenceSenderInit;
  /** Per channel (id as decimal), the timer that sends evidence alone on an idle channel. */
  readonly #timers = new Map<string, NodeJS.Timeout>();
  #stopped = false;

  constructor(init: EvidenceSenderInit) {
    this.#init = init;
    this.policy = {
      everyUpdates: init.evidence?.everyUpdates ?? DEFAULT_EVIDENCE_EVERY_UPDATES,
      delayMs: init.evidence?.delayMs ?? DEFAULT_EVIDENCE_DELAY_MS,
    };
  }

  /** Whether our proof `nonce` on the channel must carry evidence (see the module docs). */
  due(live: Live, nonce: bigint): boolean {
    if (nonce - live.ourEvidencedNonce >= BigInt(this.policy.everyUpdates)) return true;
    const since = live.ourUnevidencedSinceMs;
    return since !== null && Date.now() - since >= this.policy.delayMs;
  }

  /** Our proof `signed`, now our latest acknowledged one: evidence bookkeeping, and the timer if it has none. */
  acknowledged(live: Live, signed: SignedBalanceProof): void {
    if (hasEvidence(signed)) {
      live.ourEvidencedNonce = signed.proof.nonce;
      live.ourUnevidencedSinceMs = null;
    } else {
      live.ourUnevidencedSinceMs ??= Date.now();
      this.#schedule(live, this.policy.delayMs);
    }
  }

  /** After a restart: arms the timer of a channel whose latest acknowledged proof lacks evidence. */
  resume(live: Live): void {
    if (live.ourUnevidencedSinceMs !== null) this.#schedule(live, this.policy.delayMs);
  }

  /** Stops the timers (the node is shutting down). */
  stop(): void {
    this.#stopped = true;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
  }

  /** Arms the channel's timer (once): {@link send} in the channel's queue after `delayMs`. */
  #schedule(live: Live, delayMs: number, attempt = 0): void {
    const key = live.record.channelId.toString();
    if (this.#stopped || this.#timers.has(key)) return;
    const timer = setTimeout(() => {
      this.#timers.delete(key);
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
    const { store, keys, address, partners } = this.#init;
    const nonce = live.ourEnd.nonce;
    if (nonce === 0n || nonce <= live.ourEvidencedNonce || live.ourPending.length > 0) return;
    const stored = store.storedProofAt(live.record.channelId, address, nonce);
    if (!stored)
      throw new QrwpError("INTERNAL", "our acknowledged proof is not stored", { nonce: nonce.toString() });
    let pqSignature = stored.signed.pqSignature;
    if (pqSignature.length === 0) {
      pqSignature = signEvidence(stored.signed.proof, keys);
      store.setProofPqSignature(live.record.channelId, address, nonce, pqSignature);
    }
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
    if (nonce === live.ourEnd.nonce) live.ourUnevidencedSinceMs = null;
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
