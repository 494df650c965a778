/**
 * A session transport for one QRWP libp2p protocol (`/qrwp/channel/1.0.0` between channel nodes,
 * `/qrwp/watchtower/1.0.0` between a node and a watchtower): one long-lived libp2p stream per peer, opened by
 * whoever needs it first, carrying (1) the post-quantum session handshake of `protocol/session.ts` (X-Wing + HKDF, transcript
 * signed with ML-DSA-65 and secp256k1) and then (2) ChaCha20-Poly1305 frames, each holding one
 * {@link Envelope}. Frames are length-prefixed (libp2p's varint framing) and read by {@link FrameStream} with
 * an idle deadline for strangers and a deadline for each started frame.
 *
 * What strangers may cost is bounded by the host's {@link PeerGuard}: an inbound handshake from a peer we do
 * not know starts with a client puzzle, handshakes waiting for their solution are capped, a stranger's session closes when
 * idle and the least recently active stranger's session makes room for a new one beyond the cap; a session
 * replaced by a newer one with the same peer closes once quiet; protected peers (channel partners, towers
 * and their clients, as `isProtected` says, checked at the start of a session and after each of its
 * requests) are exempt.
 *
 * Requests from a peer are handled one at a time in arrival order (so balance proofs are processed in nonce
 * order); replies are matched to requests by id and never wait behind a request handler.
 */
import type { Libp2p, Stream, Connection } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import { peerIdFromString } from "@libp2p/peer-id";
import type { Logger } from "pino";
import {
  CHANNEL_PROTOCOL,
  MAX_FRAME_BYTES,
  HandshakeInitiator,
  HandshakeResponder,
  MAX_HANDSHAKE_MESSAGE_BYTES,
  QrwpError,
  searchPuzzleSolution,
  decodeEnvelope,
  encodeEnvelope,
  isQrwpError,
  type ChannelMessage,
  type Envelope,
  type ErrorReply,
  type NodeKeys,
  type HandshakeChallenge,
  type Session,
} from "../protocol/index.js";
import { FrameStream } from "./frame-stream.js";
import { INITIATOR_MAX_PUZZLE_BITS, PeerGuard, remoteHost } from "./peer-guard.js";

/** The authenticated peer a request came from. */
export interface RemotePeer {
  /** EIP-55 Ethereum address proven in the handshake. */
  address: string;
  /** ML-DSA-65 public key proven in the handshake (FIPS 204). */
  mldsaPublicKey: Uint8Array;
  /** libp2p peer id of the connection. */
  peerId: string;
}

/** Handles one request from an authenticated peer and returns the reply body. */
export type RequestHandler = (from: RemotePeer, body: ChannelMessage) => Promise<ChannelMessage>;

export interface SessionTransportInit {
  /** libp2p protocol id; default `CHANNEL_PROTOCOL` ("/qrwp/channel/1.0.0"). */
  protocol?: string;
  /** Default timeout of a request waiting for its reply (ms). */
  requestTimeoutMs?: number;
  /** Timeout of an outbound handshake, puzzle included (ms); inbound ones use the guard's limit. */
  handshakeTimeoutMs?: number;
  /**
   * The host's {@link PeerGuard}, shared by every transport on it (the owner starts and stops it). Without
   * one, the transport makes its own with the default limits and owns it.
   */
  guard?: PeerGuard;
  /** True when the peer with this address must be kept (channel partner, tower, tower client); default none. */
  isProtected?: (address: string) => boolean;
  /** Hardest puzzle (bits) this side solves when dialing; a peer asking more is refused. Default 22 (`INITIATOR_MAX_PUZZLE_BITS`). */
  maxPuzzleDifficultyBits?: number;
}

const DEFAULT_REQUEST_TIMEOUT_MS = 15_000;
/** A sealed frame is the plaintext plus the 8-byte counter header and the 16-byte Poly1305 tag. */
const MAX_WIRE_FRAME_BYTES = MAX_FRAME_BYTES + 64;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Inbound streams of one QRWP protocol per connection (libp2p resets streams beyond it). */
const MAX_INBOUND_STREAMS_PER_CONNECTION = 4;
/** Puzzle counters tried between two yields to the event loop (about 4 ms of hashing). */
const PUZZLE_CHUNK = 2048;

