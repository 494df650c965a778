/**
 * The channel-protocol session: a 3-message, mutually authenticated, hybrid post-quantum key exchange run
 * over an already Noise-secured libp2p stream, then ChaCha20-Poly1305 frames.
 *
 * Handshake (transport-agnostic; the caller moves the bytes):
 * 1. `hello`  I -> R: version, 32-byte nonce, ephemeral X-Wing public key (`ml_kem768_x25519`, X-Wing draft:
 *    ML-KEM-768 per FIPS 203 + X25519), I's identity {address, ML-DSA-65 key}, both libp2p peer ids.
 * 2. `reply`  R -> I: `{ body, mldsaSignature, ecdsaSignature }` where body = R's nonce, the X-Wing
 *    ciphertext to I's ephemeral key and R's identity; R signs
 *    `th2 = SHA-256("qrwp-hs-v1/th2" || len(hello) || hello || len(body) || body)`.
 * 3. `finish` I -> R: I's signatures over
 *    `th3 = SHA-256("qrwp-hs-v1/th3" || th2 || len(reply) || reply)` (the full transcript).
 * Client puzzle (version 2): before any public-key work, R may answer a `hello` with `challenge` {32 random
 * bytes, difficulty in bits} (see `handshake-puzzle.ts`); I then sends its `hello` again with a `solution` and
 * the handshake goes on from step 1 with that `hello` (the one in the transcript). R does this for initiators
 * it does not know (strangers), so a stranger pays for every handshake it makes R do.
 * Each side signs `m = SHA-256("qrwp-hs-v1/<role>" || th)` with ML-DSA-65 (FIPS 204, context "qrwp-hs-v1")
 * and with secp256k1 (r||s||v; the recovered address must equal the claimed address). Lengths are 4-byte
 * big-endian. Session keys: HKDF-SHA256 (RFC 5869), IKM = X-Wing shared secret, salt = th3,
 * info = "qrwp-channel-v1/keys", 64 bytes = initiator->responder key || responder->initiator key.
 *
 * Frames (`frames.ts`): `counter (8 bytes, big-endian) || ChaCha20-Poly1305(key, nonce = 0x00000000 || counter, aad = counter)`
 * (RFC 8439). The receiver accepts only the next expected counter (the transport is a reliable, ordered
 * stream), so tampered, replayed, reordered and truncated frames are rejected with FRAME_REJECTED; a rejected
 * frame does not advance the state. Rekeying is automatic and needs no message: whenever a direction's counter
 * reaches a multiple of `REKEY_AFTER_FRAMES` (2^32), both sides replace that direction's key with
 * HKDF-SHA256(IKM = key, salt = th3, info = "qrwp-channel-v1/rekey") before using that counter.
 */
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, concatBytes, hexToBytes, randomBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { ml_kem768_x25519 } from "@noble/post-quantum/hybrid.js";
import { Decoder, Encoder } from "cbor-x";
import { z } from "zod";
import {
  HANDSHAKE_NONCE_BYTES,
  HANDSHAKE_VERSION,
  MAX_HANDSHAKE_MESSAGE_BYTES,
  MLDSA_CONTEXT_HANDSHAKE,
  REKEY_AFTER_FRAMES,
} from "./constants.js";
import { QrwpError, assertArgument, isQrwpError } from "./errors.js";
import type { NodeKeys } from "./keys.js";
import {
  ECDSA_SIGNATURE_BYTES,
  MLDSA65_PUBLIC_KEY_BYTES,
  MLDSA65_SIGNATURE_BYTES,
  mldsaSign,
  mldsaVerify,
  recoverDigestSigner,
  signDigest,
} from "./keys.js";
import { assertBytes, normalizeAddress } from "./validation.js";
import { Session, type PeerIdentity } from "./frames.js";
import {
  MAX_PUZZLE_DIFFICULTY_BITS,
  PUZZLE_CHALLENGE_BYTES,
  PUZZLE_SOLUTION_BYTES,
  puzzleSolved,
} from "./handshake-puzzle.js";

