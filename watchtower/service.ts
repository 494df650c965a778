/**
 * The watchtower: accepts appointments, follows the ChannelHub, and contests stale closes.
 *
 * Accepting (`submit`): cheap checks first (chain and hub, the channel and its participants, the channel's
 * state, the stored nonce), then every signature (`verifyAppointment`), then the client's pinned ML-DSA
 * key; only the highest nonce per slot (channel, non-closing participant) is kept, a replay of the stored
 * appointment changes nothing, and a refusal is a coded `QrwpError` that changed no state.
 *
 * Watching: a `ChainEventFollower` delivers the hub's events `confirmations` blocks below the head, in
 * ranges; each range is applied and the cursor persisted in one SQLite transaction, so a restarted tower
 * resumes after its last processed block and misses none. A close by the client's partner leaves the
 * partner's own balance proof off-chain (stored nonce 0) until the client, or a tower for it, submits the
 * partner's latest one: while the hub's stored nonce for the closer is lower than the appointment's, the
 * close is a **breach** (the partner would get back what it paid the client).
 *
 * Contesting (Raiden monitoring service): a breach is contested from a staggered point of the settle window,
 * `closedAt + settleTimeout × (startPct + spreadPct × f) / 100`, f ∈ [0, 1) from keccak256(tower address,
 * channel id) — so the client's own node acts first and several towers do not all pay gas at once. Before
 * sending, the tower reads the hub's stored nonce (another tower or the client may have contested) and
 * simulates the call; it then sends, records the transaction hash, and marks the appointment `contested`
 * once the transaction is mined (a failed or dropped one is retried until the window ends).
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { keccak_256 } from "@noble/hashes/sha3.js";
import { bytesToHex, concatBytes } from "@noble/hashes/utils.js";
import type { Logger } from "pino";
import {
  ChainEventFollower,
  HubCallError,
  type ChainEvent,
  type ChainEventBatch,
  type ChannelView,
  type Deployment,
} from "../chain/index.js";
import {
  QrwpError,
  abiAddressWord,
  abiWord,
  appointmentDigest,
  appointmentId,
  isQrwpError,
  normalizeAddress,
  verifyAppointment,
  type Appointment,
} from "../protocol/index.js";
import type { TowerChain } from "./chain.js";
import type { AppointmentStatus, StoredAppointment, TowerChannel, WatchtowerStore } from "./store.js";

/** What `submit` answers. */
export interface SubmitResult {
  id: string;
  nonce: bigint;
  /** False when the tower already held exactly this appointment (a replay). */
  stored: boolean;
  status: AppointmentStatus;
}

export interface WatchtowerInit {
  store: WatchtowerStore;
  deployment: Deployment;
  chain: TowerChain;
  /** The tower's own address (pays gas; seeds the stagger). */
  address: string;
  rpcUrls: readonly string[];
  /** Blocks below the head an event must be before the tower acts on it (default 0). */
  confirmations?: number;
  /** Chain poll interval of the follower, ms (default 2000). */
  pollIntervalMs?: number;
  /** Contest window start, percent of the settle timeout (default 30). */
  contestStartPct?: number;
  /** Contest window spread, percent of the settle timeout (default 40; start + spread <= 90). */
  contestSpreadPct?: number;
  /** How often due contests are checked, ms (default 1000). */
  tickMs?: number;
  log: Logger;
}

const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

function lower(a: string): string {
  return a.toLowerCase();
}

/** See the module doc. */
export class Watchtower {
  readonly #store: WatchtowerStore;
  readonly #deployment: Deployment;
  readonly #chain: TowerChain;
  readonly #address: string;
  readonly #log: Logger;
  readonly #follower: ChainEventFollower;
  readonly #startPct: number;
  readonly #spreadPct: number;
  readonly #tickMs: number;
  readonly confirmations: number;
  #timer: NodeJS.Timeout | null = null;
  #ticking: Promise<void> | null = null;
  #stopped = false;
  /** Per appointment: earliest next contest attempt (ms, wall clock) after a failure. */
  readonly #retryAt = new Map<string, number>();
  /** Contests whose `mined` promise is being awaited, by appointment id. */
  readonly #inFlight = new Set<string>();