/**
 * Solves a handshake puzzle without blocking the event loop for long (chunks of {@link PUZZLE_CHUNK} hashes).
 * @returns the 8-byte solution (`searchPuzzleSolution` of protocol/handshake-puzzle.ts).
 * @throws QrwpError HANDSHAKE_FAILED when `signal` aborts first.
 */
export async function solvePuzzle(challenge: HandshakeChallenge, signal?: AbortSignal): Promise<Uint8Array> {
  for (let from = 0; ; from += PUZZLE_CHUNK) {
    if (signal?.aborted)
      throw new QrwpError("HANDSHAKE_FAILED", "handshake deadline passed while solving the puzzle");
    const solution = searchPuzzleSolution(challenge.challenge, challenge.difficultyBits, from, PUZZLE_CHUNK);
    if (solution) return solution;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

interface Pending {
  resolve(body: ChannelMessage): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/**
 * The initiator's side of the handshake over `frames`: `hello`; if the responder answers with a puzzle, solves
 * it (up to `maxPuzzleDifficultyBits`) and sends `hello` again with the solution; then `finish`.
 * @returns the established session.
 * @throws QrwpError HANDSHAKE_FAILED (a forged or unexpected reply, a puzzle above the cap, the deadline);
 *   FRAME_REJECTED when a read fails; a write to a failed stream throws libp2p's error.
 */
export async function initiateHandshake(
  frames: FrameStream,
  initiator: HandshakeInitiator,
  options: { signal: AbortSignal; maxPuzzleDifficultyBits?: number },
): Promise<Session> {
  const { signal } = options;
  const maxBits = options.maxPuzzleDifficultyBits ?? INITIATOR_MAX_PUZZLE_BITS;
  const read = () => frames.read({ signal, maxFrameBytes: MAX_HANDSHAKE_MESSAGE_BYTES });
  await frames.write(initiator.hello(), { signal });
  let answer = await read();
  const challenge = initiator.challengeOf(answer);
  if (challenge) {
    if (challenge.difficultyBits > maxBits) {
      throw new QrwpError("HANDSHAKE_FAILED", `the peer asks a puzzle of ${challenge.difficultyBits} bits`, {
        field: "difficultyBits",
        max: maxBits,
      });
    }
    await frames.write(initiator.helloWithSolution(await solvePuzzle(challenge, signal)), { signal });
    answer = await read();
  }
  const { finish, session } = initiator.finish(answer);
  await frames.write(finish, { signal });
  return session;
}

/** What a {@link PeerSession} needs from its transport. */
interface PeerSessionContext {
  handler: RequestHandler;
  log: Logger;
  guard: PeerGuard;
  isProtected: (address: string) => boolean;
  /** How long a replaced session may stay quiet before it closes (ms). */
  retiredIdleMs: number;
  onClose: (s: PeerSession) => void;
  /** Awaited right before each frame is written (the node makes its store durable there). */
  beforeSend: () => void | Promise<void>;
}

/** Frames written to the stream in one write at most (the rest go in the next). */
const MAX_FRAMES_PER_WRITE = 64;

/** Requests of one session queued or running at once; beyond it a request is answered RATE_LIMITED unread. */
const MAX_QUEUED_REQUESTS = 64;

/**
 * Messages of one session queued or running at once, a `MessageBatch` counting as its messages (each is
 * handled like a request of its own); beyond it a request is answered RATE_LIMITED unread.
 */
const MAX_QUEUED_MESSAGES = 512;

/** How many messages a request stands for in the queue (see {@link MAX_QUEUED_MESSAGES}). */
function messageWeight(body: ChannelMessage): number {
  return body.type === "MessageBatch" ? body.messages.length : 1;
}

/** One authenticated, encrypted session with a peer over one libp2p stream. */
class PeerSession {
  readonly remoteAddress: string;
  closed = false;
  /** When the peer last sent a frame (ms). */
  lastActiveMs = Date.now();
  #protected = false;
  /** Replaced by a newer session with the same peer: it drains, then closes once quiet. */
  #retired = false;
  #idleTimer: NodeJS.Timeout | undefined;
  #queuedRequests = 0;
  #queuedMessages = 0;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  /** Envelopes waiting to be sealed and written (see {@link #write}). */
  readonly #outbox: { envelope: Envelope; resolve: () => void; reject: (err: Error) => void }[] = [];
  #writing = false;
  #requestChain: Promise<void> = Promise.resolve();

  constructor(
    readonly connection: Connection,
    private readonly frames: FrameStream,
    private readonly session: Session,
    private readonly stream: Stream,
    private readonly ctx: PeerSessionContext,
  ) {
    this.remoteAddress = session.remote.address;
    this.refreshProtection();
  }

  get remotePeerId(): string {
    return this.connection.remotePeer.toString();
  }

  /**
   * True when the peer is protected. Checked when the session starts and after each request it made (a
   * request is what makes a stranger a partner or a tower client); the first time it is true, the peer id is
   * protected on the host and a pending idle deadline is lifted.
   */
  refreshProtection(): boolean {
    if (!this.#protected && this.ctx.isProtected(this.remoteAddress)) {
      this.#protected = true;
      this.ctx.guard.protect(this.remotePeerId);
      if (!this.#retired) this.#clearIdle();
    }
    return this.#protected;
  }

  /** Whether the peer was protected when last checked (no new check). */
  get isProtected(): boolean {
    return this.#protected;
  }

  /** Marks the session replaced: it still delivers replies, and closes after `retiredIdleMs` of quiet. */
  retire(): void {
    this.#retired = true;
  }

  #clearIdle(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  /** The idle deadline of the next frame: a stranger's or a retired session's; none for a protected peer. */
  #idleSignal(): AbortSignal | undefined {
    this.#clearIdle();
    const ms = this.#retired
      ? this.ctx.retiredIdleMs
      : this.#protected
        ? undefined
        : this.ctx.guard.limits.strangerSessionIdleMs;
    if (ms === undefined) return undefined;
    const idle = new AbortController();
    this.#idleTimer = setTimeout(() => idle.abort(), ms);
    return idle.signal;
  }

  /**
   * Seals and writes an envelope; frames are sealed and written in call order so their counters stay in
   * sequence. Envelopes queued while a write is in flight go out together: one barrier, then their frames in
   * one stream write (same frames on the wire, fewer trips through the muxer, the encryption layer and the
   * socket). Resolves once its frame was handed to the stream.
   */
  #write(envelope: Envelope): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#outbox.push({ envelope, resolve, reject });
      if (!this.#writing) void this.#pumpWrites();
    });
  }

  async #pumpWrites(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#outbox.length > 0) {
        const batch = this.#outbox.splice(0, MAX_FRAMES_PER_WRITE);
        try {
          if (this.closed)
            throw new QrwpError("PEER_OFFLINE", "session closed", { peer: this.remoteAddress });
          await this.ctx.beforeSend();
        } catch (err) {
          for (const w of batch) w.reject(asError(err));
          continue;
        }
        // Each envelope alone: one that cannot be encoded or sealed (too large) fails by itself. `seal`
        // checks before it takes a counter, so the frames that were sealed stay consecutive.
        const sealed: { w: (typeof batch)[number]; frame: Uint8Array }[] = [];
        for (const w of batch) {
          try {
            sealed.push({ w, frame: this.session.seal(encodeEnvelope(w.envelope)) });
          } catch (err) {
            w.reject(asError(err));
          }
        }
        if (sealed.length === 0) continue;
        try {
          await this.frames.writeMany(sealed.map((x) => x.frame));
          for (const x of sealed) x.w.resolve();
        } catch (err) {
          // Frames that took counters may not have reached the peer: the session cannot go on.
          const error = new QrwpError(
            "PEER_OFFLINE",
            "session write failed",
            { peer: this.remoteAddress, cause: asError(err).message },
            { cause: err },
          );
          for (const x of sealed) x.w.reject(error);
          this.close();
        }
      }
    } finally {
      this.#writing = false;
    }
  }

  /** Sends a request and resolves with the reply body (an `Error` reply is returned, not thrown). */
  request(body: ChannelMessage, timeoutMs: number): Promise<ChannelMessage> {
    const id = this.#nextId++;
    return new Promise<ChannelMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new QrwpError("TIMEOUT", `no reply from peer within ${timeoutMs} ms`, { peer: this.remoteAddress }),
        );
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.#write({ id, body }).catch((err: unknown) => {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(err instanceof Error ? err : new Error(String(err)));
      });
    });
  }

  #warn(fields: Record<string, unknown>, message: string): void {
    this.ctx.guard.warn(this.remotePeerId, { peer: this.remoteAddress, ...fields }, message);
  }

  async readLoop(): Promise<void> {
    const { guard, log } = this.ctx;
    try {
      for (;;) {
        const idleSignal = this.#idleSignal();
        let frame: Uint8Array;
        try {
          frame = await this.frames.read(idleSignal ? { idleSignal } : {});
        } catch (err) {
          const reason = isQrwpError(err) ? err.details.reason : undefined;
          if (reason === "idle") log.debug({ peer: this.remoteAddress }, "closing an idle session");
          else if (reason !== "closed")
            this.#warn({ err: errorFields(err) }, "dropping session after bad frame");
          break;
        }
        this.lastActiveMs = Date.now();
        guard.touch(this.connection);
        let plaintext: Uint8Array;
        try {
          plaintext = this.session.open(frame);
        } catch (err) {
          // A frame that fails authentication breaks the session's counter sequence: drop the session.
          this.#warn({ err: errorFields(err) }, "dropping session after bad frame");
          break;
        }
        let envelope: Envelope;
        try {
          envelope = decodeEnvelope(plaintext);
        } catch (err) {
          // Authentic but malformed: without a valid id there is nothing to reply to; log and go on.
          this.#warn({ err: errorFields(err) }, "ignored malformed message");
          continue;
        }
        if (envelope.replyTo !== undefined) {
          const pending = this.#pending.get(envelope.replyTo);
          if (pending) {
            clearTimeout(pending.timer);
            this.#pending.delete(envelope.replyTo);
            pending.resolve(envelope.body);
          }
          continue;
        }
        this.#enqueueRequest(envelope);
      }
    } catch (err) {
      log.error({ peer: this.remoteAddress, err: errorFields(err) }, "session read loop failed");
    } finally {
      this.close();
    }
  }

  /**
   * Runs a peer's request after its earlier ones (arrival order), then re-checks protection; a peer with
   * {@link MAX_QUEUED_REQUESTS} waiting is answered RATE_LIMITED at once instead of queueing more.
   */
  #enqueueRequest(envelope: Envelope): void {
    const requestId = envelope.id;
    const weight = messageWeight(envelope.body);
    if (this.#queuedRequests >= MAX_QUEUED_REQUESTS || this.#queuedMessages + weight > MAX_QUEUED_MESSAGES) {
      this.#warn({ type: envelope.body.type }, "too many queued requests; refused");
      const body: ChannelMessage = {
        type: "Error",
        code: "RATE_LIMITED",
        message: "too many requests queued",
      };
      void this.#write({ id: 0, replyTo: requestId, body }).catch(() => undefined);
      return;
    }
    this.#queuedRequests++;
    this.#queuedMessages += weight;
    this.#requestChain = this.#requestChain.then(async () => {
      let reply: ChannelMessage;
      try {
        reply = await this.ctx.handler(
          {
            address: this.remoteAddress,
            mldsaPublicKey: this.session.remote.mldsaPublicKey,
            peerId: this.remotePeerId,
          },
          envelope.body,
        );
      } catch (err) {
        reply = errorReply(err);
        this.#warn({ type: envelope.body.type, err: errorFields(err) }, "refused peer request");
      } finally {
        this.#queuedRequests--;
        this.#queuedMessages -= weight;
      }
      this.refreshProtection();
      await this.#write({ id: 0, replyTo: requestId, body: reply }).catch(() => undefined);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.#clearIdle();
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(
        new QrwpError("PEER_OFFLINE", "session closed before the reply", { peer: this.remoteAddress }),
      );
      this.#pending.delete(id);
    }
    this.stream.abort(new Error("session closed"));
    this.ctx.onClose(this);
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * The `Error` reply for a refused request: a QrwpError's code and message (at most 1,000 characters), else
 * `INTERNAL "internal error"` (nothing of an unexpected error leaves the process). PROTOCOL.md §6.
 */
