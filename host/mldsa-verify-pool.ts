/**
 * ML-DSA-65 verification (FIPS 204) in a pool of worker threads, so a process that checks many signatures (a
 * watchtower accepting appointment batches) uses every core instead of one: a verification costs ~1.9 ms of
 * CPU in noble's pure JS (`npm run bench:mldsa`) and no faster library checks our context signatures
 * (docs/DECISIONS.md). Same answers as `protocol/keys.ts` `mldsaVerify` (same library, same context encoding,
 * the same input checks on this thread first), as an {@link MldsaVerifier}.
 *
 * The threads start on the first verification. Each is referenced only while it has work, so an idle pool never
 * keeps the process alive. A thread that fails has its verifications run again on the calling thread and is
 * replaced on the next call, at most {@link MAX_RESTARTS} times per slot; a pool of size 0, a stopped pool or one
 * whose threads keep failing verifies on the calling thread. So `verify` never rejects and never answers wrong.
 * At most `maxInFlight` verifications wait for the threads; past that the caller's thread verifies at once, which
 * holds its event loop as before the pool: a flood of appointments is slowed at the socket, not queued in memory.
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { mldsaVerify, mldsaVerifyInput, type MldsaVerifier } from "../protocol/index.js";

/** How many times one thread slot is started again after its thread failed. */
export const MAX_RESTARTS = 3;
/** Default bound of the verifications waiting for the threads (~5 KiB each): 16 full appointment batches. */
export const DEFAULT_MAX_IN_FLIGHT = 1024;

export interface MldsaVerifyPoolInit {
  /** Worker threads (default: `os.availableParallelism()`, at least 1). 0: verify on the calling thread. */
  size?: number;
  /** Verifications waiting for the threads at most; past it the caller's thread verifies (default 1024). */
  maxInFlight?: number;
}

type Job = {
  resolve: (ok: boolean) => void;
  signature: Uint8Array;
  message: Uint8Array;
  publicKey: Uint8Array;
  context: Uint8Array | undefined;
};

type Thread = { worker: Worker; pending: Map<number, Job> };

/** The default pool size: the cores this process may use, at least 1. */
export function defaultVerifyThreads(): number {
  return Math.max(1, availableParallelism());
}

/** See the module doc. */
export class MldsaVerifyPool {
  /** Threads the pool runs at most (0: none, every verification on the calling thread). */
  readonly size: number;
  readonly #maxInFlight: number;
  #inFlight = 0;
  readonly #threads: Array<Thread | null>;
  readonly #restarts: number[];
  #nextId = 1;
  #stopped = false;

  constructor(init: MldsaVerifyPoolInit = {}) {
    const size = init.size ?? defaultVerifyThreads();
    if (!Number.isInteger(size) || size < 0) throw new RangeError("size must be a non-negative integer");
    this.size = size;
    this.#maxInFlight = init.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (!Number.isInteger(this.#maxInFlight) || this.#maxInFlight < 1) {
      throw new RangeError("maxInFlight must be a positive integer");
    }
    this.#threads = Array.from({ length: size }, () => null);
    this.#restarts = Array.from({ length: size }, () => 0);
  }

  /** Verifications waiting for the threads now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Threads running now (they start on the first verification). */
  get running(): number {
    return this.#threads.filter((t) => t !== null).length;
  }

  /**
   * ML-DSA-65 verification (FIPS 204 ML-DSA.Verify) with an optional context, on the least busy thread.
   * @returns true only for a valid signature; false for any malformed input (like `mldsaVerify`). Never rejects.
   */
  readonly verify: MldsaVerifier = (signature, message, publicKey, context) => {
    const input = mldsaVerifyInput(signature, message, publicKey, context);
    if (input === null) return Promise.resolve(false);
    const thread = this.#inFlight < this.#maxInFlight ? this.#pick() : null;
    if (thread === null) return Promise.resolve(mldsaVerify(signature, message, publicKey, context));
    return new Promise<boolean>((resolve) => {
      const id = this.#nextId++;
      const job: Job = { resolve, signature, message, publicKey, context: input.context };
      if (thread.pending.size === 0) thread.worker.ref();
      thread.pending.set(id, job);
      this.#inFlight += 1;
      thread.worker.postMessage({ id, signature, message, publicKey, context: input.context });
    });
  };

  /** Stops the threads; verifications still in flight are answered on the calling thread. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const threads = this.#threads.filter((t): t is Thread => t !== null);
    this.#threads.fill(null);
    for (const t of threads) this.#runHere(t);
    await Promise.all(threads.map((t) => t.worker.terminate()));
  }

  /** The running thread with the fewest verifications in flight, a new one in a free slot, or null. */
  #pick(): Thread | null {
    if (this.#stopped) return null;
    let best: Thread | null = null;
    for (let i = 0; i < this.size; i++) {
      let t = this.#threads[i] ?? null;
      if (t === null && this.#restarts[i]! <= MAX_RESTARTS) t = this.#start(i);
      if (t !== null && (best === null || t.pending.size < best.pending.size)) best = t;
      if (best !== null && best.pending.size === 0) break;
    }
    return best;
  }

  #start(slot: number): Thread {
    const worker = new Worker(new URL("./mldsa-verify-thread.mjs", import.meta.url));
    worker.unref();
    const thread: Thread = { worker, pending: new Map() };
    this.#threads[slot] = thread;
    worker.on("message", (m: { id: number; ok: boolean }) => {
      const job = thread.pending.get(m.id);
      if (!job) return;
      thread.pending.delete(m.id);
      this.#inFlight -= 1;
      if (thread.pending.size === 0) worker.unref();
      job.resolve(m.ok === true);
    });
    const fail = () => {
      if (this.#threads[slot] !== thread) return; // stopped, or already replaced
      this.#threads[slot] = null;
      this.#restarts[slot]! += 1;
      this.#runHere(thread);
      void worker.terminate();
    };
    worker.on("error", fail);
    worker.on("exit", fail);
    return thread;
  }

  /** Answers a thread's verifications in flight on this thread. */
  #runHere(thread: Thread): void {
    const jobs = [...thread.pending.values()];
    thread.pending.clear();
    this.#inFlight -= jobs.length;
    thread.worker.unref();
    for (const j of jobs) j.resolve(mldsaVerify(j.signature, j.message, j.publicKey, j.context));
  }
}
