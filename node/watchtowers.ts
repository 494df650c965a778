/**
 * The channel node's watchtower client: after every change of a partner's latest balance proof, hands each
 * configured watchtower the appointment for it (`protocol/appointment.ts`), so a tower can contest a stale
 * close while the node is offline.
 *
 * - Off the payment path: {@link WatchtowerClient.notify} only marks the channel; one loop per tower reads
 *   the channel's latest proof when it gets to it, so a burst of proofs (or proofs arriving while a tower is
 *   down) yields one appointment, for the latest. After each wake-up the loop waits `coalesceMs` to let a
 *   burst gather.
 * - Batched: the loop sends every marked channel's slot to the tower in batches of up to
 *   {@link MAX_APPOINTMENT_BATCH_SLOTS} (`AppointmentBatch`, protocol/appointment-batch.ts), and whatever is
 *   marked while a batch is in flight goes in the next one. A slot (the partner's proof with our
 *   `BalanceProofUpdate` counter-signature, ~0.5 ms) is built once per (channel, nonce) for all towers; a batch
 *   costs one ML-DSA-65 and one secp256k1 signature (~9 ms) for its tower whatever its size. The tower answers
 *   per slot; a batch it refuses as a whole (a bad slot refuses the batch) is split: each of its channels is
 *   sent again alone, so one bad slot is refused for good and the others go through.
 * - Durable: at start every unsettled channel with a partner proof is marked, so an appointment lost to a
 *   crash between accepting a proof and reaching the tower is sent again. The nonce each tower acknowledged
 *   per channel is kept in memory and flushed to the store's `meta` (key `watchtower-acked:<peerId>`) every
 *   `flushIntervalMs` and at stop, so a restart does not resend everything (a resend is harmless: the tower
 *   answers `stored: false`).
 * - Retries: an unreachable or silent tower is retried with capped exponential backoff (`minBackoffMs` →
 *   `maxBackoffMs`). A coded refusal of a slot (or of a batch of one) is logged and not retried for that
 *   nonce (STALE_NONCE: the tower holds a newer one, counted as acknowledged), except CHANNEL_NOT_FOUND (the
 *   tower may lag behind the chain: retried {@link CHANNEL_NOT_FOUND_ATTEMPTS} times with backoff) and the
 *   transient INTERNAL / TIMEOUT / CHAIN_ERROR / PEER_OFFLINE (retried like an unreachable tower).
 *
 * The towers are reached over their own {@link SessionTransport} with protocol `/qrwp/watchtower/1.0.0` on the
 * node's libp2p host (dial only; the node does not serve the watchtower protocol).
 */
import type { Libp2p } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { multiaddr as parseMultiaddr } from "@multiformats/multiaddr";
import type { Logger } from "pino";
import {
  MAX_APPOINTMENT_BATCH_SLOTS,
  QrwpError,
  WATCHTOWER_PROTOCOL,
  appointmentId,
  createAppointmentSlot,
  signAppointmentBatch,
  type AppointmentBatch,
  type AppointmentSlot,
  type ErrorCode,
  type NodeKeys,
  type SignedBalanceProof,
} from "../protocol/index.js";
import { SessionTransport, errorFields } from "../host/session-transport.js";
import type { PeerGuard } from "../host/peer-guard.js";

/** Where the client reads partner proofs from ({@link ChannelService} implements it). */
export interface PartnerProofSource {
  /** Unsettled channels on which the partner has signed a balance proof (nonce >= 1). */
  channelsWithPartnerProofs(): bigint[];
  /** The partner's latest proof on an unsettled channel with the ML-DSA key that verified it, or null. */
  partnerProof(
    channelId: bigint,
  ): { partner: string; signed: SignedBalanceProof; mldsaPublicKey: Uint8Array } | null;
}

/** Durable key/value storage for acknowledged nonces (the node store's `meta` table). */
export interface MetaStore {
  getMeta(key: string): string | null;
  setMeta(key: string, value: string): void;
}

