import { expect } from "chai";
import { Encoder } from "cbor-x";
import { getAddress, sha256 } from "ethers";
import fc from "fast-check";
import type {
  ChannelMessage,
  Envelope,
  ErrorCode,
  Lock,
  LockedTransfer,
  NodeKeys,
  RouteHopInfo,
  SignedBalanceProof,
} from "../../protocol/index.js";
import {
  EMPTY_CHANNEL_END,
  MAX_FRAME_BYTES,
  MAX_MESSAGE_BATCH,
  MAX_ROUTE_HOPS,
  UINT256_MAX,
  balanceDataOf,
  decodeEnvelope,
  encodeEnvelope,
  generateNodeKeys,
  isQrwpError,
  randomSecret,
  secretHashOf,
  signBalanceProof,
  verifyBalanceProof,
  withLock,
} from "../../protocol/index.js";

const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const addr = (byte: string) => getAddress(`0x${byte.repeat(20)}`);
const INITIATOR = addr("a1");
const M1 = addr("b2");
const M2 = addr("c3");
const TARGET = addr("d4");

/** The same CBOR settings as the wire codec, to build raw (possibly malformed) frames. */
const rawCbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

type WithProof = Extract<ChannelMessage, { balanceProof: SignedBalanceProof }>;

/** Decoded messages compared as plain data: byte strings as plain Uint8Arrays. */
function plain(envelope: Envelope): Envelope {
  const body = envelope.body;
  if (!("balanceProof" in body)) return envelope;
  const bp = (body as WithProof).balanceProof;
  return {
    ...envelope,
    body: {
      ...body,
      balanceProof: { ...bp, pqSignature: Uint8Array.from(bp.pqSignature) },
    } as ChannelMessage,
  };
}

function roundTrip(envelope: Envelope): Envelope {
  const decoded = decodeEnvelope(encodeEnvelope(envelope));
  expect(plain(decoded)).to.deep.equal(plain(envelope));
  return decoded;
}

/** Decodes, accepting only success or QrwpError INVALID_MESSAGE naming a field. */
function decodeOrRefuse(bytes: Uint8Array): Envelope | null {
  try {
    return decodeEnvelope(bytes);
  } catch (e) {
    expect(isQrwpError(e), `decodeEnvelope threw a non-QrwpError: ${String(e)}`).to.equal(true);
    const err = e as { code: string; details: { field?: unknown } };
    expect(err.code).to.equal("INVALID_MESSAGE");
    expect(err.details.field).to.be.a("string").that.is.not.empty;
    return null;
  }
}

