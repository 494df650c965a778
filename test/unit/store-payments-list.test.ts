/**
 * `NodeStore.listPayments` on a real SQLite file (node/store/store.ts): direct payments both ways, routed
 * payments received (the `payments` table) and routed payments sent (`mediated_payments`) in one list, newest
 * first with ties in a fixed order; status and direction filters; keyset pages that neither skip nor repeat a
 * payment, also when many share one millisecond and when rows arrive between pages.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import {
  NodeStore,
  type MediatedPaymentRecord,
  type PaymentCursor,
  type PaymentRecord,
} from "../../node/store/store.js";

const PARTNER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

function direct(id: string, createdAtMs: number, extra: Partial<PaymentRecord> = {}): PaymentRecord {
  return {
    paymentId: id,
    direction: "outgoing",
    channelId: 1n,
    partner: PARTNER,
    token: TOKEN,
    amount: 10n,
    nonce: 1n,
    status: "completed",
    errorCode: null,
    errorMessage: null,
    createdAtMs,
    completedAtMs: createdAtMs,
    ...extra,
  };
}

function routed(
  id: string,
  createdAtMs: number,
  status: MediatedPaymentRecord["status"],
): MediatedPaymentRecord {
  return {
    paymentId: id,
    target: PARTNER,
    token: TOKEN,
    amount: 7n,
    maxFee: null,
    secretHash: `0x${"ab".repeat(32)}`,
    secret: null,
    status,
    fee: 1n,
    attempts: [],
    errorCode: null,
    errorMessage: null,
    createdAtMs,
    completedAtMs: null,
    deadlineMs: createdAtMs + 60_000,
  };
}

const ids = (page: { payments: { payment: { paymentId: string } }[] }) =>
  page.payments.map((p) => p.payment.paymentId);

describe("node/store: listPayments", () => {
  let store: NodeStore;
  const t = 1_800_000_000_000;

  beforeEach(() => {
    store = new NodeStore(join(mkdtempSync(join(tmpdir(), "qrwp-list-")), "node.sqlite"));
  });
  afterEach(() => store.close());

  it("lists both tables newest first, filters by status and direction", () => {
    expect(store.listPayments({ limit: 10 })).to.deep.equal({ payments: [], nextCursor: null });
    store.insertPayment(direct("d-out", t));
    store.insertPayment(direct("d-in", t + 2, { direction: "incoming", nonce: 4n }));
    store.insertPayment(direct("r-in", t + 4, { direction: "incoming", nonce: 0n }));
    store.insertPayment(direct("d-pending", t + 5, { nonce: 2n, status: "pending", completedAtMs: null }));
    store.insertMediatedPayment(routed("r-out", t + 1, "completed"));
    store.insertMediatedPayment(routed("r-failed", t + 3, "failed"));

    const all = store.listPayments({ limit: 10 });
    expect(ids(all)).to.deep.equal(["d-pending", "r-in", "r-failed", "d-in", "r-out", "d-out"]);
    expect(all.nextCursor).to.equal(null);
    expect(all.payments.map((p) => p.source)).to.deep.equal([0, 0, 1, 0, 1, 0]);
    const routedOut = all.payments.find((p) => p.payment.paymentId === "r-out");
    expect(routedOut?.payment).to.deep.equal(routed("r-out", t + 1, "completed"));

    expect(ids(store.listPayments({ limit: 10, direction: "incoming" }))).to.deep.equal(["r-in", "d-in"]);
    expect(ids(store.listPayments({ limit: 10, direction: "outgoing" }))).to.deep.equal([
      "d-pending",
      "r-failed",
      "r-out",
      "d-out",
    ]);
    expect(ids(store.listPayments({ limit: 10, status: "failed" }))).to.deep.equal(["r-failed"]);
    expect(ids(store.listPayments({ limit: 10, status: "pending", direction: "incoming" }))).to.deep.equal(
      [],
    );
    expect(ids(store.listPayments({ limit: 10, status: "completed", direction: "outgoing" }))).to.deep.equal([
      "r-out",
      "d-out",
    ]);
  });

  it("pages by cursor without skipping or repeating, with many payments in one millisecond", () => {
    // 25 payments over 3 milliseconds, both tables mixed: ties are the rule, not the exception.
    const expected: string[] = [];
    for (let i = 0; i < 25; i++) {
      const at = t + (i % 3);
      if (i % 4 === 0) store.insertMediatedPayment(routed(`p${i}`, at, "completed"));
      else store.insertPayment(direct(`p${i}`, at, { nonce: BigInt(i + 1) }));
      expected.push(`p${i}`);
    }
    const whole = ids(store.listPayments({ limit: 1000 }));
    expect([...whole].sort()).to.deep.equal([...expected].sort());
    for (const limit of [1, 4, 7, 25]) {
      const seen: string[] = [];
      let before: PaymentCursor | undefined;
      for (let pages = 0; ; pages++) {
        expect(pages, "pages").to.be.below(30);
        const page = store.listPayments({ limit, ...(before ? { before } : {}) });
        expect(page.payments.length).to.be.at.most(limit);
        seen.push(...ids(page));
        if (!page.nextCursor) break;
        expect(page.nextCursor).to.deep.equal(page.payments.at(-1)?.cursor);
        before = page.nextCursor;
      }
      expect(seen, `limit ${limit}`).to.deep.equal(whole);
    }
    // A page boundary stays where it was when newer payments arrive in between.
    const first = store.listPayments({ limit: 5 });
    store.insertPayment(direct("newest", t + 10, { nonce: 99n }));
    const second = store.listPayments({ limit: 5, before: first.nextCursor as PaymentCursor });
    expect(ids(second)).to.deep.equal(whole.slice(5, 10));
  });
});