export interface WatchtowerClientInit {
  libp2p: Libp2p;
  keys: NodeKeys;
  log: Logger;
  /** The towers' multiaddrs, each ending in `/p2p/<peerId>` (duplicates are ignored). */
  towers: string[];
  source: PartnerProofSource;
  /** Keeps acknowledged nonces across restarts; without it they live in memory only. */
  meta?: MetaStore;
  /** How long a request waits for the tower's reply (ms). Default 15,000. */
  requestTimeoutMs?: number;
  /** First retry delay after a failure (ms). Default 1,000. */
  minBackoffMs?: number;
  /** Retry delay cap (ms). Default 30,000. */
  maxBackoffMs?: number;
  /** Pause after a wake-up before sending, so a burst of proofs yields one appointment (ms). Default 250. */
  coalesceMs?: number;
  /** How often acknowledged nonces are written to `meta` when they changed (ms). Default 10,000. */
  flushIntervalMs?: number;
  /** The host's peer guard (shared with the channel transport); without it the client's transport owns one. */
  guard?: PeerGuard;
}

/** One tower's state as `GET /v1/info` shows it. */
export interface WatchtowerStatus {
  multiaddr: string;
  /** The tower's Ethereum address, proven in the session handshake; null until the first session. */
  address: string | null;
  /** An authenticated session with the tower is open. */
  connected: boolean;
  /** When the tower last accepted an appointment (unix ms), null if never in this run. */
  lastAcceptedAtMs: number | null;
  /** The last failure (unreachable, timeout or a coded refusal); null after a success. */
  lastError: { code: string; message: string } | null;
  /** Channels whose latest partner proof the tower has not acknowledged yet. */
  pendingChannels: number;
  /** Slots the tower accepted in this run (stored, replayed or superseded). */
  acceptedAppointments: number;
}

/**
 * How many times a CHANNEL_NOT_FOUND refusal is retried: a tower accepts appointments only for channels its
 * chain follower has seen at its confirmation depth, so a new channel's first appointments are refused for a
 * while. 20 attempts with the default backoff (1 s doubling to 30 s) span about 7.5 minutes, enough for
 * a tower 12 blocks (about 2.5 min on Ethereum) behind the head.
 */
export const CHANNEL_NOT_FOUND_ATTEMPTS = 20;

/** Refusals that say nothing about the appointment: retried like an unreachable tower. */
const TRANSIENT_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  "INTERNAL",
  "TIMEOUT",
  "CHAIN_ERROR",
  "PEER_OFFLINE",
]);

interface Pending {
  /** Not before this time (unix ms): set after a CHANNEL_NOT_FOUND refusal. */
  notBeforeMs: number;
  /** CHANNEL_NOT_FOUND refusals for `notFoundNonce`. */
  notFoundAttempts: number;
  notFoundNonce: bigint;
}

interface Tower {
  multiaddr: string;
  peerId: string;
  address: string | null;
  /** Channels (decimal ids) that may need an appointment. */
  pending: Map<string, Pending>;
  /** Channels of a batch the tower refused as a whole: each is sent alone next (then forgotten here). */
  solo: Set<string>;
  /** Highest nonce per channel the tower acknowledged or refused for good: nothing to send up to it. */
  done: Map<string, bigint>;
  /** Highest nonce per channel the tower acknowledged (persisted). */
  acked: Map<string, bigint>;
  ackedDirty: boolean;
  lastAcceptedAtMs: number | null;
  lastError: { code: string; message: string } | null;
  acceptedAppointments: number;
  backoffMs: number;
  /** Logged the current outage already (so a down tower logs one warning, not one per retry). */
  outageLogged: boolean;
  wake: (() => void) | null;
  loop: Promise<void> | null;
}

/** `retry`: the tower failed (unreachable, transient error): back off. `split`: send the channels alone. */
type SendOutcome = "done" | "deferred" | "retry" | "split";

/** A marked channel ready to go in a batch. */
interface Entry {
  key: string;
  nonce: bigint;
  /** The slot id the tower must answer with. */
  id: string;
  slot: AppointmentSlot;
}