/** Options of both handshake roles. */
export interface HandshakeOptions {
  /** Our libp2p peer id string (channel binding to the Noise session); 1..256 chars. */
  localPeerId: string;
  /** The remote libp2p peer id string as authenticated by Noise; 1..256 chars. */
  remotePeerId: string;
  /** If set, the remote must prove this address (any EIP-55-valid spelling). */
  expectedRemoteAddress?: string;
  /** If set, the remote must present exactly this ML-DSA-65 public key. */
  expectedRemoteMldsaPublicKey?: Uint8Array;
  /** Frames per key epoch; defaults to `REKEY_AFTER_FRAMES`. Lower only in tests. Both sides must agree. */
  rekeyAfterFrames?: bigint;
}

const XWING_PUBLIC_KEY_BYTES = 1216;
const XWING_CIPHERTEXT_BYTES = 1120;
const ADDRESS_BYTES = 20;
const MAX_PEER_ID_CHARS = 256;
const MSG_HELLO = 1;
const MSG_REPLY = 2;
const MSG_FINISH = 3;
const MSG_CHALLENGE = 4;

/** A responder's puzzle challenge, as the initiator reads it. */
export interface HandshakeChallenge {
  /** 32 random bytes, used once. */
  challenge: Uint8Array;
  /** Leading zero bits the solution's hash must have (0..{@link MAX_PUZZLE_DIFFICULTY_BITS}). */
  difficultyBits: number;
}

const encoder = new Encoder({
  useRecords: false,
  mapsAsObjects: true,
  tagUint8Array: false,
});
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

const bytes = (length: number) =>
  z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.length === length, {
    message: `expected ${length} bytes`,
  });
const peerId = z.string().min(1).max(MAX_PEER_ID_CHARS);

const helloSchema = z.strictObject({
  t: z.literal(MSG_HELLO),
  v: z.number().int(),
  nonce: bytes(HANDSHAKE_NONCE_BYTES),
  kemPublicKey: bytes(XWING_PUBLIC_KEY_BYTES),
  address: bytes(ADDRESS_BYTES),
  mldsaPublicKey: bytes(MLDSA65_PUBLIC_KEY_BYTES),
  initiatorPeerId: peerId,
  responderPeerId: peerId,
  solution: bytes(PUZZLE_SOLUTION_BYTES).optional(),
});
const challengeSchema = z.strictObject({
  t: z.literal(MSG_CHALLENGE),
  v: z.number().int(),
  challenge: bytes(PUZZLE_CHALLENGE_BYTES),
  difficultyBits: z.number().int().min(0).max(MAX_PUZZLE_DIFFICULTY_BITS),
});
const replyBodySchema = z.strictObject({
  v: z.number().int(),
  nonce: bytes(HANDSHAKE_NONCE_BYTES),
  kemCipherText: bytes(XWING_CIPHERTEXT_BYTES),
  address: bytes(ADDRESS_BYTES),
  mldsaPublicKey: bytes(MLDSA65_PUBLIC_KEY_BYTES),
});
const replySchema = z.strictObject({
  t: z.literal(MSG_REPLY),
  body: z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.length <= MAX_HANDSHAKE_MESSAGE_BYTES),
  mldsaSignature: bytes(MLDSA65_SIGNATURE_BYTES),
  ecdsaSignature: bytes(ECDSA_SIGNATURE_BYTES),
});
const finishSchema = z.strictObject({
  t: z.literal(MSG_FINISH),
  mldsaSignature: bytes(MLDSA65_SIGNATURE_BYTES),
  ecdsaSignature: bytes(ECDSA_SIGNATURE_BYTES),
});

function fail(message: string, details: Record<string, unknown> = {}, cause?: unknown): never {
  throw new QrwpError("HANDSHAKE_FAILED", message, details, cause === undefined ? undefined : { cause });
}

