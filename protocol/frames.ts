/**
 * The frames of an established channel-protocol session (the handshake in `session.ts` builds it):
 * `counter (8 bytes, big-endian) || ChaCha20-Poly1305(key, nonce = 0x00000000 || counter, aad = counter)`
 * (RFC 8439), one counter per direction, only the next expected counter accepted, automatic rekeying every
 * `REKEY_AFTER_FRAMES` frames with HKDF-SHA256(IKM = key, salt = th3, info = "qrwp-channel-v1/rekey").
 */
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concatBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import {
  FRAME_HEADER_BYTES,
  FRAME_TAG_BYTES,
  MAX_FRAME_BYTES,
  MAX_FRAME_COUNTER,
  REKEY_AFTER_FRAMES,
} from "./constants.js";
import { QrwpError, assertArgument } from "./errors.js";
import { assertBytes } from "./validation.js";

/** A remote node's authenticated identity. */
export interface PeerIdentity {
  /** EIP-55 checksummed Ethereum address (proved by a secp256k1 transcript signature). */
  address: string;
  /** ML-DSA-65 public key, 1952 bytes (proved by an ML-DSA transcript signature). */
  mldsaPublicKey: Uint8Array;
}

const label = (s: string): Uint8Array => utf8ToBytes(s);

/** What a {@link Session} is built from (by the handshake classes; not normally constructed directly). */
export interface SessionInit {
  remote: PeerIdentity;
  /** th3, 32 bytes. */
  transcriptHash: Uint8Array;
  /** 32-byte ChaCha20-Poly1305 key for frames we send. */
  sendKey: Uint8Array;
  /** 32-byte ChaCha20-Poly1305 key for frames we receive. */
  receiveKey: Uint8Array;
  /** Frames per key epoch (default 2^32). */
  rekeyAfterFrames?: bigint;
}

interface Direction {
  key: Uint8Array;
  counter: bigint;
}

/**
 * An established channel-protocol session: the authenticated remote identity and the two frame
 * directions. `seal`/`open` are synchronous and must be called in stream order (one writer, one reader).
 */
export class Session {
  /** The remote's authenticated identity. */
  readonly remote: PeerIdentity;
  /** th3: SHA-256 over the whole handshake, 32 bytes; identical on both sides (usable for channel binding). */
  readonly transcriptHash: Uint8Array;
  readonly #send: Direction;
  readonly #receive: Direction;
  readonly #rekeyAfterFrames: bigint;

  constructor(init: SessionInit) {
    assertBytes(init.sendKey, "sendKey", 32);
    assertBytes(init.receiveKey, "receiveKey", 32);
    assertBytes(init.transcriptHash, "transcriptHash", 32);
    this.remote = {
      address: init.remote.address,
      mldsaPublicKey: Uint8Array.from(init.remote.mldsaPublicKey),
    };
    this.transcriptHash = Uint8Array.from(init.transcriptHash);
    this.#send = { key: Uint8Array.from(init.sendKey), counter: 0n };
    this.#receive = { key: Uint8Array.from(init.receiveKey), counter: 0n };
    this.#rekeyAfterFrames = init.rekeyAfterFrames ?? REKEY_AFTER_FRAMES;
  }

  /** Frames sealed so far (= the counter of the next frame to send). */
  get sentFrames(): bigint {
    return this.#send.counter;
  }

  /** Frames opened so far (= the counter of the next frame accepted). */
  get receivedFrames(): bigint {
    return this.#receive.counter;
  }