const DEFAULT_REQUEST_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 2_000;

/** Sends appointments for partner balance proofs to watchtowers (see the module doc). */
export class WatchtowerClient {
  readonly #towers: Tower[];
  readonly #transport: SessionTransport;
  readonly #keys: NodeKeys;
  readonly #log: Logger;
  readonly #source: PartnerProofSource;
  readonly #meta: MetaStore | undefined;
  readonly #requestTimeoutMs: number;
  readonly #minBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #coalesceMs: number;
  readonly #flushIntervalMs: number;
  /** The slot built for each channel's latest partner nonce, shared by all towers. */
  readonly #built = new Map<
    string,
    { nonce: bigint; signature: string; slot: AppointmentSlot; chainId: bigint; hub: string }
  >();
  /** Aborts every sleep at stop. */
  readonly #stopController = new AbortController();
  #flushTimer: NodeJS.Timeout | undefined;
  #started = false;
  #stopped = false;

  /**
   * @throws QrwpError INVALID_ARGUMENT when a tower multiaddr is malformed or has no `/p2p/<peerId>`.
   */
  constructor(init: WatchtowerClientInit) {
    this.#keys = init.keys;
    this.#log = init.log;
    this.#source = init.source;
    this.#meta = init.meta;
    this.#requestTimeoutMs = init.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#minBackoffMs = init.minBackoffMs ?? 1_000;
    this.#maxBackoffMs = Math.max(init.maxBackoffMs ?? 30_000, this.#minBackoffMs);
    this.#coalesceMs = init.coalesceMs ?? 250;
    this.#flushIntervalMs = init.flushIntervalMs ?? 10_000;
    const seen = new Set<string>();
    this.#towers = [];
    for (const m of init.towers) {
      const peerId = towerPeerId(m);
      if (seen.has(peerId)) continue;
      seen.add(peerId);
      this.#towers.push({
        multiaddr: m,
        peerId,
        address: null,
        pending: new Map(),
        solo: new Set(),
        done: new Map(),
        acked: new Map(),
        ackedDirty: false,
        lastAcceptedAtMs: null,
        lastError: null,
        acceptedAppointments: 0,
        backoffMs: this.#minBackoffMs,
        outageLogged: false,
        wake: null,
        loop: null,
      });
    }
    this.#transport = new SessionTransport(init.libp2p, init.keys, init.log, {
      protocol: WATCHTOWER_PROTOCOL,
      requestTimeoutMs: this.#requestTimeoutMs,
      ...(init.guard ? { guard: init.guard } : {}),
      // This transport only ever dials the configured towers: every session on it is one we keep.
      isProtected: () => true,
    });
  }

  /** Number of configured towers (distinct peer ids). */
  get size(): number {
    return this.#towers.length;
  }

  /**
   * Loads acknowledged nonces, marks every unsettled channel holding a partner proof and starts one send
   * loop per tower. Returns at once (towers are dialed in the background).
   */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    for (const t of this.#towers) this.#loadAcked(t);
    for (const channelId of this.#source.channelsWithPartnerProofs()) this.notify(channelId);
    for (const t of this.#towers) {
      t.loop = this.#run(t).catch((err: unknown) =>
        this.#log.error({ tower: t.multiaddr, err: errorFields(err) }, "watchtower loop failed"),
      );
    }
    if (this.#meta && this.#towers.length > 0) {
      this.#flushTimer = setInterval(() => this.#flush(), this.#flushIntervalMs);
      this.#flushTimer.unref();
    }
    this.#log.info(
      { towers: this.#towers.map((t) => t.multiaddr), channels: this.#towers[0]?.pending.size ?? 0 },
      "watchtower client started",
    );
  }

  /**
   * Marks the channel: its partner's latest proof changed. Cheap and synchronous (no I/O, no signing); the
   * tower loops send the appointment later. Safe to call before {@link start} and after {@link stop}.
   */
  notify(channelId: bigint): void {
    if (this.#stopped) return;
    const key = channelId.toString();
    for (const t of this.#towers) {
      if (!t.pending.has(key)) {
        t.pending.set(key, { notBeforeMs: 0, notFoundAttempts: 0, notFoundNonce: 0n });
      }
      t.wake?.();
    }
  }

  /** Each tower's status (for `GET /v1/info`). */
  status(): WatchtowerStatus[] {
    return this.#towers.map((t) => ({
      multiaddr: t.multiaddr,
      address: t.address,
      connected: t.address !== null && this.#transport.isConnected(t.address),
      lastAcceptedAtMs: t.lastAcceptedAtMs,
      lastError: t.lastError,
      pendingChannels: t.pending.size,
      acceptedAppointments: t.acceptedAppointments,
    }));
  }

  /**
   * Stops the loops: in-flight requests get up to 2 s to be answered, then the sessions are closed (pending
   * requests fail and are retried at the next start). Acknowledged nonces are flushed to `meta`.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#stopController.abort();
    if (this.#flushTimer) clearInterval(this.#flushTimer);
    for (const t of this.#towers) t.wake?.();
    const loops = Promise.all(this.#towers.map((t) => t.loop ?? Promise.resolve()));
    // In-flight requests may still be answered; then closing the sessions fails them. A dial still in its
    // handshake is not awaited past a second grace period (the loop ends on its own when it fails).
    await settleWithin(loops, STOP_GRACE_MS);
    await this.#transport.stop();
    await settleWithin(loops, STOP_GRACE_MS);
    this.#flush();
    this.#log.info("watchtower client stopped");
  }

  // ---- the per-tower loop ----

  async #run(t: Tower): Promise<void> {
    while (!this.#stopped) {
      const now = Date.now();
      const due = [...t.pending].filter(([, p]) => p.notBeforeMs <= now).map(([k]) => k);
      if (due.length === 0) {
        let next = Infinity;
        for (const p of t.pending.values()) next = Math.min(next, p.notBeforeMs);
        await this.#wait(t, next - now);
        continue;
      }
      // Let a burst of proofs gather: one appointment for the latest of them.
      await this.#sleep(this.#coalesceMs);
      if (this.#stopped) break;
      if (!(await this.#ensureSession(t))) continue;
      // Channels of a batch refused as a whole go alone; the rest in batches of up to the maximum.
      const rest = due.filter((k) => !t.solo.has(k));
      const batches = [
        ...due.filter((k) => t.solo.has(k)).map((k) => [k]),
        ...Array.from({ length: Math.ceil(rest.length / MAX_APPOINTMENT_BATCH_SLOTS) }, (_, i) =>
          rest.slice(i * MAX_APPOINTMENT_BATCH_SLOTS, (i + 1) * MAX_APPOINTMENT_BATCH_SLOTS),
        ),
      ];
      for (const keys of batches) {
        if (this.#stopped) break;
        const outcome = await this.#sendBatch(t, keys);
        if (outcome === "retry") {
          // To the back of the queue: channels that keep failing must not starve the others.
          for (const key of keys) {
            const p = t.pending.get(key);
            if (p) {
              t.pending.delete(key);
              t.pending.set(key, p);
            }
          }
          await this.#sleep(t.backoffMs);
          t.backoffMs = Math.min(t.backoffMs * 2, this.#maxBackoffMs);
          break;
        }
        t.backoffMs = this.#minBackoffMs;
      }
    }
  }

  /** Dials the tower if there is no open session; on failure records the error and backs off. */
  async #ensureSession(t: Tower): Promise<boolean> {
    if (t.address !== null && this.#transport.isConnected(t.address)) return true;
    try {
      const address = await this.#transport.connectByMultiaddr([t.multiaddr]);
      if (t.address !== null && t.address !== address) {
        this.#log.warn(
          { tower: t.multiaddr, previous: t.address, address },
          "watchtower proved a different address",
        );
      }
      t.address = address;
      if (t.outageLogged) this.#log.info({ tower: t.multiaddr, address }, "watchtower reachable again");
      t.outageLogged = false;
      return true;
    } catch (err) {
      this.#failed(t, err);
      await this.#sleep(t.backoffMs);
      t.backoffMs = Math.min(t.backoffMs * 2, this.#maxBackoffMs);
      return false;
    }
  }

  /**
   * Sends one batch: the slots of `keys`' latest partner proofs the tower does not hold yet, signed for this
   * tower, and applies the tower's answer per slot.
   */
  async #sendBatch(t: Tower, keys: string[]): Promise<SendOutcome> {
    const entries: Entry[] = [];
    let target: { chainId: bigint; hub: string } | null = null;
    for (const key of keys) {
      t.solo.delete(key);
      const latest = this.#source.partnerProof(BigInt(key));
      const nonce = latest?.signed.proof.nonce ?? 0n;
      if (!latest || nonce < 1n || nonce <= (t.done.get(key) ?? 0n)) {
        t.pending.delete(key);
        this.#evict(key);
        continue;
      }
      const built = this.#slot(key, latest);
      if (!built) {
        this.#markDone(t, key, nonce, false);
        continue;
      }
      target ??= { chainId: built.chainId, hub: built.hub };
      // One deployment per node; a slot of another hub (never expected) waits for a batch of its own.
      if (built.chainId !== target.chainId || built.hub !== target.hub) continue;
      entries.push({
        key,
        nonce,
        id: appointmentId(built.chainId, built.hub, BigInt(key), this.#keys.address),
        slot: built.slot,
      });
    }
    if (entries.length === 0 || target === null) return "done";
    let reply;
    try {
      if (t.address === null) throw new QrwpError("PEER_OFFLINE", "watchtower address not known yet");
      const batch: AppointmentBatch = signAppointmentBatch(
        { ...target, tower: t.address },
        entries.map((e) => e.slot),
        this.#keys,
      );
      reply = await this.#transport.request(
        t.address,
        { type: "AppointmentBatch", batch },
        { multiaddrs: [t.multiaddr] },
        this.#requestTimeoutMs,
      );
    } catch (err) {
      if (!this.#stopped) this.#failed(t, err);
      return "retry";
    }
    if (reply.type === "AppointmentBatchAccepted") {
      const results = reply.results;
      if (
        results.length !== entries.length ||
        results.some((r, i) => r.id.toLowerCase() !== entries[i]!.id || r.nonce !== entries[i]!.nonce)
      ) {
        this.#failed(
          t,
          new QrwpError("INVALID_MESSAGE", "watchtower answered for other slots than the batch's", {
            slots: entries.length,
            results: results.length,
          }),
        );
        return "retry";
      }
      let outcome: SendOutcome = "done";
      // A refusal in this batch stays the tower's last error; a batch accepted whole clears it.
      if (results.every((r) => r.outcome !== "refused")) t.lastError = null;
      t.outageLogged = false;
      results.forEach((r, i) => {
        const e = entries[i]!;
        if (r.outcome === "refused") {
          const o = this.#refused(t, e, r.code ?? "INTERNAL", r.message ?? "");
          if (o === "retry") outcome = "retry";
          return;
        }
        t.acceptedAppointments += 1;
        t.lastAcceptedAtMs = Date.now();
        this.#markDone(t, e.key, e.nonce, true);
        this.#log.debug(
          { tower: t.multiaddr, channelId: e.key, nonce: e.nonce.toString(), outcome: r.outcome },
          "watchtower accepted appointment",
        );
      });
      return outcome;
    }
    if (reply.type !== "Error") {
      this.#failed(t, new QrwpError("INVALID_MESSAGE", `unexpected reply ${reply.type} from watchtower`));
      return "retry";
    }
    if (TRANSIENT_CODES.has(reply.code) || entries.length === 1) {
      return this.#refused(t, entries[0]!, reply.code, reply.message);
    }
    // Refused as a whole: one slot is bad (the message names it); each channel goes alone next.
    t.lastError = { code: reply.code, message: reply.message };
    this.#log.warn(
      { tower: t.multiaddr, slots: entries.length, code: reply.code, message: reply.message },
      "watchtower refused a batch; sending its channels one by one",
    );
    for (const e of entries) t.solo.add(e.key);
    return "split";
  }

  /** A coded refusal of one slot (per slot in a batch's answer, or of a batch of one). */
  #refused(t: Tower, e: Entry, code: ErrorCode, message: string): SendOutcome {
    const log = { tower: t.multiaddr, channelId: e.key, nonce: e.nonce.toString() };
    t.lastError = { code, message };
    if (code === "STALE_NONCE") {
      // The tower holds a newer appointment for this slot (sent earlier, or by a restored copy of us).
      this.#log.info(log, "watchtower already holds a newer appointment");
      this.#markDone(t, e.key, e.nonce, true);
      return "done";
    }
    if (TRANSIENT_CODES.has(code)) {
      this.#log.warn({ ...log, code, message }, "watchtower failed; will retry");
      return "retry";
    }
    const pending = t.pending.get(e.key);
    if (code === "CHANNEL_NOT_FOUND" && pending) {
      const attempts = pending.notFoundNonce === e.nonce ? pending.notFoundAttempts + 1 : 1;
      if (attempts < CHANNEL_NOT_FOUND_ATTEMPTS) {
        const delay = Math.min(this.#minBackoffMs * 2 ** (attempts - 1), this.#maxBackoffMs);
        pending.notFoundAttempts = attempts;
        pending.notFoundNonce = e.nonce;
        pending.notBeforeMs = Date.now() + delay;
        this.#log.info(
          { ...log, code, attempt: attempts, retryInMs: delay },
          "watchtower does not know the channel yet; will retry",
        );
        return "deferred";
      }
    }
    this.#log.warn({ ...log, code, message }, "watchtower refused appointment; not retried for this nonce");
    this.#markDone(t, e.key, e.nonce, false);
    return "done";
  }

  /** Builds (or reuses) the slot for the channel's latest partner proof; null if it cannot be built. */
  #slot(
    key: string,
    latest: NonNullable<ReturnType<PartnerProofSource["partnerProof"]>>,
  ): { slot: AppointmentSlot; chainId: bigint; hub: string } | null {
    const cached = this.#built.get(key);
    if (
      cached &&
      cached.nonce === latest.signed.proof.nonce &&
      cached.signature === latest.signed.signature
    ) {
      return cached;
    }
    try {
      const slot = createAppointmentSlot(
        latest.signed,
        { address: latest.partner, mldsaPublicKey: latest.mldsaPublicKey },
        this.#keys,
      );
      const built = {
        nonce: latest.signed.proof.nonce,
        signature: latest.signed.signature,
        slot,
        chainId: latest.signed.proof.chainId,
        hub: latest.signed.proof.hub,
      };
      this.#built.set(key, built);
      return built;
    } catch (err) {
      this.#log.warn(
        { channelId: key, nonce: latest.signed.proof.nonce.toString(), err: errorFields(err) },
        "cannot build watchtower appointment",
      );
      return null;
    }
  }

  /** Nothing more to send for this channel up to `nonce`; `acked`: the tower holds it (persisted). */
  #markDone(t: Tower, key: string, nonce: bigint, acked: boolean): void {
    if (nonce > (t.done.get(key) ?? 0n)) t.done.set(key, nonce);
    if (acked && nonce > (t.acked.get(key) ?? 0n)) {
      t.acked.set(key, nonce);
      t.ackedDirty = true;
    }
    // A newer proof may have arrived while the request was in flight: keep the channel pending then.
    const latest = this.#source.partnerProof(BigInt(key))?.signed.proof.nonce ?? 0n;
    if (latest <= (t.done.get(key) ?? 0n)) {
      t.pending.delete(key);
      this.#evict(key);
    } else {
      const p = t.pending.get(key);
      if (p) p.notBeforeMs = 0;
    }
  }

  /** Drops the built slot once no tower still needs it. */
  #evict(key: string): void {
    if (this.#towers.every((t) => !t.pending.has(key))) this.#built.delete(key);
  }

  #failed(t: Tower, err: unknown): void {
    const fields = errorFields(err);
    t.lastError = { code: fields.code ?? "PEER_OFFLINE", message: fields.message };
    const log = { tower: t.multiaddr, err: fields, retryInMs: t.backoffMs };
    if (t.outageLogged) {
      this.#log.debug(log, "watchtower still unreachable");
    } else {
      this.#log.warn(log, "watchtower unreachable; will retry with backoff");
      t.outageLogged = true;
    }
  }

  // ---- acknowledged nonces in meta ----

  #loadAcked(t: Tower): void {
    const raw = this.#meta?.getMeta(ackedMetaKey(t.peerId));
    if (!raw) return;
    try {
      const parsed = JSON.parse(raw) as Record<string, string>;
      for (const [k, v] of Object.entries(parsed)) {
        if (!/^[0-9]{1,78}$/.test(k) || typeof v !== "string" || !/^[0-9]{1,78}$/.test(v)) continue;
        t.acked.set(k, BigInt(v));
        t.done.set(k, BigInt(v));
      }
    } catch (err) {
      this.#log.warn({ tower: t.multiaddr, err: errorFields(err) }, "ignoring unreadable watchtower state");
    }
  }

  #flush(): void {
    if (!this.#meta) return;
    for (const t of this.#towers) {
      if (!t.ackedDirty) continue;
      try {
        const obj: Record<string, string> = {};
        for (const [k, v] of t.acked) obj[k] = v.toString();
        this.#meta.setMeta(ackedMetaKey(t.peerId), JSON.stringify(obj));
        t.ackedDirty = false;
      } catch (err) {
        this.#log.warn({ tower: t.multiaddr, err: errorFields(err) }, "cannot persist watchtower state");
      }
    }
  }

  // ---- timing ----

  /** Sleeps `ms` (only stop() cuts it short). */
  #sleep(ms: number): Promise<void> {
    if (this.#stopped || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#stopController.signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#stopController.signal.addEventListener("abort", done, { once: true });
    });
  }

  /** Waits until `notify` (or stop) wakes the tower, or `ms` passes (Infinity: no timeout). */
  #wait(t: Tower, ms: number): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        clearTimeout(timer);
        t.wake = null;
        resolve();
      };
      if (Number.isFinite(ms)) timer = setTimeout(done, Math.max(0, ms));
      t.wake = done;
    });
  }
}

