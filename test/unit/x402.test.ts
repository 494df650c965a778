/**
 * The pure parts of the `qrwp-channel` x402 scheme (protocol/x402.ts): CAIP-2 networks, the routed
 * requirements' `extra` and payload schemas, preimage checks, refusal reasons, the stateless ticket's schema
 * and MAC'd message; the merchant's tickets (x402/server.ts `QrwpTickets`: minted, verified, forged or
 * altered ones refused); and the receipts store's insert-once semantics with its group commit
 * (x402/receipts.ts, in-memory and file SQLite).
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
  x402TicketMessage,
  type QrwpTicketTerms,
} from "../../protocol/index.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { ReceiptStore } from "../../x402/receipts.js";
import { QrwpTickets, decodesAsPayment } from "../../x402/server.js";

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

  it("takes a ticket instead of an invoice only for direct payments, and refuses a malformed ticket", () => {
    const ticket = {
      route: "GET /weather",
      reusable: true,
      expiresAtSeconds: 1_800_000_000,
      mac: `0x${"ab".repeat(32)}`,
    };
    const extra = { assetTransferMethod: "invoice", hub, direct: true, ticket };
    expect(parseQrwpRoutedExtra(extra)).to.deep.equal(extra);
    // Neither an invoice nor a direct ticket: nothing to pay.
    expect(parseQrwpRoutedExtra({ ...extra, direct: false })).to.equal(null);
    expect(parseQrwpRoutedExtra({ assetTransferMethod: "invoice", hub, direct: true })).to.equal(null);
    for (const bad of [
      { ...ticket, mac: "0x12" },
      { ...ticket, reusable: "yes" },
      { ...ticket, expiresAtSeconds: 0 },
      { ...ticket, route: "" },
      { ...ticket, extra: 1 },
    ])
      expect(parseQrwpRoutedExtra({ ...extra, ticket: bad }), JSON.stringify(bad)).to.equal(null);
  });

  it("a ticket's MAC'd message names every term, addresses in any case", () => {
    const terms: QrwpTicketTerms = {
      network: "eip155:31337",
      payTo: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
      hub,
      asset: hub,
      amount: "1000",
      maxTimeoutSeconds: 300,
      route: "GET /weather",
      reusable: true,
      expiresAtSeconds: 1_800_000_000,
    };
    const message = x402TicketMessage(terms);
    expect(
      x402TicketMessage({
        ...terms,
        payTo: terms.payTo.toLowerCase(),
        hub: hub.toUpperCase().replace("0X", "0x"),
      }),
    ).to.equal(message);
    const changes: Partial<QrwpTicketTerms>[] = [
      { network: "eip155:1" },
      { payTo: hub },
      { hub: terms.payTo },
      { asset: terms.payTo },
      { amount: "1001" },
      { maxTimeoutSeconds: 301 },
      { route: "GET /other" },
      { reusable: false },
      { expiresAtSeconds: 1_800_000_001 },
    ];
    for (const change of changes)
      expect(x402TicketMessage({ ...terms, ...change }), JSON.stringify(change)).to.not.equal(message);
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

describe("x402/server tickets", () => {
  const terms: QrwpTicketTerms = {
    network: "eip155:31337",
    payTo: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    hub,
    asset: hub,
    amount: "1000",
    maxTimeoutSeconds: 300,
    route: "GET /weather",
    reusable: true,
    expiresAtSeconds: 1_800_000_000,
  };

  it("verifies its own tickets and refuses forged, altered and foreign ones", () => {
    const tickets = new QrwpTickets(Buffer.alloc(32, 7));
    const ticket = tickets.mint(terms);
    expect(ticket).to.include({ route: "GET /weather", reusable: true, expiresAtSeconds: 1_800_000_000 });
    expect(ticket.mac).to.match(/^0x[0-9a-f]{64}$/);
    expect(tickets.verify(terms, ticket.mac)).to.equal(true);
    expect(tickets.verify(terms, ticket.mac), "remembered").to.equal(true);
    // Altered terms under the same MAC (a cheaper price, another route, a later expiry, reusable).
    for (const change of [
      { amount: "999" },
      { route: "GET /admin" },
      { expiresAtSeconds: terms.expiresAtSeconds + 1 },
      { reusable: false },
    ])
      expect(tickets.verify({ ...terms, ...change }, ticket.mac), JSON.stringify(change)).to.equal(false);
    // A MAC made up, one cut short, and one of another merchant's key.
    expect(tickets.verify(terms, `0x${"00".repeat(32)}`)).to.equal(false);
    expect(tickets.verify(terms, ticket.mac.slice(0, 40))).to.equal(false);
    expect(new QrwpTickets(Buffer.alloc(32, 8)).verify(terms, ticket.mac)).to.equal(false);
    expect(() => new QrwpTickets(Buffer.alloc(8))).to.throw(/16 bytes/);
  });

  it("tells payment headers that decode (base64 of JSON) from others", () => {
    const header = Buffer.from(JSON.stringify({ x402Version: 2 })).toString("base64");
    expect(decodesAsPayment(header)).to.equal(true);
    expect(decodesAsPayment(header), "remembered").to.equal(true);
    for (const bad of [undefined, "", "not base64!", Buffer.from("{not json").toString("base64"), "===="])
      expect(decodesAsPayment(bad), String(bad)).to.equal(false);
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

  it("group commit: claims are exact at once, written after the turn and by close, readable throughout", async () => {
    const dir = mkdtempSync(join(tmpdir(), "qrwp-receipts-"));
    const path = join(dir, "receipts.db");
    const store = new ReceiptStore(path);
    const receipt = (i: number) => ({
      paymentHash: `0x${i.toString(16).padStart(64, "0")}`,
      route: "GET /w",
      amount: "2",
      asset: hub,
      payer: null,
      mode: "direct" as const,
      createdAtMs: 1000 + i,
    });
    const onDisk = () => {
      const db = new Database(path, { readonly: true });
      try {
        return (db.prepare("SELECT COUNT(*) AS n FROM receipts").get() as { n: number }).n;
      } finally {
        db.close();
      }
    };
    // A burst in one turn: every claim answered at once, a second claim of a hash refused, nothing written yet.
    for (let i = 1; i <= 50; i++) expect(store.insertOnce(receipt(i))).to.equal(true);
    expect(store.insertOnce({ ...receipt(7), route: "GET /again" })).to.equal(false);
    expect(store.get(receipt(7).paymentHash)).to.deep.equal(receipt(7));
    expect(onDisk()).to.equal(0);
    // Written in one transaction right after the turn.
    await new Promise((r) => setImmediate(r));
    expect(onDisk()).to.equal(50);
    expect(store.insertOnce(receipt(7))).to.equal(false);
    // Claimed and not yet written: the reads see it; close writes it.
    expect(store.insertOnce(receipt(51))).to.equal(true);
    expect(store.count()).to.equal(51);
    expect(store.insertOnce(receipt(52))).to.equal(true);
    store.close();
    expect(onDisk()).to.equal(52);
    // The ticket key is kept in the file: the same after a restart.
    const reopened = new ReceiptStore(path);
    const key = reopened.secret("x402-ticket-key");
    expect(key).to.have.length(32);
    expect(reopened.list(1000).map((r) => r.paymentHash)).to.have.length(52);
    reopened.close();
    const again = new ReceiptStore(path);
    expect(again.secret("x402-ticket-key").equals(key)).to.equal(true);
    expect(again.secret("other").equals(key)).to.equal(false);
    again.close();
    rmSync(dir, { recursive: true, force: true });
  });
});
