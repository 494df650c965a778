/**
 * The client puzzle of the channel-protocol handshake (see `session.ts` and PROTOCOL.md §3.1 and §5): a responder that
 * does not know the initiator answers its first `hello` with a `challenge` (32 random bytes and a difficulty in
 * bits) instead of doing any public-key work; the initiator must send its `hello` again carrying an 8-byte
 * `solution` such that
 *
 *   SHA-256("qrwp-hs-v2/puzzle" || challenge || solution)
 *
 * starts with at least `difficultyBits` zero bits. Checking costs the responder one SHA-256; finding a solution
 * costs the initiator 2^difficultyBits hashes on average, chosen to be more than the responder's share of a
 * handshake (an X-Wing encapsulation and two signatures). Hashcash (Back, 2002) and the client puzzles of
 * Juels & Brainard (1999) are the model; WireGuard's cookie reply is the same idea bound to an IP address.
 *
 * Pure: no I/O. The challenge is random per handshake and used once, so a solution cannot be replayed.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { concatBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { assertArgument } from "./errors.js";

/** Bytes of a puzzle challenge (chosen by the responder, random). */
export const PUZZLE_CHALLENGE_BYTES = 32;
/** Bytes of a puzzle solution (a 64-bit big-endian counter chosen by the initiator). */
export const PUZZLE_SOLUTION_BYTES = 8;
/** Largest difficulty a responder may ask for and an initiator will try (2^28 hashes, minutes of CPU). */
export const MAX_PUZZLE_DIFFICULTY_BITS = 28;

const PUZZLE_LABEL = utf8ToBytes("qrwp-hs-v2/puzzle");

/** Number of leading zero bits of `digest` (0..256). */
function leadingZeroBits(digest: Uint8Array): number {
  let bits = 0;
  for (const byte of digest) {
    if (byte === 0) {
      bits += 8;
      continue;
    }
    return bits + Math.clz32(byte) - 24;
  }
  return bits;
}

/**
 * True when `solution` solves the puzzle `challenge` at `difficultyBits`. One SHA-256; never throws on
 * hostile input (wrong lengths are simply false).
 * @param challenge - 32 bytes.
 * @param solution - 8 bytes.
 * @param difficultyBits - integer in [0, {@link MAX_PUZZLE_DIFFICULTY_BITS}].
 */
export function puzzleSolved(challenge: Uint8Array, solution: Uint8Array, difficultyBits: number): boolean {
  if (challenge.length !== PUZZLE_CHALLENGE_BYTES || solution.length !== PUZZLE_SOLUTION_BYTES) return false;
  return leadingZeroBits(sha256(concatBytes(PUZZLE_LABEL, challenge, solution))) >= difficultyBits;
}

/**
 * Searches solutions `from, from + 1, …, from + count - 1` (64-bit big-endian counters) of the puzzle.
 * Callers that must stay responsive search in chunks and yield between them.
 * @param challenge - 32 bytes.
 * @param difficultyBits - integer in [0, {@link MAX_PUZZLE_DIFFICULTY_BITS}].
 * @param from - first counter to try (a non-negative safe integer).
 * @param count - how many counters to try (a positive safe integer).
 * @returns the first 8-byte solution found, or null if none in the range.
 * @throws QrwpError INVALID_ARGUMENT on a bad challenge, difficulty or range.
 */
export function searchPuzzleSolution(
  challenge: Uint8Array,
  difficultyBits: number,
  from: number,
  count: number,
): Uint8Array | null {
  assertArgument(
    challenge instanceof Uint8Array && challenge.length === PUZZLE_CHALLENGE_BYTES,
    "challenge must be 32 bytes",
    "challenge",
  );
  assertArgument(
    Number.isInteger(difficultyBits) && difficultyBits >= 0 && difficultyBits <= MAX_PUZZLE_DIFFICULTY_BITS,
    `difficultyBits must be an integer in [0, ${MAX_PUZZLE_DIFFICULTY_BITS}]`,
    "difficultyBits",
    difficultyBits,
  );
  assertArgument(Number.isSafeInteger(from) && from >= 0, "from must be a safe integer >= 0", "from", from);
  assertArgument(
    Number.isSafeInteger(count) && count > 0,
    "count must be a safe integer > 0",
    "count",
    count,
  );
  // One buffer, rewritten in place: label || challenge || counter.
  const input = concatBytes(PUZZLE_LABEL, challenge, new Uint8Array(PUZZLE_SOLUTION_BYTES));
  const view = new DataView(input.buffer, input.byteOffset + input.length - PUZZLE_SOLUTION_BYTES);
  for (let i = 0; i < count; i++) {
    const n = from + i;
    view.setUint32(0, Math.floor(n / 2 ** 32), false);
    view.setUint32(4, n >>> 0, false);
    if (leadingZeroBits(sha256(input)) >= difficultyBits) {
      return input.slice(input.length - PUZZLE_SOLUTION_BYTES);
    }
  }
  return null;
}