/** Resolves when `p` settles or after `ms`, whichever is first. */
async function settleWithin(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    p.then(
      () => undefined,
      () => undefined,
    ),
    new Promise<void>((r) => (timer = setTimeout(r, ms))),
  ]);
  clearTimeout(timer);
}

/** `meta` key of a tower's acknowledged nonces: JSON `{ "<channelId>": "<nonce>" }`. */
function ackedMetaKey(peerId: string): string {
  return `watchtower-acked:${peerId}`;
}

/**
 * The peer id at the end of a tower multiaddr.
 * @throws QrwpError INVALID_ARGUMENT when the multiaddr is malformed or does not end in `/p2p/<peerId>`.
 */
export function towerPeerId(m: string): string {
  let peerId: string | undefined;
  try {
    const ma = parseMultiaddr(m);
    peerId = ma.getComponents().findLast((c) => c.name === "p2p")?.value;
    if (peerId !== undefined) peerIdFromString(peerId);
  } catch (cause) {
    throw new QrwpError(
      "INVALID_ARGUMENT",
      `invalid watchtower multiaddr ${m}`,
      { field: "watchtower" },
      { cause },
    );
  }
  if (peerId === undefined || !m.endsWith(`/p2p/${peerId}`)) {
    throw new QrwpError("INVALID_ARGUMENT", `watchtower multiaddr ${m} must end in /p2p/<peerId>`, {
      field: "watchtower",
    });
  }
  return peerId;
}