function expectInvalid(body: unknown, field: string): void {
  const bytes = encodeEnvelope({ id: 9, body: body as ChannelMessage });
  let caught: unknown;
  try {
    decodeEnvelope(bytes);
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected INVALID_MESSAGE for ${field}`).to.not.equal(undefined);
  expect(isQrwpError(caught)).to.equal(true);
  const err = caught as { code: string; details: { field?: unknown } };
  expect(err.code).to.equal("INVALID_MESSAGE");
  expect(err.details.field).to.equal(field);
}

describe("protocol/messages: mediated-transfer messages", () => {
  let keys: NodeKeys;
  let secret: string;
  let secretHash: string;
  let lock: Lock;
  let route: RouteHopInfo[];
  let lockedProof: SignedBalanceProof;
  let unlockProof: SignedBalanceProof;
  let expiredProof: SignedBalanceProof;
  let lockedTransfer: LockedTransfer;
  let all: ChannelMessage[];

  before(() => {
    keys = generateNodeKeys();
    secret = randomSecret();
    secretHash = secretHashOf(secret);
    route = [
      { address: M1, amount: 1_003_515n, expiration: 1_700_001_404n },
      { address: M2, amount: 1_002_503n, expiration: 1_700_000_936n },
      { address: TARGET, amount: 1_000_000n, expiration: 1_700_000_468n },
    ];
    lock = { amount: route[0]!.amount, expiration: route[0]!.expiration, secretHash };
    const locked = withLock(EMPTY_CHANNEL_END, lock);
    const base = { chainId: 31337n, hub: HUB, channelId: 7n };
    lockedProof = signBalanceProof({ ...base, nonce: locked.nonce, ...balanceDataOf(locked) }, keys);
    unlockProof = signBalanceProof(
      {
        ...base,
        nonce: 2n,
        transferredAmount: lock.amount,
        lockedAmount: 0n,
        locksRoot: `0x${"00".repeat(32)}`,
      },
      keys,
    );
    expiredProof = signBalanceProof(
      { ...base, nonce: 2n, transferredAmount: 0n, lockedAmount: 0n, locksRoot: `0x${"00".repeat(32)}` },
      keys,
    );
    lockedTransfer = {
      type: "LockedTransfer",
      paymentId: "pay-1:retry.2_x",
      initiator: INITIATOR,
      target: TARGET,
      lock,
      route,
      initiatorMultiaddrs: ["/ip4/127.0.0.1/tcp/4001", "/dns4/node.example/tcp/443/wss"],
      balanceProof: lockedProof,
    };
    all = [
      lockedTransfer,
      {
        type: "SecretRequest",
        paymentId: "pay-1",
        secretHash,
        amount: 1_000_000n,
        expiration: 1_700_000_468n,
      },
      { type: "RevealSecret", secret },
      { type: "Unlock", paymentId: "pay-1", secret, balanceProof: unlockProof },
      { type: "LockExpired", secretHash, balanceProof: expiredProof },
      {
        type: "TransferFailed",
        paymentId: "pay-1",
        secretHash,
        code: "INSUFFICIENT_CAPACITY",
        message: "not enough capacity towards 0xd4",
        failedAt: M2,
      },
    ];
  });

  describe("round trips", () => {
    it("every new message type survives encode/decode, as a request and as a reply", () => {
      expect(all.map((m) => m.type)).to.deep.equal([
        "LockedTransfer",
        "SecretRequest",
        "RevealSecret",
        "Unlock",
        "LockExpired",
        "TransferFailed",
      ]);
      for (const [i, body] of all.entries()) {
        roundTrip({ id: i, body });
        roundTrip({ id: 1000 + i, replyTo: i, body });
      }
    });

    it("the decoded balance proofs still verify under both signatures", () => {
      for (const body of all) {
        if (!("balanceProof" in body)) continue;
        const decoded = decodeEnvelope(encodeEnvelope({ id: 1, body })).body as WithProof;
        verifyBalanceProof(decoded.balanceProof, keys.address, keys.mldsaPublicKey);
        expect(decoded.balanceProof.proof).to.deep.equal(body.balanceProof.proof);
      }
    });

    it("decoded signatures are plain Uint8Arrays that do not alias the frame", () => {
      const frame = encodeEnvelope({ id: 1, body: lockedTransfer });
      const decoded = decodeEnvelope(frame).body as LockedTransfer;
      const pq = decoded.balanceProof.pqSignature;
      expect(pq.constructor.name).to.equal("Uint8Array");
      const copy = Uint8Array.from(pq);
      frame.fill(0);
      expect(pq).to.deep.equal(copy);
      verifyBalanceProof(decoded.balanceProof, keys.address, keys.mldsaPublicKey);
    });

    it("secret hashes decode in lower case in every message that carries one", () => {
      const upper = `0x${secretHash.slice(2).toUpperCase()}`;
      const bodies: ChannelMessage[] = [
        { ...lockedTransfer, lock: { ...lock, secretHash: upper } },
        { type: "SecretRequest", paymentId: "p", secretHash: upper, amount: 1n, expiration: 2n },
        { type: "LockExpired", secretHash: upper, balanceProof: expiredProof },
        {
          type: "TransferFailed",
          paymentId: "p",
          secretHash: upper,
          code: "NO_ROUTE",
          message: "",
          failedAt: M1,
        },
      ];
      for (const body of bodies) {
        const decoded = decodeEnvelope(encodeEnvelope({ id: 1, body })).body;
        const hash =
          decoded.type === "LockedTransfer"
            ? decoded.lock.secretHash
            : (decoded as { secretHash: string }).secretHash;
        expect(hash, body.type).to.equal(secretHash);
      }
    });

    it("TransferFailed carries each failure code of a mediated transfer", () => {
      const codes: ErrorCode[] = [
        "NO_ROUTE",
        "UNKNOWN_TARGET",
        "INSUFFICIENT_CAPACITY",
        "FEE_TOO_LOW",
        "EXPIRY_TOO_SOON",
        "PEER_OFFLINE",
        "LOCK_EXPIRED",
        "INVALID_TRANSFER",
        "TOO_MANY_LOCKS",
      ];
      for (const code of codes) {
        roundTrip({
          id: 3,
          body: { type: "TransferFailed", paymentId: "p", secretHash, code, message: code, failedAt: TARGET },
        });
      }
    });

    it("accepts the limits: a 20-hop route, uint256 amounts, 16 multiaddrs, an empty failure message", () => {
      const longRoute = Array.from({ length: MAX_ROUTE_HOPS }, (_, i) => ({
        address: addr((0x10 + i).toString(16)),
        amount: UINT256_MAX - BigInt(i),
        expiration: UINT256_MAX,
      }));
      roundTrip({
        id: 1,
        body: {
          ...lockedTransfer,
          lock: { amount: UINT256_MAX, expiration: 0n, secretHash },
          route: longRoute,
          initiatorMultiaddrs: Array.from({ length: 16 }, (_, i) => `/ip4/10.0.0.${i}/tcp/1`),
        },
      });
      roundTrip({ id: 1, body: { ...lockedTransfer, initiatorMultiaddrs: [] } });
      roundTrip({
        id: 1,
        body: {
          type: "TransferFailed",
          paymentId: "p",
          secretHash,
          code: "NO_ROUTE",
          message: "",
          failedAt: M1,
        },
      });
      roundTrip({
        id: 1,
        body: { type: "SecretRequest", paymentId: "p", secretHash, amount: 0n, expiration: 0n },
      });
    });

    it("property: random LockedTransfers round-trip", () => {
      const u256 = fc.bigInt({ min: 0n, max: UINT256_MAX });
      const address = fc
        .uint8Array({ minLength: 20, maxLength: 20 })
        .map((b) => getAddress(sha256(b).slice(0, 42)));
      const hop = fc.record({ address, amount: u256, expiration: u256 });
      fc.assert(
        fc.property(
          fc.record({
            paymentId: fc.stringMatching(/^[A-Za-z0-9._:-]{1,128}$/),
            initiator: address,
            target: address,
            amount: fc.bigInt({ min: 1n, max: UINT256_MAX }),
            expiration: u256,
            secretHash: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => sha256(b)),
            route: fc.array(hop, { minLength: 1, maxLength: MAX_ROUTE_HOPS }),
            multiaddrs: fc.array(fc.string({ minLength: 1, maxLength: 64 }), { maxLength: 16 }),
            id: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
          }),
          (r) => {
            roundTrip({
              id: r.id,
              body: {
                type: "LockedTransfer",
                paymentId: r.paymentId,
                initiator: r.initiator,
                target: r.target,
                lock: { amount: r.amount, expiration: r.expiration, secretHash: r.secretHash },
                route: r.route,
                initiatorMultiaddrs: r.multiaddrs,
                balanceProof: lockedProof,
              },
            });
          },
        ),
        { numRuns: 150 },
      );
    });
  });

  describe("malformed fields give INVALID_MESSAGE naming the field", () => {
    it("LockedTransfer", () => {
      const lt = lockedTransfer;
      expectInvalid({ ...lt, lock: { ...lt.lock, amount: 0n } }, "body.lock.amount");
      expectInvalid({ ...lt, lock: { ...lt.lock, amount: UINT256_MAX + 1n } }, "body.lock.amount");
      expectInvalid({ ...lt, lock: { ...lt.lock, amount: -1n } }, "body.lock.amount");
      expectInvalid({ ...lt, lock: { ...lt.lock, secretHash: "0x1234" } }, "body.lock.secretHash");
      expectInvalid({ ...lt, lock: { ...lt.lock, expiration: 1.5 } }, "body.lock.expiration");
      const hop = route[0] as RouteHopInfo;
      expectInvalid({ ...lt, route: Array.from({ length: MAX_ROUTE_HOPS + 1 }, () => hop) }, "body.route");
      expectInvalid({ ...lt, route: [] }, "body.route");
      expectInvalid({ ...lt, route: [hop, { ...hop, address: "0x1234" }] }, "body.route.1.address");
      expectInvalid({ ...lt, route: [{ ...hop, amount: -5n }] }, "body.route.0.amount");
      expectInvalid({ ...lt, initiator: "0x1234" }, "body.initiator");
      expectInvalid({ ...lt, initiator: `0x${"zz".repeat(20)}` }, "body.initiator");
      expectInvalid({ ...lt, target: TARGET.slice(2) }, "body.target");
      expectInvalid({ ...lt, paymentId: "" }, "body.paymentId");
      expectInvalid({ ...lt, paymentId: "has space" }, "body.paymentId");
      expectInvalid({ ...lt, paymentId: "x".repeat(129) }, "body.paymentId");
      expectInvalid(
        { ...lt, initiatorMultiaddrs: Array.from({ length: 17 }, () => "/ip4/1.2.3.4") },
        "body.initiatorMultiaddrs",
      );
      expectInvalid({ ...lt, initiatorMultiaddrs: [""] }, "body.initiatorMultiaddrs.0");
      expectInvalid(
        { ...lt, balanceProof: { ...lockedProof, signature: "0x1234" } },
        "body.balanceProof.signature",
      );
      // Empty is a proof without evidence (PROTOCOL.md §7.4); anything but 0 or 3309 bytes is malformed.
      expectInvalid(
        { ...lt, balanceProof: { ...lockedProof, pqSignature: new Uint8Array(3308) } },
        "body.balanceProof.pqSignature",
      );
      expectInvalid(
        { ...lt, balanceProof: { ...lockedProof, proof: { ...lockedProof.proof, hub: "0x12" } } },
        "body.balanceProof.hub",
      );
      const { lock: _lock, ...noLock } = lt;
      expectInvalid(noLock, "body.lock");
    });

    it("SecretRequest", () => {
      const sr = { type: "SecretRequest", paymentId: "p", secretHash, amount: 1n, expiration: 2n };
      expectInvalid({ ...sr, secretHash: secretHash.slice(0, 64) }, "body.secretHash");
      expectInvalid({ ...sr, amount: -1n }, "body.amount");
      expectInvalid({ ...sr, expiration: UINT256_MAX + 1n }, "body.expiration");
      expectInvalid({ ...sr, amount: "01" }, "body.amount");
      expectInvalid({ ...sr, paymentId: "a/b" }, "body.paymentId");
    });

    it("RevealSecret and Unlock: a secret of the wrong length", () => {
      for (const bad of [
        `0x${"11".repeat(31)}`,
        `0x${"11".repeat(33)}`,
        "11".repeat(32),
        `0x${"gg".repeat(32)}`,
      ]) {
        expectInvalid({ type: "RevealSecret", secret: bad }, "body.secret");
        expectInvalid(
          { type: "Unlock", paymentId: "p", secret: bad, balanceProof: unlockProof },
          "body.secret",
        );
      }
      expectInvalid({ type: "RevealSecret", secret: new Uint8Array(32) }, "body.secret");
    });

    it("LockExpired and TransferFailed", () => {
      expectInvalid({ type: "LockExpired", secretHash: "0x", balanceProof: expiredProof }, "body.secretHash");
      expectInvalid(
        {
          type: "LockExpired",
          secretHash,
          balanceProof: { ...expiredProof, proof: { ...expiredProof.proof, nonce: -1n } },
        },
        "body.balanceProof.nonce",
      );
      const tf = {
        type: "TransferFailed",
        paymentId: "p",
        secretHash,
        code: "NO_ROUTE",
        message: "m",
        failedAt: M1,
      };
      expectInvalid({ ...tf, failedAt: "0x1234" }, "body.failedAt");
      expectInvalid({ ...tf, failedAt: `${M1}00` }, "body.failedAt");
      expectInvalid({ ...tf, code: "no_route" }, "body.code");
      expectInvalid({ ...tf, code: "X" }, "body.code");
      expectInvalid({ ...tf, message: "m".repeat(1025) }, "body.message");
      expectInvalid({ ...tf, secretHash: 42 }, "body.secretHash");
    });

    it("an unknown type, a bad id and a non-CBOR frame", () => {
      expectInvalid({ type: "LockedTransferV2" }, "body.type");
      const err = (() => {
        try {
          decodeEnvelope(rawCbor.encode({ id: -1, body: { type: "RevealSecret", secret } }));
        } catch (e) {
          return e as { code: string; details: { field: string } };
        }
        return null;
      })();
      expect(err?.details.field).to.equal("id");
      expect(decodeOrRefuse(new Uint8Array([0xff, 0xff]))).to.equal(null);
      const tooBig = new Uint8Array(MAX_FRAME_BYTES + 1);
      try {
        decodeEnvelope(tooBig);
        expect.fail("decoded an oversized frame");
      } catch (e) {
        expect((e as { details: { field: string } }).details.field).to.equal("frame");
      }
    });
  });

  describe("MessageBatch and MessageBatchReply (docs/PROTOCOL.md §9, Batches)", () => {
    const batchOf = (): ChannelMessage => ({
      type: "MessageBatch",
      messages: all.filter(
        (m): m is Extract<ChannelMessage, { type: "SecretRequest" | "RevealSecret" | "TransferFailed" }> =>
          m.type === "SecretRequest" || m.type === "RevealSecret" || m.type === "TransferFailed",
      ),
    });

    it("round-trips a batch of the three batchable messages and a reply of the three reply kinds", () => {
      const batch = batchOf();
      expect((batch as { messages: unknown[] }).messages).to.have.length(3);
      roundTrip({ id: 5, body: batch });
      roundTrip({
        id: 0,
        replyTo: 5,
        body: {
          type: "MessageBatchReply",
          replies: [
            { type: "RevealSecret", secret },
            { type: "Ok" },
            { type: "Error", code: "PAYMENT_NOT_FOUND", message: "no transfer" },
          ],
        },
      });
      const full = {
        type: "MessageBatch",
        messages: Array.from({ length: MAX_MESSAGE_BATCH }, () => ({ type: "RevealSecret", secret })),
      } as ChannelMessage;
      roundTrip({ id: 6, body: full });
    });

    it("refuses an empty or oversized batch, a message that may not be batched and a bad inner field, naming the field", () => {
      expectInvalid({ type: "MessageBatch", messages: [] }, "body.messages");
      expectInvalid(
        {
          type: "MessageBatch",
          messages: Array.from({ length: MAX_MESSAGE_BATCH + 1 }, () => ({ type: "RevealSecret", secret })),
        },
        "body.messages",
      );
      // Balance proofs never travel in a MessageBatch, nor does a batch nest.
      expectInvalid({ type: "MessageBatch", messages: [lockedTransfer] }, "body.messages.0.type");
      expectInvalid({ type: "MessageBatch", messages: [batchOf()] }, "body.messages.0.type");
      expectInvalid(
        {
          type: "MessageBatch",
          messages: [
            { type: "RevealSecret", secret },
            { type: "RevealSecret", secret: "0x11" },
          ],
        },
        "body.messages.1.secret",
      );
      expectInvalid({ type: "MessageBatchReply", replies: [] }, "body.replies");
      expectInvalid(
        { type: "MessageBatchReply", replies: [{ type: "Processed", channelId: 1n, nonce: 1n }] },
        "body.replies.0.type",
      );
    });

    it("property: random mutations of a batch encoding are refused with a field or decode to a batch that re-encodes to itself", () => {
      const encoding = encodeEnvelope({ id: 3, body: batchOf() });
      fc.assert(
        fc.property(
          fc.array(fc.record({ at: fc.nat(), byte: fc.nat({ max: 255 }) }), { minLength: 1, maxLength: 8 }),
          (edits) => {
            const bytes = Uint8Array.from(encoding);
            for (const { at, byte } of edits) bytes[at % bytes.length] = byte;
            const decoded = decodeOrRefuse(bytes);
            if (decoded) expect(decodeEnvelope(encodeEnvelope(decoded))).to.deep.equal(decoded);
          },
        ),
        { numRuns: 500 },
      );
    });
  });

  describe("fuzzing: decodeEnvelope throws nothing but QrwpError", () => {
    it("property: random bytes", () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
          decodeOrRefuse(bytes);
        }),
        { numRuns: 1000 },
      );
    });

    it("property: random byte mutations and truncations of valid encodings", () => {
      const encodings = all.map((body, i) => encodeEnvelope({ id: i, body }));
      fc.assert(
        fc.property(
          fc.nat({ max: encodings.length - 1 }),
          fc.array(fc.record({ at: fc.nat(), byte: fc.nat({ max: 255 }) }), { minLength: 1, maxLength: 8 }),
          fc.option(fc.nat()),
          (which, edits, cut) => {
            const bytes = Uint8Array.from(encodings[which] as Uint8Array);
            for (const { at, byte } of edits) bytes[at % bytes.length] = byte;
            const input = cut === null ? bytes : bytes.subarray(0, cut % (bytes.length + 1));
            const decoded = decodeOrRefuse(input);
            // Whatever is accepted re-encodes to something that decodes to the same message.
            if (decoded) expect(plain(decodeEnvelope(encodeEnvelope(decoded)))).to.deep.equal(plain(decoded));
          },
        ),
        { numRuns: 600 },
      );
    });

    it("property: any value in place of any field of a valid message", () => {
      const wires = all.map(
        (body, i) => rawCbor.decode(encodeEnvelope({ id: i, body })) as Record<string, unknown>,
      );
      const pathsOf = (v: unknown, prefix: string[] = []): string[][] => {
        if (v === null || typeof v !== "object" || v instanceof Uint8Array) return [prefix];
        return [prefix, ...Object.entries(v).flatMap(([k, child]) => pathsOf(child, [...prefix, k]))];
      };
      const cases = wires.flatMap((w, i) => pathsOf(w).map((p) => [i, p] as const));
      fc.assert(
        fc.property(
          fc.constantFrom(...cases),
          fc.anything({
            withBigInt: true,
            withTypedArray: true,
            withMap: true,
            withSet: true,
            withDate: true,
            withNullPrototype: true,
          }),
          ([which, path], value) => {
            const wire = structuredClone(wires[which]) as Record<string, unknown>;
            let target: unknown = wire;
            for (const key of path.slice(0, -1)) target = (target as Record<string, unknown>)[key];
            const last = path[path.length - 1];
            let bytes: Uint8Array;
            try {
              if (last === undefined) bytes = rawCbor.encode(value);
              else {
                (target as Record<string, unknown>)[last] = value;
                bytes = rawCbor.encode(wire);
              }
            } catch {
              return; // not encodable: not a frame anyone can send
            }
            const decoded = decodeOrRefuse(bytes);
            if (decoded) expect(plain(decodeEnvelope(encodeEnvelope(decoded)))).to.deep.equal(plain(decoded));
          },
        ),
        { numRuns: 600 },
      );
    });
  });
});
