/**
 * The watchtower's `qrwp` command (commander; the entry point is `cli/qrwp.ts`):
 *   qrwp watchtower start --data-dir D --rpc URL [--rpc URL2 ...] --deployment F --listen ADDR --api HOST:PORT
 * Keys are created in the data directory on first start. Every flag also reads an environment variable.
 */
import { resolve } from "node:path";
import { InvalidArgumentError, Option, type Command } from "commander";
import { createLogger } from "../host/logger.js";
import { serveUntilSignal } from "../host/process.js";
import {
  addPeerLimitOptions,
  peerLimitsFromOptions,
  type PeerLimitOptions,
  parseHostPort,
  parseMultiaddr,
  parseNonEmpty,
  parseNonNegativeInt,
  parsePositiveInt,
  collectUrls,
} from "../host/cli-args.js";
import { startWatchtower } from "./runtime.js";

function parsePct(value: string): number {
  const n = parseNonNegativeInt(value);
  if (n > 90) throw new InvalidArgumentError("must be a percentage 0..90");
  return n;
}

/** Adds `watchtower start` to the `qrwp` program. */
export function addWatchtowerCommands(program: Command): Command {
  const wt = program.command("watchtower").description("run a watchtower that contests stale channel closes");
  const start = wt
    .command("start")
    .description("start a watchtower: chain follower, contest loop, libp2p protocol and HTTP API")
    .addOption(
      new Option("--data-dir <dir>", "data directory (keys are created on first start)")
        .env("QRWP_TOWER_DATA_DIR")
        .argParser(parseNonEmpty)
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--rpc <url>", "Ethereum JSON-RPC URL; repeat (or comma-separate) for failover")
        .env("QRWP_TOWER_RPC_URLS")
        .argParser(collectUrls)
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--deployment <file>", "deployment JSON (chainId, hub, ...)")
        .env("QRWP_DEPLOYMENT")
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--listen <multiaddr>", "libp2p listen address")
        .env("QRWP_TOWER_LISTEN")
        .argParser(parseMultiaddr)
        .default("/ip4/127.0.0.1/tcp/0"),
    )
    .addOption(
      new Option("--api <host:port>", "HTTP API address")
        .env("QRWP_TOWER_API")
        .argParser(parseHostPort)
        .default({ host: "127.0.0.1", port: 7101 }, "127.0.0.1:7101"),
    )
    .addOption(
      new Option("--confirmations <blocks>", "blocks below the head before acting on an event")
        .env("QRWP_TOWER_CONFIRMATIONS")
        .argParser(parseNonNegativeInt)
        .default(0),
    )
    .addOption(
      new Option("--poll-ms <ms>", "chain poll interval")
        .env("QRWP_TOWER_POLL_MS")
        .argParser(parsePositiveInt)
        .default(2000),
    )
    .addOption(
      new Option("--rpc-timeout-ms <ms>", "timeout of one RPC call; a stalled URL fails over to the next")
        .env("QRWP_TOWER_RPC_TIMEOUT_MS")
        .argParser(parsePositiveInt)
        .default(10_000),
    )
    .addOption(
      new Option("--contest-start-pct <pct>", "earliest contest point, % of the settle window")
        .env("QRWP_TOWER_CONTEST_START_PCT")
        .argParser(parsePct)
        .default(30),
    )
    .addOption(
      new Option("--contest-spread-pct <pct>", "spread of the staggered contest point, % of the window")
        .env("QRWP_TOWER_CONTEST_SPREAD_PCT")
        .argParser(parsePct)
        .default(40),
    )
    .addOption(
      new Option("--mldsa-threads <n>", "worker threads verifying ML-DSA-65 signatures (0: the main thread)")
        .env("QRWP_TOWER_MLDSA_THREADS")
        .argParser(parseNonNegativeInt)
        .default(undefined, "the available cores"),
    );
  addPeerLimitOptions(start);
  start
    .addOption(
      new Option("--log-level <level>", "log level")
        .env("QRWP_LOG_LEVEL")
        .choices(["trace", "debug", "info", "warn", "error"])
        .default("info"),
    )
    .action(
      async (
        opts: {
          dataDir: string;
          rpc: string[];
          deployment: string;
          listen: string;
          api: { host: string; port: number };
          confirmations: number;
          pollMs: number;
          rpcTimeoutMs: number;
          contestStartPct: number;
          contestSpreadPct: number;
          mldsaThreads?: number;
          logLevel: string;
        } & PeerLimitOptions,
      ) => {
        const log = createLogger({ level: opts.logLevel, name: "qrwp-watchtower" });
        const running = await startWatchtower(
          {
            dataDir: resolve(opts.dataDir),
            rpcUrls: opts.rpc,
            deploymentFile: resolve(opts.deployment),
            listen: opts.listen,
            apiHost: opts.api.host,
            apiPort: opts.api.port,
            confirmations: opts.confirmations,
            pollIntervalMs: opts.pollMs,
            rpcTimeoutMs: opts.rpcTimeoutMs,
            contestStartPct: opts.contestStartPct,
            peerLimits: peerLimitsFromOptions(opts),
            contestSpreadPct: opts.contestSpreadPct,
            ...(opts.mldsaThreads !== undefined ? { mldsaVerifyThreads: opts.mldsaThreads } : {}),
          },
          log,
        );
        serveUntilSignal(running, log);
      },
    );
  return program;
}
