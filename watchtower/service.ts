/**
 * The watchtower: accepts appointments, follows the ChannelHub, and contests stale closes.
 *
 * Accepting (`submit`): cheap checks first (chain and hub, the channel and its participants, the channel's
 * state, the stored nonce), then every signature (`verifyAppointmentWith`), then the client's pinned ML-DSA
 * key; only the highest nonce per slot (channel, non-closing participant) is kept, a replay of the stored
 * appointment changes nothing, and a refusal is a coded `QrwpError` that changed no state. `submitBatch` takes
 * up to 64 slots signed once by the client: per slot the two secp256k1 signatures, the closer's ML-DSA-65
 * evidence once per channel (on the highest nonce, which is stored; lower ones are superseded), the client's
 * batch signatures once, and one SQLite transaction (PROTOCOL.md §10.5). The ML-DSA-65 checks run on worker
 * threads (`host/mldsa-verify-pool.ts`) while this thread recovers the secp256k1 signers; the first failure is
 * reported in the sequential order, and after the checks the slots are planned again from the store (it may have
 * moved meanwhile) in the same synchronous step as the write.
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
 * channel id) — so the client's own node acts first and several towers do not all pay gas at once. `closedAt`
 * is the timestamp of the close event's own block. Before sending, the tower reads the hub's stored nonce
 * (another tower or the client may have contested) and simulates the call; it then sends and records the
 * transaction (hash, account nonce, fees). Every tick checks the receipt: mined → `contested`
 * (`contestConfirmed` once the follower sees its event at the confirmation depth; a contest dropped by a
 * reorganisation before that goes back to `breach`), reverted → `breach` again, not mined after
 * `mineTimeoutMs` → replaced (same nonce, higher fees). One sequential loop (`tick`) does all of this, and
 * every progress write is conditional on the slot still holding the same appointment.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { keccak_256 } from "@noble/hashes/sha3.js";
import { bytesToHex, concatBytes } from "@noble/hashes/utils.js";
import type { Logger } from "pino";
import {
  ChainEventFollower,
  HubCallError,
  NonceUsedError,
  type ChainEvent,
  type ChainEventBatch,
  type ChannelView,
  type Deployment,
} from "../chain/index.js";
import {
  QrwpError,
  abiAddressWord,
  abiWord,
  MAX_APPOINTMENT_BATCH_SLOTS,
  appointmentBatchDigest,
  appointmentDigest,
  appointmentId,
  appointmentSlotDigest,
  assertAppointmentBatchShape,
  isQrwpError,
  normalizeAddress,
  slotOfAppointment,
  verifyAppointmentBatchChecks,
  verifyAppointmentWith,
  type Appointment,
  type AppointmentBatch,
  type AppointmentSlot,
  type AppointmentSlotOutcome,
  type AppointmentSlotResult,
} from "../protocol/index.js";
import { MldsaVerifyPool } from "../host/mldsa-verify-pool.js";
import type { TowerChain } from "./chain.js";
import {
  newStoredAppointment,
  type AppointmentStatus,
  type StoredAppointment,
  type TowerChannel,
  type WatchtowerStore,
} from "./store.js";

/** What `submitBatch` answers: one result per slot, and the counts. */
export interface BatchSubmitResult {
  results: AppointmentSlotResult[];
  /** Slots now held (one per channel at most). */
  stored: number;
  /** Slots below a higher nonce of their channel in the same batch: not stored (checked if that one is). */
  superseded: number;
  /** Slots the tower already held exactly (nothing changed). */
  replayed: number;
  /** Slots refused on their own (`STALE_NONCE`, `CHANNEL_NOT_FOUND`, `CHANNEL_STATE`). */
  refused: number;
}