export function errorReply(err: unknown): ErrorReply {
  if (isQrwpError(err)) return { type: "Error", code: err.code, message: err.message.slice(0, 1000) };
  return { type: "Error", code: "INTERNAL", message: "internal error" };
}

/** Log-safe fields of an error (code and message only, never a stack with secrets). */
export function errorFields(err: unknown): { code?: string; message: string } {
  if (isQrwpError(err)) return { code: err.code, message: err.message };
  return { message: err instanceof Error ? err.message : String(err) };
}

/**
 * Owns one QRWP protocol on a libp2p node: accepts and dials sessions, and sends requests to peers by
 * Ethereum address.
 */
export class SessionTransport {
  /** The libp2p protocol id this transport serves and dials. */
  readonly protocol: string;
  /**
   * Awaited right before any frame (request or reply) is written: what the frame tells the peer must be
   * durable by then (the node runtime makes its store durable here: `NodeStore.syncBarrierSoon`).
   */
  beforeSend: (() => void | Promise<void>) | undefined;
  /** The session that carries our requests, per lower-case address. */
  readonly #sessions = new Map<string, PeerSession>();
  /** Every live session, replaced ones included (they drain, then close when quiet). */
  readonly #live = new Set<PeerSession>();
  readonly #dialing = new Map<string, Promise<PeerSession>>();
  readonly #requestTimeoutMs: number;
  readonly #handshakeTimeoutMs: number;
  readonly #maxPuzzleBits: number;
  readonly #guard: PeerGuard;
  readonly #ownsGuard: boolean;
  readonly #isProtected: (address: string) => boolean;
  #handler: RequestHandler = async () => ({ type: "Error", code: "INTERNAL", message: "not ready" });
  /** Called after every new session with the peer's address and peer id. */
  onSession: (address: string, peerId: string) => void = () => undefined;