  #keyFor(direction: Direction): Uint8Array {
    if (direction.counter > 0n && direction.counter % this.#rekeyAfterFrames === 0n) {
      return hkdf(sha256, direction.key, this.transcriptHash, label("qrwp-channel-v1/rekey"), 32);
    }
    return direction.key;
  }

  /**
   * Encrypts one frame: `counter (8 bytes BE) || ciphertext || tag (16 bytes)` (RFC 8439 AEAD).
   * @param plaintext - at most `MAX_FRAME_BYTES` (1 MiB).
   * @returns the frame, 24 + plaintext.length bytes.
   * @throws QrwpError INVALID_ARGUMENT on a non-bytes or oversized plaintext; FRAME_REJECTED if the 64-bit
   *   counter is exhausted (unreachable in practice).
   */
  seal(plaintext: Uint8Array): Uint8Array {
    assertBytes(plaintext, "plaintext");
    assertArgument(
      plaintext.length <= MAX_FRAME_BYTES,
      "plaintext exceeds MAX_FRAME_BYTES",
      "plaintext",
      plaintext.length,
    );
    const counter = this.#send.counter;
    if (counter > MAX_FRAME_COUNTER)
      throw new QrwpError("FRAME_REJECTED", "send counter exhausted", { counter });
    const key = this.#keyFor(this.#send);
    const header = counterHeader(counter);
    const sealed = chacha20poly1305(key, frameNonce(header), header).encrypt(plaintext);
    if (key !== this.#send.key) {
      this.#send.key.fill(0);
      this.#send.key = key;
    }
    this.#send.counter = counter + 1n;
    return concatBytes(header, sealed);
  }

  /**
   * Authenticates and decrypts one frame. Only the next expected counter is accepted.
   * @returns the plaintext.
   * @throws QrwpError FRAME_REJECTED on a short, oversized, replayed, reordered, truncated or tampered frame
   *   (`details.reason`); the session state is unchanged, so the correct frame is still accepted afterwards.
   */
  open(frame: Uint8Array): Uint8Array {
    if (!(frame instanceof Uint8Array)) throw frameRejected("frame must be a Uint8Array", "type");
    if (frame.length < FRAME_HEADER_BYTES + FRAME_TAG_BYTES)
      throw frameRejected("frame is too short", "length");
    if (frame.length > FRAME_HEADER_BYTES + MAX_FRAME_BYTES + FRAME_TAG_BYTES) {
      throw frameRejected("frame is too long", "length");
    }
    const header = frame.subarray(0, FRAME_HEADER_BYTES);
    const counter = new DataView(header.buffer, header.byteOffset, FRAME_HEADER_BYTES).getBigUint64(0, false);
    if (counter !== this.#receive.counter) {
      throw frameRejected("unexpected frame counter (replayed, reordered or dropped frame)", "counter", {
        expected: this.#receive.counter.toString(),
        received: counter.toString(),
      });
    }
    const key = this.#keyFor(this.#receive);
    let plaintext: Uint8Array;
    try {
      plaintext = chacha20poly1305(key, frameNonce(header), header).decrypt(
        frame.subarray(FRAME_HEADER_BYTES),
      );
    } catch (cause) {
      if (key !== this.#receive.key) key.fill(0);
      throw frameRejected("frame failed authentication", "tag", {}, cause);
    }
    if (key !== this.#receive.key) {
      this.#receive.key.fill(0);
      this.#receive.key = key;
    }
    this.#receive.counter = counter + 1n;
    return plaintext;
  }
}

function counterHeader(counter: bigint): Uint8Array {
  const header = new Uint8Array(FRAME_HEADER_BYTES);
  new DataView(header.buffer).setBigUint64(0, counter, false);
  return header;
}

function frameNonce(header: Uint8Array): Uint8Array {
  const nonce = new Uint8Array(12);
  nonce.set(header, 4);
  return nonce;
}

/**
 * A `FRAME_REJECTED` error with `details.reason` (e.g. "counter", "tag", "length", "idle", "stalled") and any
 * further details; `cause` is kept on the error, not serialised.
 */
export function frameRejected(
  message: string,
  reason: string,
  extra: Record<string, unknown> = {},
  cause?: unknown,
): QrwpError {
  return new QrwpError(
    "FRAME_REJECTED",
    message,
    { reason, ...extra },
    cause === undefined ? undefined : { cause },
  );
}
