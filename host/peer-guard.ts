/**
 * What a stranger may cost a QRWP process, for one libp2p host (shared by every {@link SessionTransport} on
 * it): handshake admission (a free handshake only for peers we know, a client puzzle for everyone else, whose
 * difficulty climbs with the rate of strangers' handshakes), a cap on handshakes in progress, connection
 * budgets (in total and per IP, strangers evicted first, never a protected peer), a deadline for an inbound
 * connection to open a session, and rate-limited warnings for what peers cause. The numbers and their
 * reasons are in PROTOCOL.md §2.3.
 *
 * A peer is *protected* when the process has a reason to keep it (a channel partner, a configured watchtower,
 * a watchtower's client): its libp2p peer id, authenticated by Noise before our handshake starts, is
 * remembered and tagged in the peer store so libp2p's own pruner keeps it too.
 */
import type { Connection, Libp2p } from "@libp2p/interface";
import { RateLimiter, tryGetNetConfig } from "@libp2p/utils";
import { LRUCache } from "lru-cache";
import type { Logger } from "pino";
import { MAX_PUZZLE_DIFFICULTY_BITS } from "../protocol/index.js";

/** The limits a {@link PeerGuard} enforces (all overridable; see {@link DEFAULT_PEER_LIMITS}). */
export interface PeerLimits {
  /** Puzzle difficulty for a stranger's handshake while strangers handshake at most at the target rate, in bits. */
  puzzleDifficultyBits: number;
  /** Strangers' handshakes per second above which the difficulty climbs by one bit per doubling. */
  strangerHandshakesPerSecond: number;
  /** Most bits the difficulty climbs above `puzzleDifficultyBits` under load. */
  maxExtraDifficultyBits: number;
  /** Handshakes a stranger's connection may abandon or botch; at this many the connection is closed. */
  maxFailedHandshakesPerConnection: number;
  /** Handshakes per minute a protected peer makes without a puzzle (then it solves one like anyone). */
  protectedHandshakesPerMinute: number;
  /**
   * Strangers' handshakes waiting for their puzzle solution at once; a new one beyond it evicts the oldest
   * waiting one (which has cost us nothing but the challenge).
   */
  maxPendingChallenges: number;
  /** Deadline of an inbound handshake, in ms. */
  handshakeTimeoutMs: number;
  /** Sessions with strangers per protocol; beyond it the least recently active stranger's session closes. */
  maxStrangerSessions: number;
  /** A stranger's session with no frame from it for this long closes, in ms. */
  strangerSessionIdleMs: number;
  /** A frame that has started must arrive in full within this, in ms; else the session closes. */
  frameTimeoutMs: number;
  /** Connections kept in total; beyond it strangers' inbound connections are closed (protected ones never). */
  maxConnections: number;
  /** Connections kept per remote IP; beyond it that IP's strangers' inbound connections are closed. */
  maxConnectionsPerIp: number;
  /** An inbound connection of a stranger that opened no QRWP session within this is closed, in ms. */
  preSessionTimeoutMs: number;
  /** Warnings logged per peer (or IP) per minute; the rest are counted and reported with the next one. */
  peerWarningsPerMinute: number;
}

/** Defaults, sized for a 2-core machine (PROTOCOL.md §2.3 gives the measurements behind them). */
export const DEFAULT_PEER_LIMITS: Readonly<PeerLimits> = Object.freeze({
  puzzleDifficultyBits: 15,
  strangerHandshakesPerSecond: 10,
  maxExtraDifficultyBits: 5,
  maxFailedHandshakesPerConnection: 3,
  protectedHandshakesPerMinute: 30,
  maxPendingChallenges: 64,
  handshakeTimeoutMs: 10_000,
  maxStrangerSessions: 64,
  strangerSessionIdleMs: 60_000,
  frameTimeoutMs: 10_000,
  maxConnections: 256,
  maxConnectionsPerIp: 64,
  preSessionTimeoutMs: 10_000,
  peerWarningsPerMinute: 10,
});

/** libp2p peer-store tag of protected peers (its value makes libp2p's pruner keep them). */
export const PROTECTED_TAG = "qrwp-protected";
const WINDOW_MS = 60_000;

interface WarningWindow {
  startMs: number;
  logged: number;
  suppressed: number;
}

/** The remote IP of a connection (or its multiaddr string when it has none). */
export function remoteHost(connection: Pick<Connection, "remoteAddr">): string {
  const config = tryGetNetConfig(connection.remoteAddr);
  return config && "host" in config ? config.host : connection.remoteAddr.toString();
}

