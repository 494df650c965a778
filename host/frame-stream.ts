/**
 * Length-prefixed frames over one libp2p stream (the wire format of libp2p's `lpStream` and
 * `it-length-prefixed`: an unsigned varint length, then the bytes), read with two separate deadlines:
 * how long the stream may stay silent before a frame starts (the idle deadline, per call), and how long a
 * frame that has started may take to arrive in full (the frame deadline). A peer that sends half a frame and
 * stalls is cut off after the frame deadline, however long it may otherwise stay idle.
 */
import type { Stream } from "@libp2p/interface";
import { byteStream, type ByteStream } from "@libp2p/utils";
import { decode as decodeVarint, encode as encodeVarint } from "uint8-varint";
import { Uint8ArrayList } from "uint8arraylist";
import { frameRejected } from "../protocol/index.js";

/** Most bytes a varint length of a frame below 2^28 takes. */
const MAX_LENGTH_BYTES = 4;

/** Options of one {@link FrameStream.read}. */
export interface FrameReadOptions {
  /** Aborts the wait for the frame's first byte (idle deadline); none: wait as long as the stream lives. */
  idleSignal?: AbortSignal;
  /** Aborts the whole read (e.g. a handshake deadline), whatever its stage. */
  signal?: AbortSignal;
  /** A lower size limit for this frame than the stream's, in bytes (e.g. for handshake messages). */
  maxFrameBytes?: number;
}

/** Reads and writes length-prefixed frames on one stream (one reader and one writer at a time). */
export class FrameStream {
  readonly #bytes: ByteStream<Stream>;
  /**
   * The frame deadline: one controller and one timer for the stream's life, re-armed when a frame starts
   * (no timer per frame on the hot path); it aborts only if a frame is still incomplete when it fires.
   */
  readonly #stall = new AbortController();
  readonly #stallTimer: NodeJS.Timeout;
  #inFrame = false;

  /**
   * @param stream - the libp2p stream (this object becomes its only reader).
   * @param maxFrameBytes - largest frame accepted, in bytes (a longer length is refused before reading it).
   * @param frameTimeoutMs - how long a started frame may take to arrive in full, in ms.
   */
  constructor(
    stream: Stream,
    private readonly maxFrameBytes: number,
    frameTimeoutMs: number,
  ) {
    // Room for a few pipelined frames; a peer that floods beyond it while we are busy loses the stream.
    this.#bytes = byteStream(stream, { maxBufferSize: 4 * (maxFrameBytes + MAX_LENGTH_BYTES) });
    this.#stallTimer = setTimeout(() => {
      if (this.#inFrame) this.#stall.abort();
    }, frameTimeoutMs);
    this.#stallTimer.unref();
    stream.addEventListener("close", () => clearTimeout(this.#stallTimer), { once: true });
  }

  /**
   * Reads the next frame.
   * @returns the frame's bytes.
   * @throws QrwpError FRAME_REJECTED (`details.reason`: "timeout" when `signal` aborted; "idle" when no frame
   *   started before `idleSignal`,
   *   "stalled" when a started frame did not complete within the frame deadline, "length" on an oversized or
   *   malformed length, "closed" when the stream ended); the stream is unusable after any of them.
   */
  async read(options: FrameReadOptions = {}): Promise<Uint8Array> {
    const first = await this.#readBytes(1, anySignal(options.signal, options.idleSignal), options, "idle");
    this.#inFrame = true;
    this.#stallTimer.refresh();
    try {
      return await this.#readRest(first, options);
    } finally {
      this.#inFrame = false;
    }
  }

  /** The rest of a frame whose first length byte is `first`, under the frame deadline. */
  async #readRest(first: Uint8Array, options: FrameReadOptions): Promise<Uint8Array> {
    const frameSignal = anySignal(options.signal, this.#stall.signal);
    const lengthBytes = new Uint8ArrayList(first);
    let length: number | undefined;
    while (length === undefined) {
      try {
        length = decodeVarint(lengthBytes);
      } catch (err) {
        if (!(err instanceof RangeError) || lengthBytes.byteLength >= MAX_LENGTH_BYTES) {
          throw frameRejected("malformed frame length", "length");
        }
        lengthBytes.append(await this.#readBytes(1, frameSignal, options, "stalled"));
      }
    }
    const max = Math.min(options.maxFrameBytes ?? this.maxFrameBytes, this.maxFrameBytes);
    if (length > max) throw frameRejected(`frame of ${length} bytes exceeds ${max}`, "length", { length });
    if (length === 0) return new Uint8Array(0);
    return this.#readBytes(length, frameSignal, options, "stalled");
  }

  async #readBytes(
    count: number,
    signal: AbortSignal | undefined,
    options: FrameReadOptions,
    onAbort: "idle" | "stalled",
  ): Promise<Uint8Array> {
    let chunk: Uint8ArrayList | null;
    try {
      chunk = await this.#bytes.read({ bytes: count, ...(signal ? { signal } : {}) });
    } catch (err) {
      if (options.signal?.aborted) throw frameRejected("read deadline passed", "timeout", {}, err);
      if (signal?.aborted) {
        throw frameRejected(
          onAbort === "idle" ? "no frame before the idle deadline" : "frame stalled",
          onAbort,
        );
      }
      throw frameRejected("stream closed", "closed", {}, err);
    }
    if (chunk === null || chunk.byteLength !== count) throw frameRejected("stream closed", "closed");
    return chunk.subarray();
  }

  /**
   * Writes one frame (length varint, then the bytes) under `signal`.
   * @throws libp2p's stream errors when the stream is closed or reset, or `signal` aborts.
   */
  async write(frame: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#bytes.write(new Uint8ArrayList(encodeVarint(frame.byteLength), frame), options);
  }

  /** Writes several frames, in order, in one write to the stream (the same bytes as one write each). */
  async writeMany(frames: Uint8Array[], options: { signal?: AbortSignal } = {}): Promise<void> {
    const out = new Uint8ArrayList();
    for (const frame of frames) out.append(encodeVarint(frame.byteLength), frame);
    await this.#bytes.write(out, options);
  }
}

function anySignal(...signals: Array<AbortSignal | undefined>): AbortSignal | undefined {
  const present = signals.filter((s): s is AbortSignal => s !== undefined);
  if (present.length <= 1) return present[0];
  return AbortSignal.any(present);
}
