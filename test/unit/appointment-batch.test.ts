/**
 * protocol/appointment-batch.ts: slots and batches of watchtower appointments signed once by the client; the
 * digests' coverage and bindings, the signature checks naming the slot, the bounds, and the two codecs (CBOR
 * envelope, JSON), fuzzed with fast-check.
 */
import { expect } from "chai";
import { Encoder } from "cbor-x";
import fc from "fast-check";
import {
  MAX_APPOINTMENT_BATCH_JSON_BYTES,
  MAX_APPOINTMENT_BATCH_SLOTS,
  MAX_FRAME_BYTES,
  MLDSA65_PUBLIC_KEY_BYTES,
  MLDSA65_SIGNATURE_BYTES,
  UINT256_MAX,
  appointmentBatchDigest,
  appointmentBatchFromJson,
  appointmentBatchToJson,
  appointmentSlotDigest,
  assertAppointmentBatchShape,
  balanceProofDigest,
  createAppointment,
  createAppointmentSlot,
  decodeEnvelope,
  encodeEnvelope,
  generateNodeKeys,
  isQrwpError,
  signAppointmentBatch,
  signBalanceProof,
  signDigest,
  slotOfAppointment,
  verifyAppointmentBatchSignatures,
  verifyAppointmentSlot,
  verifyAppointmentSlotEvidence,
  type AppointmentBatch,
  type AppointmentSlot,
  type AppointmentSlotResult,
  type ChannelMessage,
  type Envelope,
  type NodeKeys,
  type SignedBalanceProof,
} from "../../protocol/index.js";
import { expectCode } from "./helpers.js";

const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const rawCbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
const hex = (b: Uint8Array) => `0x${Buffer.from(b).toString("hex")}`;

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

/** `n` pseudo-random bytes from a seed (xorshift32): large fields without generating them byte by byte. */
function expand(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const bytesOf = (n: number) => fc.nat().map((seed) => expand(seed, n));
const address = fc.uint8Array({ minLength: 20, maxLength: 20 }).map(hex);
const sig65 = fc.uint8Array({ minLength: 65, maxLength: 65 }).map(hex);
const u256 = fc.bigInt({ min: 0n, max: UINT256_MAX });

/** A batch of the right shape (the signatures are random bytes: the codecs do not check them). */
const batchArb: fc.Arbitrary<AppointmentBatch> = fc
  .record({
    chainId: u256,
    hub: address,
    tower: address,
    client: address,
    clientMldsaPublicKey: bytesOf(MLDSA65_PUBLIC_KEY_BYTES),
    slots: fc.uniqueArray(
      fc.record({
        channelId: u256,
        closingParticipant: address,
        nonce: fc.bigInt({ min: 1n, max: UINT256_MAX }),
        balanceHash: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => {
          b[0] = 1; // never the zero hash
          return hex(b);
        }),
        closingSignature: sig65,
        closingPqSignature: bytesOf(MLDSA65_SIGNATURE_BYTES),
        closingMldsaPublicKey: bytesOf(MLDSA65_PUBLIC_KEY_BYTES),
        nonClosingSignature: sig65,
      }),
      {
        minLength: 1,
        maxLength: MAX_APPOINTMENT_BATCH_SLOTS,
        selector: (s) => `${s.channelId}:${s.nonce}`,
      },
    ),
    batchSignature: sig65,
    coSignature: bytesOf(MLDSA65_SIGNATURE_BYTES),
  })
  .filter((b) => b.slots.every((s) => s.closingParticipant !== b.client));

