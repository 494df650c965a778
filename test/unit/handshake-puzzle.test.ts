/**
 * The handshake's client puzzle (protocol/handshake-puzzle.ts and the challenge step of protocol/session.ts):
 * a challenged responder does no public-key work for a hello without a valid solution, a solved hello
 * completes the handshake, solutions do not carry over to another challenge.
 */
import { Encoder } from "cbor-x";
import { expect } from "chai";
import fc from "fast-check";
import {
  HANDSHAKE_VERSION,
  HandshakeInitiator,
  HandshakeResponder,
  MAX_PUZZLE_DIFFICULTY_BITS,
  PUZZLE_CHALLENGE_BYTES,
  generateNodeKeys,
  isQrwpError,
  puzzleSolved,
  searchPuzzleSolution,
  type NodeKeys,
  type QrwpError,
} from "../../protocol/index.js";

const A_PEER = "12D3KooWAlice";
const B_PEER = "12D3KooWBob";
const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

function expectCode(fn: () => unknown, code: string, field?: string): QrwpError {
  try {
    fn();
  } catch (e) {
    expect(isQrwpError(e), String(e)).to.equal(true);
    expect((e as QrwpError).code, (e as Error).message).to.equal(code);
    if (field) expect((e as QrwpError).details.field).to.equal(field);
    return e as QrwpError;
  }
  return expect.fail(`expected ${code}`);
}

function solve(challenge: Uint8Array, bits: number): Uint8Array {
  for (let from = 0; ; from += 1 << 16) {
    const s = searchPuzzleSolution(challenge, bits, from, 1 << 16);
    if (s) return s;
  }
}

