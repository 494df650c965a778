// A thread of host/mldsa-verify-pool.ts: ML-DSA-65 verifications (FIPS 204, @noble/post-quantum, the library and
// the call of protocol/keys.ts `mldsaVerify`) off the main thread. Plain JS importing @noble directly: tsx's
// loader is not inherited by worker threads. Receives {id, signature, message, publicKey, context} (context as
// bytes, already checked to be at most 255); answers {id, ok}. Never throws: a malformed input is `ok: false`.
import { parentPort } from "node:worker_threads";
import { ml_dsa65 } from "@noble/post-quantum/ml-dsa.js";

parentPort.on("message", ({ id, signature, message, publicKey, context }) => {
  let ok = false;
  try {
    ok =
      ml_dsa65.verify(signature, message, publicKey, context === undefined ? undefined : { context }) ===
      true;
  } catch {
    ok = false;
  }
  parentPort.postMessage({ id, ok });
});
