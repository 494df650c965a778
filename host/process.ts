/**
 * The lifecycle every long-running `qrwp ... start` process shares: one machine-readable JSON `ready`
 * line on stdout for supervisors (devnet, scripts), then a graceful stop on SIGINT/SIGTERM (exit 0, or 1
 * when stopping fails).
 */
import type { Logger } from "pino";

/** What a started process exposes to its supervisor. */
export interface RunningProcess {
  address: string;
  peerId: string;
  multiaddrs: string[];
  apiUrl: string;
  stop(): Promise<void>;
}

/** Prints `{"event":"ready",address,peerId,multiaddrs,apiUrl}` and stops `running` on SIGINT/SIGTERM. */
export function serveUntilSignal(running: RunningProcess, log: Logger): void {
  console.log(
    JSON.stringify({
      event: "ready",
      address: running.address,
      peerId: running.peerId,
      multiaddrs: running.multiaddrs,
      apiUrl: running.apiUrl,
    }),
  );
  stopOnSignal(() => running.stop(), log);
}

/** On the first SIGINT/SIGTERM: logs it, awaits `stop()`, exits 0 (1 if stopping failed). */
export function stopOnSignal(
  stop: () => Promise<void>,
  log: Pick<Logger, "info" | "error"> & { flush?: (cb?: (err?: Error) => void) => void },
): void {
  // Logs are written asynchronously (host/logger.ts): let the last lines out before exiting.
  const exit = (code: number) => {
    if (!log.flush) process.exit(code);
    const timer = setTimeout(() => process.exit(code), 2000);
    log.flush(() => {
      clearTimeout(timer);
      process.exit(code);
    });
  };
  const shutdown = (signal: string) => {
    log.info({ signal }, "shutting down");
    stop().then(
      () => exit(0),
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        exit(1);
      },
    );
  };
  process.once("SIGINT", () => shutdown("SIGINT"));
  process.once("SIGTERM", () => shutdown("SIGTERM"));
}
