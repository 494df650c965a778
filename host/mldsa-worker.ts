/**
 * ML-DSA-65 signing (FIPS 204) in a worker thread, so a ~9 ms signature does not stall the event loop that
 * carries payments (the channel node signs its balance-proof evidence here: docs/PROTOCOL.md §7.4). The
 * secret key is handed to the thread once; requests are answered in order. Same signatures as
 * `protocol/keys.ts` `mldsaSign` (same library, same context encoding).
 */
import { Worker } from "node:worker_threads";
import { QrwpError } from "../protocol/index.js";

export class MldsaSignerWorker {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve: (s: Uint8Array) => void; reject: (e: Error) => void }>();
  #nextId = 1;
  #closed = false;

  /** Starts the thread with `secretKey` (4032 bytes, ML-DSA-65). The thread does not keep the process alive. */
  constructor(secretKey: Uint8Array) {
    this.#worker = new Worker(new URL("./mldsa-worker-thread.mjs", import.meta.url), {
      workerData: { secretKey: Uint8Array.from(secretKey) },
    });
    this.#worker.unref();
    this.#worker.on("message", (m: { id: number; signature?: Uint8Array; error?: string }) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.signature) p.resolve(new Uint8Array(m.signature));
      else p.reject(new QrwpError("INTERNAL", `ML-DSA signing failed: ${m.error ?? "unknown"}`));
    });
    this.#worker.on("error", (err) => this.#failAll(err));
    this.#worker.on("exit", () => this.#failAll(new Error("ML-DSA worker exited")));
  }

  /**
   * ML-DSA-65 signature of `message` with `context` (a FIPS 204 context string, ≤ 255 bytes).
   * @returns 3309 bytes.
   * @throws QrwpError INTERNAL when the thread failed or was stopped.
   */
  sign(message: Uint8Array, context: string): Promise<Uint8Array> {
    if (this.#closed) return Promise.reject(new QrwpError("INTERNAL", "ML-DSA worker stopped"));
    const id = this.#nextId++;
    return new Promise<Uint8Array>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ id, message, context: new TextEncoder().encode(context) });
    });
  }

  /** Stops the thread; pending signatures reject. */
  async stop(): Promise<void> {
    this.#closed = true;
    await this.#worker.terminate();
  }

  #failAll(err: Error): void {
    this.#closed = true;
    for (const p of this.#pending.values())
      p.reject(new QrwpError("INTERNAL", err.message, {}, { cause: err }));
    this.#pending.clear();
  }
}
