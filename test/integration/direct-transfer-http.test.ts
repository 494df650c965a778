/**
 * x402 direct streaming, node side: three `qrwp node start` processes over libp2p against a `hardhat node`
 * chain, alice with channels to bob and to carol. alice signs DirectTransfers without sending them
 * (`POST /v1/payments/direct-transfers`), this test relays them over HTTP to bob
 * (`POST /v1/transfers/direct`) and relays bob's signed Processed back to alice
 * (`POST /v1/payments/:paymentId/processed`). Checks: a stream of payments one nonce apart, idempotent
 * re-delivery, tampered transfers and acknowledgements refused with coded errors naming the field and no
 * state change, and a transfer never relayed being delivered by alice's libp2p re-send before her next
 * payment. Several payments signed together (`POST /v1/payments/direct-transfers/batch`) share one proof, a
 * BalanceUpdate of direct changes that bob accepts over HTTP as a whole; one acknowledgement completes them
 * all; a payment refused inside the batch (a repeated id, a deadline past) is refused alone; a relayed
 * BalanceUpdate carrying anything but direct payments is refused coded. Real processes, real SQLite, real
 * libp2p, no mocks.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { parseUnits } from "ethers";
import { Devnet, type NodeProcess } from "../../devnet/harness.js";
import { decodeEnvelope, encodeEnvelope, type ChannelMessage } from "../../protocol/index.js";
import type { NodeAcceptedTransfer } from "../../x402/node-api.js";

interface PaymentJson {
  kind: string;
  paymentId: string;
  direction: string;
  channelId: string;
  amount: string;
  nonce: string;
  status: string;
  completedAtMs: number | null;
}
interface SignedJson {
  payment: PaymentJson;
  channelId: string;
  nonce: string;
  transfer: string;
}
/** The merchant node's answer, as the x402 layer's node client types it. */
type AcceptedJson = NodeAcceptedTransfer;
interface ChannelJson {
  channelId: string;
  ourBalance: string;
  partnerBalance: string;
  ourNonce: string;
  partnerNonce: string;
  totals: { sent: string; received: string; sentCount: number; receivedCount: number };
}
interface CodedError {
  status: number;
  code: string;
  field: unknown;
}

const unit = parseUnits("1", 18);
const deposit = 100n * unit;
const price = unit / 1000n + 3n;

/** The HTTP status, code and `details.field` of a refused API call (fails the test if it succeeded). */
async function refusal(p: Promise<unknown>): Promise<CodedError> {
  let value: unknown;
  try {
    value = await p;
  } catch (err) {
    const e = err as { status: number; body: { error: { code: string; details: { field?: unknown } } } };
    return { status: e.status, code: e.body.error.code, field: e.body.error.details.field };
  }
  return expect.fail(`expected a refusal, got ${JSON.stringify(value)}`);
}

/** Re-encodes a relayed transfer after `edit` changed its decoded body. */
function tamper(transfer: string, edit: (body: ChannelMessage) => ChannelMessage): string {
  const envelope = decodeEnvelope(new Uint8Array(Buffer.from(transfer, "base64url")));
  return Buffer.from(encodeEnvelope({ id: 0, body: edit(envelope.body) })).toString("base64url");
}