  constructor(
    private readonly libp2p: Libp2p,
    private readonly keys: NodeKeys,
    private readonly log: Logger,
    init: SessionTransportInit = {},
  ) {
    this.protocol = init.protocol ?? CHANNEL_PROTOCOL;
    this.#requestTimeoutMs = init.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#handshakeTimeoutMs = init.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.#maxPuzzleBits = init.maxPuzzleDifficultyBits ?? INITIATOR_MAX_PUZZLE_BITS;
    this.#ownsGuard = init.guard === undefined;
    this.#guard = init.guard ?? new PeerGuard(libp2p, log);
    this.#isProtected = init.isProtected ?? (() => false);
  }

  /**
   * Logs a warning caused by the peer `peerId`, rate-limited per peer like the transport's own (the host's
   * `PeerGuard.warn`): for handlers that refuse part of a request without throwing.
   */
  warnPeer(peerId: string, fields: Record<string, unknown>, message: string): void {
    this.#guard.warn(peerId, fields, message);
  }

  /** Sets the function that answers peers' requests (one at a time per session, in arrival order). */
  setHandler(handler: RequestHandler): void {
    this.#handler = handler;
  }

  /** Registers the protocol on the libp2p node; inbound streams run the responder handshake. */
  async start(): Promise<void> {
    if (this.#ownsGuard) this.#guard.start();
    await this.libp2p.handle(
      this.protocol,
      (stream, connection) => {
        this.#accept(stream, connection).catch((err: unknown) => {
          this.#guard.handshakeFailed(connection);
          const host = remoteHost(connection);
          this.#guard.warn(
            `handshake:${host}`,
            { remotePeer: connection.remotePeer.toString(), host, err: errorFields(err) },
            "inbound handshake failed",
          );
          stream.abort(err instanceof Error ? err : new Error(String(err)));
        });
      },
      // One session per peer needs one stream; a few more cover a session being replaced.
      { maxInboundStreams: MAX_INBOUND_STREAMS_PER_CONNECTION },
    );
  }

  /** Unregisters the protocol and closes every session (pending requests fail with PEER_OFFLINE). */
  async stop(): Promise<void> {
    await this.libp2p.unhandle(this.protocol).catch(() => undefined);
    for (const s of [...this.#live]) s.close();
    if (this.#ownsGuard) this.#guard.stop();
  }

  /** True when an authenticated session with `address` is open. */
  isConnected(address: string): boolean {
    return this.#sessions.has(address.toLowerCase());
  }

  /** Addresses of peers with an open session. */
  connectedPeers(): string[] {
    return [...this.#sessions.values()].map((s) => s.remoteAddress);
  }

  /**
   * Responder side: reads `hello`; a peer that is not protected (or made too many handshakes) first gets a
   * puzzle and must send `hello` again with its solution before we do any public-key work.
   */
  async #accept(stream: Stream, connection: Connection): Promise<void> {
    const guard = this.#guard;
    const frames = new FrameStream(stream, MAX_WIRE_FRAME_BYTES, guard.limits.frameTimeoutMs);
    const signal = AbortSignal.timeout(guard.limits.handshakeTimeoutMs);
    const remotePeerId = connection.remotePeer.toString();
    const responder = new HandshakeResponder(this.keys, {
      localPeerId: this.libp2p.peerId.toString(),
      remotePeerId,
    });
    const readHandshake = () => frames.read({ signal, maxFrameBytes: MAX_HANDSHAKE_MESSAGE_BYTES });
    let hello = await readHandshake();
    const difficultyBits = guard.puzzleDifficulty(remotePeerId);
    if (difficultyBits !== null) {
      const release = guard.holdChallenge(() => stream.abort(new Error("evicted while solving the puzzle")));
      try {
        await frames.write(responder.challenge(difficultyBits), { signal });
        hello = await readHandshake();
      } finally {
        release();
      }
    }
    await frames.write(responder.respond(hello), { signal });
    if (difficultyBits !== null) guard.strangerHandshakeDone();
    const finish = await readHandshake();
    const session = responder.complete(finish);
    this.#register(connection, frames, session, stream);
  }

  #register(connection: Connection, frames: FrameStream, session: Session, stream: Stream): PeerSession {
    const key = session.remote.address.toLowerCase();
    const remotePeerId = connection.remotePeer.toString();
    const peer = new PeerSession(connection, frames, session, stream, {
      handler: (from, body) => this.#handler(from, body),
      log: this.log,
      guard: this.#guard,
      isProtected: this.#isProtected,
      retiredIdleMs: this.#requestTimeoutMs,
      beforeSend: () => this.beforeSend?.(),
      onClose: (s) => {
        if (this.#sessions.get(key) === s) this.#sessions.delete(key);
        this.#live.delete(s);
        this.#guard.sessionClosed(connection);
      },
    });
    // The newest session carries our requests from now on; an older one drains its replies and closes
    // once quiet (both sides may have dialed at once and picked different ones: neither is cut short).
    this.#sessions.get(key)?.retire();
    this.#sessions.set(key, peer);
    this.#live.add(peer);
    this.#guard.sessionOpened(connection);
    this.log.info(
      { peer: session.remote.address, peerId: remotePeerId, protocol: this.protocol },
      "session established",
    );
    this.#evictStrangers();
    void peer.readLoop();
    this.onSession(session.remote.address, remotePeerId);
    return peer;
  }

  /** Beyond `maxStrangerSessions` (replaced ones count too), closes the least recently active strangers'. */
  #evictStrangers(): void {
    const strangers = [...this.#live].filter((s) => !s.closed && !s.isProtected);
    const excess = strangers.length - this.#guard.limits.maxStrangerSessions;
    if (excess <= 0) return;
    strangers.sort((a, b) => a.lastActiveMs - b.lastActiveMs);
    for (const s of strangers.slice(0, excess)) {
      this.log.debug({ peer: s.remoteAddress }, "closing the least recently active stranger's session");
      s.close();
    }
  }

  /**
   * Returns the open session with `address`, dialing `multiaddrs` (which must end in /p2p/<peerId> or be
   * accompanied by `peerId`) if there is none.
   * @throws QrwpError("PEER_OFFLINE") when no address answers; ("HANDSHAKE_FAILED") when the peer is not `address`.
   */
  async connect(address: string, target: { peerId?: string; multiaddrs: string[] }): Promise<void> {
    await this.#connect(address, target);
  }

  /**
   * Dials a peer known only by its multiaddr(s) (which must end in /p2p/<peerId>), runs the handshake and
   * returns the address the peer proved (e.g. a watchtower). Reuses an open session with that peer id.
   * @throws QrwpError("PEER_OFFLINE") when no address answers; ("HANDSHAKE_FAILED") on a failed handshake.
   */
  async connectByMultiaddr(multiaddrs: string[]): Promise<string> {
    for (const s of this.#sessions.values()) {
      if (!s.closed && multiaddrs.some((m) => m.endsWith(`/p2p/${s.remotePeerId}`))) return s.remoteAddress;
    }
    const session = await this.#dial(undefined, { multiaddrs });
    return session.remoteAddress;
  }

  async #connect(address: string, target: { peerId?: string; multiaddrs: string[] }): Promise<PeerSession> {
    const key = address.toLowerCase();
    const existing = this.#sessions.get(key);
    if (existing && !existing.closed) return existing;
    const inflight = this.#dialing.get(key);
    if (inflight) return inflight;
    const attempt = this.#dial(address, target).finally(() => this.#dialing.delete(key));
    this.#dialing.set(key, attempt);
    return attempt;
  }

  async #dial(
    address: string | undefined,
    target: { peerId?: string; multiaddrs: string[] },
  ): Promise<PeerSession> {
    const label = address ?? target.multiaddrs[0] ?? "peer";
    let connection: Connection | undefined;
    let lastError: unknown;
    const signal = AbortSignal.timeout(this.#handshakeTimeoutMs);
    if (target.peerId && target.multiaddrs.length > 0) {
      const peerId = peerIdFromString(target.peerId);
      await this.libp2p.peerStore.merge(peerId, { multiaddrs: target.multiaddrs.map((m) => multiaddr(m)) });
      try {
        connection = await this.libp2p.dial(peerId, { signal });
      } catch (err) {
        lastError = err;
      }
    } else {
      for (const addr of target.multiaddrs) {
        try {
          connection = await this.libp2p.dial(multiaddr(addr), { signal });
          break;
        } catch (err) {
          lastError = err;
        }
      }
    }
    if (!connection) {
      throw new QrwpError("PEER_OFFLINE", `cannot reach peer ${label}`, {
        peer: label,
        cause: lastError instanceof Error ? lastError.message : undefined,
      });
    }
    const stream = await connection.newStream(this.protocol, { signal });
    const frames = new FrameStream(stream, MAX_WIRE_FRAME_BYTES, this.#guard.limits.frameTimeoutMs);
    try {
      const initiator = new HandshakeInitiator(this.keys, {
        localPeerId: this.libp2p.peerId.toString(),
        remotePeerId: connection.remotePeer.toString(),
        ...(address !== undefined ? { expectedRemoteAddress: address } : {}),
      });
      const session = await initiateHandshake(frames, initiator, {
        signal,
        maxPuzzleDifficultyBits: this.#maxPuzzleBits,
      });
      return this.#register(connection, frames, session, stream);
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
      if (isQrwpError(err)) throw err;
      throw new QrwpError("HANDSHAKE_FAILED", `handshake with ${label} failed`, {
        peer: label,
        cause: err instanceof Error ? err.message : String(err),
      });
    }
  }

  /**
   * Sends `body` to `address` and returns the reply. Uses the open session or dials `target`.
   * @throws QrwpError PEER_OFFLINE | HANDSHAKE_FAILED | TIMEOUT. An `Error` reply is returned as a message.
   */
  async request(
    address: string,
    body: ChannelMessage,
    target: { peerId?: string; multiaddrs: string[] } | null,
    timeoutMs = this.#requestTimeoutMs,
  ): Promise<ChannelMessage> {
    const key = address.toLowerCase();
    let session = this.#sessions.get(key);
    if (!session || session.closed) {
      if (!target)
        throw new QrwpError("PEER_OFFLINE", `no session with ${address} and no known address`, {
          peer: address,
        });
      session = await this.#connect(address, target);
    }
    return session.request(body, timeoutMs);
  }
}
