// The thread of host/mldsa-worker.ts: ML-DSA-65 signatures (FIPS 204, @noble/post-quantum) off the main
// thread. Receives {id, message, context}; answers {id, signature} or {id, error}. The secret key comes once,
// in workerData, and never leaves this thread.
import { parentPort, workerData } from "node:worker_threads";
import { ml_dsa65 } from "@noble/post-quantum/ml-dsa.js";

const secretKey = Uint8Array.from(workerData.secretKey);
parentPort.on("message", ({ id, message, context }) => {
  try {
    const signature = ml_dsa65.sign(message, secretKey, { context });
    parentPort.postMessage({ id, signature }, [signature.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
  }
});