describe("integration: direct transfers relayed over HTTP (x402 direct streaming)", function () {
  this.timeout(120_000);
  let devnet: Devnet;
  let alice: NodeProcess;
  let bob: NodeProcess;
  let carol: NodeProcess;
  let token: string;
  let channelId: string;
  /** What alice has paid bob so far (base units); every check compares balances with it exactly. */
  let paid = 0n;
  let sequence = 0;

  const sign = (to: NodeProcess, amount: bigint, paymentId = `stream-${++sequence}`) =>
    alice.api.call<SignedJson>("POST", "/v1/payments/direct-transfers", {
      target: to.address,
      token,
      amount: amount.toString(),
      paymentId,
    });
  const accept = (node: NodeProcess, transfer: string, extra: Record<string, string> = {}) =>
    node.api.call<AcceptedJson>("POST", "/v1/transfers/direct", { transfer, ...extra });
  const relayProcessed = (paymentId: string, processed: AcceptedJson["processed"]) =>
    alice.api.call<PaymentJson>("POST", `/v1/payments/${paymentId}/processed`, { processed });
  const channelOf = (n: NodeProcess) => n.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`);
  const paymentOf = (n: NodeProcess, id: string) => n.api.call<PaymentJson>("GET", `/v1/payments/${id}`);

  /** bob's view: received exactly `paid` in `count` payments; alice agrees once everything is acknowledged. */
  async function expectBob(count: number): Promise<ChannelJson> {
    const b = await channelOf(bob);
    expect(b.ourBalance).to.equal(paid.toString());
    expect(b.partnerBalance).to.equal((deposit - paid).toString());
    expect(b.totals.received).to.equal(paid.toString());
    expect(b.totals.receivedCount).to.equal(count);
    return b;
  }

  before(async () => {
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-direct-http-")));
    token = devnet.token;
    for (const name of ["alice", "bob", "carol"]) await devnet.initNode(name, 1000n * unit);
    [alice, bob, carol] = await Promise.all([
      devnet.startNode("alice"),
      devnet.startNode("bob"),
      devnet.startNode("carol"),
    ]);
    for (const partner of [bob, carol]) {
      const opened = await alice.api.call<{ channelId: string }>("POST", "/v1/channels", {
        partner: partner.address,
        partnerMultiaddr: partner.multiaddr,
        token,
        deposit: deposit.toString(),
      });
      if (partner === bob) channelId = opened.channelId;
    }
  });

  after(async () => {
    await devnet?.stop();
  });

  it("alice signs without sending (pending, bob unchanged); bob accepts over HTTP; the relayed Processed completes it", async () => {
    const signed = await sign(bob, price);
    expect(signed.channelId).to.equal(channelId);
    expect(signed.nonce).to.equal("1");
    expect(signed.payment).to.include({
      kind: "direct",
      direction: "outgoing",
      status: "pending",
      nonce: "1",
    });
    expect(signed.payment.amount).to.equal(price.toString());
    expect(signed.transfer).to.match(/^[A-Za-z0-9_-]+$/);
    const body = decodeEnvelope(new Uint8Array(Buffer.from(signed.transfer, "base64url"))).body;
    expect(body.type).to.equal("DirectTransfer");
    await expectBob(0);
    expect((await channelOf(alice)).ourNonce).to.equal("1");

    const accepted = await accept(bob, signed.transfer, { token });
    paid += price;
    expect(accepted).to.deep.include({
      paymentId: signed.payment.paymentId,
      channelId,
      nonce: "1",
      amount: price.toString(),
      token,
      partner: alice.address,
    });
    expect(accepted.processed).to.include({ channelId, nonce: "1" });
    expect(accepted.processed.signature).to.match(/^0x[0-9a-f]{130}$/);
    const b = await expectBob(1);
    expect(b.partnerNonce).to.equal("1");
    expect(await paymentOf(bob, signed.payment.paymentId)).to.include({
      direction: "incoming",
      status: "completed",
    });
    expect((await paymentOf(alice, signed.payment.paymentId)).status).to.equal("pending");

    const done = await relayProcessed(signed.payment.paymentId, accepted.processed);
    expect(done).to.include({
      paymentId: signed.payment.paymentId,
      status: "completed",
      direction: "outgoing",
    });
    // Already completed: the same answer, nothing changes.
    expect(await relayProcessed(signed.payment.paymentId, accepted.processed)).to.deep.equal(done);
    const a = await channelOf(alice);
    expect(a.ourBalance).to.equal((deposit - paid).toString());
    expect(a.totals).to.include({ sent: paid.toString(), sentCount: 1 });
  });

  it("streams: each payment one nonce higher, accepted and acknowledged over HTTP only", async () => {
    for (let i = 0; i < 5; i++) {
      const amount = price + BigInt(i);
      const signed = await sign(bob, amount);
      expect(signed.nonce).to.equal(String(2 + i));
      const accepted = await accept(bob, signed.transfer);
      paid += amount;
      expect(accepted.nonce).to.equal(String(2 + i));
      expect((await relayProcessed(signed.payment.paymentId, accepted.processed)).status).to.equal(
        "completed",
      );
    }
    const b = await expectBob(6);
    expect(b.partnerNonce).to.equal("6");
    const a = await channelOf(alice);
    expect(a.ourNonce).to.equal("6");
    expect(a.totals).to.include({ sent: paid.toString(), sentCount: 6 });
  });

  it("the identical transfer again gets the same 200 answer and changes nothing", async () => {
    const signed = await sign(bob, price);
    const first = await accept(bob, signed.transfer);
    paid += price;
    const again = await accept(bob, signed.transfer);
    expect(again).to.deep.equal(first);
    await expectBob(7);
    await relayProcessed(signed.payment.paymentId, first.processed);
  });

  it("refuses tampered transfers with coded 4xx naming the field; bob's balance and payment count stay", async () => {
    const signed = await sign(bob, price);
    const flipSignature = tamper(signed.transfer, (b) => {
      const bp = (b as Extract<ChannelMessage, { type: "DirectTransfer" }>).balanceProof;
      const c = bp.signature[20] === "a" ? "b" : "a";
      return {
        ...b,
        balanceProof: { ...bp, signature: bp.signature.slice(0, 20) + c + bp.signature.slice(21) },
      };
    });
    const moreAmount = tamper(signed.transfer, (b) => ({
      ...(b as Extract<ChannelMessage, { type: "DirectTransfer" }>),
      amount: price * 2n,
    }));
    const locked = tamper(signed.transfer, (b) => {
      const t = b as Extract<ChannelMessage, { type: "DirectTransfer" }>;
      return {
        type: "LockedTransfer",
        paymentId: t.paymentId,
        initiator: alice.address,
        target: bob.address,
        lock: { amount: price, expiration: 4_000_000_000n, secretHash: `0x${"11".repeat(32)}` },
        route: [{ address: bob.address, amount: price, expiration: 4_000_000_000n }],
        initiatorMultiaddrs: [],
        balanceProof: t.balanceProof,
      };
    });
    const toCarol = await sign(carol, price, "for-carol");

    const cases: [string, () => Promise<unknown>, number, string, string][] = [
      [
        "flipped signature byte",
        () => accept(bob, flipSignature),
        400,
        "INVALID_SIGNATURE",
        "transfer.signature",
      ],
      [
        "changed amount",
        () => accept(bob, moreAmount),
        400,
        "INVALID_TRANSFER",
        "transfer.balanceProof.transferredAmount",
      ],
      [
        "wrong token",
        () => accept(bob, signed.transfer, { token: alice.address }),
        400,
        "INVALID_TRANSFER",
        "token",
      ],
      ["not base64url", () => accept(bob, "!!not*base64"), 400, "INVALID_ARGUMENT", "transfer"],
      ["base64url, not CBOR", () => accept(bob, "_____w"), 400, "INVALID_MESSAGE", "transfer"],
      ["too long", () => accept(bob, "A".repeat(16 * 1024 + 4)), 400, "INVALID_ARGUMENT", "transfer"],
      ["a LockedTransfer", () => accept(bob, locked), 400, "INVALID_MESSAGE", "transfer"],
      [
        "alice's channel with carol",
        () => accept(bob, toCarol.transfer),
        404,
        "CHANNEL_NOT_FOUND",
        "transfer.balanceProof.channelId",
      ],
    ];
    for (const [name, call, status, code, field] of cases) {
      expect(await refusal(call()), name).to.deep.equal({ status, code, field });
      await expectBob(7);
    }
    expect((await paymentOf(bob, signed.payment.paymentId).catch(() => null)) === null).to.equal(true);

    // The genuine ones still go through, each to its own merchant.
    const accepted = await accept(bob, signed.transfer);
    paid += price;
    await expectBob(8);
    await relayProcessed(signed.payment.paymentId, accepted.processed);
    const atCarol = await accept(carol, toCarol.transfer, { token });
    expect(atCarol.partner).to.equal(alice.address);
    expect((await relayProcessed("for-carol", atCarol.processed)).status).to.equal("completed");
  });

  it("refuses a Processed that is not bob's over this proof; the payment stays pending until the right one", async () => {
    const earlier = await sign(bob, price);
    const earlierAck = await accept(bob, earlier.transfer);
    paid += price;
    await relayProcessed(earlier.payment.paymentId, earlierAck.processed);
    const signed = await sign(bob, price);
    const accepted = await accept(bob, signed.transfer);
    paid += price;
    const id = signed.payment.paymentId;

    // bob's genuine signature, but over the earlier proof.
    const wrongProof = { ...accepted.processed, signature: earlierAck.processed.signature };
    expect(await refusal(relayProcessed(id, wrongProof))).to.deep.equal({
      status: 400,
      code: "INVALID_SIGNATURE",
      field: "processed.signature",
    });
    const s = accepted.processed.signature;
    const flipped = {
      ...accepted.processed,
      signature: s.slice(0, 10) + (s[10] === "0" ? "1" : "0") + s.slice(11),
    };
    expect((await refusal(relayProcessed(id, flipped))).field).to.equal("processed.signature");
    expect(await refusal(relayProcessed(id, { ...accepted.processed, nonce: earlier.nonce }))).to.deep.equal({
      status: 400,
      code: "INVALID_ARGUMENT",
      field: "processed.nonce",
    });
    expect(await refusal(relayProcessed("no-such-payment", accepted.processed))).to.deep.include({
      status: 404,
      code: "PAYMENT_NOT_FOUND",
    });
    expect((await refusal(relayProcessed(id, { ...accepted.processed, signature: "0x12" }))).field).to.equal(
      "processed.signature",
    );
    expect((await paymentOf(alice, id)).status).to.equal("pending");
    expect((await channelOf(alice)).totals.sent).to.equal((paid - price).toString());

    expect((await relayProcessed(id, accepted.processed)).status).to.equal("completed");
    expect((await channelOf(alice)).totals.sent).to.equal(paid.toString());
    await expectBob(10);
  });

  it("signs several payments under one BalanceUpdate; bob takes it whole; one acknowledgement completes all", async () => {
    const before = await channelOf(bob);
    const count = before.totals.receivedCount;
    const batch = await alice.api.call<{
      transfers: string[];
      results: {
        paymentId: string;
        transfer?: number;
        nonce?: string;
        payment?: PaymentJson;
        error?: { code: string; details: { field?: string } };
      }[];
    }>("POST", "/v1/payments/direct-transfers/batch", {
      target: bob.address,
      token,
      payments: [
        { amount: price.toString(), paymentId: "batch-1" },
        { amount: (2n * price).toString(), paymentId: "batch-2" },
        { amount: price.toString(), paymentId: "batch-1" }, // the same id again: refused alone
        { amount: price.toString(), paymentId: "batch-3", notAfterMs: Date.now() + 60_000 },
      ],
    });
    expect(batch.transfers).to.have.length(1);
    const [r1, r2, dup, r3] = batch.results;
    expect(dup).to.deep.include({ paymentId: "batch-1" });
    expect(dup!.error).to.include({ code: "CONFLICT" });
    for (const r of [r1!, r2!, r3!]) {
      expect(r).to.include({ transfer: 0, nonce: r1!.nonce });
      expect(r.payment).to.include({ status: "pending", direction: "outgoing" });
    }
    const body = decodeEnvelope(new Uint8Array(Buffer.from(batch.transfers[0]!, "base64url"))).body;
    if (body.type !== "BalanceUpdate") throw new Error(`expected a BalanceUpdate, got ${body.type}`);
    expect(body.changes.map((c) => c.kind === "direct" && [c.paymentId, c.amount])).to.deep.equal([
      ["batch-1", price],
      ["batch-2", 2n * price],
      ["batch-3", price],
    ]);
    // A relayed update that is not only direct payments is refused before anything is checked.
    const asLock = tamper(batch.transfers[0]!, (b) =>
      b.type === "BalanceUpdate"
        ? { ...b, changes: [...b.changes, { kind: "expire", secretHash: `0x${"11".repeat(32)}` }] }
        : b,
    );
    expect(await refusal(accept(bob, asLock))).to.deep.equal({
      status: 400,
      code: "INVALID_MESSAGE",
      field: "transfer",
    });
    // Changes that do not add up to the proof's increment: refused whole, nothing stored.
    const short = tamper(batch.transfers[0]!, (b) =>
      b.type === "BalanceUpdate" ? { ...b, changes: b.changes.slice(0, 2) } : b,
    );
    expect((await refusal(accept(bob, short))).code).to.equal("INVALID_TRANSFER");
    await expectBob(count);

    const accepted = await accept(bob, batch.transfers[0]!);
    paid += 4n * price;
    expect(accepted).to.include({ paymentId: null, amount: (4n * price).toString(), nonce: r1!.nonce });
    expect(accepted.payments).to.deep.equal([
      { paymentId: "batch-1", amount: price.toString() },
      { paymentId: "batch-2", amount: (2n * price).toString() },
      { paymentId: "batch-3", amount: price.toString() },
    ]);
    await expectBob(count + 3);
    // The acknowledgement relayed for one payment completes every payment of the proof.
    expect((await relayProcessed("batch-2", accepted.processed)).status).to.equal("completed");
    for (const id of ["batch-1", "batch-3"])
      expect((await paymentOf(alice, id)).status).to.equal("completed");
    expect((await relayProcessed("batch-3", accepted.processed)).status).to.equal("completed");
    expect((await channelOf(alice)).totals.sent).to.equal(paid.toString());
    // Every payment refused: the answer is the first refusal, coded.
    expect(
      await refusal(
        alice.api.call("POST", "/v1/payments/direct-transfers/batch", {
          target: bob.address,
          token,
          payments: [{ amount: price.toString(), paymentId: "batch-1" }],
        }),
      ),
    ).to.deep.include({ status: 409, code: "CONFLICT" });
    expect(
      (
        await refusal(
          alice.api.call("POST", "/v1/payments/direct-transfers/batch", {
            target: bob.address,
            token,
            payments: [],
          }),
        )
      ).code,
    ).to.equal("INVALID_ARGUMENT");
  });

  it("a transfer signed but never relayed is delivered over libp2p before alice's next payment; both complete", async () => {
    const lost = await sign(bob, price, "never-relayed");
    expect(lost.payment.status).to.equal("pending");
    const next = await alice.api.call<PaymentJson>("POST", "/v1/payments", {
      target: bob.address,
      token,
      amount: (2n * price).toString(),
      paymentId: "after-the-lost-one",
    });
    paid += 3n * price;
    expect(next).to.include({ status: "completed", nonce: String(BigInt(lost.nonce) + 1n) });
    expect((await paymentOf(alice, "never-relayed")).status).to.equal("completed");
    expect(await paymentOf(bob, "never-relayed")).to.include({ direction: "incoming", status: "completed" });
    const b = await expectBob(15);
    const a = await channelOf(alice);
    expect(a.ourNonce).to.equal(b.partnerNonce);
    expect(a.ourBalance).to.equal(b.partnerBalance);
    expect(a.totals.sent).to.equal(b.totals.received);
    // The transfer relayed late is an idempotent re-delivery now: same answer, no change.
    const late = await accept(bob, lost.transfer);
    expect(late).to.include({ paymentId: "never-relayed", nonce: lost.nonce });
    await expectBob(15);
  });
});
