/**
 * One way to open a SQLite file for every QRWP store (the node's `NodeStore`, the watchtower's
 * `WatchtowerStore`, x402's `ReceiptStore`), and one way to decode what it reads.
 *
 * - {@link openSqlite}: better-sqlite3 with `journal_mode = WAL`, `synchronous = FULL` (a committed write is
 *   fsync'd when the call returns: LDK's "durable before send"), `foreign_keys = ON` and a busy timeout; then,
 *   in one transaction, the store's migration hook, its DDL and its schema version check.
 * - {@link SqliteDatabase.sql}: prepared statements cached by SQL text (SQLite parses each text once).
 * - {@link decodeRow}: a row read is decoded by a zod codec, never cast; a corrupt row is a
 *   `QrwpError("INTERNAL")` naming the table and the column.
 *
 * Imports `protocol/` only.
 */
import { closeSync, fdatasync, fdatasyncSync, openSync, realpathSync } from "node:fs";
import Database from "better-sqlite3";
import { z } from "zod";
import { QrwpError } from "../protocol/index.js";

/** How long a write waits for another connection's lock before SQLITE_BUSY, ms (better-sqlite3's default). */
export const DEFAULT_BUSY_TIMEOUT_MS = 5000;

/**
 * Where a store keeps its schema version, and which versions it can open. Versions `oldest..current - 1`
 * are migrated by {@link OpenSqliteOptions.migrate} and then stamped `current`; a file without a version
 * (new) is stamped `current`; any other version is refused before anything is written.
 */
export interface SchemaVersioning {
  /** The version this code writes. */
  current: number;
  /** The oldest version the migration hook brings up to date. */
  oldest: number;
  /** Reads the stored version; null for a new file. Must not assume the store's tables exist. */
  read(db: Database.Database): number | null;
  /** Stores `version` (called after the DDL ran, inside the opening transaction). */
  write(db: Database.Database, version: number): void;
}

/** Options of {@link openSqlite}. */
export interface OpenSqliteOptions {
  /** What the file holds, for errors and logs ("node store", "watchtower store", "receipts"). */
  label: string;
  /** Idempotent DDL (`CREATE ... IF NOT EXISTS`), run at every open after `migrate`. */
  schema: string;
  /**
   * Brings an older file's tables up to what `schema` expects (ALTER TABLE ...); runs at every open, before
   * `schema`, inside the opening transaction, so each step must check what it finds (columns, tables).
   * `fromVersion` is the stored version (null when none is stored or no `version` is given).
   */
  migrate?: (db: Database.Database, fromVersion: number | null) => void;
  /** Schema version check and stamp; without it the store has no version. */
  version?: SchemaVersioning;
  /** Default {@link DEFAULT_BUSY_TIMEOUT_MS}. */
  busyTimeoutMs?: number;
}

/** An open SQLite database with the pragmas of {@link openSqlite} and a prepared-statement cache. */
export class SqliteDatabase {
  /** The better-sqlite3 handle, for statements a store prepares itself. */
  readonly db: Database.Database;
  readonly label: string;
  readonly path: string;
  readonly #statements = new Map<string, Database.Statement>();
  /** True once {@link deferSyncToBarrier} was called: commits are not fsync'd until {@link syncBarrier}. */
  #deferred = false;
  /** `total_changes()` at the last sync: anything above it was committed without an fsync. */
  #syncedChanges = 0;
  /** {@link onRollback} hooks of the open transaction, outermost first. */
  readonly #rollbackHooks: (() => void)[] = [];
  /**
   * A descriptor of the `-wal` file, opened by {@link deferSyncToBarrier}: a barrier is one `fdatasync` of it
   * (fsync works on the inode, so it flushes every frame SQLite appended through its own descriptor), run on
   * libuv's thread pool by {@link syncBarrierSoon} so the event loop goes on while the disk works. Undefined
   * when there is no WAL file (":memory:"): barriers then commit under `synchronous = FULL` instead.
   */
  #walFd: number | undefined;
  /** The barrier whose fdatasync is running: it covers every change up to `target`. */
  #inFlight: { target: number; promise: Promise<void> } | undefined;
  /** Changes committed with `durable: false` while {@link #inFlight} runs (they count as synced with it). */
  #creditsInFlight = 0;
  /** The next barrier, shared by everyone who asks while one runs or before it starts. */
  #next: { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } | undefined;
  #closed = false;
  /**
   * The first failed sync, sticky: Linux reports a failed writeback once and marks the pages clean, so a
   * later fdatasync can succeed without the lost frames ever reaching the disk. After one failure no barrier
   * passes again (nothing that depends on a write may leave); the process must restart and recover.
   */
  #syncError: Error | undefined;

