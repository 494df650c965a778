import { expect } from "chai";
import { Encoder } from "cbor-x";
import { keccak256 } from "ethers";
import type { Appointment, BalanceProof, NodeKeys, SignedBalanceProof } from "../../protocol/index.js";
import {
  MLDSA_CONTEXT_APPOINTMENT,
  appointmentDigest,
  appointmentFromJson,
  appointmentId,
  appointmentToJson,
  balanceHash,
  balanceProofDigest,
  balanceProofUpdateDigest,
  createAppointment,
  decodeEnvelope,
  encodeEnvelope,
  generateNodeKeys,
  mldsaSign,
  recoverDigestSigner,
  signBalanceProof,
  signBalanceProofUpdate,
  signDigest,
  verifyAppointment,
} from "../../protocol/index.js";
import { expectCode } from "./helpers.js";

const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
/** The same CBOR settings as the wire codec, to build malformed frames. */
const rawCbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

/** The node (tower client, non-closer) re-signs a tampered appointment, so only the tampered field is wrong. */
function resign(a: Appointment, keys: NodeKeys): Appointment {
  const digest = appointmentDigest(a);
  return {
    ...a,
    appointmentSignature: signDigest(digest, keys.secp256k1PrivateKey),
    coSignature: mldsaSign(digest, keys.mldsaSecretKey, MLDSA_CONTEXT_APPOINTMENT),
  };
}

function flipBit(bytes: Uint8Array, index: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  out[index] = (out[index] as number) ^ 0x01;
  return out;
}

