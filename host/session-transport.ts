/**
 * A session transport for one QRWP libp2p protocol (`/qrwp/channel/1.0.0` between channel nodes,
 * `/qrwp/watchtower/1.0.0` between a node and a watchtower): one long-lived libp2p stream per peer, opened by
 * whoever needs it first, carrying (1) the post-quantum session handshake of `protocol/session.ts` (X-Wing + HKDF, transcript
 * signed with ML-DSA-65 and secp256k1) and then (2) ChaCha20-Poly1305 frames, each holding one
 * {@link Envelope}. Frames are length-prefixed with libp2p's `lpStream`.
 *
 * Requests from a peer are handled one at a time in arrival order (so balance proofs are processed in nonce
 * order); replies are matched to requests by id and never wait behind a request handler.
 */
import type { Libp2p, Stream, Connection } from "@libp2p/interface";
import { lpStream, type LengthPrefixedStream } from "@libp2p/utils";
import { multiaddr } from "@multiformats/multiaddr";
import { peerIdFromString } from "@libp2p/peer-id";
import type { Logger } from "pino";
import {
  CHANNEL_PROTOCOL,
  MAX_FRAME_BYTES,
  HandshakeInitiator,
  HandshakeResponder,
  QrwpError,
  decodeEnvelope,
  encodeEnvelope,
  isQrwpError,
  type ChannelMessage,
  type Envelope,
  type NodeKeys,
  type Session,
} from "../protocol/index.js";

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
  /** Timeout of the handshake (ms). */
  handshakeTimeoutMs?: number;
}

const DEFAULT_REQUEST_TIMEOUT_MS = 15_000;
/** A sealed frame is the plaintext plus the 8-byte counter header and the 16-byte Poly1305 tag. */
const MAX_WIRE_FRAME_BYTES = MAX_FRAME_BYTES + 64;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

interface Pending {
  resolve(body: ChannelMessage): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** One authenticated, encrypted session with a peer over one libp2p stream. */
class PeerSession {
  readonly remoteAddress: string;
  closed = false;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #writeChain: Promise<void> = Promise.resolve();
  #requestChain: Promise<void> = Promise.resolve();

  constructor(
    readonly remotePeerId: string,
    private readonly lp: LengthPrefixedStream<Stream>,
    private readonly session: Session,
    private readonly stream: Stream,
    private readonly handler: RequestHandler,
    private readonly log: Logger,
    private readonly onClose: (s: PeerSession) => void,
  ) {
    this.remoteAddress = session.remote.address;
  }

  /** Seals and writes an envelope; writes happen in call order so frame counters stay in sequence. */
  #write(envelope: Envelope): Promise<void> {
    const next = this.#writeChain.then(async () => {
      if (this.closed) throw new QrwpError("PEER_OFFLINE", "session closed", { peer: this.remoteAddress });
      await this.lp.write(this.session.seal(encodeEnvelope(envelope)));
    });
    this.#writeChain = next.catch(() => undefined);
    return next;
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

  async readLoop(): Promise<void> {
    try {
      for (;;) {
        const frame = await this.lp.read();
        let plaintext: Uint8Array;
        try {
          plaintext = this.session.open(frame.subarray());
        } catch (err) {
          // A frame that fails authentication breaks the session's counter sequence: drop the session.
          this.log.warn(
            { peer: this.remoteAddress, err: errorFields(err) },
            "dropping session after bad frame",
          );
          break;
        }
        let envelope: Envelope;
        try {
          envelope = decodeEnvelope(plaintext);
        } catch (err) {
          // Authentic but malformed: without a valid id there is nothing to reply to; log and go on.
          this.log.warn({ peer: this.remoteAddress, err: errorFields(err) }, "ignored malformed message");
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
        const requestId = envelope.id;
        this.#requestChain = this.#requestChain.then(async () => {
          let reply: ChannelMessage;
          try {
            reply = await this.handler(
              {
                address: this.remoteAddress,
                mldsaPublicKey: this.session.remote.mldsaPublicKey,
                peerId: this.remotePeerId,
              },
              envelope.body,
            );
          } catch (err) {
            reply = errorReply(err);
            this.log.warn(
              { peer: this.remoteAddress, type: envelope.body.type, err: errorFields(err) },
              "refused peer request",
            );
          }
          await this.#write({ id: 0, replyTo: requestId, body: reply }).catch(() => undefined);
        });
      }
    } catch {
      // stream ended or reset
    } finally {
      this.close();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(
        new QrwpError("PEER_OFFLINE", "session closed before the reply", { peer: this.remoteAddress }),
      );
      this.#pending.delete(id);
    }
    this.stream.abort(new Error("session closed"));
    this.onClose(this);
  }
}