  constructor(init: WatchtowerInit) {
    this.#store = init.store;
    this.#deployment = init.deployment;
    this.#chain = init.chain;
    this.#address = normalizeAddress(init.address, "address");
    this.#log = init.log;
    this.#startPct = init.contestStartPct ?? 30;
    this.#spreadPct = init.contestSpreadPct ?? 40;
    if (this.#startPct < 0 || this.#spreadPct < 0 || this.#startPct + this.#spreadPct > 90) {
      throw new QrwpError("INVALID_ARGUMENT", "contest start + spread must be within 0..90 % of the window", {
        field: "contestStartPct",
      });
    }
    this.#tickMs = init.tickMs ?? 1000;
    this.confirmations = init.confirmations ?? 0;
    const last = this.#store.lastProcessedBlock();
    this.#follower = new ChainEventFollower({
      rpcUrls: init.rpcUrls,
      deployment: init.deployment,
      fromBlock: last === null ? init.deployment.deployBlock : last + 1,
      confirmations: this.confirmations,
      pollIntervalMs: init.pollIntervalMs ?? 2000,
      onBatch: (batch) => this.#onBatch(batch),
      log: init.log.child({ component: "follower" }),
    });
  }

  /** The contest window as configured (percent of the settle timeout). */
  get contestWindow(): { startPct: number; spreadPct: number } {
    return { startPct: this.#startPct, spreadPct: this.#spreadPct };
  }

  /** The last block whose events were applied (persisted), or null before the first. */
  get lastProcessedBlock(): number | null {
    return this.#store.lastProcessedBlock();
  }

  /** Catches up with the chain, then follows it and checks due contests every `tickMs`. */
  async start(): Promise<void> {
    const head = await this.#follower.catchUp();
    this.#log.info(
      { lastProcessedBlock: head, confirmations: this.confirmations },
      "caught up with the chain",
    );
    // A contest sent before a restart and not seen mined since: check it again (the hub's stored nonce
    // tells whether it landed; the follower already marked it `contested` if its event was seen).
    for (const a of this.#store.appointmentsWithStatus("contest_sent")) {
      this.#setStatus(a, "breach", "restarted before the contest was confirmed");
    }
    this.#follower.start();
    const loop = () => {
      if (this.#stopped) return;
      this.#ticking = this.tick()
        .catch((err: unknown) => this.#log.warn({ err: errText(err) }, "contest check failed"))
        .finally(() => {
          this.#ticking = null;
          if (!this.#stopped) this.#timer = setTimeout(loop, this.#tickMs);
        });
    };
    loop();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#follower.stop();
    await this.#ticking;
  }

  // ------------------------------------------------------------------------------------------------
  // Appointments
  // ------------------------------------------------------------------------------------------------

  /**
   * Accepts an appointment (see the module doc for the order of checks).
   * @param from - the session-authenticated sender (libp2p), which must be the non-closing participant.
   * @throws QrwpError UNKNOWN_HUB (field chainId | hub), NOT_PARTICIPANT (field nonClosingParticipant |
   *   closingParticipant), CHANNEL_NOT_FOUND, CHANNEL_STATE, STALE_NONCE, INVALID_ARGUMENT,
   *   INVALID_SIGNATURE (field names the signature or key), CHAIN_ERROR.
   */
  async submit(a: Appointment, from?: { address: string }): Promise<SubmitResult> {
    try {
      const result = await this.#submit(a, from);
      return result;
    } catch (err) {
      this.#store.bump("count:refused");
      const e = isQrwpError(err) ? err : new QrwpError("INTERNAL", "appointment could not be processed");
      if (!isQrwpError(err)) this.#log.error({ err: errText(err) }, "appointment failed unexpectedly");
      this.#log.info(
        { code: e.code, field: e.details.field, channelId: safeBig(a?.channelId), nonce: safeBig(a?.nonce) },
        "appointment refused",
      );
      throw e;
    }
  }

  async #submit(a: Appointment, from?: { address: string }): Promise<SubmitResult> {
    if (typeof a !== "object" || a === null) {
      throw new QrwpError("INVALID_ARGUMENT", "appointment must be an object", { field: "appointment" });
    }
    if (a.chainId !== BigInt(this.#deployment.chainId)) {
      throw new QrwpError("UNKNOWN_HUB", `this tower watches chain ${this.#deployment.chainId}`, {
        field: "chainId",
        value: String(a.chainId),
      });
    }
    const hub = normalizeAddress(a.hub, "hub");
    if (lower(hub) !== lower(this.#deployment.hub)) {
      throw new QrwpError("UNKNOWN_HUB", `this tower watches hub ${this.#deployment.hub}`, {
        field: "hub",
        value: hub,
      });
    }
    const client = normalizeAddress(a.nonClosingParticipant, "nonClosingParticipant");
    const closer = normalizeAddress(a.closingParticipant, "closingParticipant");
    if (from && lower(from.address) !== lower(client)) {
      throw new QrwpError("NOT_PARTICIPANT", "an appointment must come from its non-closing participant", {
        field: "nonClosingParticipant",
      });
    }
    const channel = await this.#knownChannel(a.channelId);
    const participants = [lower(channel.participant1), lower(channel.participant2)];
    if (!participants.includes(lower(client))) {
      throw new QrwpError("NOT_PARTICIPANT", "the non-closing participant is not in this channel", {
        field: "nonClosingParticipant",
      });
    }
    if (!participants.includes(lower(closer)) || lower(closer) === lower(client)) {
      throw new QrwpError("NOT_PARTICIPANT", "the closing participant is not the client's partner", {
        field: "closingParticipant",
      });
    }
    // From here on everything is synchronous: no other submit or chain batch interleaves.
    if (channel.state === "settled") {
      throw new QrwpError("CHANNEL_STATE", "the channel is settled", { field: "channelId" });
    }
    if (channel.state === "closed" && lower(channel.closingParticipant ?? "") === lower(client)) {
      throw new QrwpError("CHANNEL_STATE", "the client closed this channel itself", { field: "channelId" });
    }
    const id = appointmentId(a.chainId, hub, a.channelId, client);
    const existing = this.#store.appointment(id);
    const digest = appointmentDigest(a);
    const digestHex = `0x${bytesToHex(sha256(digest))}`;
    if (existing) {
      if (existing.nonce > a.nonce || (existing.nonce === a.nonce && existing.digest !== digestHex)) {
        throw new QrwpError("STALE_NONCE", `the tower holds nonce ${existing.nonce} for this channel`, {
          field: "nonce",
          stored: existing.nonce.toString(),
        });
      }
      if (existing.nonce === a.nonce) {
        return { id, nonce: existing.nonce, stored: false, status: existing.status };
      }
    }
    verifyAppointment(a);
    const keyHash = `0x${bytesToHex(sha256(a.nonClosingMldsaPublicKey))}`;
    const pinned = this.#store.clientKeyHash(client);
    if (pinned !== null && pinned !== keyHash) {
      throw new QrwpError("INVALID_SIGNATURE", "the ML-DSA key differs from the one this client registered", {
        field: "nonClosingMldsaPublicKey",
      });
    }
    const now = Date.now();
    const record: StoredAppointment = {
      id,
      channelId: a.channelId,
      closingParticipant: closer,
      nonClosingParticipant: client,
      nonce: a.nonce,
      balanceHash: a.balanceHash.toLowerCase(),
      closingSignature: a.closingSignature,
      nonClosingSignature: a.nonClosingSignature,
      digest: digestHex,
      status: "watching",
      contestNotBeforeSeconds: null,
      contestDeadlineSeconds: null,
      contestTxHash: null,
      contestAttempts: 0,
      lastError: null,
      receivedAtMs: now,
      updatedAtMs: now,
    };
    // An appointment for a channel already closed by the partner with a lower nonce is a breach at once.
    this.#judge(record, channel);
    this.#store.transaction(() => {
      this.#store.putAppointment(record);
      if (pinned === null) this.#store.pinClientKey(client, keyHash);
      this.#store.bump("count:accepted");
    });
    this.#log.debug(
      { id, channelId: a.channelId.toString(), nonce: a.nonce.toString() },
      "appointment stored",
    );
    return { id, nonce: a.nonce, stored: true, status: record.status };
  }

  /** The stored appointment of a slot, or null. */
  appointment(id: string): StoredAppointment | null {
    return /^0x[0-9a-fA-F]{64}$/.test(id) ? this.#store.appointment(id) : null;
  }

  /** The tower's channel record, read from the chain (and stored) if the follower has not seen it yet. */
  async #knownChannel(channelId: bigint): Promise<TowerChannel> {
    const known = this.#store.channel(channelId);
    if (known) return known;
    const view = await this.#chain.getChannel(channelId);
    if (view.state === "none") {
      throw new QrwpError("CHANNEL_NOT_FOUND", `channel ${channelId} does not exist on the hub`, {
        field: "channelId",
      });
    }
    // Not stored: the follower owns the channel table; this read only answers the appointment.
    const closerNonce =
      view.state === "closed" ? await this.#chain.storedNonce(channelId, view.closingParticipant) : null;
    return channelFromView(channelId, view, closerNonce);
  }

  /**
   * Sets `a.status` (and the contest window) from the channel's close, if any. Pure bookkeeping: a breach
   * is the partner's close with a nonce lower than ours.
   */
  #judge(a: StoredAppointment, channel: TowerChannel): void {
    if (channel.state === "opened") return;
    if (channel.state === "settled") {
      if (a.status === "watching") a.status = "settled";
      else if (a.status === "breach" || a.status === "contest_sent") a.status = "missed";
      return;
    }
    if (lower(channel.closingParticipant ?? "") !== lower(a.closingParticipant)) {
      a.status = "not_needed"; // the client closed: its own balance proof is not for us to defend
      return;
    }
    const onChain = channel.closerNonce ?? 0n;
    if (onChain >= a.nonce) {
      if (a.status !== "contested") a.status = a.status === "contest_sent" ? "contested" : "not_needed";
      return;
    }
    if (a.status === "watching" || a.status === "not_needed") {
      a.status = "breach";
      const closedAt = channel.closedAtSeconds ?? 0;
      const window = channel.settleTimeoutSeconds;
      a.contestDeadlineSeconds = closedAt + window;
      a.contestNotBeforeSeconds = closedAt + Math.floor((window * this.#staggerPct(a.channelId)) / 100);
      this.#log.warn(
        {
          channelId: a.channelId.toString(),
          closer: a.closingParticipant,
          closedWithNonce: onChain.toString(),
          appointmentNonce: a.nonce.toString(),
          contestFrom: a.contestNotBeforeSeconds,
          deadline: a.contestDeadlineSeconds,
        },
        "breach: channel closed with a stale balance proof",
      );
    }
  }

  /** startPct + spreadPct × f, f from keccak256(tower address, channel id) (percent, fractional). */
  #staggerPct(channelId: bigint): number {
    const h = keccak_256(concatBytes(abiAddressWord(this.#address), abiWord(channelId)));
    const f = (((h[0] as number) << 8) | (h[1] as number)) / 65536;
    return this.#startPct + this.#spreadPct * f;
  }

  // ------------------------------------------------------------------------------------------------
  // Chain events
  // ------------------------------------------------------------------------------------------------

  async #onBatch(batch: ChainEventBatch): Promise<void> {
    // Reads first (async), then one synchronous transaction applies the range and moves the cursor.
    const closes = new Map<bigint, ChannelView>();
    for (const ev of batch.events) {
      const id = evChannel(ev);
      if (id === null || ev.type === "ChannelOpened" || closes.has(id)) continue;
      // A close needs its timestamp; a channel opened before the tower's first block needs its participants.
      if (ev.type === "ChannelClosed" || !this.#store.channel(id))
        closes.set(id, await this.#chain.getChannel(id));
    }
    this.#store.transaction(() => {
      for (const ev of batch.events) this.#apply(ev, closes);
      this.#store.setLastProcessedBlock(batch.toBlock);
    });
  }

  #apply(ev: ChainEvent, views: Map<bigint, ChannelView>): void {
    const id = evChannel(ev);
    if (id === null) return;
    let channel = this.#store.channel(id);
    if (ev.type === "ChannelOpened") {
      channel = {
        channelId: id,
        participant1: ev.participant1,
        participant2: ev.participant2,
        settleTimeoutSeconds: Number(ev.settleTimeoutSeconds),
        state: "opened",
        closingParticipant: null,
        closedAtSeconds: null,
        closerNonce: null,
      };
      this.#store.putChannel(channel);
      return;
    }
    if (!channel) {
      const view = views.get(id);
      if (!view || view.state === "none") return;
      channel = channelFromView(id, view, null);
      channel.state = "opened";
    }
    switch (ev.type) {
      case "ChannelClosed": {
        const view = views.get(id);
        channel.state = "closed";
        channel.closingParticipant = ev.closingParticipant;
        // The event's nonce is the NON-closer's proof the closer submitted; the closer's own proof is not
        // on-chain until someone contests with it (the closer's stored nonce is 0 until then).
        channel.closerNonce = 0n;
        channel.closedAtSeconds =
          view && view.closedAtSeconds > 0 ? view.closedAtSeconds : channel.closedAtSeconds;
        break;
      }
      case "NonClosingBalanceProofUpdated":
        if (channel.closerNonce === null || ev.nonce > channel.closerNonce) channel.closerNonce = ev.nonce;
        break;
      case "ChannelSettled":
        channel.state = "settled";
        break;
      default:
        break;
    }
    this.#store.putChannel(channel);
    for (const a of this.#store.appointmentsOfChannel(id)) {
      const before = a.status;
      if (ev.type === "NonClosingBalanceProofUpdated" && ev.nonce >= a.nonce) {
        if (a.contestTxHash && lower(a.contestTxHash) === lower(ev.txHash)) a.status = "contested";
        else if (a.status !== "contested") a.status = "not_needed";
      } else {
        this.#judge(a, channel);
      }
      if (a.status !== before) {
        a.updatedAtMs = Date.now();
        this.#store.putAppointment(a);
        this.#log.info(
          { id: a.id, channelId: id.toString(), from: before, to: a.status, event: ev.type, tx: ev.txHash },
          "appointment status changed",
        );
      }
    }
  }

  // ------------------------------------------------------------------------------------------------
  // Contests
  // ------------------------------------------------------------------------------------------------

  /** Sends every contest that is due (chain time within its staggered window). Called every `tickMs`. */
  async tick(): Promise<void> {
    const due = [...this.#store.appointmentsWithStatus("breach")].filter(
      (a) => !this.#inFlight.has(a.id) && (this.#retryAt.get(a.id) ?? 0) <= Date.now(),
    );
    if (due.length === 0) return;
    // The later of the wall clock and the latest block: a quiet chain (a devnet mines only on demand)
    // does not advance its latest timestamp, but its next block's timestamp will be at least the wall clock.
    const now = Math.max(Math.floor(Date.now() / 1000), await this.#chain.latestTimestamp());
    for (const a of due) {
      if (this.#stopped) return;
      if (a.contestNotBeforeSeconds !== null && now < a.contestNotBeforeSeconds) continue;
      if (a.contestDeadlineSeconds !== null && now > a.contestDeadlineSeconds) {
        this.#setStatus(a, "missed", "the contest window ended before a contest landed");
        this.#log.error({ id: a.id, channelId: a.channelId.toString() }, "contest window missed");
        continue;
      }
      await this.#contest(a);
    }
  }

  async #contest(a: StoredAppointment): Promise<void> {
    const log = this.#log.child({ id: a.id, channelId: a.channelId.toString(), nonce: a.nonce.toString() });
    try {
      const onChain = await this.#chain.storedNonce(a.channelId, a.closingParticipant);
      if (onChain >= a.nonce) {
        this.#setStatus(a, "not_needed", null);
        log.info({ onChainNonce: onChain.toString() }, "already contested by someone else; nothing to do");
        return;
      }
      const sent = await this.#chain.sendContest(a);
      this.#store.bump("count:contests-sent");
      a.contestTxHash = sent.txHash;
      a.contestAttempts += 1;
      this.#setStatus(a, "contest_sent", null);
      log.info({ tx: sent.txHash, attempt: a.contestAttempts }, "contest sent");
      this.#inFlight.add(a.id);
      void sent.mined
        .then((ok) => {
          const current = this.#store.appointment(a.id);
          if (!current || current.status !== "contest_sent" || current.contestTxHash !== sent.txHash) return;
          if (ok) {
            this.#setStatus(current, "contested", null);
            this.#retryAt.delete(a.id);
            log.info({ tx: sent.txHash }, "contest mined");
          } else {
            this.#setStatus(current, "breach", "contest transaction reverted");
            this.#backoff(a.id, current.contestAttempts);
            log.warn({ tx: sent.txHash }, "contest reverted; will check and retry");
          }
        })
        .catch((err: unknown) => {
          const current = this.#store.appointment(a.id);
          if (current?.status === "contest_sent") {
            this.#setStatus(current, "breach", errText(err));
            this.#backoff(a.id, current.contestAttempts);
          }
          log.warn({ tx: sent.txHash, err: errText(err) }, "contest not confirmed; will check and retry");
        })
        .finally(() => this.#inFlight.delete(a.id));
    } catch (err) {
      if (err instanceof HubCallError && err.errorName === "ChannelHubStaleNonce") {
        this.#setStatus(a, "not_needed", null);
        log.info("the hub already holds a nonce >= ours; nothing to do");
        return;
      }
      if (err instanceof HubCallError && err.errorName === "ChannelHubContestWindowExpired") {
        this.#setStatus(a, "missed", err.message);
        log.error("contest window expired");
        return;
      }
      a.contestAttempts += 1;
      this.#setStatus(a, "breach", errText(err));
      this.#backoff(a.id, a.contestAttempts);
      log.warn({ err: errText(err), attempt: a.contestAttempts }, "contest failed; will retry");
    }
  }

  #backoff(id: string, attempts: number): void {
    this.#retryAt.set(id, Date.now() + Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.max(0, attempts - 1)));
  }

  #setStatus(a: StoredAppointment, status: AppointmentStatus, error: string | null): void {
    a.status = status;
    a.lastError = error;
    a.updatedAtMs = Date.now();
    this.#store.putAppointment(a);
  }
}

function channelFromView(channelId: bigint, v: ChannelView, closerNonce: bigint | null): TowerChannel {
  return {
    channelId,
    participant1: v.participant1,
    participant2: v.participant2,
    settleTimeoutSeconds: v.settleTimeoutSeconds,
    state: v.state === "none" ? "opened" : v.state,
    closingParticipant: v.state === "closed" || v.state === "settled" ? v.closingParticipant : null,
    closedAtSeconds: v.closedAtSeconds > 0 ? v.closedAtSeconds : null,
    closerNonce,
  };
}

function evChannel(ev: ChainEvent): bigint | null {
  return "channelId" in ev ? ev.channelId : null;
}

function errText(err: unknown): string {
  if (isQrwpError(err)) return `${err.code}: ${err.message}`;
  return err instanceof Error ? (err.message.split("\n")[0] ?? err.name) : String(err);
}

function safeBig(v: unknown): string | undefined {
  return typeof v === "bigint" ? v.toString() : undefined;
}