/** One slot of a batch between the cheap checks and the write. */
interface SlotPlan {
  id: string;
  digestHex: string;
  channel: TowerChannel | null;
  outcome: AppointmentSlotOutcome;
  refusal?: QrwpError;
}

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
  /** Timeout of one JSON-RPC call of the follower, ms (a stalled endpoint counts as failed; default 10000). */
  rpcTimeoutMs?: number;
  /** How long a sent contest may stay unmined before it is replaced with higher fees, ms (default 60000). */
  mineTimeoutMs?: number;
  /**
   * Worker threads that verify the appointments' ML-DSA-65 signatures (default: the available cores, at
   * least 1; 0: on the main thread). They start with the first appointment and stop with the tower.
   */
  mldsaVerifyThreads?: number;
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
  readonly #mineTimeoutMs: number;
  /** Per appointment: earliest next contest attempt (ms, wall clock) after a failure. */
  readonly #retryAt = new Map<string, number>();
  readonly #mldsa: MldsaVerifyPool;

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
    this.#mineTimeoutMs = init.mineTimeoutMs ?? 60_000;
    this.confirmations = init.confirmations ?? 0;
    this.#mldsa = new MldsaVerifyPool(
      init.mldsaVerifyThreads !== undefined ? { size: init.mldsaVerifyThreads } : {},
    );
    const last = this.#store.lastProcessedBlock();
    this.#follower = new ChainEventFollower({
      rpcUrls: init.rpcUrls,
      deployment: init.deployment,
      fromBlock: last === null ? init.deployment.deployBlock : last + 1,
      confirmations: this.confirmations,
      pollIntervalMs: init.pollIntervalMs ?? 2000,
      ...(init.rpcTimeoutMs !== undefined ? { requestTimeoutMs: init.rpcTimeoutMs } : {}),
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
    this.#follower.start();
    const loop = () => {
      if (this.#stopped) return;
      this.#ticking = this.tick()
        .catch((err: unknown) => this.#log.warn({ err: errText(err) }, "contest check failed"))
        .finally(() => {
          this.#ticking = null;
          if (!this.#stopped) {
            this.#timer = setTimeout(loop, this.#tickMs);
            this.#timer.unref();
          }
        });
    };
    loop();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#follower.stop();
    await this.#ticking;
    await this.#mldsa.stop();
  }

  // ------------------------------------------------------------------------------------------------
  // Appointments
  // ------------------------------------------------------------------------------------------------

  /**
   * Accepts one appointment (see the module doc for the order of checks): the path of `POST /v1/appointments`
   * and the libp2p `Appointment` message. Its five signatures are checked by `verifyAppointment` (so a tampered
   * field fails at its own check); the slot then goes through the same rules and the same one-transaction write
   * as a batch of one.
   * @param from - the session-authenticated sender (libp2p), which must be the non-closing participant.
   * Makes no chain call: the channel must be known from the followed events (`CHANNEL_NOT_FOUND` for one opened
   * less than `confirmations` blocks ago — the node retries), so junk cannot spend the tower's RPC quota. It awaits
   * only the ML-DSA-65 threads; the store is read again after them, and no chain batch interleaves with that
   * read and the write.
   * @throws QrwpError UNKNOWN_HUB (field chainId | hub), NOT_PARTICIPANT (field nonClosingParticipant |
   *   closingParticipant), CHANNEL_NOT_FOUND, CHANNEL_STATE, STALE_NONCE, INVALID_ARGUMENT,
   *   INVALID_SIGNATURE (field names the signature or key).
   */
  async submit(a: Appointment, from?: { address: string }): Promise<SubmitResult> {
    try {
      return await this.#submit(a, from);
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
    let plan = this.#planAppointment(a, from);
    if ("replay" in plan) return plan.replay;
    await verifyAppointmentWith(a, this.#mldsa.verify);
    // The store may have moved while the threads checked the signatures (a submission, a chain range): again.
    plan = this.#planAppointment(a, from);
    if ("replay" in plan) return plan.replay;
    const { id, closer, client, digestHex, channel } = plan;
    const pin = this.#checkPinnedKey(client, a.nonClosingMldsaPublicKey, "nonClosingMldsaPublicKey");
    const record = this.#record(id, a.channelId, closer, client, a, digestHex, channel);
    this.#store.acceptBatch({ appointments: [record], pin });
    this.#log.debug(
      { id, channelId: a.channelId.toString(), nonce: a.nonce.toString() },
      "appointment stored",
    );
    return { id, nonce: a.nonce, stored: true, status: record.status };
  }

  /** `submit`'s checks before the signatures: the appointment's slot, or the answer to a replay. */
  #planAppointment(
    a: Appointment,
    from?: { address: string },
  ):
    | { replay: SubmitResult }
    | { id: string; closer: string; client: string; digestHex: string; channel: TowerChannel } {
    if (typeof a !== "object" || a === null) {
      throw new QrwpError("INVALID_ARGUMENT", "appointment must be an object", { field: "appointment" });
    }
    const hub = this.#checkHub(a.chainId, a.hub);
    const client = normalizeAddress(a.nonClosingParticipant, "nonClosingParticipant");
    const closer = normalizeAddress(a.closingParticipant, "closingParticipant");
    if (from && lower(from.address) !== lower(client)) {
      throw new QrwpError("NOT_PARTICIPANT", "an appointment must come from its non-closing participant", {
        field: "nonClosingParticipant",
      });
    }
    const where = this.#channelFor(a.channelId, client, closer, {
      channelId: "channelId",
      client: "nonClosingParticipant",
      closer: "closingParticipant",
    });
    if ("refused" in where) throw where.refused;
    const id = appointmentId(a.chainId, hub, a.channelId, client);
    const existing = this.#store.appointment(id);
    const ctx = { chainId: a.chainId, hub, client };
    // `appointmentDigest` checks every field's shape before the slot digest hashes them.
    const legacyDigestHex = `0x${bytesToHex(sha256(appointmentDigest(a)))}`;
    const digestHex = `0x${bytesToHex(appointmentSlotDigest(ctx, slotOfAppointment(a)))}`;
    if (existing) {
      const same = existing.digest === digestHex || existing.digest === legacyDigestHex;
      if (existing.nonce > a.nonce || (existing.nonce === a.nonce && !same)) throw staleNonce(existing.nonce);
      if (existing.nonce === a.nonce) {
        return { replay: { id, nonce: existing.nonce, stored: false, status: existing.status } };
      }
    }
    return { id, closer, client, digestHex, channel: where.channel };
  }

  /**
   * Accepts a batch of appointment slots signed once by the client (`protocol/appointment-batch.ts`): the path
   * of `POST /v1/appointment-batches` and the libp2p `AppointmentBatch` message. Like {@link submit}, it
   * awaits only the ML-DSA-65 threads, and is durable in ONE SQLite transaction.
   *
   * Order: the batch's shape (1..64 slots, every field, no two slots of a channel with one nonce), chain and
   * hub, `tower` = this tower, `client` = the session's sender; per slot, the channel (unknown →
   * `CHANNEL_NOT_FOUND`, settled or closed by the client → `CHANNEL_STATE`, both per slot) and its participants
   * (the client in it and the closer its partner, else the whole batch is `NOT_PARTICIPANT`), then
   * `superseded` (a higher nonce of the same channel in this batch), then the tower's stored nonce (`replayed`
   * or `STALE_NONCE`, per slot). If a slot is left to store: the pinned ML-DSA key, the client's batch
   * signatures (secp256k1, then ML-DSA-65), every stored or superseded slot's two secp256k1 signatures, then
   * the closer's ML-DSA-65 evidence of each slot to store (one per channel). A batch that stores nothing
   * (replays, stale or refused slots only) is answered without signature checks and changes nothing but the
   * refusal counter.
   * @returns one result per slot, in order.
   * @throws QrwpError (nothing stored) INVALID_ARGUMENT (field `tower`, `slots`, `slots.<i>.<field>`…),
   *   UNKNOWN_HUB (chainId | hub), NOT_PARTICIPANT (client | `slots.<i>.channelId` |
   *   `slots.<i>.closingParticipant`), INVALID_SIGNATURE (clientMldsaPublicKey | batchSignature | coSignature |
   *   `slots.<i>.closingSignature` | `slots.<i>.nonClosingSignature` | `slots.<i>.closingPqSignature`).
   */
  async submitBatch(b: AppointmentBatch, from?: { address: string }): Promise<BatchSubmitResult> {
    try {
      return await this.#submitBatch(b, from);
    } catch (err) {
      const slots = Array.isArray(b?.slots) ? b.slots.length : 0;
      this.#store.bump("count:refused", Math.max(1, Math.min(slots, MAX_APPOINTMENT_BATCH_SLOTS)));
      const e = isQrwpError(err)
        ? err
        : new QrwpError("INTERNAL", "appointment batch could not be processed");
      if (!isQrwpError(err)) this.#log.error({ err: errText(err) }, "appointment batch failed unexpectedly");
      this.#log.info({ code: e.code, field: e.details.field, slots }, "appointment batch refused");
      throw e;
    }
  }

  async #submitBatch(b: AppointmentBatch, from?: { address: string }): Promise<BatchSubmitResult> {
    assertAppointmentBatchShape(b);
    const hub = this.#checkHub(b.chainId, b.hub);
    if (lower(b.tower) !== lower(this.#address)) {
      const message = `the batch is signed for tower ${b.tower}, this is ${this.#address}`;
      throw new QrwpError("INVALID_ARGUMENT", message, { field: "tower" });
    }
    const client = normalizeAddress(b.client, "client");
    if (from && lower(from.address) !== lower(client)) {
      throw new QrwpError("NOT_PARTICIPANT", "a batch must come from its client", { field: "client" });
    }
    const ctx = { chainId: b.chainId, hub, client };
    const ids = b.slots.map((s) => appointmentId(b.chainId, hub, s.channelId, client));
    const digests = b.slots.map((s, i) => appointmentSlotDigest(ctx, s, ids[i]));
    /** Slots whose secp256k1 signatures (`i`) and evidence (`i` + "e") passed. */
    const passed = new Set<string>();
    const toCheck = (checked: Array<{ p: SlotPlan; i: number }>) =>
      checked
        .map(({ p, i }) => ({ i, evidence: p.outcome === "stored" }))
        .filter(({ i, evidence }) => !passed.has(`${i}`) || (evidence && !passed.has(`${i}e`)));
    let { plans, toStore, checked } = this.#planBatch(b, client, ids, digests);
    for (let todo = toCheck(checked); todo.length > 0; todo = toCheck(checked)) {
      this.#checkPinnedKey(client, b.clientMldsaPublicKey, "clientMldsaPublicKey");
      await verifyAppointmentBatchChecks(
        ctx,
        b,
        appointmentBatchDigest(b, digests),
        todo,
        this.#mldsa.verify,
      );
      for (const { i, evidence } of todo) passed.add(evidence ? `${i}e` : `${i}`).add(`${i}`);
      // The store may have moved while the threads checked the signatures (a submission, a chain range): again.
      ({ plans, toStore, checked } = this.#planBatch(b, client, ids, digests));
    }
    const pin =
      toStore.size > 0 ? this.#checkPinnedKey(client, b.clientMldsaPublicKey, "clientMldsaPublicKey") : null;
    const records: StoredAppointment[] = [];
    const results: AppointmentSlotResult[] = plans.map((p, i) => {
      const s = b.slots[i]!;
      if (p.outcome === "stored") {
        records.push(
          this.#record(p.id, s.channelId, s.closingParticipant, client, s, p.digestHex, p.channel!),
        );
      }
      const r: AppointmentSlotResult = { id: p.id, nonce: s.nonce, outcome: p.outcome };
      if (p.refusal) {
        r.code = p.refusal.code;
        r.message = p.refusal.message.slice(0, 256);
      }
      return r;
    });
    const count = (o: AppointmentSlotOutcome) => results.filter((r) => r.outcome === o).length;
    const summary = {
      stored: records.length,
      superseded: count("superseded"),
      replayed: count("replayed"),
      refused: count("refused"),
    };
    if (records.length > 0 || summary.refused > 0) {
      this.#store.acceptBatch({
        appointments: records,
        pin: records.length > 0 ? pin : null,
        // Accepted (checked) under a stored slot; a replayed channel's lower slots are not counted.
        superseded: checked.length - records.length,
        refused: summary.refused,
        batch: records.length > 0,
      });
    }
    this.#log.debug({ client, slots: b.slots.length, ...summary }, "appointment batch processed");
    return { results, ...summary };
  }

  /** `submitBatch`'s per-slot outcome from the store as it is now, and the slots whose signatures count. */
  #planBatch(
    b: AppointmentBatch,
    client: string,
    ids: string[],
    digests: Uint8Array[],
  ): { plans: SlotPlan[]; toStore: Set<string>; checked: Array<{ p: SlotPlan; i: number }> } {
    /** Index of the highest-nonce slot of each slot id (channel) in the batch. */
    const highest = new Map<string, number>();
    ids.forEach((id, i) => {
      const h = highest.get(id);
      if (h === undefined || b.slots[h]!.nonce < b.slots[i]!.nonce) highest.set(id, i);
    });
    const plans = b.slots.map((s, i): SlotPlan => {
      const id = ids[i]!;
      const digestHex = `0x${bytesToHex(digests[i]!)}`;
      const where = this.#channelFor(s.channelId, client, s.closingParticipant, {
        channelId: `slots.${i}.channelId`,
        client: `slots.${i}.channelId`,
        closer: `slots.${i}.closingParticipant`,
      });
      if ("refused" in where)
        return { id, digestHex, channel: null, outcome: "refused", refusal: where.refused };
      if (highest.get(id) !== i) return { id, digestHex, channel: where.channel, outcome: "superseded" };
      const existing = this.#store.appointment(id);
      if (existing && existing.nonce === s.nonce && existing.digest === digestHex) {
        return { id, digestHex, channel: where.channel, outcome: "replayed" };
      }
      if (existing && existing.nonce >= s.nonce) {
        return {
          id,
          digestHex,
          channel: where.channel,
          outcome: "refused",
          refusal: staleNonce(existing.nonce),
        };
      }
      return { id, digestHex, channel: where.channel, outcome: "stored" };
    });
    // Lower slots of a channel whose highest slot is refused are refused with it.
    for (const p of plans) {
      const top = plans[highest.get(p.id)!]!;
      if (p.outcome === "superseded" && top.outcome === "refused") {
        p.outcome = "refused";
        if (top.refusal) p.refusal = top.refusal;
      }
    }
    const toStore = new Set(plans.filter((p) => p.outcome === "stored").map((p) => p.id));
    // Every slot of a channel whose highest slot is stored is checked; the others change nothing.
    const checked = plans.flatMap((p, i) => (toStore.has(p.id) ? [{ p, i }] : []));
    return { plans, toStore, checked };
  }

  /** @returns the hub (EIP-55) if `chainId` and `hub` are the tower's. @throws QrwpError UNKNOWN_HUB */
  #checkHub(chainId: bigint, hubAddress: string): string {
    if (chainId !== BigInt(this.#deployment.chainId)) {
      throw new QrwpError("UNKNOWN_HUB", `this tower watches chain ${this.#deployment.chainId}`, {
        field: "chainId",
        value: String(chainId),
      });
    }
    const hub = normalizeAddress(hubAddress, "hub");
    if (lower(hub) !== lower(this.#deployment.hub)) {
      throw new QrwpError("UNKNOWN_HUB", `this tower watches hub ${this.#deployment.hub}`, {
        field: "hub",
        value: hub,
      });
    }
    return hub;
  }

  /**
   * The channel of a slot, or the per-slot refusal (`CHANNEL_NOT_FOUND`, `CHANNEL_STATE`, field `fields.channelId`).
   * @throws QrwpError NOT_PARTICIPANT (field `fields.client` or `fields.closer`) when the channel is known and
   *   the client is not in it or the closer is not the client's partner.
   */
  #channelFor(
    channelId: bigint,
    client: string,
    closer: string,
    fields: { channelId: string; client: string; closer: string },
  ): { channel: TowerChannel } | { refused: QrwpError } {
    const channel = this.#store.channel(channelId);
    if (!channel) {
      return {
        refused: new QrwpError(
          "CHANNEL_NOT_FOUND",
          `channel ${channelId} is not known to this tower (it follows the hub ${this.confirmations} blocks below the head)`,
          { field: fields.channelId },
        ),
      };
    }
    const participants = [lower(channel.participant1), lower(channel.participant2)];
    if (!participants.includes(lower(client))) {
      throw new QrwpError("NOT_PARTICIPANT", "the non-closing participant is not in this channel", {
        field: fields.client,
      });
    }
    if (!participants.includes(lower(closer)) || lower(closer) === lower(client)) {
      throw new QrwpError("NOT_PARTICIPANT", "the closing participant is not the client's partner", {
        field: fields.closer,
      });
    }
    if (channel.state === "settled") {
      return {
        refused: new QrwpError("CHANNEL_STATE", "the channel is settled", { field: fields.channelId }),
      };
    }
    if (channel.state === "closed" && lower(channel.closingParticipant ?? "") === lower(client)) {
      return {
        refused: new QrwpError("CHANNEL_STATE", "the client closed this channel itself", {
          field: fields.channelId,
        }),
      };
    }
    return { channel };
  }

  /**
   * The client's ML-DSA key must be the one pinned by its first accepted appointment.
   * @returns the pin to write with the first accepted appointment, or null if the client is pinned already.
   * @throws QrwpError INVALID_SIGNATURE (field `field`) on another key.
   */
  #checkPinnedKey(
    client: string,
    key: Uint8Array,
    field: string,
  ): { client: string; keyHash: string } | null {
    const keyHash = `0x${bytesToHex(sha256(key))}`;
    const pinned = this.#store.clientKeyHash(client);
    if (pinned !== null && pinned !== keyHash) {
      throw new QrwpError("INVALID_SIGNATURE", "the ML-DSA key differs from the one this client registered", {
        field,
      });
    }
    return pinned === null ? { client, keyHash } : null;
  }

  /** The new row of an accepted slot, judged against its channel (a close with a lower nonce: breach at once). */
  #record(
    id: string,
    channelId: bigint,
    closer: string,
    client: string,
    s: Pick<AppointmentSlot, "nonce" | "balanceHash" | "closingSignature" | "nonClosingSignature">,
    digestHex: string,
    channel: TowerChannel,
  ): StoredAppointment {
    const record = newStoredAppointment({
      id,
      channelId,
      closingParticipant: normalizeAddress(closer, "closingParticipant"),
      nonClosingParticipant: client,
      nonce: s.nonce,
      balanceHash: s.balanceHash.toLowerCase(),
      closingSignature: s.closingSignature,
      nonClosingSignature: s.nonClosingSignature,
      digest: digestHex,
    });
    this.#judge(record, channel);
    return record;
  }

  /** The stored appointment of a slot, or null. */
  appointment(id: string): StoredAppointment | null {
    return /^0x[0-9a-fA-F]{64}$/.test(id) ? this.#store.appointment(id) : null;
  }

  /**
   * Sets `a.status` (and the contest window) from the channel's close, if any. Pure bookkeeping: a breach
   * is the partner's close while the hub's stored nonce for the partner is below ours. A close without a
   * known timestamp never becomes a breach with a made-up window (it cannot happen: the follower reads the
   * close's block before applying it).
   */
  #judge(a: StoredAppointment, channel: TowerChannel): void {
    if (channel.state === "opened") return;
    if (channel.state === "settled") {
      if (a.status === "watching")
        a.status = "settled"; // `not_needed` and `contested` keep their story
      else if (a.status === "breach" || a.status === "contest_sent") a.status = "missed";
      return;
    }
    if (lower(channel.closingParticipant ?? "") !== lower(a.closingParticipant)) {
      a.status = "not_needed"; // the client closed: its own balance proof is not for us to defend
      return;
    }
    const onChain = channel.closerNonce ?? 0n;
    if (onChain >= a.nonce) {
      if (a.status === "watching" || a.status === "breach") a.status = "not_needed";
      return;
    }
    if (channel.closedAtSeconds === null) {
      this.#log.error({ channelId: a.channelId.toString() }, "closed channel without a close time");
      return;
    }
    if (a.status === "contest_sent" || (a.status === "contested" && a.contestConfirmed)) return;
    // (Re)computes the window: also for a close that replaced a reorganised one.
    const closedAt = channel.closedAtSeconds;
    const window = channel.settleTimeoutSeconds;
    const deadline = closedAt + window;
    const notBefore = closedAt + Math.floor((window * this.#staggerPct(a.channelId)) / 100);
    const changed = a.status !== "breach" || a.contestDeadlineSeconds !== deadline;
    a.status = a.status === "contested" ? "contested" : "breach";
    a.contestDeadlineSeconds = deadline;
    a.contestNotBeforeSeconds = notBefore;
    if (changed && a.status === "breach") {
      this.#log.warn(
        {
          channelId: a.channelId.toString(),
          closer: a.closingParticipant,
          closerNonceOnChain: onChain.toString(),
          appointmentNonce: a.nonce.toString(),
          contestFrom: notBefore,
          deadline,
        },
        "breach: the partner closed and its latest balance proof is not on-chain",
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
    // Reads first (async; a failure makes the follower deliver the range again), then one synchronous
    // transaction applies the range and moves the cursor.
    const closedAt = new Map<string, number>();
    const views = new Map<bigint, ChannelView>();
    for (const ev of batch.events) {
      if (ev.type === "ChannelClosed") {
        // The hub sets closedAt = block.timestamp of the close: read it from the event's own block.
        closedAt.set(`${ev.blockNumber}`, await this.#chain.blockTimestamp(ev.blockNumber));
      }
      const id = evChannel(ev);
      if (id === null || ev.type === "ChannelOpened" || views.has(id) || this.#store.channel(id)) continue;
      if (batch.events.some((o) => o.type === "ChannelOpened" && o.channelId === id)) continue;
      // A channel opened before the tower's first block (a deployment file with a late deployBlock).
      const view = await this.#chain.getChannel(id);
      if (view.state === "none") throw new Error(`channel ${id} has events but the RPC does not know it yet`);
      views.set(id, view);
    }
    this.#store.transaction(() => {
      for (const ev of batch.events) this.#apply(ev, views, closedAt);
      this.#store.setLastProcessedBlock(batch.toBlock);
    });
  }

  #apply(ev: ChainEvent, views: Map<bigint, ChannelView>, closedAt: Map<string, number>): void {
    const id = evChannel(ev);
    if (id === null) return;
    let channel = this.#store.channel(id);
    if (ev.type === "ChannelOpened") {
      this.#store.putChannel({
        channelId: id,
        participant1: ev.participant1,
        participant2: ev.participant2,
        settleTimeoutSeconds: Number(ev.settleTimeoutSeconds),
        state: "opened",
        closingParticipant: null,
        closedAtSeconds: null,
        closerNonce: null,
      });
      return;
    }
    if (!channel) {
      const view = views.get(id);
      if (!view) return;
      channel = {
        channelId: id,
        participant1: view.participant1,
        participant2: view.participant2,
        settleTimeoutSeconds: view.settleTimeoutSeconds,
        state: "opened",
        closingParticipant: null,
        closedAtSeconds: null,
        closerNonce: null,
      };
    }
    switch (ev.type) {
      case "ChannelClosed":
        channel.state = "closed";
        channel.closingParticipant = ev.closingParticipant;
        channel.closedAtSeconds = closedAt.get(`${ev.blockNumber}`) ?? null;
        // The event's nonce is the NON-closer's proof the closer submitted; the closer's own proof is not
        // on-chain until someone contests with it (the closer's stored nonce is 0 until then).
        channel.closerNonce = 0n;
        break;
      case "NonClosingBalanceProofUpdated":
        if (channel.closerNonce === null || ev.nonce > channel.closerNonce) channel.closerNonce = ev.nonce;
        break;
      case "ChannelSettled":
        channel.state = "settled";
        break;
      case "ChannelNewDeposit":
      case "ChannelWithdraw":
        // Amounts are not the tower's concern: it contests with the newest balance proof whatever the
        // deposits and withdraws (the hub clamps settlement to what the channel holds).
        break;
      default:
        break;
    }
    this.#store.putChannel(channel);
    for (const a of this.#store.appointmentsOfChannel(id)) {
      const before = a.status;
      const confirmedBefore = a.contestConfirmed;
      if (ev.type === "NonClosingBalanceProofUpdated" && ev.nonce >= a.nonce) {
        if (a.contestTxHashes.some((h) => lower(h) === lower(ev.txHash))) {
          a.status = "contested";
          a.contestTxHash = ev.txHash;
          a.contestConfirmed = true;
        } else if (a.status !== "contested") {
          a.status = "not_needed";
        }
      } else {
        this.#judge(a, channel);
      }
      if (a.status !== before || a.contestConfirmed !== confirmedBefore || ev.type === "ChannelClosed") {
        a.updatedAtMs = Date.now();
        this.#store.updateProgress(a);
        if (a.status !== before) {
          this.#log.info(
            { id: a.id, channelId: id.toString(), from: before, to: a.status, event: ev.type, tx: ev.txHash },
            "appointment status changed",
          );
        }
      }
    }
  }

  // ------------------------------------------------------------------------------------------------
  // Contests
  // ------------------------------------------------------------------------------------------------

  /**
   * One pass over the open contests (called every `tickMs`, one pass at a time): sends due breaches,
   * follows sent contests to their receipt (replacing a slow one), and re-checks contests mined but not yet
   * confirmed by the follower.
   */
  async tick(): Promise<void> {
    const rows = [
      ...this.#store.appointmentsWithStatus("breach"),
      ...this.#store.appointmentsWithStatus("contest_sent"),
      ...this.#store.appointmentsWithStatus("contested").filter((a) => !a.contestConfirmed),
    ].filter((a) => (this.#retryAt.get(a.id) ?? 0) <= Date.now());
    if (rows.length === 0) return;
    // The later of the wall clock and the latest block: a quiet chain (a devnet mines only on demand)
    // does not advance its latest timestamp, but its next block's timestamp will be at least the wall clock.
    const now = Math.max(Math.floor(Date.now() / 1000), await this.#chain.latestTimestamp());
    for (const a of rows) {
      if (this.#stopped) return;
      const log = this.#log.child({ id: a.id, channelId: a.channelId.toString(), nonce: a.nonce.toString() });
      try {
        if (a.status === "contested") await this.#recheck(a, now, log);
        else if (a.status === "contest_sent") await this.#follow(a, now, log);
        else await this.#due(a, now, log);
      } catch (err) {
        a.contestAttempts += 1;
        a.lastError = errText(err);
        this.#save(a);
        this.#backoff(a.id, a.contestAttempts);
        log.warn({ err: a.lastError, attempt: a.contestAttempts }, "contest step failed; will retry");
      }
    }
  }

  /** A breach: send the contest once its staggered start has come (and the window is still open). */
  async #due(a: StoredAppointment, now: number, log: Logger): Promise<void> {
    if (a.contestNotBeforeSeconds !== null && now < a.contestNotBeforeSeconds) return;
    if (a.contestDeadlineSeconds !== null && now > a.contestDeadlineSeconds) {
      this.#set(a, "missed", "the contest window ended before a contest landed");
      log.error("contest window missed");
      return;
    }
    if (await this.#landed(a, log)) return;
    await this.#send(a, a.contestTx ?? undefined, log);
  }

  /** A sent contest: mined → contested; reverted → breach; not mined in time → replace it. */
  async #follow(a: StoredAppointment, now: number, log: Logger): Promise<void> {
    const status = a.contestTxHash ? await this.#chain.receiptStatus(a.contestTxHash) : false;
    if (status === true) {
      this.#set(a, "contested", null);
      this.#retryAt.delete(a.id);
      log.info({ tx: a.contestTxHash }, "contest mined");
      return;
    }
    if (status === false) {
      a.contestTx = null; // that nonce is spent; the next send takes a fresh one
      this.#set(a, "breach", "contest transaction reverted");
      log.warn({ tx: a.contestTxHash }, "contest reverted; will check and retry");
      return;
    }
    if (Date.now() - (a.contestSentAtMs ?? 0) < this.#mineTimeoutMs) return;
    if (a.contestDeadlineSeconds !== null && now > a.contestDeadlineSeconds) {
      if (!(await this.#landed(a, log))) {
        this.#set(a, "missed", "the contest was not mined before the window ended");
        log.error({ tx: a.contestTxHash }, "contest window missed");
      }
      return;
    }
    if (await this.#landed(a, log)) return;
    log.warn({ tx: a.contestTxHash }, "contest not mined in time; replacing it with higher fees");
    await this.#send(a, a.contestTx ?? undefined, log);
  }

  /** A contest mined but not yet confirmed by the follower: still on-chain? (a reorg may have dropped it) */
  async #recheck(a: StoredAppointment, now: number, log: Logger): Promise<void> {
    if (a.contestDeadlineSeconds !== null && now > a.contestDeadlineSeconds) return;
    const onChain = await this.#chain.storedNonce(a.channelId, a.closingParticipant);
    if (onChain >= a.nonce) return;
    a.contestTx = null;
    this.#set(a, "breach", "the contest is no longer on-chain (reorganisation)");
    log.warn("mined contest disappeared from the chain; contesting again");
  }

  /**
   * True (and the status set) when the hub already stores a nonce >= ours: our own earlier transaction
   * (`contested`) or someone else's (`not_needed`).
   */
  async #landed(a: StoredAppointment, log: Logger): Promise<boolean> {
    const onChain = await this.#chain.storedNonce(a.channelId, a.closingParticipant);
    if (onChain < a.nonce) return false;
    for (const h of a.contestTxHashes) {
      if ((await this.#chain.receiptStatus(h)) === true) {
        a.contestTxHash = h;
        this.#set(a, "contested", null);
        log.info({ tx: h }, "our contest is on-chain");
        return true;
      }
    }
    this.#set(a, "not_needed", null);
    log.info({ onChainNonce: onChain.toString() }, "already contested by someone else; nothing to do");
    return true;
  }

  async #send(a: StoredAppointment, replace: StoredAppointment["contestTx"] | undefined, log: Logger) {
    let sent;
    try {
      sent = await this.#chain.sendContest(a, replace ?? undefined);
    } catch (err) {
      if (err instanceof NonceUsedError) {
        // The replaced transaction (or another of ours) took that nonce: did our contest land?
        a.contestTx = null;
        if (!(await this.#landed(a, log))) this.#set(a, "breach", err.message);
        return;
      }
      if (err instanceof HubCallError && err.errorName === "ChannelHubStaleNonce") {
        if (!(await this.#landed(a, log))) this.#set(a, "not_needed", null);
        return;
      }
      if (err instanceof HubCallError && err.errorName === "ChannelHubContestWindowExpired") {
        this.#set(a, "missed", err.message);
        log.error("contest window expired");
        return;
      }
      throw err;
    }
    this.#store.bump("count:contests-sent");
    a.contestTxHash = sent.txHash;
    a.contestTxHashes = [...a.contestTxHashes, sent.txHash];
    a.contestTx = {
      txNonce: sent.txNonce,
      maxFeePerGas: sent.maxFeePerGas,
      maxPriorityFeePerGas: sent.maxPriorityFeePerGas,
    };
    a.contestSentAtMs = Date.now();
    a.contestAttempts += 1;
    this.#set(a, "contest_sent", null);
    log.info(
      {
        tx: sent.txHash,
        txNonce: sent.txNonce,
        replacement: replace !== undefined,
        attempt: a.contestAttempts,
      },
      "contest sent",
    );
  }

  #backoff(id: string, attempts: number): void {
    this.#retryAt.set(id, Date.now() + Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.max(0, attempts - 1)));
  }

  #set(a: StoredAppointment, status: AppointmentStatus, error: string | null): void {
    a.status = status;
    a.lastError = error;
    this.#save(a);
  }

  /** Writes `a`'s progress unless the slot now holds a newer appointment (then the newer one wins). */
  #save(a: StoredAppointment): void {
    if (this.#stopped && !this.#store.isOpen) return;
    a.updatedAtMs = Date.now();
    if (!this.#store.updateProgress(a)) {
      this.#log.info(
        { id: a.id },
        "a newer appointment replaced this one; its contest goes on from the new one",
      );
    }
  }
}

function staleNonce(held: bigint): QrwpError {
  return new QrwpError("STALE_NONCE", `the tower holds nonce ${held} for this channel`, {
    field: "nonce",
    stored: held.toString(),
  });
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
