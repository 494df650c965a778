/**
 * What a stranger may cost a QRWP process, for one libp2p host (shared by every {@link SessionTransport} on
 * it): handshake admission (a free handshake only for peers we know, a client puzzle for everyone else, whose
 * difficulty climbs with the rate of strangers' handshakes), a cap on handshakes waiting for their puzzle
 * solution, a limit of failed handshakes per connection, connection
 * budgets (in total and per IP, strangers evicted first, never a protected peer), a deadline for an inbound
 * connection to open a session, and rate-limited warnings for what peers cause. The numbers and their
 * reasons are in PROTOCOL.md §3.1 and §5.
 *
 * A peer is *protected* when the process has a reason to keep it (a channel partner, a configured watchtower,
 * a watchtower's client): its libp2p peer id, authenticated by Noise before our handshake starts, is
 * remembered and tagged in the peer store so libp2p's own pruner keeps it too.
 */
import type { Connection, Libp2p, PeerId } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { RateLimiter, tryGetNetConfig } from "@libp2p/utils";
import { LRUCache } from "lru-cache";
import type { Logger } from "pino";

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

/** Defaults, sized for a 2-core machine (PROTOCOL.md §3.1 and §5 gives the measurements behind them). */
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

/**
 * Hardest puzzle an initiator of ours solves (bits; about 8 s of JS SHA-256 on average): a responder's
 * base difficulty plus its climb must stay within it.
 */
export const INITIATOR_MAX_PUZZLE_BITS = 22;
/** A connection this young (or a session this recently active) is evicted after older, quieter ones (ms). */
const NEW_CONNECTION_GRACE_MS = 5_000;

/** libp2p peer-store tag of protected peers (its value makes libp2p's pruner keep them). */
export const PROTECTED_TAG = "qrwp-protected";
const WINDOW_MS = 60_000;

interface WarningWindow {
  startMs: number;
  logged: number;
  suppressed: number;
}

/**
 * The remote host a connection counts against for per-IP budgets: its IPv4 address, the /64 prefix of its
 * IPv6 address (one subscriber's usual allocation, so a /64 is one "IP"), or its multiaddr string.
 */
export function remoteHost(connection: Pick<Connection, "remoteAddr">): string {
  const config = tryGetNetConfig(connection.remoteAddr);
  if (!config || !("host" in config)) return connection.remoteAddr.toString();
  return config.type === "ip6" ? ipv6Prefix64(config.host) : config.host;
}

/** The first four 16-bit groups of an IPv6 address, expanded (e.g. "2001:db8:0:1::/64"). */
export function ipv6Prefix64(address: string): string {
  const [head = "", tail] = address.split("%")[0]!.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => (parseInt(g, 16) || 0).toString(16))
    .join(":")}::/64`;
}

/** Enforces {@link PeerLimits} on one libp2p host; see the module doc. */
export class PeerGuard {
  /** The limits in force. */
  readonly limits: Readonly<PeerLimits>;
  readonly #libp2p: Libp2p;
  readonly #log: Logger;
  readonly #protected = new Set<string>();
  readonly #protectedHandshakes: RateLimiter;
  /** Open QRWP sessions per connection (over every protocol), and when each such connection last had a frame. */
  readonly #sessions = new Map<Connection, number>();
  readonly #lastActiveMs = new Map<Connection, number>();
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
      l.puzzleDifficultyBits + l.maxExtraDifficultyBits > INITIATOR_MAX_PUZZLE_BITS
    ) {
      // Never ask more than an initiator solves: a peer would be locked out instead of slowed down.
      throw new RangeError(
        `puzzleDifficultyBits + maxExtraDifficultyBits must stay within [0, ${INITIATOR_MAX_PUZZLE_BITS}] bits`,
      );
    }
    this.#libp2p = libp2p;
    this.#log = log;
    this.#protectedHandshakes = new RateLimiter({
      points: Math.max(1, l.protectedHandshakesPerMinute),
      duration: 60,
    });
    for (const peerId of protectedPeerIds) this.protect(peerId);
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

  /**
   * Remembers `peerId` (a libp2p peer id string) as protected: free handshakes within its budget, no
   * pre-session deadline, never evicted; and tags it in libp2p's peer store so libp2p's pruner keeps it too.
   * A malformed peer id is ignored.
   */
  protect(peerId: string): void {
    if (this.#protected.has(peerId)) return;
    let id: PeerId;
    try {
      id = peerIdFromString(peerId);
    } catch {
      return;
    }
    this.#protected.add(peerId);
    this.#libp2p.peerStore.merge(id, { tags: { [PROTECTED_TAG]: { value: 100 } } }).catch(() => undefined);
  }

  /** True for a protected peer id. */
  isProtected(peerId: string): boolean {
    return this.#protected.has(peerId);
  }

  /** A QRWP session opened on `connection` (any protocol). Pair every call with {@link sessionClosed}. */
  sessionOpened(connection: Connection): void {
    this.#sessions.set(connection, (this.#sessions.get(connection) ?? 0) + 1);
    this.#lastActiveMs.set(connection, Date.now());
  }

  /**
   * A QRWP session on `connection` closed (once per {@link sessionOpened}); a stranger's inbound connection
   * left without a session is closed too.
   */
  sessionClosed(connection: Connection): void {
    const n = (this.#sessions.get(connection) ?? 1) - 1;
    if (n > 0) {
      this.#sessions.set(connection, n);
      return;
    }
    this.#sessions.delete(connection);
    this.#lastActiveMs.delete(connection);
    if (connection.direction === "inbound" && !this.#protected.has(connection.remotePeer.toString())) {
      connection.abort(new Error("stranger's session ended"));
    }
  }

  /** A frame arrived on `connection` now (for least-recently-active eviction). */
  touch(connection: Connection): void {
    if (this.#lastActiveMs.has(connection)) this.#lastActiveMs.set(connection, Date.now());
  }

  #connectionOpened(connection: Connection): void {
    if (connection.direction === "inbound" && !this.#protected.has(connection.remotePeer.toString())) {
      const timer = setTimeout(() => {
        const peerId = connection.remotePeer.toString();
        if (connection.status === "open" && !this.#sessions.has(connection) && !this.#protected.has(peerId)) {
          connection.abort(new Error("no session before the pre-session deadline"));
        }
      }, this.limits.preSessionTimeoutMs);
      timer.unref();
    }
    this.#enforceBudgets(connection);
  }

  /**
   * Keeps the connection counts within budget after `opened` arrived by closing strangers' inbound
   * connections, in this order: those without a session past their first seconds (oldest first), those whose
   * session has been quiet for as long (least recently active first), new ones still handshaking, and last
   * those whose session is active. Protected peers' connections are never closed.
   */
  #enforceBudgets(opened: Connection): void {
    const all = this.#libp2p.getConnections();
    const now = Date.now();
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
        const active = this.#lastActiveMs.get(c);
        const at = active ?? c.timeline.open;
        const recent = now - at < NEW_CONNECTION_GRACE_MS;
        return { c, at, rank: active === undefined ? (recent ? 2 : 0) : recent ? 3 : 1 };
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