/** Enforces {@link PeerLimits} on one libp2p host; see the module doc. */
export class PeerGuard {
  /** The limits in force. */
  readonly limits: Readonly<PeerLimits>;
  readonly #libp2p: Libp2p;
  readonly #log: Logger;
  readonly #protected = new Set<string>();
  readonly #protectedHandshakes: RateLimiter;
  /** Open QRWP sessions per peer id (over every protocol), and when each peer last sent a frame. */
  readonly #sessions = new Map<string, number>();
  readonly #lastActiveMs = new Map<string, number>();
  readonly #warnings = new LRUCache<string, WarningWindow>({ max: 10_000 });
  readonly #strikes = new WeakMap<Connection, number>();
  /** Abort functions of the streams waiting for a puzzle solution, oldest first. */
  readonly #challenged = new Set<() => void>();
  /** Strangers' handshakes in the current and the previous one-second bucket. */
  #bucket = { startMs: 0, count: 0, previous: 0 };
  #started = false;
  readonly #onOpen = (evt: CustomEvent<Connection>) => this.#connectionOpened(evt.detail);

  /**
   * @param libp2p - the host whose connections are governed.
   * @param log - where (rate-limited) warnings go.
   * @param limits - overrides of {@link DEFAULT_PEER_LIMITS}.
   * @param protectedPeerIds - libp2p peer ids to protect from the start (e.g. channel partners from the store).
   */
  constructor(
    libp2p: Libp2p,
    log: Logger,
    limits: Partial<PeerLimits> = {},
    protectedPeerIds: Iterable<string> = [],
  ) {
    this.limits = Object.freeze({ ...DEFAULT_PEER_LIMITS, ...limits });
    const l = this.limits;
    if (
      !Number.isInteger(l.puzzleDifficultyBits) ||
      l.puzzleDifficultyBits < 0 ||
      l.puzzleDifficultyBits + l.maxExtraDifficultyBits > MAX_PUZZLE_DIFFICULTY_BITS
    ) {
      throw new RangeError(`puzzle difficulty must stay within [0, ${MAX_PUZZLE_DIFFICULTY_BITS}] bits`);
    }
    this.#libp2p = libp2p;
    this.#log = log;
    this.#protectedHandshakes = new RateLimiter({
      points: Math.max(1, l.protectedHandshakesPerMinute),
      duration: 60,
    });
    for (const peerId of protectedPeerIds) this.#protected.add(peerId);
  }

  /** Starts watching connections (idempotent). */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#libp2p.addEventListener("connection:open", this.#onOpen);
  }

  /** Stops watching connections. */
  stop(): void {
    if (!this.#started) return;
    this.#started = false;
    this.#libp2p.removeEventListener("connection:open", this.#onOpen);
  }

  // ---- handshakes ----

  /**
   * Holds a slot for a handshake waiting for its puzzle solution; beyond `maxPendingChallenges` the oldest
   * waiting handshake is aborted (`abort` is how this one would be).
   * @returns the function that releases the slot (call it when the solution arrived or the handshake ended).
   */
  holdChallenge(abort: () => void): () => void {
    if (this.#challenged.size >= this.limits.maxPendingChallenges) {
      const oldest = this.#challenged.values().next().value;
      if (oldest) {
        this.#challenged.delete(oldest);
        oldest();
      }
    }
    this.#challenged.add(abort);
    return () => this.#challenged.delete(abort);
  }

  /**
   * The puzzle an inbound handshake from `peerId` must solve: null (none) for a protected peer within its free
   * handshakes, else `puzzleDifficultyBits` plus one bit per doubling of strangers' handshakes above
   * `strangerHandshakesPerSecond` (at most `maxExtraDifficultyBits` more).
   */
  puzzleDifficulty(peerId: string): number | null {
    if (this.#protected.has(peerId)) {
      try {
        this.#protectedHandshakes.consume(peerId);
        return null;
      } catch {
        // a protected peer handshaking in a loop pays like a stranger
      }
    }
    const rate = this.#strangerRate(Date.now());
    const target = Math.max(1, this.limits.strangerHandshakesPerSecond);
    const extra = rate > target ? Math.ceil(Math.log2(rate / target)) : 0;
    return this.limits.puzzleDifficultyBits + Math.min(extra, this.limits.maxExtraDifficultyBits);
  }

  /**
   * Counts a handshake that failed on `connection` (abandoned, malformed, puzzle unsolved); a stranger's
   * connection is closed at `maxFailedHandshakesPerConnection`, so a flood of hellos needs a flood of new
   * connections, which libp2p allows 5 a second per host.
   * @returns true when the connection was closed.
   */
  handshakeFailed(connection: Connection): boolean {
    if (this.#protected.has(connection.remotePeer.toString())) return false;
    const strikes = (this.#strikes.get(connection) ?? 0) + 1;
    this.#strikes.set(connection, strikes);
    if (strikes < this.limits.maxFailedHandshakesPerConnection) return false;
    connection.abort(new Error("too many failed handshakes"));
    return true;
  }

  /** Counts one stranger's handshake the responder did the public-key work for (drives the difficulty). */
  strangerHandshakeDone(): void {
    const now = Date.now();
    this.#strangerRate(now);
    this.#bucket.count++;
  }

  /** Strangers' handshakes per second over the last 1-2 s (the previous bucket weighted by its overlap). */
  #strangerRate(nowMs: number): number {
    const b = this.#bucket;
    const elapsed = nowMs - b.startMs;
    if (elapsed >= 2000) this.#bucket = { startMs: nowMs, count: 0, previous: 0 };
    else if (elapsed >= 1000) this.#bucket = { startMs: b.startMs + 1000, count: 0, previous: b.count };
    const c = this.#bucket;
    const overlap = 1 - Math.min(1, (nowMs - c.startMs) / 1000);
    return c.count + c.previous * overlap;
  }

  // ---- peers and sessions ----

  /** Remembers `peerId` as protected (free handshakes, never evicted) and tags it in the peer store. */
  protect(peerId: string): void {
    if (this.#protected.has(peerId)) return;
    this.#protected.add(peerId);
    const connection = this.#libp2p.getConnections().find((c) => c.remotePeer.toString() === peerId);
    if (connection) {
      this.#libp2p.peerStore
        .merge(connection.remotePeer, { tags: { [PROTECTED_TAG]: { value: 100 } } })
        .catch(() => undefined);
    }
  }

  /** True for a protected peer id. */
  isProtected(peerId: string): boolean {
    return this.#protected.has(peerId);
  }

  /** A QRWP session with `peerId` opened (any protocol). */
  sessionOpened(peerId: string): void {
    this.#sessions.set(peerId, (this.#sessions.get(peerId) ?? 0) + 1);
    this.#lastActiveMs.set(peerId, Date.now());
  }

  /** A QRWP session with `peerId` closed; a stranger left with no session loses its inbound connections. */
  sessionClosed(peerId: string): void {
    const n = (this.#sessions.get(peerId) ?? 1) - 1;
    if (n > 0) {
      this.#sessions.set(peerId, n);
      return;
    }
    this.#sessions.delete(peerId);
    this.#lastActiveMs.delete(peerId);
    if (this.#protected.has(peerId)) return;
    for (const c of this.#libp2p.getConnections()) {
      if (c.remotePeer.toString() === peerId && c.direction === "inbound") {
        c.abort(new Error("stranger's session ended"));
      }
    }
  }

  /** `peerId` sent a frame now (for least-recently-active eviction). */
  touch(peerId: string): void {
    if (this.#lastActiveMs.has(peerId)) this.#lastActiveMs.set(peerId, Date.now());
  }

  #connectionOpened(connection: Connection): void {
    const peerId = connection.remotePeer.toString();
    if (connection.direction === "inbound" && !this.#protected.has(peerId)) {
      const timer = setTimeout(() => {
        if (connection.status === "open" && !this.#sessions.has(peerId) && !this.#protected.has(peerId)) {
          connection.abort(new Error("no session before the pre-session deadline"));
        }
      }, this.limits.preSessionTimeoutMs);
      timer.unref();
    }
    this.#enforceBudgets(connection);
  }

  /**
   * Keeps the connection counts within budget after `opened` arrived: closes strangers' inbound connections,
   * those without a session oldest first, then those with a session least recently active first.
   */
  #enforceBudgets(opened: Connection): void {
    const all = this.#libp2p.getConnections();
    const host = remoteHost(opened);
    const sameHost = all.filter((c) => remoteHost(c) === host);
    const excessTotal = all.length - this.limits.maxConnections;
    const excessHost = sameHost.length - this.limits.maxConnectionsPerIp;
    if (excessTotal <= 0 && excessHost <= 0) return;
    const pool = excessHost > 0 && excessHost >= excessTotal ? sameHost : all;
    const excess = Math.max(excessTotal, excessHost);
    const victims = pool
      .filter((c) => c.direction === "inbound" && !this.#protected.has(c.remotePeer.toString()))
      .map((c) => {
        const peerId = c.remotePeer.toString();
        const hasSession = this.#sessions.has(peerId);
        return {
          c,
          rank: hasSession ? 1 : 0,
          at: hasSession ? (this.#lastActiveMs.get(peerId) ?? 0) : c.timeline.open,
        };
      })
      .sort((a, b) => a.rank - b.rank || a.at - b.at)
      .slice(0, excess);
    for (const v of victims) v.c.abort(new Error("connection budget exceeded"));
    this.warn(
      `budget:${host}`,
      { host, closed: victims.length },
      "connection budget exceeded; strangers evicted",
    );
  }

  // ---- logs ----

  /**
   * Logs a warning caused by a peer, at most `peerWarningsPerMinute` per `key` (a peer id or an IP) per minute;
   * the first line after a full window reports how many were suppressed.
   */
  warn(key: string, fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    let w = this.#warnings.get(key);
    if (!w || now - w.startMs >= WINDOW_MS) {
      const suppressed = w?.suppressed ?? 0;
      w = { startMs: now, logged: 0, suppressed: 0 };
      this.#warnings.set(key, w);
      if (suppressed > 0) fields = { ...fields, suppressedWarnings: suppressed };
    }
    if (w.logged >= this.limits.peerWarningsPerMinute) {
      w.suppressed++;
      return;
    }
    w.logged++;
    this.#log.warn(fields, message);
  }
}
