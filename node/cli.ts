/**
 * The channel node's `qrwp` commands (commander; the entry point is `cli/qrwp.ts`):
 *   qrwp init --data-dir D                       create keys (mode 0600) and an API token
 *   qrwp node start --data-dir D --rpc URL ...   run a channel node (--rpc and --watchtower repeatable)
 *   qrwp pay | route | invoice create|show       call a running node's API (JSON answers)
 *   qrwp info | channel … | payment …            the same, as tables or --json (node/cli/api-commands.ts)
 * Every flag also reads an environment variable (shown in --help).
 */
import { resolve } from "node:path";
import type { Command } from "commander";
import { InvalidArgumentError, Option } from "commander";
import {
  addPeerLimitOptions,
  peerLimitsFromOptions,
  type PeerLimitOptions,
  parseAddress,
  parseAmount,
  parseHash,
  parseHostPort,
  parseMultiaddr,
  parseNonEmpty,
  parseNonNegativeInt,
  parsePaymentId,
  parsePositiveInt,
  parseIntInRange,
  collectUrls,
} from "../host/cli-args.js";
import { initKeystore } from "../host/keystore.js";
import { createLogger } from "../host/logger.js";
import { serveUntilSignal } from "../host/process.js";
import { startNode } from "./runtime.js";
import { towerPeerId } from "./watchtowers.js";
import { DEFAULT_SAFETY_MARGINS, EVIDENCE_MAX_DELAY_MS, EVIDENCE_MAX_UPDATES } from "../protocol/index.js";
import { DEFAULT_EVIDENCE_DELAY_MS, DEFAULT_EVIDENCE_EVERY_UPDATES } from "./channels/evidence.js";
import { addChannelCommands, addPaymentCommands } from "./cli/api-commands.js";
import { callApi, withApi, type ApiOpts } from "./cli/api-client.js";

/** The payee options `qrwp pay` and `qrwp route` share: target, token, amount (all mandatory). */
function withPayee(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--target <address>", "payee address").argParser(parseAddress).makeOptionMandatory(),
    )
    .addOption(new Option("--token <address>", "token address").argParser(parseAddress).makeOptionMandatory())
    .addOption(
      new Option("--amount <amount>", "amount the payee receives (base units)")
        .argParser(parseAmount)
        .makeOptionMandatory(),
    );
}

/**
 * Collects `--watchtower` values (the flag repeats; `QRWP_WATCHTOWERS` is comma-separated): each a TCP
 * multiaddr ending in `/p2p/<peerId>`.
 */
function collectWatchtowers(value: string, previous: string[] = []): string[] {
  const added = value
    .split(",")
    .map((v) => v.trim())
    .filter((v) => v !== "")
    .map((v) => {
      parseMultiaddr(v);
      try {
        towerPeerId(v);
      } catch {
        throw new InvalidArgumentError(
          "must end in /p2p/<peerId>, e.g. /ip4/127.0.0.1/tcp/9100/p2p/12D3Koo...",
        );
      }
      return v;
    });
  return [...previous, ...added];
}

/**
 * Adds `init`, `node start`, `pay`, `route`, `invoice create|show`, and `info`, `channel …` and `payment …`
 * (node/cli/api-commands.ts) to the `qrwp` program.
 */
