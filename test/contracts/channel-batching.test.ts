/**
 * Batched balance updates and amortized post-quantum evidence (docs/PROTOCOL.md §7.3, §7.4), in-process:
 * `ChannelService`s with real SQLite stores, real libp2p over TCP on 127.0.0.1 and real keys, against the
 * in-process Hardhat chain. Batches of 1, 2 and 160 payments; a change refused alone inside its batch; the
 * same payment id twice at once; evidence every K updates and alone on an idle channel; and a rogue partner
 * (its own engine's keys, messages built by hand) whose bad batches, bad evidence and withheld evidence are
 * refused with coded reasons, storing nothing, while the channel keeps working.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { ethers } from "ethers";
import { dialableMultiaddrs } from "../../host/libp2p.js";
import {
  EMPTY_LOCKS_ROOT,
  EVIDENCE_MAX_UPDATES,
  signBalanceProof,
  signEvidence,
  type BalanceChange,
  type BalanceProof,
  type ChannelMessage,
} from "../../protocol/index.js";
import type { PaymentRecord } from "../../node/store/store.js";
import { deployFixture, type Fixture } from "./helpers.js";
import { codeOf, startEngine, stopEngines, type Engine } from "./engine-helpers.js";

const E = (n: string) => ethers.parseEther(n);
const EVERY = 8;

async function waitUntil(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("node/channels batching and evidence: BalanceUpdate and amortized ML-DSA-65", function () {
  this.timeout(180_000);
  let f: Fixture;
  let alice: Engine;
  let bob: Engine;
  let mallory: Engine;
  let channelId: bigint;
  let malloryChannel: bigint;
  const dir = mkdtempSync(join(tmpdir(), "qrwp-batching-"));

  before(async () => {
    f = await deployFixture();
    alice = await startEngine(f, dir, "alice", { evidence: { everyUpdates: EVERY, delayMs: 100 } });
    bob = await startEngine(f, dir, "bob");
    mallory = await startEngine(f, dir, "mallory");
    const bobAddr = dialableMultiaddrs(bob.libp2p)[0] as string;
    const open = (e: Engine) =>
      e.service.openChannel({
        partner: bob.keys.address,
        partnerMultiaddr: bobAddr,
        token: f.deployment.token as string,
        depositAmount: E("100"),
        settleTimeoutSeconds: 600,
      });
    channelId = (await open(alice)).channelId;
    malloryChannel = (await open(mallory)).channelId;
  });

  after(() => stopEngines([alice, bob, mallory]));

  const pay = (amount: bigint, paymentId?: string): Promise<PaymentRecord> =>
    alice.service.pay({
      target: bob.keys.address,
      token: f.deployment.token as string,
      amount,
      ...(paymentId ? { paymentId } : {}),
    });

  /** Both sides agree on the channel, to the wei. */
  function expectAgreement(): void {
    const a = alice.service.getChannel(channelId);
    const b = bob.service.getChannel(channelId);
    expect(a.ourNonce).to.equal(b.partnerNonce);
    expect(a.ourBalance).to.equal(b.partnerBalance);
    expect(a.partnerBalance).to.equal(b.ourBalance);
  }

  /** Every completed payment is in bob's store, carried by the proof its nonce names. */
  function expectReceived(payments: PaymentRecord[]): void {
    for (const p of payments) {
      expect(p.status).to.equal("completed");
      const received = bob.store.getIncomingPayment(channelId, p.paymentId);
      expect(received, p.paymentId).to.not.equal(null);
      expect(received?.amount).to.equal(p.amount);
      expect(received?.nonce).to.equal(p.nonce);
    }
  }

  it("a batch of 1: one payment is one update at the next nonce", async () => {
    const before = alice.service.getChannel(channelId).ourNonce;
    const p = await pay(E("1"), "batch1-0");
    expect(p.nonce).to.equal(before + 1n);
    expectReceived([p]);
    expectAgreement();
  });

  it("a batch of 2: two payments made while one is in flight share one proof", async () => {
    const first = pay(1n, "batch2-0");
    const rest = [pay(2n, "batch2-1"), pay(3n, "batch2-2")];
    const [p0, p1, p2] = await Promise.all([first, ...rest]);
    expect(p1!.nonce).to.equal(p2!.nonce);
    expect(p1!.nonce >= p0!.nonce).to.equal(true);
    expectReceived([p0!, p1!, p2!]);
    expectAgreement();
  });

  it("a batch of 160: one update carries them all; both sides agree to the wei", async () => {
    const a0 = alice.service.getChannel(channelId).ourBalance;
    const payments = await Promise.all(
      Array.from({ length: 161 }, (_, i) => pay(BigInt(i + 1), `batch160-${i}`)),
    );
    const last = payments[160]!.nonce;
    expect(payments.filter((p) => p.nonce === last).length).to.be.greaterThanOrEqual(160);
    expect(new Set(payments.map((p) => p.nonce)).size).to.be.at.most(2);
    expectReceived(payments);
    expect(a0 - alice.service.getChannel(channelId).ourBalance).to.equal((161n * 162n) / 2n);
    expectAgreement();
    // One proof row for the batch, on both sides.
    expect(bob.store.storedProofAt(channelId, alice.keys.address, last)).to.not.equal(null);
    expect(bob.store.storedProofAt(channelId, alice.keys.address, last + 1n)).to.equal(null);
  });

  it("a change we cannot afford is refused alone; the others in its batch complete", async () => {
    const balance = alice.service.getChannel(channelId).ourBalance;
    const first = pay(1n, "cap-0");
    const tooBig = pay(balance + 1n, "cap-1");
    const after = pay(1n, "cap-2");
    expect(await codeOf(tooBig)).to.equal("INSUFFICIENT_CAPACITY");
    expectReceived(await Promise.all([first, after]));
    expect(alice.store.getPayment("cap-1")).to.equal(null);
    expect(bob.store.getIncomingPayment(channelId, "cap-1")).to.equal(null);
    expectAgreement();
  });

  it("the same payment id twice at once is paid once: the second call is answered as its retry", async () => {
    const a0 = alice.service.getChannel(channelId).ourBalance;
    const [x, y] = await Promise.all([pay(5n, "twice-0"), pay(5n, "twice-0")]);
    expect(x!.status).to.equal("completed");
    expect(y).to.deep.equal(x);
    expect(a0 - alice.service.getChannel(channelId).ourBalance).to.equal(5n);
    expectAgreement();
  });

  it(`evidence: every ${EVERY} updates or so (signed in a worker), and alone on an idle channel; towers get the latest`, async () => {
    for (let i = 0; i < 3 * EVERY; i++) await pay(1n, `evidence-${i}`);
    const latest = alice.service.getChannel(channelId).ourNonce;
    // Evidence keeps up: no long run of proofs without it (bob's store, every nonce alice signed).
    let run = 0;
    let evidenced = 0;
    for (let n = 1n; n <= latest; n++) {
      const proof = bob.store.storedProofAt(channelId, alice.keys.address, n);
      if (!proof) continue;
      if (proof.signed.pqSignature.length > 0) {
        evidenced++;
        run = 0;
      } else {
        run++;
        // The worker signs off the payment path, so evidence may trail by a few updates; never past the bound.
        expect(run, `un-evidenced run at nonce ${n}`).to.be.lessThan(EVIDENCE_MAX_UPDATES - 8);
      }
    }
    expect(evidenced).to.be.greaterThan(0);
    expect(evidenced).to.be.lessThan(Number(latest));
    // Idle: alice sends the evidence for her latest proof alone; bob's tower proof becomes that proof.
    await waitUntil(
      "evidence for the latest proof",
      () => bob.service.partnerProof(channelId)?.signed.proof.nonce === latest,
    );
    const stored = bob.store.storedProofAt(channelId, alice.keys.address, latest);
    expect(stored?.signed.pqSignature.length).to.equal(3309);
    // After a reload from the store, the same.
    bob.service.registry.load(bob.store.getChannel(channelId)!);
    expect(bob.service.partnerProof(channelId)?.signed.proof.nonce).to.equal(latest);
  });

  describe("a rogue partner's updates (built by hand with its own keys)", () => {
    let nonce = 0n;
    let transferred = 0n;
    const proofOf = (n: bigint, amount: bigint): BalanceProof => ({
      chainId: BigInt(f.deployment.chainId),
      hub: f.deployment.hub,
      channelId: malloryChannel,
      nonce: n,
      transferredAmount: amount,
      lockedAmount: 0n,
      locksRoot: EMPTY_LOCKS_ROOT,
    });
    const send = (body: ChannelMessage) => mallory.transport.request(bob.keys.address, body, null);
    const update = (
      changes: BalanceChange[],
      total: bigint,
      evidence = false,
      n = nonce + 1n,
    ): ChannelMessage => ({
      type: "BalanceUpdate",
      changes,
      balanceProof: signBalanceProof(proofOf(n, total), mallory.keys, { evidence }),
    });
    const direct = (id: string, amount: bigint): BalanceChange => ({ kind: "direct", paymentId: id, amount });
    const bobView = () => bob.service.getChannel(malloryChannel);

    it("refuses a batch whose totals do not add up, a repeated id, a replay and bad evidence; stores nothing", async () => {
      // A good batch first.
      let reply = await send(update([direct("m-0", 1n), direct("m-1", 2n)], 3n));
      expect(reply).to.deep.include({ type: "Processed", nonce: 1n });
      nonce = 1n;
      transferred = 3n;
      const before = bobView();
      // Totals that do not add up: the changes say 3, the proof says 4.
      reply = await send(update([direct("m-2", 1n), direct("m-3", 2n)], transferred + 4n));
      expect(reply).to.include({ type: "Error", code: "INVALID_TRANSFER" });
      // A payment id repeated inside the batch, and one already received.
      reply = await send(update([direct("m-4", 1n), direct("m-4", 1n)], transferred + 2n));
      expect(reply).to.include({ type: "Error", code: "CONFLICT" });
      reply = await send(update([direct("m-0", 1n)], transferred + 1n));
      expect(reply).to.include({ type: "Error", code: "CONFLICT" });
      // A replayed batch: the accepted nonce again with other contents (same contents: acknowledged again).
      reply = await send(update([direct("m-5", 3n)], 3n, false, 1n));
      expect(reply).to.include({ type: "Error", code: "STALE_NONCE" });
      // Evidence that does not cover the proof it names (signed over another proof), and for a missing proof.
      const wrong = signEvidence(proofOf(1n, 4n), mallory.keys);
      reply = await send({ type: "Evidence", channelId: malloryChannel, nonce: 1n, pqSignature: wrong });
      expect(reply).to.include({ type: "Error", code: "INVALID_EVIDENCE" });
      const other = signEvidence(proofOf(9n, 3n), mallory.keys);
      reply = await send({ type: "Evidence", channelId: malloryChannel, nonce: 9n, pqSignature: other });
      expect(reply).to.include({ type: "Error", code: "INVALID_EVIDENCE" });
      expect(bobView()).to.deep.equal(before);
      expect(bob.service.partnerProof(malloryChannel)).to.equal(null);
      for (const id of ["m-2", "m-3", "m-4", "m-5"]) {
        expect(bob.store.getIncomingPayment(malloryChannel, id)).to.equal(null);
      }
    });

    it(`evidence withheld: ${EVIDENCE_MAX_UPDATES} updates pass, then nothing until evidence arrives`, async () => {
      while (nonce < BigInt(EVIDENCE_MAX_UPDATES)) {
        const reply = await send(update([direct(`w-${nonce}`, 1n)], transferred + 1n));
        expect(reply).to.deep.include({ type: "Processed", nonce: nonce + 1n });
        nonce++;
        transferred++;
      }
      const before = bobView();
      let reply = await send(update([direct("w-over", 1n)], transferred + 1n));
      expect(reply).to.include({ type: "Error", code: "EVIDENCE_REQUIRED" });
      expect(bobView()).to.deep.equal(before);
      // Evidence for the latest proof re-opens the channel; an update carrying evidence is accepted anyway.
      const evidence = signEvidence(proofOf(nonce, transferred), mallory.keys);
      reply = await send({ type: "Evidence", channelId: malloryChannel, nonce, pqSignature: evidence });
      expect(reply).to.deep.equal({ type: "Ok" });
      expect(bob.service.partnerProof(malloryChannel)?.signed.proof.nonce).to.equal(nonce);
      reply = await send(update([direct("w-after", 1n)], transferred + 1n));
      expect(reply).to.deep.include({ type: "Processed", nonce: nonce + 1n });
      expect(bobView().partnerBalance).to.equal(E("100") - transferred - 1n);
    });
  });
});
