/**
 * The channel node's watchtower client: after every change of a partner's latest balance proof, hands each
 * configured watchtower the appointment for it (`protocol/appointment.ts`), so a tower can contest a stale
 * close while the node is offline.
 *
 * - Off the payment path: {@link WatchtowerClient.notify} only marks the channel; one loop per tower reads
 *   the channel's latest proof when it gets to it, so a burst of proofs (or proofs arriving while a tower is
 *   down) yields one appointment, for the latest. After each wake-up the loop waits `coalesceMs` to let a
 *   burst gather; an appointment costs ~10 ms of signing (ML-DSA-65) and is built once per (channel, nonce)
 *   for all towers.
 * - Durable: at start every unsettled channel with a partner proof is marked, so an appointment lost to a
 *   crash between accepting a proof and reaching the tower is sent again. The nonce each tower acknowledged
 *   per channel is kept in memory and flushed to the store's `meta` (key `watchtower-acked:<peerId>`) every
 *   `flushIntervalMs` and at stop, so a restart does not resend everything (a resend is harmless: the tower
 *   answers `stored: false`).
 * - Retries: an unreachable or silent tower is retried with capped exponential backoff (`minBackoffMs` →
 *   `maxBackoffMs`). A coded refusal is logged and not retried for that nonce (STALE_NONCE: the tower holds a
 *   newer one, counted as acknowledged), except CHANNEL_NOT_FOUND (the tower may lag behind the chain:
 *   retried {@link CHANNEL_NOT_FOUND_ATTEMPTS} times with backoff) and the transient INTERNAL / TIMEOUT /
 *   CHAIN_ERROR / PEER_OFFLINE (retried like an unreachable tower).
 *
 * The towers are reached over their own {@link SessionTransport} with protocol `/qrwp/watchtower/1.0.0` on the
 * node's libp2p host (dial only; the node does not serve the watchtower protocol).
 */
import type { Libp2p } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { multiaddr as parseMultiaddr } from "@multiformats/multiaddr";
import type { Logger } from "pino";
import {
  QrwpError,
  WATCHTOWER_PROTOCOL,
  appointmentId,
  createAppointment,
  type Appointment,
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
  /** AppointmentAccepted replies received in this run (`stored` true or false). */
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

type SendOutcome = "done" | "deferred" | "retry";

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
  /** The appointment built for each channel's latest partner nonce, shared by all towers. */
  readonly #built = new Map<string, { nonce: bigint; signature: string; appointment: Appointment }>();
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
      for (const key of due) {
        if (this.#stopped) break;
        const outcome = await this.#sendOne(t, key);
        if (outcome === "retry") {
          // To the back of the queue: one channel that keeps failing must not starve the others.
          const p = t.pending.get(key);
          if (p) {
            t.pending.delete(key);
            t.pending.set(key, p);
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

  /** Sends the appointment for one channel's latest partner proof, if the tower does not have it yet. */
  async #sendOne(t: Tower, key: string): Promise<SendOutcome> {
    const channelId = BigInt(key);
    const latest = this.#source.partnerProof(channelId);
    const nonce = latest?.signed.proof.nonce ?? 0n;
    if (!latest || nonce < 1n || nonce <= (t.done.get(key) ?? 0n)) {
      t.pending.delete(key);
      this.#evict(key);
      return "done";
    }
    const appointment = this.#appointment(key, latest);
    if (!appointment) {
      this.#markDone(t, key, nonce, false);
      return "done";
    }
    let reply;
    try {
      if (t.address === null) throw new QrwpError("PEER_OFFLINE", "watchtower address not known yet");
      reply = await this.#transport.request(
        t.address,
        { type: "Appointment", appointment },
        { multiaddrs: [t.multiaddr] },
        this.#requestTimeoutMs,
      );
    } catch (err) {
      if (!this.#stopped) this.#failed(t, err);
      return "retry";
    }
    const log = { tower: t.multiaddr, channelId: key, nonce: nonce.toString() };
    if (reply.type === "AppointmentAccepted") {
      const expectedId = appointmentId(
        appointment.chainId,
        appointment.hub,
        appointment.channelId,
        appointment.nonClosingParticipant,
      );
      if (reply.id.toLowerCase() !== expectedId || reply.nonce < nonce) {
        this.#failed(
          t,
          new QrwpError("INVALID_MESSAGE", "watchtower acknowledged another appointment", {
            id: reply.id,
            nonce: reply.nonce.toString(),
          }),
        );
        return "retry";
      }
      t.acceptedAppointments += 1;
      t.lastAcceptedAtMs = Date.now();
      t.lastError = null;
      t.outageLogged = false;
      this.#markDone(t, key, reply.nonce, true);
      this.#log.debug({ ...log, stored: reply.stored }, "watchtower accepted appointment");
      return "done";
    }
    if (reply.type !== "Error") {
      this.#failed(t, new QrwpError("INVALID_MESSAGE", `unexpected reply ${reply.type} from watchtower`));
      return "retry";
    }
    t.lastError = { code: reply.code, message: reply.message };
    if (reply.code === "STALE_NONCE") {
      // The tower holds a newer appointment for this slot (sent earlier, or by a restored copy of us).
      this.#log.info(log, "watchtower already holds a newer appointment");
      this.#markDone(t, key, nonce, true);
      return "done";
    }
    if (TRANSIENT_CODES.has(reply.code)) {
      this.#log.warn({ ...log, code: reply.code, message: reply.message }, "watchtower failed; will retry");
      return "retry";
    }
    const pending = t.pending.get(key);
    if (reply.code === "CHANNEL_NOT_FOUND" && pending) {
      const attempts = pending.notFoundNonce === nonce ? pending.notFoundAttempts + 1 : 1;
      if (attempts < CHANNEL_NOT_FOUND_ATTEMPTS) {
        const delay = Math.min(this.#minBackoffMs * 2 ** (attempts - 1), this.#maxBackoffMs);
        pending.notFoundAttempts = attempts;
        pending.notFoundNonce = nonce;
        pending.notBeforeMs = Date.now() + delay;
        this.#log.info(
          { ...log, code: reply.code, attempt: attempts, retryInMs: delay },
          "watchtower does not know the channel yet; will retry",
        );
        return "deferred";
      }
    }
    this.#log.warn(
      { ...log, code: reply.code, message: reply.message },
      "watchtower refused appointment; not retried for this nonce",
    );
    this.#markDone(t, key, nonce, false);
    return "done";
  }

  /** Builds (or reuses) the appointment for the channel's latest partner proof; null if it cannot be built. */
  #appointment(
    key: string,
    latest: NonNullable<ReturnType<PartnerProofSource["partnerProof"]>>,
  ): Appointment | null {
    const cached = this.#built.get(key);
    if (
      cached &&
      cached.nonce === latest.signed.proof.nonce &&
      cached.signature === latest.signed.signature
    ) {
      return cached.appointment;
    }
    try {
      const appointment = createAppointment(
        latest.signed,
        { address: latest.partner, mldsaPublicKey: latest.mldsaPublicKey },
        this.#keys,
      );
      this.#built.set(key, {
        nonce: latest.signed.proof.nonce,
        signature: latest.signed.signature,
        appointment,
      });
      return appointment;
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

  /** Drops the built appointment once no tower still needs it. */
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
