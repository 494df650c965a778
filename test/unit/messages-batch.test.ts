/**
 * The codecs of batched updates and evidence (docs/PROTOCOL.md §6, §7.3, §7.4): `BalanceUpdate` (1..256
 * changes of four kinds under one proof, with or without ML-DSA-65 evidence) and `Evidence`. Round trips,
 * random batches (fast-check), malformed fields refused with INVALID_MESSAGE naming the field, and random
 * mutations of valid encodings that are either refused that way or decode to something that re-encodes to
 * itself.
 */
import { expect } from "chai";
import { Encoder } from "cbor-x";
import { getAddress, sha256 } from "ethers";
import fc from "fast-check";
import {
  EMPTY_LOCKS_ROOT,
  MAX_BATCH_CHANGES,
  MLDSA65_SIGNATURE_BYTES,
  UINT256_MAX,
  decodeEnvelope,
  encodeEnvelope,
  generateNodeKeys,
  isQrwpError,
  randomSecret,
  signBalanceProof,
  signEvidence,
  verifyBalanceProof,
  verifyEvidence,
  type BalanceChange,
  type BalanceProof,
  type ChannelMessage,
  type Envelope,
  type NodeKeys,
} from "../../protocol/index.js";

const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const rawCbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

/** Decoded messages compared as plain data (byte strings as plain Uint8Arrays). */
function plain(envelope: Envelope): unknown {
  return JSON.parse(
    JSON.stringify(envelope, (_k, v: unknown) =>
      typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? Buffer.from(v).toString("hex") : v,
    ),
  );
}

function fieldOfRefusal(bytes: Uint8Array): string | null {
  try {
    decodeEnvelope(bytes);
    return null;
  } catch (err) {
    expect(isQrwpError(err) && err.code).to.equal("INVALID_MESSAGE");
    return (err as { details: { field: string } }).details.field;
  }
}

