/**
 * A stranger that attacks a QRWP process over real libp2p on 127.0.0.1, for the abuse tests and
 * `bench:abuse`: forged handshake hellos (a reused X-Wing key, a random address and ML-DSA key: nothing
 * signed), idle connections held open, sessions completed with fresh identities (puzzle solved honestly),
 * frames that stall half-way and junk frames. It listens on a loopback port only because libp2p dials from
 * a host with a TCP listener; it serves no protocol.
 */
import { randomBytes } from "node:crypto";
import { createLibp2p, type Libp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { Connection, Stream } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import { ml_kem768_x25519 } from "@noble/post-quantum/hybrid.js";
import { Encoder } from "cbor-x";
import {
  CHANNEL_PROTOCOL,
  HANDSHAKE_VERSION,
  HandshakeInitiator,
  MAX_HANDSHAKE_MESSAGE_BYTES,
  encodeEnvelope,
  generateNodeKeys,
  type ChannelMessage,
  type NodeKeys,
  type Session,
} from "../protocol/index.js";
import { FrameStream } from "../host/frame-stream.js";
import { initiateHandshake } from "../host/session-transport.js";

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

/** A libp2p client host for attacks (tcp, noise, yamux; no services; libp2p's own caps lifted). */
export async function startAttackerHost(): Promise<Libp2p> {
  return createLibp2p({
    privateKey: await generateKeyPair("Ed25519"),
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: { maxConnections: 10_000, maxParallelDials: 1_000, maxDialQueueLength: 10_000 },
  });
}

/** One X-Wing public key, reused by every forged hello (the attacker never decapsulates). */
const reusedKemPublicKey = ml_kem768_x25519.keygen().publicKey;

/**
 * A `hello` claiming a random address and ML-DSA key, with the reused X-Wing key: well-formed, so a responder
 * without a puzzle would encapsulate and sign for it; costs the attacker a CBOR encoding.
 */
export function forgedHello(attackerPeerId: string, targetPeerId: string): Uint8Array {
  return cbor.encode({
    t: 1,
    v: HANDSHAKE_VERSION,
    nonce: randomBytes(32),
    kemPublicKey: reusedKemPublicKey,
    address: randomBytes(20),
    mldsaPublicKey: randomBytes(1952),
    initiatorPeerId: attackerPeerId,
    responderPeerId: targetPeerId,
  }) as Uint8Array;
}

/** Dials `target` (a multiaddr ending in /p2p/<peerId>) with a new connection even if one is open. */
export async function dialNew(host: Libp2p, target: string): Promise<Connection> {
  // One /p2p/<peerId> at the end, however many the caller's string carries.
  const parts = target.split("/p2p/");
  const address = `${parts[0]}/p2p/${parts.at(-1)}`;
  return host.dial(multiaddr(address), { force: true, signal: AbortSignal.timeout(10_000) });
}

/**
 * Opens a stream of `protocol` on `connection`, sends a forged hello and waits (up to `timeoutMs`) for the
 * first answer, then resets the stream.
 * @returns the answer's bytes, or null when none came (stream reset, refused or timed out).
 */
export async function sendForgedHello(
  host: Libp2p,
  connection: Connection,
  options: { protocol?: string; timeoutMs?: number } = {},
): Promise<Uint8Array | null> {
  let stream: Stream | undefined;
  try {
    const signal = AbortSignal.timeout(options.timeoutMs ?? 5_000);
    stream = await connection.newStream(options.protocol ?? CHANNEL_PROTOCOL, { signal });
    const frames = new FrameStream(stream, MAX_HANDSHAKE_MESSAGE_BYTES, 10_000);
    await frames.write(forgedHello(host.peerId.toString(), connection.remotePeer.toString()), { signal });
    return await frames.read({ signal });
  } catch {
    return null;
  } finally {
    stream?.abort(new Error("done"));
  }
}

/** A completed session of a fresh identity with a target (puzzle solved), on its own connection. */
export interface StrangerSession {
  keys: NodeKeys;
  connection: Connection;
  stream: Stream;
  frames: FrameStream;
  session: Session;
  /** Seals `body` as request `id` and writes it. */
  send(body: ChannelMessage, id?: number): Promise<void>;
  /** Reads, opens and returns the next frame's plaintext (throws when the stream closes). */
  receive(timeoutMs?: number): Promise<Uint8Array>;
}

/**
 * Runs the whole initiator handshake (solving the responder's puzzle if asked) as a fresh identity over a new
 * connection: what any stranger may do.
 */
export async function openStrangerSession(
  host: Libp2p,
  target: string,
  options: { protocol?: string; keys?: NodeKeys } = {},
): Promise<StrangerSession> {
  const keys = options.keys ?? generateNodeKeys();
  const connection = await dialNew(host, target);
  const signal = AbortSignal.timeout(30_000);
  const stream = await connection.newStream(options.protocol ?? CHANNEL_PROTOCOL, { signal });
  const frames = new FrameStream(stream, 1024 * 1024 + 64, 10_000);
  const initiator = new HandshakeInitiator(keys, {
    localPeerId: host.peerId.toString(),
    remotePeerId: connection.remotePeer.toString(),
  });
  const session = await initiateHandshake(frames, initiator, { signal });
  return {
    keys,
    connection,
    stream,
    frames,
    session,
    send: (body, id = 1) => frames.write(session.seal(encodeEnvelope({ id, body }))),
    receive: async (timeoutMs = 15_000) =>
      session.open(await frames.read({ signal: AbortSignal.timeout(timeoutMs) })),
  };
}

/** Resolves when `stream` is closed or reset by the other side (or after `timeoutMs`: false). */
export async function streamEnds(stream: Stream, timeoutMs: number): Promise<boolean> {
  if (stream.status !== "open") return true;
  return new Promise<boolean>((done) => {
    const timer = setTimeout(() => done(false), timeoutMs);
    stream.addEventListener("close", () => {
      clearTimeout(timer);
      done(true);
    });
  });
}
