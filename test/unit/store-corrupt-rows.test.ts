/**
 * Row codecs on real SQLite files: a row that does not decode (written with raw SQL behind the store's back)
 * is refused with QrwpError INTERNAL naming its table and column, never handed out as a record; the other rows
 * of the same table still read. Node store (channels, balance proofs, mediated payments), watchtower store
 * (appointments) and the schema version check of host/sqlite.ts.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { expect } from "chai";
import { QrwpError, type SignedBalanceProof } from "../../protocol/index.js";
import { NodeStore } from "../../node/store/store.js";
import { mediatedPayment } from "./helpers.js";
import { WatchtowerStore, newStoredAppointment } from "../../watchtower/store.js";

const PARTNER = "0x2222222222222222222222222222222222222222";
const US = "0x1111111111111111111111111111111111111111";
const TOKEN = "0x3333333333333333333333333333333333333333";
const HUB = "0x4444444444444444444444444444444444444444";

/** Asserts `fn` throws QrwpError INTERNAL with `details.field === column` (and the table when given). */
function expectCorrupt(fn: () => unknown, column: string, table: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, `a corrupt ${table}.${column} must throw`).to.be.instanceOf(QrwpError);
  const e = caught as QrwpError;
  expect(e.code).to.equal("INTERNAL");
  expect(e.details.field).to.equal(column);
  expect(e.details.table).to.equal(table);
  expect(e.message).to.contain(table);
}

function proof(nonce: bigint, transferredAmount: bigint): SignedBalanceProof {
  return {
    proof: {
      chainId: 31337n,
      hub: HUB,
      channelId: 7n,
      nonce,
      transferredAmount,
      lockedAmount: 0n,
      locksRoot: `0x${"00".repeat(32)}`,
    },
    signature: `0x${"ab".repeat(65)}`,
    pqSignature: new Uint8Array([1, 2, 3, 4]),
  };
}

/** A node store file with channels 7 and 8 and our proofs 1..3 on channel 7, closed. */
function nodeStoreFile(): string {
  const path = join(mkdtempSync(join(tmpdir(), "qrwp-corrupt-")), "node.sqlite");
  const store = new NodeStore(path);
  for (const channelId of [7n, 8n])
    store.insertChannel({
      channelId,
      partner: PARTNER,
      token: TOKEN,
      settleTimeoutSeconds: 600,
      ourDeposit: 100n,
      partnerDeposit: 50n,
      ourWithdraw: 0n,
      partnerWithdraw: 0n,
      openedAtMs: 1,
      updatedAtMs: 1,
      state: "opened",
    });
  for (const nonce of [1n, 2n, 3n])
    store.insertBalanceProof(US, proof(nonce, nonce * 10n), { status: "acked" });
  store.close();
  return path;
}

/** Runs `sql` on the file with a raw connection (the store is closed). */
function rawWrite(path: string, sql: string, ...params: unknown[]): void {
  const db = new Database(path);
  db.prepare(sql).run(...params);
  db.close();
}

