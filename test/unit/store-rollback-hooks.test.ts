/**
 * `NodeStore.onRollback` (host/sqlite.ts `SqliteDatabase.onRollback`) on a real SQLite file: the hooks a
 * transaction registered run after it rolls back, once its writes are undone, newest first; a committed
 * transaction drops them; a nested transaction (savepoint) that throws runs only its own hooks; outside a
 * transaction nothing is registered. The payments layer relies on it to keep its in-memory transfers equal to
 * the store's. Also `outgoingIdUse` and `finishOutgoingPayment`'s answer, which the direct-payment path uses,
 * and the sweep of finished transfers.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { NodeStore, type PaymentRecord, type TransferRecord } from "../../node/store/store.js";
import { mediatedPayment } from "./helpers.js";

function transfer(id: string, state: unknown): TransferRecord {
  return { id, role: "mediator", secretHash: `0x${"ab".repeat(32)}`, paymentId: "p", state, done: false };
}

function payment(id: string, extra: Partial<PaymentRecord> = {}): PaymentRecord {
  return {
    paymentId: id,
    direction: "outgoing",
    channelId: 1n,
    partner: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    token: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    amount: 10n,
    nonce: 1n,
    status: "pending",
    errorCode: null,
    errorMessage: null,
    createdAtMs: 1,
    completedAtMs: null,
    ...extra,
  };
}

describe("store: rollback hooks and payment-id lookups", () => {
  let store: NodeStore;
  beforeEach(() => {
    store = new NodeStore(join(mkdtempSync(join(tmpdir(), "qrwp-rollback-")), "node.db"));
  });
  afterEach(() => store.close());

  it("runs the hooks after a rollback, with the writes undone, newest first", () => {
    store.putTransfer(transfer("t1", { step: 1 }));
    const seen: string[] = [];
    expect(() =>
      store.transaction(() => {
        store.putTransfer(transfer("t1", { step: 2 }));
        store.onRollback(() => seen.push(`first saw ${JSON.stringify(store.getTransfer("t1")?.state)}`));
        store.onRollback(() => seen.push("second"));
        throw new Error("boom");
      }),
    ).to.throw("boom");
    expect(seen).to.deep.equal(["second", 'first saw {"step":1}']);
  });

  it("drops the hooks of a committed transaction (a later rollback does not run them)", () => {
    let ran = 0;
    store.transaction(() => {
      store.putTransfer(transfer("t1", { step: 1 }));
      store.onRollback(() => ran++);
    });
    expect(() =>
      store.transaction(() => {
        throw new Error("later");
      }),
    ).to.throw("later");
    expect(ran).to.equal(0);
  });

  it("a nested transaction that throws runs only its own hooks; the outer one commits", () => {
    const ran: string[] = [];
    store.transaction(() => {
      store.putTransfer(transfer("outer", { v: 1 }));
      store.onRollback(() => ran.push("outer"));
      try {
        store.transaction(() => {
          store.putTransfer(transfer("inner", { v: 1 }));
          store.onRollback(() => ran.push("inner"));
          throw new Error("inner fails");
        });
      } catch {
        // the outer transaction goes on
      }
    });
    expect(ran).to.deep.equal(["inner"]);
    expect(store.getTransfer("outer")).to.not.equal(null);
    expect(store.getTransfer("inner")).to.equal(null);
  });

  it("registers nothing outside a transaction", () => {
    let ran = 0;
    store.onRollback(() => ran++);
    expect(() =>
      store.transaction(() => {
        throw new Error("x");
      }),
    ).to.throw("x");
    expect(ran).to.equal(0);
  });

  it("outgoingIdUse tells a direct id from a routed one and from a free one; ids by secret hash in order", () => {
    store.insertPayment(payment("direct-1"));
    store.insertPayment(payment("incoming-1", { direction: "incoming" }));
    expect(store.outgoingIdUse("direct-1")).to.equal("direct");
    expect(store.outgoingIdUse("incoming-1")).to.equal(null);
    expect(store.outgoingIdUse("free")).to.equal(null);
    store.insertMediatedPayment(mediatedPayment({ paymentId: "routed-1" }));
    expect(store.outgoingIdUse("routed-1")).to.equal("routed");
    store.putTransfer(transfer("a", {}));
    store.putTransfer(transfer("b", {}));
    expect(store.transferIdsByHash(`0x${"ab".repeat(32)}`)).to.deep.equal(["a", "b"]);
    expect(store.transferIdsByHash(`0x${"cd".repeat(32)}`)).to.deep.equal([]);
  });

  it("deleteDoneTransfers deletes only finished transfers last written before the cutoff", () => {
    const hash = `0x${"ab".repeat(32)}`;
    store.putTransfer(transfer("open-1", { n: 1 }));
    store.putTransfer({ ...transfer("done-1", { n: 2 }), done: true });
    store.putTransfer({ ...transfer("done-2", { n: 3 }), done: true });
    // A cutoff in the past deletes nothing; one in the future deletes the finished ones only.
    expect(store.deleteDoneTransfers(Date.now() - 60_000)).to.equal(0);
    expect(store.deleteDoneTransfers(Date.now() + 60_000)).to.equal(2);
    expect(store.getTransfer("done-1")).to.equal(null);
    expect(store.getTransfer("open-1")?.state).to.deep.equal({ n: 1 });
    expect(store.transferIdsByHash(hash)).to.deep.equal(["open-1"]);
    expect(store.openTransfers().map((t) => t.id)).to.deep.equal(["open-1"]);
  });

  it("finishOutgoingPayment says whether the payment was pending", () => {
    store.insertPayment(payment("p1"));
    expect(store.finishOutgoingPayment("p1", "completed")).to.equal(true);
    expect(store.finishOutgoingPayment("p1", "completed")).to.equal(false);
    expect(store.finishOutgoingPayment("nope", "failed")).to.equal(false);
    expect(store.getOutgoingPayment("p1")?.status).to.equal("completed");
    expect(store.getOutgoingPayment("nope")).to.equal(null);
  });
});