/** Decodes one CBOR handshake message and validates it; any problem becomes HANDSHAKE_FAILED. */
function decodeMessage<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  if (!(input instanceof Uint8Array)) fail(`${what} must be a Uint8Array`, { message: what });
  if (input.length === 0 || input.length > MAX_HANDSHAKE_MESSAGE_BYTES) {
    fail(`${what} has an invalid size`, { message: what, size: input.length });
  }
  let value: unknown;
  try {
    value = decoder.decode(input);
  } catch (cause) {
    fail(`${what} is not valid CBOR`, { message: what }, cause);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    fail(`${what} is malformed`, {
      message: what,
      issues: parsed.error.issues.map((i) => i.path.join(".")).join(","),
    });
  }
  return parsed.data;
}

function u32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, false);
  return out;
}

const label = (s: string): Uint8Array => utf8ToBytes(s);

function transcript2(hello: Uint8Array, body: Uint8Array): Uint8Array {
  return sha256(concatBytes(label("qrwp-hs-v1/th2"), u32(hello.length), hello, u32(body.length), body));
}

function transcript3(th2: Uint8Array, reply: Uint8Array): Uint8Array {
  return sha256(concatBytes(label("qrwp-hs-v1/th3"), th2, u32(reply.length), reply));
}

function signedMessage(role: "initiator" | "responder", th: Uint8Array): Uint8Array {
  return sha256(concatBytes(label(`qrwp-hs-v1/${role}`), th));
}

function signTranscript(
  keys: NodeKeys,
  m: Uint8Array,
): { mldsaSignature: Uint8Array; ecdsaSignature: Uint8Array } {
  return {
    mldsaSignature: mldsaSign(m, keys.mldsaSecretKey, MLDSA_CONTEXT_HANDSHAKE),
    ecdsaSignature: hexToBytes(signDigest(m, keys.secp256k1PrivateKey).slice(2)),
  };
}

function verifyTranscript(
  identity: PeerIdentity,
  m: Uint8Array,
  sigs: { mldsaSignature: Uint8Array; ecdsaSignature: Uint8Array },
  role: string,
): void {
  if (!mldsaVerify(sigs.mldsaSignature, m, identity.mldsaPublicKey, MLDSA_CONTEXT_HANDSHAKE)) {
    fail(`${role} ML-DSA-65 transcript signature is invalid`, { field: "mldsaSignature" });
  }
  let recovered: string;
  try {
    recovered = recoverDigestSigner(m, `0x${bytesToHex(sigs.ecdsaSignature)}`);
  } catch (cause) {
    fail(`${role} secp256k1 transcript signature is malformed`, { field: "ecdsaSignature" }, cause);
  }
  if (recovered !== identity.address) {
    fail(`${role} secp256k1 transcript signature does not match its address`, {
      field: "ecdsaSignature",
      claimed: identity.address,
      recovered,
    });
  }
}

function identityFrom(address: Uint8Array, mldsaPublicKey: Uint8Array): PeerIdentity {
  return {
    address: normalizeAddress(`0x${bytesToHex(address)}`, "address"),
    mldsaPublicKey: Uint8Array.from(mldsaPublicKey),
  };
}

interface ResolvedOptions {
  localPeerId: string;
  remotePeerId: string;
  expectedRemoteAddress?: string;
  expectedRemoteMldsaPublicKey?: Uint8Array;
  rekeyAfterFrames: bigint;
}

/** Key sets already checked (a responder is built per inbound stream, before any puzzle: keep it cheap). */
const checkedKeys = new WeakSet<NodeKeys>();