describe("protocol/handshake puzzle", () => {
  let alice: NodeKeys;
  let bob: NodeKeys;
  const pair = () => ({
    i: new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER }),
    r: new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER }),
  });

  before(() => {
    alice = generateNodeKeys();
    bob = generateNodeKeys();
  });

  it("a solution found by search verifies at its difficulty, and a random one mostly does not", () => {
    const challenge = new Uint8Array(PUZZLE_CHALLENGE_BYTES).fill(7);
    const solution = solve(challenge, 16);
    expect(puzzleSolved(challenge, solution, 16)).to.equal(true);
    const other = new Uint8Array(PUZZLE_CHALLENGE_BYTES).fill(8);
    // The same solution for another (fixed) challenge: checked once, it does not pass.
    expect(puzzleSolved(other, solution, 16)).to.equal(false);
    expect(puzzleSolved(challenge, solution.subarray(1), 0)).to.equal(false);
    expect(puzzleSolved(challenge.subarray(1), solution, 0)).to.equal(false);
  });

  it("property: the leading-zero count is exact (a solution at d bits is one at every lower d)", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.integer({ min: 0, max: 10 }),
        (c, d) => {
          const s = solve(c, d);
          for (let lower = 0; lower <= d; lower++) expect(puzzleSolved(c, s, lower)).to.equal(true);
        },
      ),
      { numRuns: 30 },
    );
  });

  it("a challenged handshake completes once the hello carries the solution", () => {
    const { i, r } = pair();
    const first = i.hello();
    const challengeMessage = r.challenge(10);
    expect(challengeMessage.length).to.be.lessThan(100);
    const challenge = i.challengeOf(challengeMessage);
    expect(challenge?.difficultyBits).to.equal(10);
    const solved = i.helloWithSolution(solve(challenge!.challenge, challenge!.difficultyBits));
    expect(solved.length).to.be.greaterThan(first.length);
    const reply = r.respond(solved);
    expect(i.challengeOf(reply)).to.equal(null);
    const { finish, session } = i.finish(reply);
    const theirs = r.complete(finish);
    expect(theirs.remote.address).to.equal(alice.address);
    expect(session.remote.address).to.equal(bob.address);
    expect(theirs.open(session.seal(new Uint8Array([1, 2, 3])))).to.deep.equal(new Uint8Array([1, 2, 3]));
  });

  it("a challenged responder refuses a hello without a solution, or with a wrong one", () => {
    const a = pair();
    a.r.challenge(8);
    expectCode(() => a.r.respond(a.i.hello()), "HANDSHAKE_FAILED", "solution");
    const b = pair();
    b.i.hello();
    const challenge = b.i.challengeOf(b.r.challenge(20))!;
    // Find a counter that does NOT solve it (almost every one).
    let wrong = new Uint8Array(8);
    for (let n = 0; puzzleSolved(challenge.challenge, wrong, 20); n++) wrong = new Uint8Array(8).fill(n);
    expectCode(() => b.r.respond(b.i.helloWithSolution(wrong)), "HANDSHAKE_FAILED", "solution");
  });

  it("a solution of one challenge does not answer another", () => {
    const first = pair();
    first.i.hello();
    const c1 = first.i.challengeOf(first.r.challenge(18))!;
    const solution = solve(c1.challenge, 18);
    const second = pair();
    second.i.hello();
    second.r.challenge(18);
    // 1 chance in 2^18 that the random second challenge accepts it too.
    expectCode(() => second.r.respond(second.i.helloWithSolution(solution)), "HANDSHAKE_FAILED", "solution");
  });

  it("enforces the order of the steps", () => {
    const { i, r } = pair();
    expectCode(() => i.helloWithSolution(new Uint8Array(8)), "HANDSHAKE_FAILED");
    const hello = i.hello();
    i.helloWithSolution(new Uint8Array(8));
    expectCode(() => i.helloWithSolution(new Uint8Array(8)), "HANDSHAKE_FAILED");
    r.respond(hello);
    expectCode(() => r.challenge(8), "HANDSHAKE_FAILED");
    const fresh = pair().r;
    expectCode(() => fresh.challenge(MAX_PUZZLE_DIFFICULTY_BITS + 1), "INVALID_ARGUMENT", "difficultyBits");
  });

  it("the initiator refuses a malformed challenge and ignores anything that is not one", () => {
    const { i } = pair();
    i.hello();
    const challenge = (fields: Record<string, unknown>) =>
      cbor.encode({
        t: 4,
        v: HANDSHAKE_VERSION,
        challenge: new Uint8Array(32),
        difficultyBits: 8,
        ...fields,
      });
    expectCode(
      () => i.challengeOf(challenge({ difficultyBits: MAX_PUZZLE_DIFFICULTY_BITS + 1 })),
      "HANDSHAKE_FAILED",
    );
    expectCode(() => i.challengeOf(challenge({ challenge: new Uint8Array(31) })), "HANDSHAKE_FAILED");
    expectCode(() => i.challengeOf(challenge({ v: 1 })), "HANDSHAKE_FAILED");
    expectCode(() => i.challengeOf(challenge({ extra: 1 })), "HANDSHAKE_FAILED");
    expect(i.challengeOf(new Uint8Array([0xff, 0x00]))).to.equal(null);
    expect(i.challengeOf(cbor.encode({ t: 2 }))).to.equal(null);
    expect(i.challengeOf(new Uint8Array(0))).to.equal(null);
  });

  it("search refuses bad arguments", () => {
    const c = new Uint8Array(32);
    expectCode(() => searchPuzzleSolution(c.subarray(1), 1, 0, 1), "INVALID_ARGUMENT", "challenge");
    expectCode(
      () => searchPuzzleSolution(c, MAX_PUZZLE_DIFFICULTY_BITS + 1, 0, 1),
      "INVALID_ARGUMENT",
      "difficultyBits",
    );
    expectCode(() => searchPuzzleSolution(c, 1, -1, 1), "INVALID_ARGUMENT", "from");
    expectCode(() => searchPuzzleSolution(c, 1, 0, 0), "INVALID_ARGUMENT", "count");
  });
});