  constructor(db: Database.Database, label: string, path: string) {
    this.db = db;
    this.label = label;
    this.path = path;
  }

  /** The prepared statement for `sql`, compiled on first use and cached. */
  sql(sql: string): Database.Statement {
    let stmt = this.#statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.#statements.set(sql, stmt);
    }
    return stmt;
  }

  /**
   * Runs `fn` in one transaction: all of its writes land together (fsync'd on return, or by the next
   * {@link syncBarrier} when syncs are deferred) or none do. With `durable: false` the commit is not fsync'd
   * and, when syncs are deferred, does not make the next barrier sync: it is atomic and ordered (WAL) and
   * becomes durable with the next sync or checkpoint; only for writes that a restart can redo (e.g. marking
   * a proof acknowledged: a re-delivery acknowledges it again).
   */
  transaction<T>(fn: () => T, options: { durable?: boolean } = {}): T {
    if (options.durable !== false || this.db.inTransaction) return this.#run(fn);
    if (this.#deferred) {
      // Needs no barrier: its changes count as synced (they become durable with the next sync anyway).
      const before = this.#totalChanges();
      const result = this.#run(fn);
      const credits = this.#totalChanges() - before;
      this.#syncedChanges += credits;
      if (this.#inFlight) this.#creditsInFlight += credits;
      return result;
    }
    this.sql("PRAGMA synchronous = NORMAL").run();
    try {
      return this.#run(fn);
    } finally {
      this.sql("PRAGMA synchronous = FULL").run();
    }
  }

  /**
   * Runs `fn` after the transaction (or savepoint, when nested) that is open now rolls back, in the reverse
   * order of registration, once its writes are undone: for an owner's in-memory copy of rows it wrote in
   * the transaction. A no-op outside a transaction (nothing to roll back); dropped on commit.
   */
  onRollback(fn: () => void): void {
    if (this.db.inTransaction) this.#rollbackHooks.push(fn);
  }

  /** `fn` in a transaction (a savepoint when nested); on a throw, the hooks registered inside it run. */
  #run<T>(fn: () => T): T {
    const outermost = !this.db.inTransaction;
    const mark = this.#rollbackHooks.length;
    try {
      const result = this.db.transaction(fn)();
      if (outermost) this.#rollbackHooks.length = 0;
      return result;
    } catch (err) {
      const hooks = this.#rollbackHooks.splice(mark);
      // Every hook runs, and the transaction's own error is the one thrown (a hook's failure is secondary).
      for (const hook of hooks.reverse()) {
        try {
          hook();
        } catch {
          // ignored: the owner's next read goes to the store
        }
      }
      throw err;
    }
  }

  /**
   * From now on commits are atomic and ordered (WAL) but not fsync'd (`synchronous = NORMAL`); the owner
   * must call {@link syncBarrier} or {@link syncBarrierSoon} before anything that depends on a write leaves
   * the process (the node does it before every libp2p frame, HTTP response and chain transaction): group
   * commit across everything written in between.
   *
   * Why an fdatasync of the WAL is enough: a commit in WAL mode only appends frames to the `-wal` file; once
   * they are on disk the commit survives a crash (recovery replays them). A checkpoint fsyncs the WAL before
   * copying frames into the database file and fsyncs that file before the WAL is reused, so frames that a
   * checkpoint moved are durable whether or not our fdatasync saw them. SQLite keeps its locks on the
   * database and `-shm` files, never on the `-wal` file, so our descriptor cannot release one; it is closed
   * after the database ({@link close}).
   */
  deferSyncToBarrier(): void {
    // Makes sure the -wal file exists and everything so far is durable (a FULL commit) before we rely on our
    // descriptor.
    this.sql(
      "INSERT INTO meta(key, value) VALUES ('sync-barrier', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
    ).run();
    const mode: unknown = this.db.pragma("journal_mode", { simple: true });
    if (mode === "wal" && this.path !== ":memory:" && this.path !== "") {
      try {
        // SQLite names the WAL after the database file's real path (symlinks resolved).
        this.#walFd = openSync(`${realpathSync(this.path)}-wal`, "r+");
      } catch {
        this.#walFd = undefined; // no WAL file: barriers fall back to a FULL commit
      }
    }
    this.db.pragma("synchronous = NORMAL");
    this.#deferred = true;
    this.#syncedChanges = this.#totalChanges();
  }

  /**
   * Makes every commit so far durable (one fdatasync of the WAL, on this thread), if anything was written
   * since the last one. A no-op unless {@link deferSyncToBarrier} was called or when nothing changed (one
   * cheap query).
   * @returns whether it synced.
   */
  syncBarrier(): boolean {
    if (!this.#deferred || this.db.inTransaction) return false;
    if (this.#syncError) throw this.#syncError;
    const target = this.#totalChanges();
    if (target <= this.#syncedChanges) return false;
    try {
      if (this.#walFd === undefined) this.#commitFull();
      else fdatasyncSync(this.#walFd);
    } catch (err) {
      this.#syncError = err instanceof Error ? err : new Error(String(err));
      throw this.#syncError;
    }
    this.#syncedChanges = Math.max(
      this.#syncedChanges,
      this.#walFd === undefined ? this.#totalChanges() : target,
    );
    return true;
  }

  /**
   * Resolves once every commit made before the call is durable: group commit. The fdatasync starts on the
   * next turn of the event loop, so everything about to leave in this turn (frames of several sessions, HTTP
   * replies) shares it, and runs on libuv's thread pool, so the event loop keeps working (and committing)
   * meanwhile; commits made while one runs wait for the next, which starts when it ends.
   * @throws (rejects) the fdatasync's error: nothing that depends on the writes may leave.
   */
  syncBarrierSoon(): Promise<void> {
    if (!this.#deferred) return Promise.resolve();
    if (this.#syncError) return Promise.reject(this.#syncError);
    const total = this.#totalChanges();
    if (total <= this.#syncedChanges) return Promise.resolve();
    const running = this.#inFlight;
    if (running && total <= running.target + this.#creditsInFlight) return running.promise;
    if (!this.#next) {
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.#next = { promise, resolve, reject };
      if (!running) setImmediate(() => this.#startSync());
    }
    return this.#next.promise;
  }

  /** Starts the fdatasync that {@link #next}'s callers wait for. */
  #startSync(): void {
    const waiters = this.#next;
    this.#next = undefined;
    if (!waiters) return;
    if (this.#closed) {
      waiters.resolve(); // close() checkpointed and synced everything
      return;
    }
    if (this.#syncError) {
      waiters.reject(this.#syncError);
      return;
    }
    let target: number;
    try {
      target = this.#totalChanges();
      if (target <= this.#syncedChanges) {
        waiters.resolve();
        return;
      }
      if (this.#walFd === undefined) {
        this.syncBarrier();
        waiters.resolve();
        return;
      }
    } catch (err) {
      waiters.reject(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    const fd = this.#walFd;
    this.#creditsInFlight = 0;
    this.#inFlight = { target, promise: waiters.promise };
    fdatasync(fd, (err) => {
      const credits = this.#creditsInFlight;
      this.#inFlight = undefined;
      this.#creditsInFlight = 0;
      if (this.#closed) {
        closeSync(fd);
        this.#walFd = undefined;
        if (err) waiters.reject(err);
        else waiters.resolve();
        this.#next?.resolve();
        this.#next = undefined;
        return;
      }
      if (err) {
        this.#syncError ??= err;
        waiters.reject(err);
        this.#next?.reject(err);
        this.#next = undefined;
        return;
      }
      this.#syncedChanges = Math.max(this.#syncedChanges, target + credits);
      waiters.resolve();
      if (this.#next) setImmediate(() => this.#startSync());
    });
  }

  /** A commit under `synchronous = FULL` fsyncs the WAL, and with it every frame appended before it. */
  #commitFull(): void {
    this.sql("PRAGMA synchronous = FULL").run();
    try {
      this.sql(
        "INSERT INTO meta(key, value) VALUES ('sync-barrier', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
      ).run();
    } finally {
      this.sql("PRAGMA synchronous = NORMAL").run();
    }
  }

  #totalChanges(): number {
    const row = this.sql("SELECT total_changes() AS n").get() as { n: number } | undefined;
    return row?.n ?? 0;
  }

  /** The file's size in bytes (page count × page size). */
  sizeBytes(): number {
    const pageCount: unknown = this.db.pragma("page_count", { simple: true });
    const pageSize: unknown = this.db.pragma("page_size", { simple: true });
    if (typeof pageCount !== "number" || typeof pageSize !== "number")
      return corruptRow("pragma", "page_count", "SQLite answered no page count or size");
    return pageCount * pageSize;
  }

  /** False once {@link close} was called. */
  get isOpen(): boolean {
    return this.db.open;
  }

  /** Closes the database (checkpointing the WAL). */
  close(): void {
    this.#statements.clear();
    this.db.close(); // checkpoints the WAL into the database file, synced
    this.#closed = true;
    // A running fdatasync still uses the descriptor: its callback closes it.
    if (this.#walFd !== undefined && !this.#inFlight) {
      closeSync(this.#walFd);
      this.#walFd = undefined;
    }
    this.#next?.resolve();
    this.#next = undefined;
  }
}

/**
 * Opens (creating if needed) the SQLite file at `path` (`":memory:"` for a throwaway store): WAL,
 * `synchronous = FULL`, foreign keys on, a busy timeout; then, in one transaction, `migrate`, `schema` and
 * the version stamp.
 * @throws QrwpError INTERNAL `{ field: "schema_version", store, version }` when the stored version is newer
 *   than `version.current` or older than `version.oldest` (the file is left untouched and closed).
 */
export function openSqlite(path: string, options: OpenSqliteOptions): SqliteDatabase {
  const db = new Database(path, { timeout: options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS });
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    const versioning = options.version;
    const fromVersion = versioning ? versioning.read(db) : null;
    if (
      versioning &&
      fromVersion !== null &&
      (fromVersion > versioning.current || fromVersion < versioning.oldest)
    ) {
      throw new QrwpError(
        "INTERNAL",
        `${options.label} schema version ${fromVersion} is not supported (expected ${versioning.oldest}..${versioning.current})`,
        { field: "schema_version", store: options.label, version: fromVersion },
      );
    }
    db.transaction(() => {
      options.migrate?.(db, fromVersion);
      db.exec(options.schema);
      if (versioning && fromVersion !== versioning.current) versioning.write(db, versioning.current);
    })();
  } catch (e) {
    db.close();
    throw e;
  }
  return new SqliteDatabase(db, options.label, path);
}

/**
 * Decodes one row read from `table` with its codec (a zod object over the row's columns).
 * @throws QrwpError INTERNAL `{ field: <column>, table }` when a column does not fit (the first one zod
 *   reports; `field: "row"` when the row is not an object).
 */
export function decodeRow<S extends z.ZodType>(schema: S, table: string, row: unknown): z.output<S> {
  const parsed = schema.safeParse(row);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const name = issue?.path[0] === undefined ? "row" : String(issue.path[0]);
  throw new QrwpError("INTERNAL", `corrupt ${table} row: ${name}: ${issue?.message ?? "invalid"}`, {
    field: name,
    table,
  });
}

/** Throws the INTERNAL error of a corrupt `column` in `table` (for checks a codec makes by hand). */
export function corruptRow(table: string, column: string, message: string): never {
  throw new QrwpError("INTERNAL", `corrupt ${table} row: ${column}: ${message}`, { field: column, table });
}

/** Parses JSON text; `undefined` for text that is not JSON (the codec then names the column). */
function parseJsonText(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** zod types of the columns the stores share, for their row codecs. */
export const column = {
  /** A uint256 as decimal text (amounts, ids, nonces kept as TEXT). */
  uintText: z.string().regex(/^[0-9]{1,78}$/),
  /** A 0x-hex 20-byte address (any case). */
  addressText: z.string().regex(/^0x[0-9a-fA-F]{40}$/),
  /** A 0x-hex 32-byte value (hashes, secrets, locksroots). */
  bytes32Text: z.string().regex(/^0x[0-9a-fA-F]{64}$/),
  /** A 0x-hex 65-byte secp256k1 signature. */
  signatureText: z.string().regex(/^0x[0-9a-fA-F]{130}$/),
  /** A SQLite INTEGER within JavaScript's safe integers. */
  int: z.number().int(),
  /** A non-negative SQLite INTEGER. */
  uint: z.number().int().nonnegative(),
  /** A TEXT column holding JSON that `schema` decodes. */
  json: <S extends z.ZodType>(schema: S) =>
    z.string().transform((text, ctx): z.output<S> => {
      const parsed = schema.safeParse(parseJsonText(text));
      if (parsed.success) return parsed.data;
      ctx.addIssue({ code: "custom", message: "not the JSON this column holds" });
      return z.NEVER;
    }),
};