describe("unit: corrupt rows are refused by the store codecs", () => {
  it("a channel row with a bad column is INTERNAL naming it; the other channel still reads", () => {
    const path = nodeStoreFile();
    rawWrite(path, "UPDATE channels SET our_deposit = '-5' WHERE channel_id = '7'");
    const store = new NodeStore(path);
    try {
      expectCorrupt(() => store.getChannel(7n), "our_deposit", "channels");
      expectCorrupt(() => store.listChannels(), "our_deposit", "channels");
      expect(store.getChannel(8n)?.ourDeposit).to.equal(100n);
    } finally {
      store.close();
    }
    // A closed row must name its closer (the lifecycle union cannot be built without it).
    rawWrite(path, "UPDATE channels SET our_deposit = '100' WHERE channel_id = '7'");
    rawWrite(path, "UPDATE channels SET state = 'closed', closed_at_seconds = 5 WHERE channel_id = '8'");
    const again = new NodeStore(path);
    try {
      expect(again.getChannel(7n)?.state).to.equal("opened");
      expectCorrupt(() => again.getChannel(8n), "closing_participant", "channels");
    } finally {
      again.close();
    }
  });

  it("a balance-proof row with a bad column is INTERNAL naming it, on every read path", () => {
    const path = nodeStoreFile();
    rawWrite(
      path,
      "UPDATE balance_proofs SET transferred_amount = '3e1' WHERE channel_id = '7' AND signer = ? AND nonce = 3",
      US,
    );
    const store = new NodeStore(path);
    try {
      expectCorrupt(() => store.latestBalanceProof(7n, US), "transferred_amount", "balance_proofs");
      expectCorrupt(() => store.latestStoredProof(7n, US), "transferred_amount", "balance_proofs");
      expectCorrupt(() => store.storedProofAt(7n, US, 3n), "transferred_amount", "balance_proofs");
      // The untouched proofs still decode exactly.
      expect(store.balanceProofAt(7n, US, 2n)).to.deep.equal(proof(2n, 20n));
    } finally {
      store.close();
    }
  });

  it("names a bad signature, a pq signature that is not a blob and packed locks that do not unpack", () => {
    const path = nodeStoreFile();
    const cases: [string, string, unknown][] = [
      ["signature", "UPDATE balance_proofs SET signature = '0x1234' WHERE nonce = 1", undefined],
      [
        "pq_signature",
        "UPDATE balance_proofs SET pq_signature = 'text, not a blob' WHERE nonce = 2",
        undefined,
      ],
      ["locks", "UPDATE balance_proofs SET locks = ? WHERE nonce = 3", Buffer.alloc(95)],
    ];
    for (const [, sql, param] of cases) {
      if (param === undefined) rawWrite(path, sql);
      else rawWrite(path, sql, param);
    }
    const store = new NodeStore(path);
    try {
      // Row i + 1 (nonce i + 1) carries case i's corruption.
      cases.forEach(([column], i) =>
        expectCorrupt(() => store.storedProofAt(7n, US, BigInt(i + 1)), column, "balance_proofs"),
      );
    } finally {
      store.close();
    }
    // A bad status never reaches the codec: the table's CHECK refuses it.
    expect(() => rawWrite(path, "UPDATE balance_proofs SET status = 'lost' WHERE nonce = 1")).to.throw(
      /CHECK/,
    );
  });

  it("a mediated payment whose attempts are not JSON attempts is INTERNAL naming attempts", () => {
    const path = nodeStoreFile();
    const store = new NodeStore(path);
    store.insertMediatedPayment(
      mediatedPayment({
        paymentId: "p1",
        target: PARTNER,
        token: TOKEN,
        amount: 5n,
        secretHash: `0x${"cd".repeat(32)}`,
      }),
    );
    store.close();
    rawWrite(path, `UPDATE mediated_payments SET attempts = '[{"route": 1}]'`);
    const again = new NodeStore(path);
    try {
      expectCorrupt(() => again.getMediatedPayment("p1"), "attempts", "mediated_payments");
      expectCorrupt(() => again.listPayments({ limit: 10 }), "attempts", "mediated_payments");
    } finally {
      again.close();
    }
  });

  it("refuses a node store file of a newer schema version and leaves it untouched", () => {
    const path = nodeStoreFile();
    rawWrite(path, "UPDATE meta SET value = '4' WHERE key = 'schema_version'");
    expectCorruptVersion(() => new NodeStore(path));
    const db = new Database(path, { readonly: true });
    expect(db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").pluck().get()).to.equal("4");
    db.close();
  });

  it("a watchtower appointment row with a bad column is INTERNAL naming it", () => {
    const path = join(mkdtempSync(join(tmpdir(), "qrwp-corrupt-tower-")), "tower.sqlite");
    const tower = new WatchtowerStore(path);
    tower.putAppointment(
      newStoredAppointment(
        {
          id: `0x${"01".repeat(32)}`,
          channelId: 7n,
          closingParticipant: PARTNER,
          nonClosingParticipant: US,
          nonce: 3n,
          balanceHash: `0x${"02".repeat(32)}`,
          closingSignature: `0x${"ab".repeat(65)}`,
          nonClosingSignature: `0x${"cd".repeat(65)}`,
          digest: `0x${"03".repeat(32)}`,
        },
        1,
      ),
    );
    expect(tower.appointmentsWithStatus("watching")).to.have.length(1);
    tower.close();
    rawWrite(path, "UPDATE appointments SET status = 'asleep'");
    const again = new WatchtowerStore(path);
    try {
      expectCorrupt(() => again.appointment(`0x${"01".repeat(32)}`), "status", "appointments");
      expectCorrupt(() => again.appointmentsOfChannel(7n), "status", "appointments");
      expectCorrupt(() => again.stats(), "status", "appointments");
    } finally {
      again.close();
    }
  });
});

function expectCorruptVersion(fn: () => unknown): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).to.be.instanceOf(QrwpError);
  expect((caught as QrwpError).code).to.equal("INTERNAL");
  expect((caught as QrwpError).details).to.include({ field: "schema_version", version: 4 });
}
