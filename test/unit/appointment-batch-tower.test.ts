/**
 * Watchtower.submitBatch and `POST /v1/appointment-batches` against a real SQLite store and real signatures,
 * without a chain (the tower is not started: channels are put in its store as its follower would). Covers what
 * a batch stores (the highest nonce per channel, lower ones superseded), what refuses it whole with nothing
 * stored (a bad slot, a forged co-signature, an oversized batch, another tower's batch, a key other than the
 * pinned one), what is answered per slot (stale, unknown channel, settled channel), and a replayed batch.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import type { Deployment } from "../../chain/index.js";
import {
  MAX_APPOINTMENT_BATCH_SLOTS,
  appointmentBatchToJson,
  appointmentId,
  createAppointment,
  createAppointmentSlot,
  generateNodeKeys,
  signAppointmentBatch,
  signBalanceProof,
  signDigest,
  type AppointmentBatch,
  type AppointmentSlot,
  type NodeKeys,
  type SignedBalanceProof,
} from "../../protocol/index.js";
import { balanceProofDigest } from "../../protocol/balance-proof.js";
import { buildTowerApi } from "../../watchtower/api.js";
import type { TowerChain } from "../../watchtower/chain.js";
import { Watchtower } from "../../watchtower/service.js";
import { WatchtowerStore } from "../../watchtower/store.js";
import { expectRejectCode } from "./helpers.js";

const log = pino({ level: "silent" });
const deployment: Deployment = {
  chainId: "31337",
  bridge: "0x0000000000000000000000000000000000000b01",
  hub: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
  secretRegistry: "0x0000000000000000000000000000000000000b02",
  token: null,
  deployBlock: 1,
};

describe("watchtower: appointment batches (Watchtower.submitBatch, POST /v1/appointment-batches)", function () {
  this.timeout(120_000);
  let store: WatchtowerStore;
  let tower: Watchtower;
  let towerKeys: NodeKeys;
  let alice: NodeKeys; // the client
  let bob: NodeKeys; // a closer
  let carol: NodeKeys; // another closer
  let mallory: NodeKeys;
  let nextChannel = 1n;
  const proofs = new Map<string, SignedBalanceProof>();

  before(() => {
    towerKeys = generateNodeKeys();
    alice = generateNodeKeys();
    bob = generateNodeKeys();
    carol = generateNodeKeys();
    mallory = generateNodeKeys();
  });

  beforeEach(() => {
    store = new WatchtowerStore(join(mkdtempSync(join(tmpdir(), "qrwp-tower-batch-")), "watchtower.db"));
    tower = new Watchtower({
      store,
      deployment,
      chain: {} as TowerChain, // submitBatch makes no chain call
      address: towerKeys.address,
      rpcUrls: ["http://127.0.0.1:9"],
      log,
    });
  });

  afterEach(async () => {
    await tower.stop(); // its ML-DSA-65 threads
    store.close();
  });

  /** A channel closer <-> alice, known to the tower. */
  function channel(closer: NodeKeys, state: "opened" | "settled" = "opened"): bigint {
    const channelId = nextChannel++;
    store.putChannel({
      channelId,
      participant1: closer.address,
      participant2: alice.address,
      settleTimeoutSeconds: 600,
      state,
      closingParticipant: null,
      closedAtSeconds: null,
      closerNonce: null,
    });
    return channelId;
  }

  /** The closer's signed proof of a channel at a nonce (signed once per (channel, nonce) in this file). */
  function proof(closer: NodeKeys, channelId: bigint, nonce: bigint): SignedBalanceProof {
    const key = `${closer.address}:${channelId}:${nonce}`;
    let p = proofs.get(key);
    if (!p) {
      p = signBalanceProof(
        {
          chainId: 31337n,
          hub: deployment.hub,
          channelId,
          nonce,
          transferredAmount: nonce * 7n,
          lockedAmount: 0n,
          locksRoot: `0x${"00".repeat(32)}`,
        },
        closer,
      );
      proofs.set(key, p);
    }
    return p;
  }

  const slot = (closer: NodeKeys, channelId: bigint, nonce: bigint): AppointmentSlot =>
    createAppointmentSlot(
      proof(closer, channelId, nonce),
      { address: closer.address, mldsaPublicKey: closer.mldsaPublicKey },
      alice,
    );

  const sign = (slots: AppointmentSlot[], client = alice, towerAddress = towerKeys.address) =>
    signAppointmentBatch({ chainId: 31337n, hub: deployment.hub, tower: towerAddress }, slots, client);

  const held = (channelId: bigint) =>
    store.appointment(appointmentId(31337n, deployment.hub, channelId, alice.address))?.nonce ?? null;

  function expectNothingStored(channels: bigint[]) {
    for (const c of channels) expect(held(c), `channel ${c}`).to.equal(null);
    expect(store.clientKeyHash(alice.address)).to.equal(null);
    expect(store.stats().appointmentsAccepted).to.equal(0);
  }

  it("stores the highest nonce of each channel in one transaction; the lower slots are superseded", async () => {
    const c1 = channel(bob);
    const c2 = channel(carol);
    const b = sign([slot(bob, c1, 1n), slot(carol, c2, 4n), slot(bob, c1, 3n), slot(bob, c1, 2n)]);
    const r = await tower.submitBatch(b, { address: alice.address });
    expect(r.results.map((x) => x.outcome)).to.deep.equal(["superseded", "stored", "stored", "superseded"]);
    expect(r).to.deep.include({ stored: 2, superseded: 2, replayed: 0, refused: 0 });
    expect(held(c1)).to.equal(3n);
    expect(held(c2)).to.equal(4n);
    const stats = store.stats();
    expect(stats).to.deep.include({
      appointmentsAccepted: 2,
      appointmentsSuperseded: 2,
      batchesAccepted: 1,
      clients: 1,
    });
    // The stored row is what the contest needs: the closer's and the client's secp256k1 signatures.
    const row = store.appointment(r.results[2]!.id)!;
    expect(row.closingSignature).to.equal(proof(bob, c1, 3n).signature);
    expect(row.nonClosingSignature).to.equal(b.slots[2]!.nonClosingSignature);
    expect(row.status).to.equal("watching");
  });

  it("a replayed batch changes nothing: the same slots are answered replayed or superseded", async () => {
    const c1 = channel(bob);
    const c2 = channel(carol);
    const b = sign([slot(bob, c1, 1n), slot(bob, c1, 2n), slot(carol, c2, 1n)]);
    await tower.submitBatch(b);
    const before = store.stats();
    const again = await tower.submitBatch(b);
    expect(again.results.map((x) => x.outcome)).to.deep.equal(["superseded", "replayed", "replayed"]);
    expect(again).to.deep.include({ stored: 0, replayed: 2 });
    expect(store.stats()).to.deep.equal(before);
    // A single appointment for a slot a batch stored is a replay too (the slot digest names the content).
    const single = createAppointment(
      proof(carol, c2, 1n),
      { address: carol.address, mldsaPublicKey: carol.mldsaPublicKey },
      alice,
    );
    expect((await tower.submit(single)).stored).to.equal(false);
  });

  it("a bad slot refuses the whole batch, naming the slot; nothing is stored", async () => {
    const c1 = channel(bob);
    const c2 = channel(carol);
    const c3 = channel(bob);
    const good = [slot(bob, c1, 1n), slot(carol, c2, 1n)];
    // The client signed a batch whose third slot's closer signature is mallory's.
    const forged = { ...slot(bob, c3, 1n) };
    forged.closingSignature = signDigest(
      balanceProofDigest(proof(bob, c3, 1n).proof),
      mallory.secp256k1PrivateKey,
    );
    let err = await expectRejectCode(() => tower.submitBatch(sign([...good, forged])), "INVALID_SIGNATURE");
    expect(err.details.field).to.equal("slots.2.closingSignature");
    // Bad evidence on the slot to store: the closer's ML-DSA-65 signature.
    const badEvidence = { ...slot(bob, c3, 1n) };
    badEvidence.closingPqSignature = Uint8Array.from(badEvidence.closingPqSignature);
    badEvidence.closingPqSignature[5]! ^= 1;
    err = await expectRejectCode(() => tower.submitBatch(sign([...good, badEvidence])), "INVALID_SIGNATURE");
    expect(err.details.field).to.equal("slots.2.closingPqSignature");
    // A closer who is not the client's partner in that channel.
    const stranger = { ...slot(bob, c3, 1n), closingParticipant: carol.address };
    err = await expectRejectCode(() => tower.submitBatch(sign([...good, stranger])), "NOT_PARTICIPANT");
    expect(err.details.field).to.equal("slots.2.closingParticipant");
    expectNothingStored([c1, c2, c3]);
    expect(store.stats().appointmentsRefused).to.equal(9);
  });

  it("the evidence is checked once per channel: on the slot the tower stores, not on superseded ones", async () => {
    const c1 = channel(bob);
    const lower = { ...slot(bob, c1, 1n) };
    lower.closingPqSignature = new Uint8Array(lower.closingPqSignature.length); // no evidence checked here
    const r = await tower.submitBatch(sign([lower, slot(bob, c1, 2n)]));
    expect(r.results.map((x) => x.outcome)).to.deep.equal(["superseded", "stored"]);
    // Its secp256k1 signatures are checked like every slot's.
    const c2 = channel(bob);
    const badLower = { ...slot(bob, c2, 1n), nonClosingSignature: slot(bob, c2, 2n).nonClosingSignature };
    const err = await expectRejectCode(
      () => tower.submitBatch(sign([badLower, slot(bob, c2, 2n)])),
      "INVALID_SIGNATURE",
    );
    expect(err.details.field).to.equal("slots.0.nonClosingSignature");
    expect(held(c2)).to.equal(null);
  });

  it("a forged co-signature refuses the batch (coSignature); nothing is stored", async () => {
    const c1 = channel(bob);
    const b = sign([slot(bob, c1, 1n)]);
    const mallorys = sign(b.slots, mallory);
    let err = await expectRejectCode(
      () => tower.submitBatch({ ...b, coSignature: mallorys.coSignature }),
      "INVALID_SIGNATURE",
    );
    expect(err.details.field).to.equal("coSignature");
    err = await expectRejectCode(
      () => tower.submitBatch({ ...b, batchSignature: mallorys.batchSignature }),
      "INVALID_SIGNATURE",
    );
    expect(err.details.field).to.equal("batchSignature");
    // Once alice's key is pinned, a batch under another ML-DSA key (self-consistently signed) is refused.
    await tower.submitBatch(b);
    const other: NodeKeys = {
      ...alice,
      mldsaPublicKey: mallory.mldsaPublicKey,
      mldsaSecretKey: mallory.mldsaSecretKey,
    };
    err = await expectRejectCode(
      () => tower.submitBatch(sign([slot(bob, c1, 2n)], other)),
      "INVALID_SIGNATURE",
    );
    expect(err.details.field).to.equal("clientMldsaPublicKey");
    expect(held(c1)).to.equal(1n);
  });

  it("boundary refusals: oversized, another tower's, another sender's, another hub's batch", async () => {
    const c1 = channel(bob);
    const s = slot(bob, c1, 1n);
    const b = sign([s]);
    const oversized: AppointmentBatch = {
      ...b,
      slots: Array.from({ length: MAX_APPOINTMENT_BATCH_SLOTS + 1 }, (_, i) => ({
        ...s,
        nonce: BigInt(i + 1),
      })),
    };
    expect(
      (await expectRejectCode(() => tower.submitBatch(oversized), "INVALID_ARGUMENT")).details.field,
    ).to.equal("slots");
    expect(
      (await expectRejectCode(() => tower.submitBatch(sign([s], alice, mallory.address)), "INVALID_ARGUMENT"))
        .details.field,
    ).to.equal("tower");
    expect(
      (await expectRejectCode(() => tower.submitBatch(b, { address: mallory.address }), "NOT_PARTICIPANT"))
        .details.field,
    ).to.equal("client");
    expect(
      (await expectRejectCode(() => tower.submitBatch({ ...b, chainId: 1n }), "UNKNOWN_HUB")).details.field,
    ).to.equal("chainId");
    expectNothingStored([c1]);
  });

  it("stale, unknown-channel and settled-channel slots are refused on their own; the others are stored", async () => {
    const c1 = channel(bob);
    const c2 = channel(carol);
    const settled = channel(bob, "settled");
    await tower.submitBatch(sign([slot(bob, c1, 5n)]));
    const r = await tower.submitBatch(
      sign([
        slot(bob, c1, 3n),
        slot(bob, c1, 4n),
        slot(carol, c2, 1n),
        slot(bob, 999n, 1n),
        slot(bob, settled, 1n),
      ]),
    );
    expect(r.results.map((x) => [x.outcome, x.code])).to.deep.equal([
      ["refused", "STALE_NONCE"],
      ["refused", "STALE_NONCE"],
      ["stored", undefined],
      ["refused", "CHANNEL_NOT_FOUND"],
      ["refused", "CHANNEL_STATE"],
    ]);
    expect(r).to.deep.include({ stored: 1, refused: 4 });
    expect(held(c1)).to.equal(5n);
    expect(held(c2)).to.equal(1n);
    expect(store.stats()).to.deep.include({ appointmentsAccepted: 2, appointmentsRefused: 4 });
  });

  it("the store is read again after the ML-DSA-65 checks: a channel settled meanwhile is refused, the other slot stored", async () => {
    const c1 = channel(bob);
    const c2 = channel(carol);
    const pending = tower.submitBatch(sign([slot(bob, c1, 1n), slot(carol, c2, 1n)]));
    // While the worker threads check the evidence, the follower applies c1's settlement.
    store.putChannel({ ...store.channel(c1)!, state: "settled" });
    const r = await pending;
    expect(r.results.map((x) => [x.outcome, x.code])).to.deep.equal([
      ["refused", "CHANNEL_STATE"],
      ["stored", undefined],
    ]);
    expect(held(c1)).to.equal(null);
    expect(held(c2)).to.equal(1n);
  });

  it("batches in flight at once for one channel: the highest nonce is held, an identical batch is stored once", async () => {
    const c1 = channel(bob);
    const [high, low] = await Promise.allSettled([
      tower.submitBatch(sign([slot(bob, c1, 5n)])),
      tower.submitBatch(sign([slot(bob, c1, 3n)])),
    ]);
    expect(high.status).to.equal("fulfilled");
    expect(low.status).to.equal("fulfilled");
    expect(held(c1)).to.equal(5n);
    const c2 = channel(carol);
    const b = sign([slot(carol, c2, 1n), slot(carol, c2, 2n)]);
    const both = await Promise.all([tower.submitBatch(b), tower.submitBatch(b)]);
    expect(both.map((r) => r.stored).sort()).to.deep.equal([0, 1]);
    expect(both.map((r) => r.replayed).sort()).to.deep.equal([0, 1]);
    expect(held(c2)).to.equal(2n);
  });

  it("the same coded errors with the ML-DSA-65 checks on the main thread (mldsaVerifyThreads 0)", async () => {
    const inline = new Watchtower({
      store,
      deployment,
      chain: {} as TowerChain,
      address: towerKeys.address,
      rpcUrls: ["http://127.0.0.1:9"],
      mldsaVerifyThreads: 0,
      log,
    });
    const c1 = channel(bob);
    const badEvidence = { ...slot(bob, c1, 1n) };
    badEvidence.closingPqSignature = Uint8Array.from(badEvidence.closingPqSignature);
    badEvidence.closingPqSignature[9]! ^= 1;
    const err = await expectRejectCode(() => inline.submitBatch(sign([badEvidence])), "INVALID_SIGNATURE");
    expect(err.details.field).to.equal("slots.0.closingPqSignature");
    expect((await inline.submitBatch(sign([slot(bob, c1, 1n)]))).stored).to.equal(1);
  });

  describe("POST /v1/appointment-batches", () => {
    let api: FastifyInstance;
    beforeEach(async () => {
      api = await buildTowerApi({ tower, store, log, info: async () => ({}) });
    });
    afterEach(async () => api.close());

    const post = (payload: unknown) =>
      api.inject({
        method: "POST",
        url: "/v1/appointment-batches",
        payload: payload as Record<string, unknown>,
      });

    it("answers one result per slot; a bad slot is 400 naming slots.<index>.<field>; too many slots is 400 slots", async () => {
      const c1 = channel(bob);
      const b = sign([slot(bob, c1, 1n), slot(bob, c1, 2n)]);
      const ok = await post(appointmentBatchToJson(b));
      expect(ok.statusCode).to.equal(200);
      const body = ok.json<{ stored: number; results: { outcome: string; nonce: string }[] }>();
      expect(body.stored).to.equal(1);
      expect(body.results.map((x) => [x.outcome, x.nonce])).to.deep.equal([
        ["superseded", "1"],
        ["stored", "2"],
      ]);
      const json = appointmentBatchToJson(sign([slot(bob, c1, 3n)])) as { slots: Record<string, unknown>[] };
      const bad = { ...json, slots: [{ ...json.slots[0], nonce: "3x" }] };
      let res = await post(bad);
      expect(res.statusCode).to.equal(400);
      expect(res.json<{ error: { details: { field: string } } }>().error.details.field).to.equal(
        "slots.0.nonce",
      );
      const many = {
        ...json,
        slots: Array.from({ length: MAX_APPOINTMENT_BATCH_SLOTS + 1 }, () => json.slots[0]),
      };
      res = await post(many);
      expect(res.statusCode).to.equal(400);
      expect(res.json<{ error: { code: string; details: { field: string } } }>().error).to.deep.include({
        code: "INVALID_ARGUMENT",
      });
      const field = (r: typeof res) =>
        r.json<{ error: { details: { field: string } } }>().error.details.field;
      expect(field(res)).to.equal("slots");
      // A body over the route's limit (1 MiB) is refused before it is parsed.
      res = await post({ ...json, pad: "0".repeat(1024 * 1024) });
      expect(res.statusCode).to.equal(400);
      expect(field(res)).to.equal("body");
      expect(held(c1)).to.equal(2n);
    });
  });
});
