/** Structured JSON logs (pino) with secrets redacted by path. */
import { pino, type Logger } from "pino";

/** Paths of fields that must never appear in a log line. */
const REDACT = [
  "*.secp256k1PrivateKey",
  "*.mldsaSecretKey",
  "*.mldsaSeed",
  "*.libp2pPrivateKey",
  "*.authorization",
  "req.headers.authorization",
];

/**
 * A pino JSON logger on stdout; `level` defaults to `QRWP_LOG_LEVEL` or "info". Secret fields (keys, seeds,
 * authorization headers) are redacted by path.
 */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino(
    {
      name: options.name ?? "qrwp",
      level: options.level ?? process.env.QRWP_LOG_LEVEL ?? "info",
      redact: { paths: REDACT, censor: "[redacted]" },
    },
    // Asynchronous writes (lines written while one is in flight go out together): a busy node does not
    // block on stdout once per line. The node flushes before it exits on a signal (host/process.ts); a
    // crash or a SIGKILL can lose the last lines (state never lives in logs).
    pino.destination({ dest: 1, sync: false }),
  );
}