describe("protocol/messages: BalanceUpdate and Evidence codecs", () => {
  let keys: NodeKeys;
  let proof: BalanceProof;
  let changes: BalanceChange[];
  let update: ChannelMessage;
  let evidence: ChannelMessage;

  before(() => {
    keys = generateNodeKeys();
    proof = {
      chainId: 31337n,
      hub: HUB,
      channelId: 7n,
      nonce: 9n,
      transferredAmount: 30n,
      lockedAmount: 5n,
      locksRoot: `0x${"ab".repeat(32)}`,
    };
    changes = [
      { kind: "direct", paymentId: "p-1", amount: 10n },
      {
        kind: "lock",
        paymentId: "p-2",
        initiator: getAddress(`0x${"a1".repeat(20)}`),
        target: getAddress(`0x${"d4".repeat(20)}`),
        lock: { amount: 5n, expiration: 1_700_000_000n, secretHash: `0x${"cd".repeat(32)}` },
        route: [{ address: getAddress(`0x${"d4".repeat(20)}`), amount: 5n, expiration: 1_700_000_000n }],
        initiatorMultiaddrs: ["/ip4/127.0.0.1/tcp/4001"],
      },
      { kind: "unlock", paymentId: "p-3", secret: randomSecret() },
      { kind: "expire", secretHash: `0x${"ef".repeat(32)}` },
    ];
    update = {
      type: "BalanceUpdate",
      changes,
      balanceProof: signBalanceProof(proof, keys, { evidence: false }),
    };
    evidence = { type: "Evidence", channelId: 7n, nonce: 9n, pqSignature: signEvidence(proof, keys) };
  });

  it("round-trips a batch of every change kind, without and with evidence, and Evidence", () => {
    const withEvidence: ChannelMessage = {
      ...update,
      balanceProof: signBalanceProof(proof, keys),
    } as ChannelMessage;
    for (const body of [update, withEvidence, evidence]) {
      const envelope: Envelope = { id: 3, body };
      expect(plain(decodeEnvelope(encodeEnvelope(envelope)))).to.deep.equal(plain(envelope));
    }
  });

  it("a proof without evidence verifies only when the caller does not require it; evidence verifies alone", () => {
    const decoded = decodeEnvelope(encodeEnvelope({ id: 1, body: update })).body;
    const signed = (decoded as Extract<ChannelMessage, { type: "BalanceUpdate" }>).balanceProof;
    expect(signed.pqSignature.length).to.equal(0);
    verifyBalanceProof(signed, keys.address, keys.mldsaPublicKey, { requireEvidence: false });
    expect(() => verifyBalanceProof(signed, keys.address, keys.mldsaPublicKey))
      .to.throw()
      .with.property("code", "INVALID_SIGNATURE");
    const ev = decodeEnvelope(encodeEnvelope({ id: 1, body: evidence })).body as Extract<
      ChannelMessage,
      { type: "Evidence" }
    >;
    verifyEvidence(proof, ev.pqSignature, keys.mldsaPublicKey);
    expect(() => verifyEvidence({ ...proof, nonce: 10n }, ev.pqSignature, keys.mldsaPublicKey))
      .to.throw()
      .with.property("code", "INVALID_EVIDENCE");
  });

  it("refuses malformed batches and evidence, naming the field", () => {
    const wire = rawCbor.decode(encodeEnvelope({ id: 1, body: update })) as {
      body: { changes: unknown[]; balanceProof: Record<string, unknown> };
    };
    const encode = (body: unknown) => rawCbor.encode({ id: 1, body }) as Uint8Array;
    expect(fieldOfRefusal(encode({ ...wire.body, changes: [] }))).to.equal("body.changes");
    const many = Array.from({ length: MAX_BATCH_CHANGES + 1 }, () => wire.body.changes[0]);
    expect(fieldOfRefusal(encode({ ...wire.body, changes: many }))).to.equal("body.changes");
    expect(fieldOfRefusal(encode({ ...wire.body, changes: [{ kind: "teleport" }] }))).to.equal(
      "body.changes.0.kind",
    );
    expect(
      fieldOfRefusal(encode({ ...wire.body, changes: [{ kind: "direct", paymentId: "x", amount: "0" }] })),
    ).to.equal("body.changes.0.amount");
    const shortPq = { ...wire.body.balanceProof, pqSignature: new Uint8Array(100) };
    expect(fieldOfRefusal(encode({ ...wire.body, balanceProof: shortPq }))).to.equal(
      "body.balanceProof.pqSignature",
    );
    const ev = rawCbor.decode(encodeEnvelope({ id: 1, body: evidence })) as { body: Record<string, unknown> };
    expect(fieldOfRefusal(encode({ ...ev.body, pqSignature: new Uint8Array(0) }))).to.equal(
      "body.pqSignature",
    );
    expect(fieldOfRefusal(encode({ ...ev.body, nonce: "-1" }))).to.equal("body.nonce");
  });

  it("property: random batches round-trip", () => {
    const u256 = fc.bigInt({ min: 1n, max: UINT256_MAX });
    const id = fc.stringMatching(/^[A-Za-z0-9._:-]{1,128}$/);
    const hash = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => sha256(b));
    const change: fc.Arbitrary<BalanceChange> = fc.oneof(
      fc.record({ kind: fc.constant("direct" as const), paymentId: id, amount: u256 }),
      fc.record({ kind: fc.constant("unlock" as const), paymentId: id, secret: hash }),
      fc.record({ kind: fc.constant("expire" as const), secretHash: hash }),
    );
    const signed = signBalanceProof({ ...proof, locksRoot: EMPTY_LOCKS_ROOT, lockedAmount: 0n }, keys, {
      evidence: false,
    });
    fc.assert(
      fc.property(fc.array(change, { minLength: 1, maxLength: 40 }), fc.nat({ max: 2 ** 31 }), (cs, n) => {
        const envelope: Envelope = {
          id: n,
          body: { type: "BalanceUpdate", changes: cs, balanceProof: signed },
        };
        expect(plain(decodeEnvelope(encodeEnvelope(envelope)))).to.deep.equal(plain(envelope));
      }),
      { numRuns: 200 },
    );
  });

  it("property: mutated or truncated encodings are refused with INVALID_MESSAGE or re-encode to themselves", () => {
    const encodings = [update, evidence].map((body, i) => encodeEnvelope({ id: i, body }));
    fc.assert(
      fc.property(
        fc.nat({ max: encodings.length - 1 }),
        fc.array(fc.record({ at: fc.nat(), byte: fc.nat({ max: 255 }) }), { minLength: 1, maxLength: 8 }),
        fc.option(fc.nat()),
        (which, edits, cut) => {
          const bytes = Uint8Array.from(encodings[which] as Uint8Array);
          for (const { at, byte } of edits) bytes[at % bytes.length] = byte;
          const input = cut === null ? bytes : bytes.subarray(0, cut % (bytes.length + 1));
          if (fieldOfRefusal(input) === null) {
            const decoded = decodeEnvelope(input);
            expect(plain(decodeEnvelope(encodeEnvelope(decoded)))).to.deep.equal(plain(decoded));
          }
        },
      ),
      { numRuns: 400 },
    );
  });

  it("an ML-DSA-65 signature is exactly what the codec takes as evidence", () => {
    expect((evidence as { pqSignature: Uint8Array }).pqSignature.length).to.equal(MLDSA65_SIGNATURE_BYTES);
  });
});