describe("protocol/appointment-batch", () => {
  // alice: the client (non-closer) of channels with bob and carol (the closers); mallory forges.
  let alice: NodeKeys;
  let bob: NodeKeys;
  let carol: NodeKeys;
  let mallory: NodeKeys;
  let tower: NodeKeys;
  let slots: AppointmentSlot[];
  let batch: AppointmentBatch;
  let firstProof: SignedBalanceProof;

  const proofOf = (closer: NodeKeys, channelId: bigint, nonce: bigint, keys = closer) =>
    signBalanceProof(
      {
        chainId: 31337n,
        hub: HUB,
        channelId,
        nonce,
        transferredAmount: nonce * 1_000n,
        lockedAmount: 0n,
        locksRoot: `0x${"00".repeat(32)}`,
      },
      keys,
    );
  const slotOf = (
    closer: NodeKeys,
    channelId: bigint,
    nonce: bigint,
    proof = proofOf(closer, channelId, nonce),
  ) =>
    createAppointmentSlot(proof, { address: closer.address, mldsaPublicKey: closer.mldsaPublicKey }, alice);
  const target = () => ({ chainId: 31337n, hub: HUB, tower: tower.address });
  const ctx = () => ({ chainId: 31337n, hub: HUB, client: alice.address });

  before(() => {
    alice = generateNodeKeys();
    bob = generateNodeKeys();
    carol = generateNodeKeys();
    mallory = generateNodeKeys();
    tower = generateNodeKeys();
    firstProof = proofOf(bob, 1n, 3n);
    slots = [slotOf(bob, 1n, 3n, firstProof), slotOf(carol, 2n, 1n), slotOf(bob, 1n, 4n)];
    batch = signAppointmentBatch(target(), slots, alice);
  });

  it("signAppointmentBatch signs once for a tower; every slot and the batch signatures verify", () => {
    expect(batch.client).to.equal(alice.address);
    expect(batch.tower).to.equal(tower.address);
    expect(batch.clientMldsaPublicKey).to.deep.equal(alice.mldsaPublicKey);
    verifyAppointmentBatchSignatures(batch, appointmentBatchDigest(batch));
    for (const s of batch.slots) {
      verifyAppointmentSlot(ctx(), s);
      verifyAppointmentSlotEvidence(ctx(), s);
    }
  });

  it("a slot is what a single appointment carries: same fields, same slot digest", () => {
    const single = createAppointment(
      firstProof,
      { address: bob.address, mldsaPublicKey: bob.mldsaPublicKey },
      alice,
    );
    expect(slotOfAppointment(single)).to.deep.equal(slots[0]);
    expect(appointmentSlotDigest(ctx(), slotOfAppointment(single))).to.deep.equal(
      appointmentSlotDigest(ctx(), slots[0]!),
    );
  });

  it("the batch digest commits to every slot field, the slot order, the tower, the client and its key", () => {
    const base = hex(appointmentBatchDigest(batch));
    const s0 = batch.slots[0]!;
    const variants: Partial<AppointmentSlot>[] = [
      { channelId: 9n },
      { closingParticipant: carol.address },
      { nonce: 5n },
      { balanceHash: `0x${"11".repeat(32)}` },
      { closingSignature: batch.slots[1]!.closingSignature },
      { closingPqSignature: batch.slots[1]!.closingPqSignature },
      { closingMldsaPublicKey: carol.mldsaPublicKey },
      { nonClosingSignature: batch.slots[1]!.nonClosingSignature },
    ];
    const digests = new Set([base]);
    for (const v of variants) {
      digests.add(
        hex(appointmentBatchDigest({ ...batch, slots: [{ ...s0, ...v }, ...batch.slots.slice(1)] })),
      );
    }
    digests.add(hex(appointmentBatchDigest({ ...batch, slots: [...batch.slots].reverse() })));
    digests.add(hex(appointmentBatchDigest({ ...batch, slots: batch.slots.slice(0, 2) })));
    digests.add(hex(appointmentBatchDigest({ ...batch, tower: mallory.address })));
    digests.add(hex(appointmentBatchDigest({ ...batch, client: mallory.address })));
    digests.add(hex(appointmentBatchDigest({ ...batch, clientMldsaPublicKey: mallory.mldsaPublicKey })));
    digests.add(hex(appointmentBatchDigest({ ...batch, chainId: 1n })));
    digests.add(hex(appointmentBatchDigest({ ...batch, hub: mallory.address })));
    expect(digests.size).to.equal(1 + variants.length + 7);
  });

  it("batch signatures: another key's secp256k1 or ML-DSA-65 signature is INVALID_SIGNATURE naming it", () => {
    const digest = appointmentBatchDigest(batch);
    const forgedSecp = { ...batch, batchSignature: signDigest(digest, mallory.secp256k1PrivateKey) };
    let err = expectCode(() => verifyAppointmentBatchSignatures(forgedSecp, digest), "INVALID_SIGNATURE");
    expect(err.details.field).to.equal("batchSignature");
    // Mallory's ML-DSA co-signature of the very same digest: only the ML-DSA check under alice's key catches it.
    const malloryBatch = signAppointmentBatch(target(), slots, mallory);
    const forgedPq = { ...batch, coSignature: malloryBatch.coSignature };
    err = expectCode(() => verifyAppointmentBatchSignatures(forgedPq, digest), "INVALID_SIGNATURE");
    expect(err.details.field).to.equal("coSignature");
  });

  it("slot signatures: the closer's, the client's and the evidence fail naming the slot's field", () => {
    const s = batch.slots[1]!;
    const proof = proofOf(carol, 2n, 1n);
    const forgedCloser = {
      ...s,
      closingSignature: signDigest(balanceProofDigest(proof.proof), mallory.secp256k1PrivateKey),
    };
    let err = expectCode(() => verifyAppointmentSlot(ctx(), forgedCloser, "slots.1."), "INVALID_SIGNATURE");
    expect(err.details.field).to.equal("slots.1.closingSignature");
    const wrongClient = { ...ctx(), client: mallory.address };
    err = expectCode(() => verifyAppointmentSlot(wrongClient, s, "slots.1."), "INVALID_SIGNATURE");
    expect(err.details.field).to.equal("slots.1.nonClosingSignature");
    const flipped = Uint8Array.from(s.closingPqSignature);
    flipped[10]! ^= 1;
    err = expectCode(
      () => verifyAppointmentSlotEvidence(ctx(), { ...s, closingPqSignature: flipped }, "slots.1."),
      "INVALID_SIGNATURE",
    );
    expect(err.details.field).to.equal("slots.1.closingPqSignature");
    // Evidence by another key (mallory's valid signature of the same digest under her key) is refused too.
    const mallorys = proofOf(carol, 2n, 1n, mallory);
    err = expectCode(
      () =>
        verifyAppointmentSlotEvidence(
          ctx(),
          { ...s, closingPqSignature: mallorys.pqSignature, closingMldsaPublicKey: carol.mldsaPublicKey },
          "slots.1.",
        ),
      "INVALID_SIGNATURE",
    );
    expect(err.details.field).to.equal("slots.1.closingPqSignature");
  });

  it("bounds: 0 or more than 64 slots, and two slots of one channel with one nonce, are INVALID_ARGUMENT", () => {
    expect(
      expectCode(() => assertAppointmentBatchShape({ ...batch, slots: [] }), "INVALID_ARGUMENT").details
        .field,
    ).to.equal("slots");
    const many = Array.from({ length: MAX_APPOINTMENT_BATCH_SLOTS + 1 }, (_, i) => ({
      ...slots[0]!,
      nonce: BigInt(i + 1),
    }));
    expect(
      expectCode(() => assertAppointmentBatchShape({ ...batch, slots: many }), "INVALID_ARGUMENT").details
        .field,
    ).to.equal("slots");
    expect(
      expectCode(() => signAppointmentBatch(target(), many, alice), "INVALID_ARGUMENT").details.field,
    ).to.equal("slots");
    const dup = [slots[0]!, slots[1]!, { ...slots[0]! }];
    expect(
      expectCode(() => assertAppointmentBatchShape({ ...batch, slots: dup }), "INVALID_ARGUMENT").details
        .field,
    ).to.equal("slots.2.nonce");
    const selfClose = [slots[0]!, { ...slots[1]!, closingParticipant: alice.address }];
    expect(
      expectCode(() => assertAppointmentBatchShape({ ...batch, slots: selfClose }), "INVALID_ARGUMENT")
        .details.field,
    ).to.equal("slots.1.closingParticipant");
    const zeroNonce = [{ ...slots[0]!, nonce: 0n }];
    expect(
      expectCode(() => assertAppointmentBatchShape({ ...batch, slots: zeroNonce }), "INVALID_ARGUMENT")
        .details.field,
    ).to.equal("slots.0.nonce");
  });

  it("a full batch of the largest slots fits one frame (CBOR) and the HTTP body limit (JSON)", () => {
    const big: AppointmentSlot = { ...slots[0]!, channelId: UINT256_MAX, nonce: UINT256_MAX };
    const full = Array.from({ length: MAX_APPOINTMENT_BATCH_SLOTS }, (_, i) => ({
      ...big,
      channelId: UINT256_MAX - BigInt(i),
    }));
    const b = { ...batch, chainId: UINT256_MAX, slots: full };
    assertAppointmentBatchShape(b);
    const frame = encodeEnvelope({
      id: Number.MAX_SAFE_INTEGER,
      body: { type: "AppointmentBatch", batch: b },
    });
    expect(frame.length).to.be.lessThan(MAX_FRAME_BYTES / 2);
    const json = JSON.stringify(appointmentBatchToJson(b));
    expect(json.length).to.be.lessThan(MAX_APPOINTMENT_BATCH_JSON_BYTES);
    expect(json.length).to.be.greaterThan(MAX_APPOINTMENT_BATCH_JSON_BYTES / 2);
  });

  it("an oversized batch frame is INVALID_MESSAGE naming body.batch.slots", () => {
    const wire = rawCbor.decode(encodeEnvelope({ id: 1, body: { type: "AppointmentBatch", batch } })) as {
      body: { batch: { slots: unknown[] } };
    };
    const s0 = wire.body.batch.slots[0] as Record<string, unknown>;
    wire.body.batch.slots = Array.from({ length: MAX_APPOINTMENT_BATCH_SLOTS + 1 }, (_, i) => ({
      ...s0,
      nonce: `${i + 1}`,
    }));
    const err = expectCode(() => decodeEnvelope(rawCbor.encode(wire) as Uint8Array), "INVALID_MESSAGE");
    expect(err.details.field).to.equal("body.batch.slots");
  });

  it("the JSON form names a bad slot's field: slots.<index>.<field>", () => {
    const json = appointmentBatchToJson(batch) as Record<string, unknown> & {
      slots: Record<string, unknown>[];
    };
    const withSlot = (i: number, patch: Record<string, unknown>) => ({
      ...json,
      slots: json.slots.map((s, j) => (j === i ? { ...s, ...patch } : s)),
    });
    const cases: [string, unknown][] = [
      ["slots.2.closingPqSignature", withSlot(2, { closingPqSignature: "0x00" })],
      ["slots.1.nonce", withSlot(1, { nonce: "01" })],
      ["slots.0.closingMldsaPublicKey", withSlot(0, { closingMldsaPublicKey: undefined })],
      ["tower", { ...json, tower: "0x12" }],
      ["coSignature", { ...json, coSignature: `${String(json.coSignature)}00` }],
      ["slots", { ...json, slots: [] }],
      ["slots.2.nonce", withSlot(2, { nonce: "3" })], // the same channel and nonce as slot 0
    ];
    for (const [field, bad] of cases) {
      const err = expectCode(() => appointmentBatchFromJson(bad), "INVALID_ARGUMENT");
      expect(err.details.field, field).to.equal(field);
    }
  });

  it("AppointmentBatchAccepted round-trips through the CBOR envelope", () => {
    const results: AppointmentSlotResult[] = [
      { id: `0x${"ab".repeat(32)}`, nonce: 3n, outcome: "superseded" },
      { id: `0x${"cd".repeat(32)}`, nonce: 1n, outcome: "refused", code: "STALE_NONCE", message: "held 2" },
      { id: `0x${"ab".repeat(32)}`, nonce: 4n, outcome: "stored" },
    ];
    const body: ChannelMessage = { type: "AppointmentBatchAccepted", results };
    expect(decodeEnvelope(encodeEnvelope({ id: 0, replyTo: 7, body }))).to.deep.equal({
      id: 0,
      replyTo: 7,
      body,
    });
  });

  describe("fuzzing (fast-check)", () => {
    it("property: any well-shaped batch round-trips through the CBOR envelope and the JSON form", () => {
      fc.assert(
        fc.property(batchArb, fc.nat({ max: Number.MAX_SAFE_INTEGER }), (b, id) => {
          const envelope: Envelope = { id, body: { type: "AppointmentBatch", batch: b } };
          expect(decodeEnvelope(encodeEnvelope(envelope))).to.deep.equal(envelope);
          const json = JSON.parse(JSON.stringify(appointmentBatchToJson(b))) as unknown;
          expect(appointmentBatchFromJson(json)).to.deep.equal(b);
          // The digest is a function of the content only: the decoded batch has the same one.
          expect(appointmentBatchDigest(appointmentBatchFromJson(json))).to.deep.equal(
            appointmentBatchDigest(b),
          );
        }),
        { numRuns: 60 },
      );
    });

    it("property: random byte mutations and truncations of a valid batch frame are refused as INVALID_MESSAGE or decode", () => {
      const frames = [
        encodeEnvelope({ id: 1, body: { type: "AppointmentBatch", batch } }),
        encodeEnvelope({
          id: 2,
          replyTo: 1,
          body: {
            type: "AppointmentBatchAccepted",
            results: [
              {
                id: `0x${"ab".repeat(32)}`,
                nonce: 3n,
                outcome: "refused",
                code: "CHANNEL_STATE",
                message: "x",
              },
            ],
          },
        }),
      ];
      fc.assert(
        fc.property(
          fc.nat({ max: frames.length - 1 }),
          fc.array(fc.record({ at: fc.nat(), byte: fc.nat({ max: 255 }) }), { minLength: 1, maxLength: 8 }),
          fc.option(fc.nat()),
          (which, edits, cut) => {
            const bytes = Uint8Array.from(frames[which]!);
            for (const { at, byte } of edits) bytes[at % bytes.length] = byte;
            const input = cut === null ? bytes : bytes.subarray(0, cut % (bytes.length + 1));
            const decoded = decodeOrRefuse(input);
            if (decoded) expect(decodeEnvelope(encodeEnvelope(decoded))).to.deep.equal(decoded);
          },
        ),
        { numRuns: 400 },
      );
    });

    it("property: any value in place of any field of a batch frame is refused as INVALID_MESSAGE or decodes", () => {
      const wire = rawCbor.decode(
        encodeEnvelope({ id: 1, body: { type: "AppointmentBatch", batch } }),
      ) as Record<string, unknown>;
      const pathsOf = (v: unknown, prefix: string[] = []): string[][] => {
        if (v === null || typeof v !== "object" || v instanceof Uint8Array) return [prefix];
        return [prefix, ...Object.entries(v).flatMap(([k, child]) => pathsOf(child, [...prefix, k]))];
      };
      fc.assert(
        fc.property(
          fc.constantFrom(...pathsOf(wire)),
          fc.anything({
            withBigInt: true,
            withTypedArray: true,
            withMap: true,
            withSet: true,
            withDate: true,
          }),
          (path, value) => {
            const copy = structuredClone(wire);
            let target: unknown = copy;
            for (const key of path.slice(0, -1)) target = (target as Record<string, unknown>)[key];
            const last = path[path.length - 1];
            let bytes: Uint8Array;
            try {
              if (last === undefined) bytes = rawCbor.encode(value) as Uint8Array;
              else {
                (target as Record<string, unknown>)[last] = value;
                bytes = rawCbor.encode(copy) as Uint8Array;
              }
            } catch {
              return; // not encodable: not a frame anyone can send
            }
            const decoded = decodeOrRefuse(bytes);
            if (decoded) expect(decodeEnvelope(encodeEnvelope(decoded))).to.deep.equal(decoded);
          },
        ),
        { numRuns: 400 },
      );
    });

    it("property: appointmentBatchFromJson throws nothing but INVALID_ARGUMENT naming a field", () => {
      const json = appointmentBatchToJson(batch) as Record<string, unknown>;
      const keys = Object.keys(json);
      fc.assert(
        fc.property(fc.constantFrom(...keys), fc.anything({ withBigInt: true }), (key, value) => {
          try {
            appointmentBatchFromJson({ ...json, [key]: value });
          } catch (e) {
            expect(isQrwpError(e)).to.equal(true);
            expect((e as { code: string }).code).to.equal("INVALID_ARGUMENT");
            expect((e as { details: { field: unknown } }).details.field).to.be.a("string");
          }
        }),
        { numRuns: 300 },
      );
    });
  });
});
