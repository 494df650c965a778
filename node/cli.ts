/**
 * `qrwp`: the command-line entry point (commander).
 *   qrwp init --data-dir D                       create keys (mode 0600) and an API token
 *   qrwp node start --data-dir D --rpc URL ...   run a channel node
 * Every flag also reads an environment variable (shown in --help). Bad flags exit with code 2 and a
 * one-line message; runtime failures exit 1.
 */
import "core-js/actual/promise/with-resolvers.js";
import { resolve } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { isQrwpError } from "../protocol/index.js";
import { initKeystore } from "./keystore.js";
import { createLogger } from "./logger.js";
import { startNode } from "./runtime.js";

function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError("must be a port number 0-65535");
  return n;
}

function parseHostPort(value: string): { host: string; port: number } {
  const m = /^([^:]+):(\d{1,5})$/.exec(value);
  if (!m) throw new InvalidArgumentError("must be HOST:PORT, e.g. 127.0.0.1:7001");
  return { host: m[1] as string, port: parsePort(m[2] as string) };
}

function parseUrl(value: string): string {
  try {
    const u = new URL(value);
    if (!["http:", "https:", "ws:", "wss:"].includes(u.protocol)) throw new Error();
    return value;
  } catch {
    throw new InvalidArgumentError("must be an http(s) or ws(s) URL");
  }
}

function parseMultiaddr(value: string): string {
  if (!/^\/(ip4|ip6|dns4|dns6|dns)\/[^/]+\/tcp\/\d{1,5}(\/.*)?$/.test(value)) {
    throw new InvalidArgumentError("must be a TCP multiaddr, e.g. /ip4/127.0.0.1/tcp/9000");
  }
  return value;
}

function parseNonEmpty(value: string): string {
  if (value.trim() === "") throw new InvalidArgumentError("must not be empty");
  return value;
}

function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

export function buildCli(): Command {
  const program = new Command("qrwp")
    .description("QRWP: a post-quantum hardened payment channel network for EVM chains")
    .version("0.1.0")
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str.split("\n")[0] + "\n") });

  program
    .command("init")
    .description("create a node's keys (secp256k1, ML-DSA-65, libp2p) and API token in a data directory")
    .addOption(
      new Option("--data-dir <dir>", "data directory")
        .env("QRWP_DATA_DIR")
        .argParser(parseNonEmpty)
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--key-file <file>", "keys file (default <data-dir>/keys.json)").env("QRWP_KEY_FILE"),
    )
    .action(async (opts: { dataDir: string; keyFile?: string }) => {
      const dataDir = resolve(opts.dataDir);
      const { address, peerId } = await initKeystore(
        dataDir,
        opts.keyFile ? resolve(opts.keyFile) : undefined,
      );
      console.log(JSON.stringify({ address, peerId, dataDir }));
    });

  const node = program.command("node").description("run a channel node");
  node
    .command("start")
    .description("start a channel node: libp2p host, chain client and HTTP API")
    .addOption(
      new Option("--data-dir <dir>", "data directory made by `qrwp init`")
        .env("QRWP_DATA_DIR")
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--key-file <file>", "keys file (default <data-dir>/keys.json)").env("QRWP_KEY_FILE"),
    )
    .addOption(
      new Option("--rpc <url>", "Ethereum JSON-RPC URL")
        .env("QRWP_RPC_URL")
        .argParser(parseUrl)
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--deployment <file>", "deployment JSON (chainId, bridge, hub, token)")
        .env("QRWP_DEPLOYMENT")
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--listen <multiaddr>", "libp2p listen address")
        .env("QRWP_LISTEN")
        .argParser(parseMultiaddr)
        .default("/ip4/127.0.0.1/tcp/0"),
    )
    .addOption(
      new Option("--api <host:port>", "HTTP API address")
        .env("QRWP_API")
        .argParser(parseHostPort)
        .default({ host: "127.0.0.1", port: 7001 }, "127.0.0.1:7001"),
    )
    .addOption(
      new Option("--chain-poll-ms <ms>", "how often to poll the chain for closes")
        .env("QRWP_CHAIN_POLL_MS")
        .argParser(parsePositiveInt)
        .default(2000),
    )
    .addOption(
      new Option("--log-level <level>", "log level")
        .env("QRWP_LOG_LEVEL")
        .choices(["trace", "debug", "info", "warn", "error"])
        .default("info"),
    )
    .action(
      async (opts: {
        dataDir: string;
        keyFile?: string;
        rpc: string;
        deployment: string;
        listen: string;
        api: { host: string; port: number };
        chainPollMs: number;
        logLevel: string;
      }) => {
        const log = createLogger({ level: opts.logLevel });
        const running = await startNode(
          {
            dataDir: resolve(opts.dataDir),
            ...(opts.keyFile ? { keyFile: resolve(opts.keyFile) } : {}),
            rpcUrl: opts.rpc,
            deploymentFile: resolve(opts.deployment),
            listen: opts.listen,
            apiHost: opts.api.host,
            apiPort: opts.api.port,
            chainPollMs: opts.chainPollMs,
          },
          log,
        );
        // One machine-readable line on stdout for supervisors (devnet, scripts).
        console.log(
          JSON.stringify({
            event: "ready",
            address: running.address,
            peerId: running.peerId,
            multiaddrs: running.multiaddrs,
            apiUrl: running.apiUrl,
          }),
        );
        const shutdown = (signal: string) => {
          log.info({ signal }, "shutting down");
          running.stop().then(
            () => process.exit(0),
            (err: unknown) => {
              log.error({ err }, "shutdown failed");
              process.exit(1);
            },
          );
        };
        process.once("SIGINT", () => shutdown("SIGINT"));
        process.once("SIGTERM", () => shutdown("SIGTERM"));
      },
    );
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildCli();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string };
    if (typeof e.code === "string" && e.code.startsWith("commander.")) {
      // help and version exit 0; usage errors exit 2 (message already printed on one line).
      process.exit(e.exitCode === 0 ? 0 : 2);
    }
    if (isQrwpError(err)) {
      console.error(`qrwp: ${err.code}: ${err.message}`);
      process.exit(err.code === "INVALID_ARGUMENT" || err.code === "CONFLICT" ? 2 : 1);
    }
    console.error(`qrwp: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}

await main(process.argv);
