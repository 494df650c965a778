/**
 * Group commit in host/sqlite.ts on a real SQLite file: once `deferSyncToBarrier` ran, commits are not
 * fsync'd one by one; `syncBarrierSoon` makes every commit made before the call durable with ONE fdatasync of
 * the WAL on libuv's thread pool, shared by every caller of the same turn; a commit made while that fdatasync
 * runs waits for the next one; `durable: false` commits need no barrier; `syncBarrier` does the same on the
 * calling thread; `close` during a running barrier neither throws nor leaks the WAL descriptor.
 */
import { mkdtempSync, readdirSync, readlinkSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { openSqlite, type SqliteDatabase } from "../../host/sqlite.js";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
`;

function openDb(): SqliteDatabase {
  const path = join(mkdtempSync(join(tmpdir(), "qrwp-group-commit-")), "test.db");
  const db = openSqlite(path, { label: "test", schema: SCHEMA });
  db.deferSyncToBarrier();
  return db;
}

function insert(db: SqliteDatabase, v: string): void {
  db.transaction(() => db.sql("INSERT INTO items(v) VALUES (?)").run(v));
}

/** Descriptors of this process that point at `path`. */
function openDescriptors(path: string): number {
  let n = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === path) n++;
    } catch {
      // closed while listing
    }
  }
  return n;
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("sqlite: group commit (deferSyncToBarrier, syncBarrierSoon)", () => {
  let db: SqliteDatabase;
  beforeEach(() => {
    db = openDb();
  });
  afterEach(() => {
    if (db.isOpen) db.close();
  });

  it("opens its own descriptor of the WAL file and needs no barrier before anything is written", async () => {
    // SQLite's descriptor and ours.
    expect(openDescriptors(`${db.path}-wal`)).to.equal(2);
    expect(db.syncBarrier()).to.equal(false);
    await db.syncBarrierSoon();
  });

  it("syncs the real WAL of a database opened through a symlink", async () => {
    const dir = mkdtempSync(join(tmpdir(), "qrwp-group-commit-link-"));
    const real = join(dir, "real.db");
    openSqlite(real, { label: "test", schema: SCHEMA }).close();
    const link = join(dir, "link.db");
    symlinkSync(real, link);
    const viaLink = openSqlite(link, { label: "test", schema: SCHEMA });
    try {
      viaLink.deferSyncToBarrier();
      // SQLite's descriptor of real.db-wal and ours; none of a link.db-wal.
      expect(openDescriptors(`${real}-wal`)).to.equal(2);
      insert(viaLink, "a");
      await viaLink.syncBarrierSoon();
      expect(viaLink.syncBarrier()).to.equal(false);
    } finally {
      viaLink.close();
    }
  });

  it("one barrier covers every commit and every caller of the same turn", async () => {
    insert(db, "a");
    const first = db.syncBarrierSoon();
    insert(db, "b");
    const second = db.syncBarrierSoon();
    expect(second).to.equal(first);
    await first;
    // Everything before the barrier is durable: nothing is left to sync.
    expect(db.syncBarrier()).to.equal(false);
  });

  it("a commit made while the fdatasync runs waits for the next barrier", async () => {
    insert(db, "a");
    const first = db.syncBarrierSoon();
    await nextTurn(); // the fdatasync started in this check phase; its callback comes in a later poll phase
    // Nothing new yet: a caller shares the running barrier.
    expect(db.syncBarrierSoon()).to.equal(first);
    insert(db, "b");
    const second = db.syncBarrierSoon();
    expect(second).to.not.equal(first);
    await first;
    // The running barrier did not cover "b".
    expect(db.syncBarrier()).to.equal(true);
    await second;
    expect(db.syncBarrier()).to.equal(false);
  });

  it("a durable:false commit needs no barrier, also while one runs", async () => {
    db.transaction(() => db.sql("INSERT INTO items(v) VALUES ('x')").run(), { durable: false });
    expect(db.syncBarrier()).to.equal(false);
    insert(db, "a");
    const running = db.syncBarrierSoon();
    await nextTurn();
    db.transaction(() => db.sql("INSERT INTO items(v) VALUES ('y')").run(), { durable: false });
    await running;
    expect(db.syncBarrier()).to.equal(false);
  });

  it("syncBarrier syncs on the calling thread and then reports nothing left", () => {
    insert(db, "a");
    expect(db.syncBarrier()).to.equal(true);
    expect(db.syncBarrier()).to.equal(false);
  });

  it("close during a running barrier resolves its callers and closes the WAL descriptor", async () => {
    const wal = `${db.path}-wal`;
    insert(db, "a");
    const running = db.syncBarrierSoon();
    await nextTurn();
    insert(db, "b");
    const queued = db.syncBarrierSoon();
    db.close();
    await Promise.all([running, queued]);
    expect(openDescriptors(wal)).to.equal(0);
    // Both rows are in the database file (close checkpointed the WAL).
    const reopened = openSqlite(db.path, { label: "test", schema: SCHEMA });
    expect(reopened.sql("SELECT count(*) AS n FROM items").get()).to.deep.equal({ n: 2 });
    reopened.close();
  });
});