export function addNodeCommands(program: Command): Command {
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
  const start = node
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
      new Option("--rpc <url>", "Ethereum JSON-RPC URL; repeat (or comma-separate) for failover")
        .env("QRWP_RPC_URL")
        .argParser(collectUrls)
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--confirmations <blocks>", "blocks below the head before the node acts on a chain event")
        .env("QRWP_CONFIRMATIONS")
        .argParser(parseNonNegativeInt)
        .default(0),
    )
    .addOption(
      new Option(
        "--evidence-every-updates <n>",
        `our updates carry ML-DSA-65 evidence at least every n updates (1..${EVIDENCE_MAX_UPDATES})`,
      )
        .env("QRWP_EVIDENCE_EVERY_UPDATES")
        .argParser(parseIntInRange(1, EVIDENCE_MAX_UPDATES))
        .default(DEFAULT_EVIDENCE_EVERY_UPDATES),
    )
    .addOption(
      new Option(
        "--evidence-delay-ms <ms>",
        `... or once our oldest update without it is this old (1..${EVIDENCE_MAX_DELAY_MS / 2})`,
      )
        .env("QRWP_EVIDENCE_DELAY_MS")
        .argParser(parseIntInRange(1, EVIDENCE_MAX_DELAY_MS / 2))
        .default(DEFAULT_EVIDENCE_DELAY_MS),
    )
    .addOption(
      new Option("--rpc-timeout-ms <ms>", "timeout of one RPC call; a stalled URL fails over to the next")
        .env("QRWP_RPC_TIMEOUT_MS")
        .argParser(parsePositiveInt)
        .default(10_000),
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
      new Option("--chain-poll-ms <ms>", "how often the channel monitor polls the chain")
        .env("QRWP_CHAIN_POLL_MS")
        .argParser(parsePositiveInt)
        .default(2000),
    )
    .addOption(
      new Option("--fee-flat <amount>", "flat fee charged per forwarded payment (token base units)")
        .env("QRWP_FEE_FLAT")
        .argParser(parseAmount)
        .default("0"),
    )
    .addOption(
      new Option("--fee-ppm <ppm>", "proportional fee per forwarded amount, parts per million")
        .env("QRWP_FEE_PPM")
        .argParser(parseNonNegativeInt)
        .default(0),
    )
    .addOption(
      new Option("--reorg-seconds <s>", "R: deepest reorganisation guarded against (expiry delta = 3R+2G+2S)")
        .env("QRWP_REORG_SECONDS")
        .argParser(parseNonNegativeInt)
        .default(DEFAULT_SAFETY_MARGINS.reorgSeconds),
    )
    .addOption(
      new Option("--grace-seconds <s>", "G: wait for an unresponsive peer before going on-chain")
        .env("QRWP_GRACE_SECONDS")
        .argParser(parseNonNegativeInt)
        .default(DEFAULT_SAFETY_MARGINS.graceSeconds),
    )
    .addOption(
      new Option("--confirmation-seconds <s>", "S: time for a transaction to be mined")
        .env("QRWP_CONFIRMATION_SECONDS")
        .argParser(parseNonNegativeInt)
        .default(DEFAULT_SAFETY_MARGINS.confirmationSeconds),
    )
    .addOption(
      new Option(
        "--watchtower <multiaddr>",
        "watchtower to hand appointments to, ending in /p2p/<peerId> (repeatable; env: comma-separated)",
      )
        .env("QRWP_WATCHTOWERS")
        .argParser(collectWatchtowers)
        .default([] as string[], "none"),
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
          feeFlat: string;
          feePpm: number;
          reorgSeconds: number;
          graceSeconds: number;
          confirmationSeconds: number;
          dataDir: string;
          keyFile?: string;
          rpc: string[];
          confirmations: number;
          evidenceEveryUpdates: number;
          evidenceDelayMs: number;
          rpcTimeoutMs: number;
          deployment: string;
          listen: string;
          api: { host: string; port: number };
          chainPollMs: number;
          watchtower: string[];
          logLevel: string;
        } & PeerLimitOptions,
      ) => {
        const log = createLogger({ level: opts.logLevel });
        const running = await startNode(
          {
            dataDir: resolve(opts.dataDir),
            ...(opts.keyFile ? { keyFile: resolve(opts.keyFile) } : {}),
            rpcUrls: opts.rpc,
            confirmations: opts.confirmations,
            evidence: { everyUpdates: opts.evidenceEveryUpdates, delayMs: opts.evidenceDelayMs },
            requestTimeoutMs: opts.rpcTimeoutMs,
            deploymentFile: resolve(opts.deployment),
            listen: opts.listen,
            apiHost: opts.api.host,
            apiPort: opts.api.port,
            chainPollMs: opts.chainPollMs,
            fees: { feeFlat: BigInt(opts.feeFlat), feePpm: opts.feePpm },
            peerLimits: peerLimitsFromOptions(opts),
            margins: {
              reorgSeconds: opts.reorgSeconds,
              graceSeconds: opts.graceSeconds,
              confirmationSeconds: opts.confirmationSeconds,
            },
            watchtowers: opts.watchtower,
          },
          log,
        );
        serveUntilSignal(running, log);
      },
    );
  addChannelCommands(program);
  withApi(
    withPayee(
      program
        .command("pay")
        .description(
          "pay any node through the running node (directly over a channel, else routed with HTLCs)",
        ),
    )
      .addOption(new Option("--max-fee <amount>", "most fees to pay (base units)").argParser(parseAmount))
      .addOption(
        new Option("--timeout <seconds>", "stop retrying after this many seconds").argParser(
          parsePositiveInt,
        ),
      )
      .addOption(
        new Option("--payment-hash <hash>", "pay an invoice with this payment hash").argParser(parseHash),
      )
      .addOption(
        new Option(
          "--payment-id <id>",
          'idempotency id of the payment: a status "pending" may still complete, so retry with the same id',
        ).argParser(parsePaymentId),
      )
      .addOption(new Option("--routed", "always route with HTLCs, even to a channel partner")),
  ).action(
    async (
      o: ApiOpts & {
        target: string;
        token: string;
        amount: string;
        maxFee?: string;
        timeout?: number;
        paymentHash?: string;
        paymentId?: string;
        routed?: boolean;
      },
    ) =>
      callApi(o, "POST", "/v1/payments", {
        target: o.target,
        token: o.token,
        amount: o.amount,
        ...(o.maxFee !== undefined ? { maxFee: o.maxFee } : {}),
        ...(o.timeout ? { timeoutSeconds: o.timeout } : {}),
        ...(o.paymentHash ? { paymentHash: o.paymentHash } : {}),
        ...(o.paymentId ? { paymentId: o.paymentId } : {}),
        ...(o.routed ? { mode: "routed" } : {}),
      }),
  );
  withApi(
    withPayee(
      program
        .command("route")
        .description("show routes (hops, amounts, expirations, fees) to a target without paying"),
    ).addOption(new Option("--max-fee <amount>", "drop routes above this fee").argParser(parseAmount)),
  ).action(async (o: ApiOpts & { target: string; token: string; amount: string; maxFee?: string }) => {
    const q = new URLSearchParams({ target: o.target, token: o.token, amount: o.amount });
    if (o.maxFee !== undefined) q.set("maxFee", o.maxFee);
    await callApi(o, "GET", `/v1/routes?${q.toString()}`);
  });
  const invoice = program.command("invoice").description("create or show invoices (payee-chosen secrets)");
  withApi(
    invoice
      .command("create")
      .description("create an invoice; give its paymentHash to the payer")
      .addOption(
        new Option("--token <address>", "token address").argParser(parseAddress).makeOptionMandatory(),
      )
      .addOption(
        new Option("--amount <amount>", "amount to receive (base units)")
          .argParser(parseAmount)
          .makeOptionMandatory(),
      )
      .addOption(new Option("--description <text>", "what the payment is for"))
      .addOption(
        new Option("--expiry <seconds>", "seconds until the invoice expires").argParser(parsePositiveInt),
      ),
  ).action(async (o: ApiOpts & { token: string; amount: string; description?: string; expiry?: number }) =>
    callApi(o, "POST", "/v1/invoices", {
      token: o.token,
      amount: o.amount,
      ...(o.description !== undefined ? { description: o.description } : {}),
      ...(o.expiry ? { expirySeconds: o.expiry } : {}),
    }),
  );
  withApi(
    invoice
      .command("show")
      .description("show an invoice and whether it was paid")
      .argument("<paymentHash>", "payment hash", parseHash),
  ).action(async (paymentHash: string, o: ApiOpts) => callApi(o, "GET", `/v1/invoices/${paymentHash}`));
  addPaymentCommands(program);
  return program;
}