function resolveOptions(keys: NodeKeys, options: HandshakeOptions): ResolvedOptions {
  assertArgument(typeof keys === "object" && keys !== null, "keys are required", "keys");
  if (!checkedKeys.has(keys)) {
    assertBytes(keys.secp256k1PrivateKey, "secp256k1PrivateKey", 32);
    assertBytes(keys.mldsaPublicKey, "mldsaPublicKey", MLDSA65_PUBLIC_KEY_BYTES);
    normalizeAddress(keys.address, "keys.address");
    checkedKeys.add(keys);
  }
  assertArgument(typeof options === "object" && options !== null, "options are required", "options");
  for (const field of ["localPeerId", "remotePeerId"] as const) {
    const v = options[field];
    assertArgument(
      typeof v === "string" && v.length > 0 && v.length <= MAX_PEER_ID_CHARS,
      `${field} must be a non-empty string of at most ${MAX_PEER_ID_CHARS} chars`,
      field,
      v,
    );
  }
  const resolved: ResolvedOptions = {
    localPeerId: options.localPeerId,
    remotePeerId: options.remotePeerId,
    rekeyAfterFrames: options.rekeyAfterFrames ?? REKEY_AFTER_FRAMES,
  };
  assertArgument(
    typeof resolved.rekeyAfterFrames === "bigint" &&
      resolved.rekeyAfterFrames >= 1n &&
      resolved.rekeyAfterFrames <= REKEY_AFTER_FRAMES,
    "rekeyAfterFrames must be a bigint in [1, 2^32]",
    "rekeyAfterFrames",
    resolved.rekeyAfterFrames,
  );
  if (options.expectedRemoteAddress !== undefined) {
    resolved.expectedRemoteAddress = normalizeAddress(options.expectedRemoteAddress, "expectedRemoteAddress");
  }
  if (options.expectedRemoteMldsaPublicKey !== undefined) {
    assertBytes(
      options.expectedRemoteMldsaPublicKey,
      "expectedRemoteMldsaPublicKey",
      MLDSA65_PUBLIC_KEY_BYTES,
    );
    resolved.expectedRemoteMldsaPublicKey = Uint8Array.from(options.expectedRemoteMldsaPublicKey);
  }
  return resolved;
}

function checkExpectedIdentity(options: ResolvedOptions, identity: PeerIdentity): void {
  if (options.expectedRemoteAddress !== undefined && identity.address !== options.expectedRemoteAddress) {
    fail("remote address is not the expected one", {
      field: "address",
      expected: options.expectedRemoteAddress,
      actual: identity.address,
    });
  }
  if (
    options.expectedRemoteMldsaPublicKey !== undefined &&
    !equalBytes(identity.mldsaPublicKey, options.expectedRemoteMldsaPublicKey)
  ) {
    fail("remote ML-DSA-65 public key is not the expected one", { field: "mldsaPublicKey" });
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** Runs `fn`, turning any non-QrwpError (a library throw on hostile input) into HANDSHAKE_FAILED. */
function guarded<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (isQrwpError(e)) {
      if (e.code === "HANDSHAKE_FAILED") throw e;
      throw new QrwpError("HANDSHAKE_FAILED", `${what}: ${e.message}`, e.details, { cause: e });
    }
    throw new QrwpError("HANDSHAKE_FAILED", `${what} failed`, {}, { cause: e });
  }
}

function deriveSessionKeys(sharedSecret: Uint8Array, th3: Uint8Array): { i2r: Uint8Array; r2i: Uint8Array } {
  const okm = hkdf(sha256, sharedSecret, th3, label("qrwp-channel-v1/keys"), 64);
  return { i2r: okm.slice(0, 32), r2i: okm.slice(32, 64) };
}

/**
 * Initiator side of the channel-protocol handshake. Use once: `hello()`, send it, receive the reply,
 * `finish(reply)`, send `finish`, then use the returned {@link Session}.
 */
export class HandshakeInitiator {
  readonly #keys: NodeKeys;
  readonly #options: ResolvedOptions;
  #state: "new" | "sent" | "done" | "failed" = "new";
  #ephemeralSecretKey: Uint8Array | undefined;
  #hello: Uint8Array | undefined;
  #helloFields: Record<string, unknown> = {};
  #solved = false;

