/**
 * The pure parts of the `qrwp-channel` x402 scheme (protocol/x402.ts): CAIP-2 networks, the routed
 * requirements' `extra` and payload schemas, preimage checks, refusal reasons; and the receipts store's
 * insert-once semantics (x402/receipts.ts, in-memory SQLite).
 */
import { expect } from "chai";
import fc from "fast-check";
import {
  QRWP_X402_SCHEME,
  X402_REFUSAL_REASONS,
  isAtomicAmount,
  isQrwpError,
  QrwpError,
  isX402RefusalReason,
  parseQrwpRoutedExtra,
  parseQrwpRoutedPayload,
  parseQrwpPayload,
  QRWP_DIRECT_TRANSFER_MAX_CHARS,
  x402PaymentId,
  parseX402Network,
  preimageMatches,
  randomSecret,
  secretHashOf,
  x402Network,
} from "../../protocol/index.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { ReceiptStore } from "../../x402/receipts.js";

const hub = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

describe("protocol/x402", () => {
  it("names the scheme and maps chain ids to CAIP-2 and back", () => {
    expect(QRWP_X402_SCHEME).to.equal("qrwp-channel");
    expect(x402Network(31337n)).to.equal("eip155:31337");
    expect(x402Network("8453")).to.equal("eip155:8453");
    expect(parseX402Network("eip155:31337")).to.equal(31337n);
    for (const bad of ["eip155:0", "eip155:", "eip155:01", "solana:abc", "eip155:1x", ""]) {
      expect(parseX402Network(bad), bad).to.equal(null);
    }
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: 10n ** 19n }), (id) => parseX402Network(x402Network(id)) === id),
    );
  });

  it("refuses chain ids that are not positive integers with INVALID_ARGUMENT", () => {
    for (const bad of [0n, -1n, "0", "abc", "1.5", ""]) {
      try {
        x402Network(bad);
        expect.fail(`accepted ${String(bad)}`);
      } catch (err) {
        expect(isQrwpError(err) && err.code).to.equal("INVALID_ARGUMENT");
      }
    }
  });

  it("parses the routed extra (unknown keys pass through) and refuses other shapes", () => {
    const paymentHash = secretHashOf(randomSecret());
    const extra = {
      assetTransferMethod: "invoice",
      hub,
      invoice: { paymentHash, expiresAtSeconds: 1_800_000_000 },
      paymentFlow: "authorization",
    };
    expect(parseQrwpRoutedExtra(extra)).to.deep.equal(extra);
    expect(parseQrwpRoutedExtra({ ...extra, assetTransferMethod: "permit2" })).to.equal(null);
    expect(parseQrwpRoutedExtra({ ...extra, hub: "0x1234" })).to.equal(null);
    expect(
      parseQrwpRoutedExtra({ ...extra, invoice: { paymentHash: "0x12", expiresAtSeconds: 1 } }),
    ).to.equal(null);
    expect(parseQrwpRoutedExtra({ ...extra, invoice: { paymentHash, expiresAtSeconds: 1.5 } })).to.equal(
      null,
    );
    expect(parseQrwpRoutedExtra(null)).to.equal(null);
    expect(parseQrwpRoutedExtra("x")).to.equal(null);
  });

  it("parses the routed payload strictly and checks sha256(preimage) == paymentHash", () => {
    const preimage = randomSecret();
    const payload = { paymentHash: secretHashOf(preimage), preimage };
    const parsed = parseQrwpRoutedPayload(payload);
    expect(parsed).to.deep.equal(payload);
    expect(preimageMatches(parsed!)).to.equal(true);
    expect(
      preimageMatches({ ...payload, paymentHash: payload.paymentHash.toUpperCase().replace("0X", "0x") }),
    ).to.equal(true);
    expect(preimageMatches({ ...payload, preimage: randomSecret() })).to.equal(false);
    expect(parseQrwpRoutedPayload({ ...payload, extra: 1 })).to.equal(null);
    expect(parseQrwpRoutedPayload({ paymentHash: payload.paymentHash })).to.equal(null);
    expect(parseQrwpRoutedPayload({ ...payload, preimage: "0x00" })).to.equal(null);
    fc.assert(fc.property(fc.anything(), (v) => parseQrwpRoutedPayload(v) === null || typeof v === "object"));
  });

  it("tells routed and direct payloads apart and bounds the transfer", () => {
    const paymentHash = "0x" + "ab".repeat(32);
    const preimage = "0x" + "cd".repeat(32);
    expect(parseQrwpPayload({ paymentHash, preimage })).to.deep.equal({
      mode: "routed",
      paymentHash,
      preimage,
    });
    expect(parseQrwpPayload({ paymentHash, transfer: "oWF0Y2Fi_-" })).to.deep.equal({
      mode: "direct",
      paymentHash,
      transfer: "oWF0Y2Fi_-",
    });
    expect(parseQrwpPayload({ paymentHash, transfer: "a+b/c=" })).to.equal(null); // base64, not base64url
    expect(parseQrwpPayload({ paymentHash, transfer: "" })).to.equal(null);
    expect(
      parseQrwpPayload({ paymentHash, transfer: "a".repeat(QRWP_DIRECT_TRANSFER_MAX_CHARS + 1) }),
    ).to.equal(null);
    expect(parseQrwpPayload({ paymentHash, preimage, transfer: "abc" })).to.equal(null);
    expect(x402PaymentId(paymentHash.toUpperCase().replace("0X", "0x"))).to.equal(`x402:${paymentHash}`);
    const extra = { assetTransferMethod: "invoice", hub, invoice: { paymentHash, expiresAtSeconds: 1 } };
    expect(parseQrwpRoutedExtra({ ...extra, direct: true })?.direct).to.equal(true);
    expect(parseQrwpRoutedExtra({ ...extra, direct: "yes" })).to.equal(null);
  });

  it("has stable snake_case refusal reasons", () => {
    expect(X402_REFUSAL_REASONS).to.include.members([
      "missing_payment",
      "malformed_payment",
      "unknown_invoice",
      "wrong_amount",
      "wrong_asset",
      "wrong_payee",
      "invoice_expired",
      "invalid_preimage",
      "not_paid",
      "replayed",
      "rate_limited",
      "unpriceable_request",
      "no_channel",
      "invalid_transfer",
    ]);
    for (const r of X402_REFUSAL_REASONS) expect(r).to.match(/^[a-z]+(_[a-z]+)*$/);
    expect(isX402RefusalReason("replayed")).to.equal(true);
    expect(isX402RefusalReason("Payment required")).to.equal(false);
  });

  it("accepts only atomic amounts", () => {
    expect(isAtomicAmount("1")).to.equal(true);
    expect(isAtomicAmount("1000000000000000000")).to.equal(true);
    for (const bad of ["0", "01", "-1", "1.5", "", "1e18", 1])
      expect(isAtomicAmount(bad), String(bad)).to.equal(false);
  });
});

