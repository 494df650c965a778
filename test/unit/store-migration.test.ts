/**
 * NodeStore schema migration v1 -> v2 on a real SQLite file: v1 balance proofs gain locks/status/message
 * without losing anything; our pending direct payment stays pending (and is re-sendable), a failed one is
 * refused, the partner's proofs are acknowledged.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { expect } from "chai";
import { NodeStore } from "../../node/store/store.js";

// The v1 schema exactly as shipped (node/store/store.ts at schema version 1).
const V1_SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS peers (
  address TEXT PRIMARY KEY,
  peer_id TEXT NOT NULL,
  multiaddrs TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
  channel_id TEXT PRIMARY KEY,
  partner TEXT NOT NULL,
  token TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('opened','closed','settled')),
  settle_timeout_seconds INTEGER NOT NULL,
  our_deposit TEXT NOT NULL,
  partner_deposit TEXT NOT NULL,
  closed_at_seconds INTEGER,
  closing_participant TEXT,
  opened_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS balance_proofs (
  channel_id TEXT NOT NULL,
  signer TEXT NOT NULL,
  nonce INTEGER NOT NULL,
  chain_id TEXT NOT NULL,
  hub TEXT NOT NULL,
  transferred_amount TEXT NOT NULL,
  locked_amount TEXT NOT NULL,
  locks_root TEXT NOT NULL,
  signature TEXT NOT NULL,
  pq_signature BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (channel_id, signer, nonce)
);
CREATE TABLE IF NOT EXISTS payments (
  payment_id TEXT NOT NULL,
  direction TEXT NOT NULL CHECK (direction IN ('outgoing','incoming')),
  channel_id TEXT NOT NULL,
  partner TEXT NOT NULL,
  token TEXT NOT NULL,
  amount TEXT NOT NULL,
  nonce INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending','completed','failed')),
  error_code TEXT,
  error_message TEXT,
  created_at INTEGER NOT NULL,
  completed_at INTEGER,
  PRIMARY KEY (direction, channel_id, payment_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS payments_outgoing_id ON payments(payment_id) WHERE direction = 'outgoing';
CREATE INDEX IF NOT EXISTS payments_status ON payments(status, direction);
`;

const US = "0x1111111111111111111111111111111111111111";
const PARTNER = "0x2222222222222222222222222222222222222222";

describe("unit: NodeStore migration v1 -> v3", () => {
  it("keeps every v1 row and derives the delivery status of our proofs from their payments", () => {
    const path = join(mkdtempSync(join(tmpdir(), "qrwp-store-")), "node.db");
    const db = new Database(path);
    db.exec(V1_SCHEMA);
    db.prepare("INSERT INTO meta(key, value) VALUES ('schema_version', '1')").run();
    db.prepare(
      `INSERT INTO channels VALUES ('7', ?, '0x3333333333333333333333333333333333333333', 'opened', 600, '100', '50', NULL, NULL, 1, 1)`,
    ).run(PARTNER);
    const proof = db.prepare(
      `INSERT INTO balance_proofs VALUES ('7', ?, ?, '31337', '0x4444444444444444444444444444444444444444', ?, '0', ?, ?, ?, 1)`,
    );
    const zero = "0x" + "00".repeat(32);
    const sig = "0x" + "ab".repeat(65);
    proof.run(US, 1, "10", zero, sig, Buffer.alloc(4));
    proof.run(US, 2, "30", zero, sig, Buffer.alloc(4));
    proof.run(US, 3, "40", zero, sig, Buffer.alloc(4));
    proof.run(PARTNER, 1, "5", zero, sig, Buffer.alloc(4));
    const payment = db.prepare(
      `INSERT INTO payments VALUES (?, 'outgoing', '7', ?, '0x3333333333333333333333333333333333333333', ?, ?, ?, NULL, NULL, 1, NULL)`,
    );
    payment.run("p1", PARTNER, "10", 1, "completed");
    payment.run("p2", PARTNER, "20", 2, "failed");
    payment.run("p3", PARTNER, "10", 3, "pending");
    db.close();

    const store = new NodeStore(path);
    try {
      expect(store.getMeta("schema_version")).to.equal("3");
      expect(store.getChannel(7n)?.ourWithdraw).to.equal(0n);
      expect(store.storedProofAt(7n, US, 1n)?.status).to.equal("acked");
      expect(store.storedProofAt(7n, US, 2n)?.status).to.equal("refused");
      expect(store.storedProofAt(7n, US, 3n)?.status).to.equal("pending");
      expect(store.storedProofAt(7n, PARTNER, 1n)?.status).to.equal("acked");
      expect(store.latestStoredProof(7n, US, "acked")?.signed.proof.transferredAmount).to.equal(10n);
      expect(store.pendingProofs(7n, US).map((p) => p.signed.proof.nonce)).to.deep.equal([3n]);
      expect(store.storedProofAt(7n, US, 3n)?.locks).to.deep.equal([]);
      expect(store.getPayment("p3")?.status).to.equal("pending");
      expect(store.listChannels()).to.have.length(1);
    } finally {
      store.close();
    }
    // Opening again is a no-op migration.
    const again = new NodeStore(path);
    expect(again.storedProofAt(7n, US, 2n)?.status).to.equal("refused");
    again.close();
  });
});