  /** @throws QrwpError INVALID_ARGUMENT on malformed keys or options. */
  constructor(keys: NodeKeys, options: HandshakeOptions) {
    this.#options = resolveOptions(keys, options);
    this.#keys = keys;
  }

  /**
   * Builds message 1 (`hello`, CBOR, about 3.3 KiB) with a fresh ephemeral X-Wing key and nonce.
   * @throws QrwpError HANDSHAKE_FAILED if called twice.
   */
  hello(): Uint8Array {
    if (this.#state !== "new") fail("hello() may only be called once");
    const { secretKey, publicKey } = ml_kem768_x25519.keygen();
    this.#ephemeralSecretKey = secretKey;
    this.#helloFields = {
      t: MSG_HELLO,
      v: HANDSHAKE_VERSION,
      nonce: randomBytes(HANDSHAKE_NONCE_BYTES),
      kemPublicKey: publicKey,
      address: hexToBytes(normalizeAddress(this.#keys.address, "keys.address").slice(2)),
      mldsaPublicKey: this.#keys.mldsaPublicKey,
      initiatorPeerId: this.#options.localPeerId,
      responderPeerId: this.#options.remotePeerId,
    };
    this.#hello = encoder.encode(this.#helloFields) as Uint8Array;
    this.#state = "sent";
    return Uint8Array.from(this.#hello);
  }

  /**
   * Reads the responder's answer to `hello`: its puzzle challenge, or null when `message` is something else
   * (then it is the `reply`, for {@link finish}).
   * @throws QrwpError HANDSHAKE_FAILED on a malformed challenge or one above {@link MAX_PUZZLE_DIFFICULTY_BITS}.
   */
  challengeOf(message: Uint8Array): HandshakeChallenge | null {
    if (!(message instanceof Uint8Array) || message.length === 0 || message.length > 256) return null;
    let value: unknown;
    try {
      value = decoder.decode(message);
    } catch {
      return null;
    }
    if (typeof value !== "object" || value === null || (value as { t?: unknown }).t !== MSG_CHALLENGE) {
      return null;
    }
    const msg = decodeMessage(challengeSchema, message, "challenge");
    if (msg.v !== HANDSHAKE_VERSION) fail("unsupported handshake version", { field: "v", value: msg.v });
    return { challenge: msg.challenge, difficultyBits: msg.difficultyBits };
  }

  /**
   * Builds `hello` again, with the same ephemeral key and nonce, carrying the puzzle `solution` (once, after
   * {@link hello}); the responder puts this one in the transcript.
   * @param solution - 8 bytes from `searchPuzzleSolution`.
   * @throws QrwpError HANDSHAKE_FAILED out of order or when called twice; INVALID_ARGUMENT on a bad solution.
   */
  helloWithSolution(solution: Uint8Array): Uint8Array {
    if (this.#state !== "sent" || this.#solved) fail("helloWithSolution() needs hello() first, once");
    assertBytes(solution, "solution", PUZZLE_SOLUTION_BYTES);
    this.#hello = encoder.encode({ ...this.#helloFields, solution: Uint8Array.from(solution) }) as Uint8Array;
    this.#solved = true;
    return Uint8Array.from(this.#hello);
  }

  /**
   * Processes message 2 (`reply`): checks the responder's identity against the expectations, verifies its
   * ML-DSA-65 and secp256k1 transcript signatures, decapsulates the X-Wing secret and derives the session.
   * @returns message 3 (`finish`) to send, and the established {@link Session}.
   * @throws QrwpError HANDSHAKE_FAILED on any malformed, unexpected or forged input (the handshake is then dead).
   */
  finish(reply: Uint8Array): { finish: Uint8Array; session: Session } {
    if (this.#state !== "sent") fail("finish() needs hello() first and may only be called once");
    try {
      return guarded("reply", () => this.#finish(reply));
    } catch (e) {
      this.#state = "failed";
      throw e;
    } finally {
      this.#ephemeralSecretKey?.fill(0);
      this.#ephemeralSecretKey = undefined;
    }
  }

  #finish(reply: Uint8Array): { finish: Uint8Array; session: Session } {
    const outer = decodeMessage(replySchema, reply, "reply");
    const body = decodeMessage(replyBodySchema, outer.body, "reply body");
    if (body.v !== HANDSHAKE_VERSION) fail("unsupported handshake version", { field: "v", value: body.v });
    const remote = identityFrom(body.address, body.mldsaPublicKey);
    checkExpectedIdentity(this.#options, remote);
    const th2 = transcript2(this.#hello!, outer.body);
    verifyTranscript(remote, signedMessage("responder", th2), outer, "responder");
    let sharedSecret: Uint8Array;
    try {
      sharedSecret = ml_kem768_x25519.decapsulate(body.kemCipherText, this.#ephemeralSecretKey!);
    } catch (cause) {
      fail("X-Wing decapsulation failed", { field: "kemCipherText" }, cause);
    }
    const th3 = transcript3(th2, reply);
    const finish = encoder.encode({
      t: MSG_FINISH,
      ...signTranscript(this.#keys, signedMessage("initiator", th3)),
    }) as Uint8Array;
    const { i2r, r2i } = deriveSessionKeys(sharedSecret, th3);
    sharedSecret.fill(0);
    this.#state = "done";
    const session = new Session({
      remote,
      transcriptHash: th3,
      sendKey: i2r,
      receiveKey: r2i,
      rekeyAfterFrames: this.#options.rekeyAfterFrames,
    });
    return { finish: Uint8Array.from(finish), session };
  }
}

/**
 * Responder side of the channel-protocol handshake. Use once: `respond(hello)`, send the reply, receive
 * `finish`, `complete(finish)`, then use the returned {@link Session}.
 */
export class HandshakeResponder {
  readonly #keys: NodeKeys;
  readonly #options: ResolvedOptions;
  #state: "new" | "challenged" | "replied" | "done" | "failed" = "new";
  #challenge: HandshakeChallenge | undefined;
  #remote: PeerIdentity | undefined;
  #th3: Uint8Array | undefined;
  #sharedSecret: Uint8Array | undefined;

  /** @throws QrwpError INVALID_ARGUMENT on malformed keys or options. */
  constructor(keys: NodeKeys, options: HandshakeOptions) {
    this.#options = resolveOptions(keys, options);
    this.#keys = keys;
  }

  /**
   * Instead of answering the first `hello`, asks the initiator to solve a puzzle (nothing is decoded, signed or
   * encapsulated). Call at most once, before {@link respond}; `respond` then refuses a `hello` without a valid
   * solution.
   * @param difficultyBits - integer in [0, {@link MAX_PUZZLE_DIFFICULTY_BITS}].
   * @returns the `challenge` message (CBOR, about 50 bytes).
   * @throws QrwpError HANDSHAKE_FAILED out of order; INVALID_ARGUMENT on a bad difficulty.
   */
  challenge(difficultyBits: number): Uint8Array {
    if (this.#state !== "new") fail("challenge() must come first and only once");
    assertArgument(
      Number.isInteger(difficultyBits) && difficultyBits >= 0 && difficultyBits <= MAX_PUZZLE_DIFFICULTY_BITS,
      `difficultyBits must be an integer in [0, ${MAX_PUZZLE_DIFFICULTY_BITS}]`,
      "difficultyBits",
      difficultyBits,
    );
    this.#challenge = { challenge: randomBytes(PUZZLE_CHALLENGE_BYTES), difficultyBits };
    this.#state = "challenged";
    return Uint8Array.from(
      encoder.encode({ t: MSG_CHALLENGE, v: HANDSHAKE_VERSION, ...this.#challenge }) as Uint8Array,
    );
  }

  /**
   * Processes message 1 (`hello`): after a {@link challenge}, first checks the puzzle solution (one SHA-256);
   * then version, channel binding (both peer ids) and the initiator's claimed identity against the
   * expectations; then encapsulates an X-Wing secret and signs the transcript.
   * @returns message 2 (`reply`, CBOR, about 6.5 KiB).
   * @throws QrwpError HANDSHAKE_FAILED on malformed or unexpected input, a missing or wrong solution, or if
   *   called twice.
   */
  respond(hello: Uint8Array): Uint8Array {
    if (this.#state !== "new" && this.#state !== "challenged") fail("respond() may only be called once");
    try {
      return guarded("hello", () => this.#respond(hello));
    } catch (e) {
      this.#state = "failed";
      throw e;
    }
  }

  #respond(hello: Uint8Array): Uint8Array {
    const msg = decodeMessage(helloSchema, hello, "hello");
    if (msg.v !== HANDSHAKE_VERSION) fail("unsupported handshake version", { field: "v", value: msg.v });
    if (this.#challenge !== undefined) {
      const { challenge, difficultyBits } = this.#challenge;
      if (msg.solution === undefined || !puzzleSolved(challenge, msg.solution, difficultyBits)) {
        fail("hello does not solve the puzzle", { field: "solution", difficultyBits });
      }
    }
    if (
      msg.initiatorPeerId !== this.#options.remotePeerId ||
      msg.responderPeerId !== this.#options.localPeerId
    ) {
      fail("peer ids in hello do not match this connection", {
        field: "peerId",
        initiatorPeerId: msg.initiatorPeerId,
        responderPeerId: msg.responderPeerId,
      });
    }
    const remote = identityFrom(msg.address, msg.mldsaPublicKey);
    checkExpectedIdentity(this.#options, remote);
    let encapsulated: { cipherText: Uint8Array; sharedSecret: Uint8Array };
    try {
      encapsulated = ml_kem768_x25519.encapsulate(msg.kemPublicKey);
    } catch (cause) {
      fail("X-Wing encapsulation to the initiator's key failed", { field: "kemPublicKey" }, cause);
    }
    const body = encoder.encode({
      v: HANDSHAKE_VERSION,
      nonce: randomBytes(HANDSHAKE_NONCE_BYTES),
      kemCipherText: encapsulated.cipherText,
      address: hexToBytes(normalizeAddress(this.#keys.address, "keys.address").slice(2)),
      mldsaPublicKey: this.#keys.mldsaPublicKey,
    }) as Uint8Array;
    const th2 = transcript2(hello, body);
    const reply = encoder.encode({
      t: MSG_REPLY,
      body,
      ...signTranscript(this.#keys, signedMessage("responder", th2)),
    }) as Uint8Array;
    this.#remote = remote;
    this.#th3 = transcript3(th2, reply);
    this.#sharedSecret = encapsulated.sharedSecret;
    this.#state = "replied";
    return Uint8Array.from(reply);
  }

  /**
   * Processes message 3 (`finish`): verifies the initiator's ML-DSA-65 and secp256k1 signatures over the
   * full transcript and derives the session.
   * @throws QrwpError HANDSHAKE_FAILED on malformed or forged input, or if called out of order.
   */
  complete(finish: Uint8Array): Session {
    if (this.#state !== "replied") fail("complete() needs respond() first and may only be called once");
    try {
      return guarded("finish", () => {
        const msg = decodeMessage(finishSchema, finish, "finish");
        verifyTranscript(this.#remote!, signedMessage("initiator", this.#th3!), msg, "initiator");
        const { i2r, r2i } = deriveSessionKeys(this.#sharedSecret!, this.#th3!);
        this.#state = "done";
        return new Session({
          remote: this.#remote!,
          transcriptHash: this.#th3!,
          sendKey: r2i,
          receiveKey: i2r,
          rekeyAfterFrames: this.#options.rekeyAfterFrames,
        });
      });
    } catch (e) {
      this.#state = "failed";
      throw e;
    } finally {
      this.#sharedSecret?.fill(0);
      this.#sharedSecret = undefined;
    }
  }
}