describe("x402/receipts", () => {
  it("records a payment hash once; later inserts are replays", () => {
    const store = new ReceiptStore(":memory:");
    const paymentHash = secretHashOf(randomSecret());
    const receipt = {
      paymentHash,
      route: "GET /weather",
      amount: "5",
      asset: hub,
      payer: null,
      mode: "routed" as const,
      createdAtMs: 1,
    };
    expect(store.insertOnce(receipt)).to.equal(true);
    expect(store.insertOnce({ ...receipt, route: "GET /other", createdAtMs: 2 })).to.equal(false);
    expect(
      store.insertOnce({ ...receipt, paymentHash: paymentHash.toUpperCase().replace("0X", "0x") }),
    ).to.equal(false);
    expect(store.get(paymentHash)).to.deep.equal(receipt);
    expect(store.count()).to.equal(1);
    expect(store.list()).to.deep.equal([receipt]);
    store.close();
  });

  it("opens a receipts file from before direct mode (no mode column) and records both modes", () => {
    const dir = mkdtempSync(join(tmpdir(), "qrwp-receipts-"));
    const path = join(dir, "receipts.db");
    const old = new Database(path);
    old.exec(
      "CREATE TABLE receipts (payment_hash TEXT PRIMARY KEY, route TEXT NOT NULL, amount TEXT NOT NULL, " +
        "asset TEXT NOT NULL, payer TEXT, created_at INTEGER NOT NULL)",
    );
    const oldHash = `0x${"aa".repeat(32)}`;
    old.prepare("INSERT INTO receipts VALUES (?, 'GET /old', '1', ?, NULL, 1)").run(oldHash, hub);
    old.close();
    const store = new ReceiptStore(path);
    expect(store.get(oldHash)?.mode).to.equal("routed");
    const payer = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
    const direct = {
      paymentHash: `0x${"bb".repeat(32)}`,
      route: "GET /w",
      amount: "2",
      asset: hub,
      payer,
      mode: "direct" as const,
      createdAtMs: 2,
    };
    expect(store.insertOnce(direct)).to.equal(true);
    store.close();
    const reopened = new ReceiptStore(path);
    expect(reopened.get(direct.paymentHash)).to.deep.equal(direct);
    expect(reopened.count()).to.equal(2);
    reopened.close();
    // A row that does not decode is refused with the column named, never handed out as a receipt.
    const raw = new Database(path);
    raw.prepare("UPDATE receipts SET mode = 'barter' WHERE payment_hash = ?").run(oldHash);
    raw.close();
    const corrupt = new ReceiptStore(path);
    expect(() => corrupt.get(oldHash))
      .to.throw(QrwpError)
      .that.satisfies((e: QrwpError) => e.code === "INTERNAL" && e.details.field === "mode");
    expect(corrupt.get(direct.paymentHash)).to.deep.equal(direct);
    corrupt.close();
    rmSync(dir, { recursive: true, force: true });
  });
});