describe("protocol/appointment", () => {
  // alice: the node handing the tower its appointment (non-closer); bob: its partner (potential closer).
  let alice: NodeKeys;
  let bob: NodeKeys;
  let mallory: NodeKeys;
  let proof: BalanceProof;
  let bobProof: SignedBalanceProof;
  let appointment: Appointment;

  before(() => {
    alice = generateNodeKeys();
    bob = generateNodeKeys();
    mallory = generateNodeKeys();
    proof = {
      chainId: 31337n,
      hub: HUB,
      channelId: 7n,
      nonce: 5n,
      transferredAmount: 1_000_000n,
      lockedAmount: 25n,
      locksRoot: keccak256("0x1234"),
    };
    bobProof = signBalanceProof(proof, bob);
    appointment = createAppointment(
      bobProof,
      { address: bob.address, mldsaPublicKey: bob.mldsaPublicKey },
      alice,
    );
  });

  const expectInvalidSignature = (a: Appointment, field: string) => {
    const err = expectCode(() => verifyAppointment(a), "INVALID_SIGNATURE");
    expect(err.details.field).to.equal(field);
  };

  it("createAppointment builds a blinded, fully signed appointment that verifyAppointment accepts", () => {
    expect(appointment.chainId).to.equal(31337n);
    expect(appointment.hub).to.equal(HUB);
    expect(appointment.channelId).to.equal(7n);
    expect(appointment.closingParticipant).to.equal(bob.address);
    expect(appointment.nonClosingParticipant).to.equal(alice.address);
    expect(appointment.nonce).to.equal(5n);
    expect(appointment.balanceHash).to.equal(balanceHash(proof));
    expect(appointment.closingSignature).to.equal(bobProof.signature);
    expect(appointment.closingPqSignature).to.deep.equal(bobProof.pqSignature);
    expect(appointment.closingMldsaPublicKey).to.deep.equal(bob.mldsaPublicKey);
    expect(appointment.nonClosingMldsaPublicKey).to.deep.equal(alice.mldsaPublicKey);
    // Blinded: no amounts or locks travel to the tower.
    expect(Object.keys(appointmentToJson(appointment))).to.not.include.members([
      "transferredAmount",
      "lockedAmount",
      "locksRoot",
    ]);
    verifyAppointment(appointment);
  });

  it("the counter-signature is exactly the BalanceProofUpdate signature the ChannelHub checks", () => {
    const digest = balanceProofUpdateDigest(proof, bobProof.signature);
    expect(recoverDigestSigner(digest, appointment.nonClosingSignature)).to.equal(alice.address);
    // RFC 6979 signatures are deterministic: the node's own contest signature is the same bytes.
    expect(appointment.nonClosingSignature).to.equal(
      signBalanceProofUpdate(proof, bobProof.signature, alice),
    );
    // And the closing signature is the closer's over the full (unblinded) BalanceProof digest.
    expect(recoverDigestSigner(balanceProofDigest(proof), appointment.closingSignature)).to.equal(
      bob.address,
    );
  });

  it("a closingSignature by another key is INVALID_SIGNATURE (closingSignature)", () => {
    const forged = signDigest(balanceProofDigest(proof), mallory.secp256k1PrivateKey);
    expectInvalidSignature(resign({ ...appointment, closingSignature: forged }, alice), "closingSignature");
  });

  it("a nonClosingSignature by another key is INVALID_SIGNATURE (nonClosingSignature)", () => {
    const forged = signBalanceProofUpdate(proof, bobProof.signature, mallory);
    expectInvalidSignature(
      resign({ ...appointment, nonClosingSignature: forged }, alice),
      "nonClosingSignature",
    );
  });

  it("an appointmentSignature by another key is INVALID_SIGNATURE (appointmentSignature)", () => {
    const forged = signDigest(appointmentDigest(appointment), mallory.secp256k1PrivateKey);
    expectInvalidSignature({ ...appointment, appointmentSignature: forged }, "appointmentSignature");
  });

  it("ML-DSA material swapped without re-signing breaks the appointmentSignature", () => {
    // Mallory's valid ML-DSA signature of the same digest under her key: only the client's secp256k1
    // appointment signature (over sha256 of both) catches the swap before any ML-DSA check runs.
    const mallorys = signBalanceProof(proof, mallory);
    expectInvalidSignature(
      {
        ...appointment,
        closingPqSignature: mallorys.pqSignature,
        closingMldsaPublicKey: mallory.mldsaPublicKey,
      },
      "appointmentSignature",
    );
  });

  it("a bit flip in closingPqSignature is INVALID_SIGNATURE (closingPqSignature)", () => {
    const tampered = flipBit(appointment.closingPqSignature, 100);
    expectInvalidSignature(
      resign({ ...appointment, closingPqSignature: tampered }, alice),
      "closingPqSignature",
    );
  });

  it("a wrong closingMldsaPublicKey is INVALID_SIGNATURE (closingPqSignature)", () => {
    expectInvalidSignature(
      resign({ ...appointment, closingMldsaPublicKey: mallory.mldsaPublicKey }, alice),
      "closingPqSignature",
    );
  });

  it("a bit flip in coSignature is INVALID_SIGNATURE (coSignature)", () => {
    expectInvalidSignature(
      { ...appointment, coSignature: flipBit(appointment.coSignature, 7) },
      "coSignature",
    );
  });

  it("a wrong nonClosingMldsaPublicKey is INVALID_SIGNATURE (coSignature)", () => {
    // The secp256k1 appointment signature binds the key; re-signed by alice, only the ML-DSA check catches it.
    const a = resign({ ...appointment, nonClosingMldsaPublicKey: mallory.mldsaPublicKey }, alice);
    expectInvalidSignature(a, "coSignature");
  });

  it("refuses to build an appointment for nonce 0", () => {
    // signBalanceProof itself refuses nonce 0: hand-build one.
    const zero: SignedBalanceProof = { ...bobProof, proof: { ...proof, nonce: 0n } };
    const err = expectCode(
      () => createAppointment(zero, { address: bob.address, mldsaPublicKey: bob.mldsaPublicKey }, alice),
      "INVALID_ARGUMENT",
    );
    expect(err.details.field).to.equal("nonce");
  });

  it("appointmentId names the slot: stable across nonces, distinct per channel, participant, hub and chain", () => {
    const id = appointmentId(31337n, HUB, 7n, alice.address);
    expect(id).to.match(/^0x[0-9a-f]{64}$/);
    expect(appointmentId(31337n, HUB.toLowerCase(), 7n, alice.address.toLowerCase())).to.equal(id);
    const next = createAppointment(
      signBalanceProof({ ...proof, nonce: 6n, transferredAmount: 2_000_000n }, bob),
      { address: bob.address, mldsaPublicKey: bob.mldsaPublicKey },
      alice,
    );
    verifyAppointment(next);
    expect(appointmentId(next.chainId, next.hub, next.channelId, next.nonClosingParticipant)).to.equal(id);
    expect(appointmentId(31337n, HUB, 8n, alice.address)).to.not.equal(id);
    expect(appointmentId(31337n, HUB, 7n, bob.address)).to.not.equal(id);
    expect(
      appointmentId(31337n, "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512", 7n, alice.address),
    ).to.not.equal(id);
    expect(appointmentId(1n, HUB, 7n, alice.address)).to.not.equal(id);
  });

  it("JSON form round-trips and still verifies", () => {
    const json = appointmentToJson(appointment);
    expect(json.nonce).to.equal("5");
    expect(json.closingPqSignature).to.match(/^0x[0-9a-f]{6618}$/);
    const back = appointmentFromJson(JSON.parse(JSON.stringify(json)));
    expect(back).to.deep.equal(appointment);
    verifyAppointment(back);
  });

  it("a malformed JSON field is INVALID_ARGUMENT naming the field", () => {
    const json = appointmentToJson(appointment);
    const cases: [string, Record<string, unknown>][] = [
      ["nonce", { ...json, nonce: "05" }],
      ["channelId", { ...json, channelId: -1 }],
      ["hub", { ...json, hub: "0x1234" }],
      ["closingPqSignature", { ...json, closingPqSignature: json.closingPqSignature.slice(0, -2) }],
      ["coSignature", { ...json, coSignature: undefined }],
      ["appointmentSignature", { ...json, appointmentSignature: `${json.appointmentSignature}00` }],
    ];
    for (const [field, bad] of cases) {
      const err = expectCode(() => appointmentFromJson(bad), "INVALID_ARGUMENT");
      expect(err.details.field, field).to.equal(field);
    }
    expect(expectCode(() => appointmentFromJson(null), "INVALID_ARGUMENT").details.field).to.equal(
      "appointment",
    );
  });

  it("Appointment and AppointmentAccepted round-trip through the CBOR envelope", () => {
    const request = decodeEnvelope(encodeEnvelope({ id: 3, body: { type: "Appointment", appointment } }));
    expect(request.id).to.equal(3);
    expect(request.body.type).to.equal("Appointment");
    const decoded = (request.body as { appointment: Appointment }).appointment;
    expect(decoded).to.deep.equal(appointment);
    verifyAppointment(decoded);

    const id = appointmentId(31337n, HUB, 7n, alice.address);
    const reply = decodeEnvelope(
      encodeEnvelope({
        id: 0,
        replyTo: 3,
        body: { type: "AppointmentAccepted", id, nonce: 5n, stored: true },
      }),
    );
    expect(reply).to.deep.equal({
      id: 0,
      replyTo: 3,
      body: { type: "AppointmentAccepted", id, nonce: 5n, stored: true },
    });
  });

  it("a malformed Appointment or AppointmentAccepted frame is INVALID_MESSAGE naming the field", () => {
    const json = appointmentToJson(appointment);
    const badAppointment = rawCbor.encode({
      id: 4,
      body: {
        type: "Appointment",
        appointment: { ...json, closingMldsaPublicKey: json.closingMldsaPublicKey.slice(0, 10) },
      },
    }) as Uint8Array;
    let err = expectCode(() => decodeEnvelope(badAppointment), "INVALID_MESSAGE");
    expect(err.details.field).to.equal("body.appointment.closingMldsaPublicKey");
    const badAccepted = rawCbor.encode({
      id: 0,
      replyTo: 4,
      body: { type: "AppointmentAccepted", id: json.balanceHash, nonce: "1", stored: "yes" },
    }) as Uint8Array;
    err = expectCode(() => decodeEnvelope(badAccepted), "INVALID_MESSAGE");
    expect(err.details.field).to.equal("body.stored");
  });
});
