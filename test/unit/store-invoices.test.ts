/**
 * Invoice cleanup on a real SQLite file (node/store/store.ts `deleteExpiredInvoices`): unpaid invoices whose
 * expiry passed before the cut-off are deleted in one statement; paid ones, and unpaid ones not yet past the
 * cut-off, stay; a deleted invoice is unknown afterwards (what the payments layer treats like an unknown or
 * expired invoice), also after the store is reopened.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { NodeStore, type InvoiceRecord } from "../../node/store/store.js";
import { INVOICE_RETENTION_AFTER_EXPIRY_MS } from "../../node/payments/service.js";

const TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

function invoice(n: number, expiresAtMs: number, status: InvoiceRecord["status"] = "open"): InvoiceRecord {
  return {
    paymentHash: `0x${n.toString(16).padStart(64, "0")}`,
    secret: `0x${(n + 1_000_000).toString(16).padStart(64, "0")}`,
    token: TOKEN,
    amount: 100n,
    description: `invoice ${n}`,
    status,
    paidAmount: 0n,
    createdAtMs: expiresAtMs - 3_600_000,
    expiresAtMs,
    paidAtMs: null,
  };
}

describe("node/store: expired unpaid invoices are deleted", () => {
  it("deletes only unpaid invoices that expired before the cut-off, in one call, durably", () => {
    const path = join(mkdtempSync(join(tmpdir(), "qrwp-invoices-")), "node.sqlite");
    const now = 1_800_000_000_000;
    const cutOff = now - INVOICE_RETENTION_AFTER_EXPIRY_MS;
    let store = new NodeStore(path);
    // A flood of unpaid 402 invoices long expired, one just inside the retention, one exactly at the cut-off.
    const flood = Array.from({ length: 500 }, (_, i) => invoice(i + 1, cutOff - 1 - i));
    for (const i of flood) store.insertInvoice(i);
    store.insertInvoice(invoice(9001, cutOff)); // expired exactly 60 s ago: kept until the next sweep
    store.insertInvoice(invoice(9002, now - 1_000)); // expired a second ago: kept
    store.insertInvoice(invoice(9003, now + 60_000)); // still open
    store.insertInvoice(invoice(9004, cutOff - 3_600_000, "expired"));
    const paid = invoice(9005, cutOff - 3_600_000);
    store.insertInvoice(paid);
    store.markInvoicePaid(paid.paymentHash, 100n);

    expect(store.deleteExpiredInvoices(cutOff)).to.equal(501);
    expect(store.getInvoice(flood[0]!.paymentHash)).to.equal(null);
    expect(store.getInvoice(flood[499]!.paymentHash)).to.equal(null);
    expect(store.getInvoice(invoice(9004, 0).paymentHash)).to.equal(null);
    for (const kept of [9001, 9002, 9003])
      expect(store.getInvoice(invoice(kept, 0).paymentHash)).to.not.equal(null);
    expect(store.getInvoice(paid.paymentHash)).to.include({ status: "paid", paidAmount: 100n });
    // A late payment for a deleted invoice changes nothing (no row comes back).
    store.markInvoicePaid(flood[0]!.paymentHash, 100n);
    expect(store.getInvoice(flood[0]!.paymentHash)).to.equal(null);
    expect(store.deleteExpiredInvoices(cutOff)).to.equal(0);

    store.close();
    store = new NodeStore(path);
    expect(store.getInvoice(flood[10]!.paymentHash)).to.equal(null);
    expect(store.getInvoice(paid.paymentHash)?.status).to.equal("paid");
    // The next sweep, a minute later, takes the one that sat exactly at the previous cut-off.
    expect(store.deleteExpiredInvoices(cutOff + INVOICE_RETENTION_AFTER_EXPIRY_MS)).to.equal(2);
    expect(store.getInvoice(invoice(9001, 0).paymentHash)).to.equal(null);
    expect(store.getInvoice(invoice(9002, 0).paymentHash)).to.equal(null);
    expect(store.getInvoice(invoice(9003, 0).paymentHash)).to.not.equal(null);
    store.close();
  });
});