function errorReply(err: unknown): ChannelMessage {
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
  readonly #sessions = new Map<string, PeerSession>();
  readonly #dialing = new Map<string, Promise<PeerSession>>();
  readonly #requestTimeoutMs: number;
  readonly #handshakeTimeoutMs: number;
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
  }

  /** Sets the function that answers peers' requests (one at a time per session, in arrival order). */
  setHandler(handler: RequestHandler): void {
    this.#handler = handler;
  }

  /** Registers the protocol on the libp2p node; inbound streams run the responder handshake. */
  async start(): Promise<void> {
    await this.libp2p.handle(this.protocol, (stream, connection) => {
      this.#accept(stream, connection).catch((err: unknown) => {
        this.log.warn(
          { remotePeer: connection.remotePeer.toString(), err: errorFields(err) },
          "inbound handshake failed",
        );
        stream.abort(err instanceof Error ? err : new Error(String(err)));
      });
    });
  }

  /** Unregisters the protocol and closes every session (pending requests fail with PEER_OFFLINE). */
  async stop(): Promise<void> {
    await this.libp2p.unhandle(this.protocol).catch(() => undefined);
    for (const s of [...this.#sessions.values()]) s.close();
  }

  /** True when an authenticated session with `address` is open. */
  isConnected(address: string): boolean {
    return this.#sessions.has(address.toLowerCase());
  }

  /** Addresses of peers with an open session. */
  connectedPeers(): string[] {
    return [...this.#sessions.values()].map((s) => s.remoteAddress);
  }

  async #accept(stream: Stream, connection: Connection): Promise<void> {
    const lp = lpStream(stream, { maxDataLength: MAX_WIRE_FRAME_BYTES });
    const signal = AbortSignal.timeout(this.#handshakeTimeoutMs);
    const responder = new HandshakeResponder(this.keys, {
      localPeerId: this.libp2p.peerId.toString(),
      remotePeerId: connection.remotePeer.toString(),
    });
    const hello = await lp.read({ signal });
    await lp.write(responder.respond(hello.subarray()), { signal });
    const finish = await lp.read({ signal });
    const session = responder.complete(finish.subarray());
    this.#register(connection.remotePeer.toString(), lp, session, stream);
  }

  #register(
    remotePeerId: string,
    lp: LengthPrefixedStream<Stream>,
    session: Session,
    stream: Stream,
  ): PeerSession {
    const key = session.remote.address.toLowerCase();
    const peer = new PeerSession(
      remotePeerId,
      lp,
      session,
      stream,
      (from, body) => this.#handler(from, body),
      this.log,
      (s) => {
        if (this.#sessions.get(key) === s) this.#sessions.delete(key);
      },
    );
    // The newest session carries our requests from now on; an older one drains its replies and ends.
    this.#sessions.set(key, peer);
    this.log.info(
      { peer: session.remote.address, peerId: remotePeerId, protocol: this.protocol },
      "session established",
    );
    void peer.readLoop();
    this.onSession(session.remote.address, remotePeerId);
    return peer;
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
    const lp = lpStream(stream, { maxDataLength: MAX_WIRE_FRAME_BYTES });
    try {
      const initiator = new HandshakeInitiator(this.keys, {
        localPeerId: this.libp2p.peerId.toString(),
        remotePeerId: connection.remotePeer.toString(),
        ...(address !== undefined ? { expectedRemoteAddress: address } : {}),
      });
      await lp.write(initiator.hello(), { signal });
      const reply = await lp.read({ signal });
      const { finish, session } = initiator.finish(reply.subarray());
      await lp.write(finish, { signal });
      return this.#register(connection.remotePeer.toString(), lp, session, stream);
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
