/**
 * A merchant that sells a weather forecast for QRWP payments over HTTP 402 (x402 v2, scheme `qrwp-channel`):
 * the "price a route in a few lines" example.
 *
 *   GET /weather?city=Lisbon   priced: `--price` token base units, paid through the merchant's QRWP node
 *   GET /health                free: `{ ok: true }`
 *   GET /v1/receipts           the receipts, newest first (only with `--admin-token`, as its bearer token)
 *
 * The merchant needs a running QRWP node (`qrwp node start`) with channels that can receive payments; the
 * app talks to it only over the node's HTTP API. Run it with
 *
 *   npx tsx examples/weather-merchant.ts --data-dir ~/.qrwp --token 0xToken… --price 1000
 *
 * and buy with `npx qrwp fetch http://127.0.0.1:8402/weather?city=Porto --max-amount 1000` from another node.
 * Every flag has an environment variable (see `--help`). Prints one JSON line
 * `{"event":"ready","url","merchant","network","price","token"}` on stdout once it listens, then pino JSON
 * logs; SIGINT/SIGTERM close the server (in-flight requests finish) and the receipts database, exit 0.
 * Secrets (the node's API token, the admin token, payment headers) are never logged.
 */
import { resolve } from "node:path";
import Fastify from "fastify";
import { Command, Option } from "commander";
import { price, qrwpPaywall } from "../x402/index.js";
import { readApiToken } from "../host/keystore.js";
import { createLogger } from "../host/logger.js";
import { stopOnSignal } from "../host/process.js";
import { parseAddress, parseAmount, parseHostPort, parseNonEmpty, parseUrl } from "../host/cli-args.js";

/** Parsed flags (amounts are decimal strings of token base units). */
interface Options {
  apiUrl: string;
  dataDir?: string;
  apiToken?: string;
  token: string;
  price: string;
  listen: { host: string; port: number };
  receipts: string;
  adminToken?: string;
  logLevel: string;
}

const SKIES = ["sunny", "partly cloudy", "cloudy", "light rain", "showers", "windy", "fog"];

/**
 * A deterministic fake forecast: the same city always gets the same three days.
 * @returns `{ city, days: [{ day, sky, highC, lowC, rainMm }] }` (°C, mm of rain).
 */
function forecast(city: string) {
  let h = 2166136261;
  for (const c of city.toLowerCase()) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  const days = [0, 1, 2].map((day) => {
    const x = (h >>> (day * 8)) & 0xff;
    const highC = 8 + (x % 24);
    return { day, sky: SKIES[x % SKIES.length], highC, lowC: highC - 4 - (x % 7), rainMm: (x % 5) * 1.5 };
  });
  return { city, days };
}

async function main(o: Options): Promise<void> {
  const log = createLogger({ name: "weather-merchant", level: o.logLevel });
  const nodeToken = o.apiToken ?? (o.dataDir ? readApiToken(resolve(o.dataDir)) : undefined);
  if (!nodeToken) throw new Error("give --data-dir (the node's data directory) or --api-token");

  const app = Fastify({ loggerInstance: log });
  // The paywall: one priced route, receipts in SQLite, settled against the merchant's own node.
  await app.register(qrwpPaywall, {
    node: { apiUrl: o.apiUrl, token: nodeToken },
    routes: [
      price("GET /weather", o.price, o.token, {
        description: "3-day forecast",
        mimeType: "application/json",
      }),
    ],
    receiptsPath: resolve(o.receipts),
    adminToken: o.adminToken ?? false,
  });
  app.get<{ Querystring: { city: string } }>(
    "/weather",
    {
      schema: {
        querystring: {
          type: "object",
          properties: { city: { type: "string", minLength: 1, maxLength: 64, default: "Lisbon" } },
        },
      },
    },
    async (req) => forecast(req.query.city),
  );
  app.get("/health", async () => ({ ok: true }));

  const url = await app.listen({ host: o.listen.host, port: o.listen.port });
  const { merchant, network } = app.qrwpPaywall;
  console.log(
    JSON.stringify({
      event: "ready",
      url,
      merchant: merchant.address,
      network,
      price: o.price,
      token: o.token,
    }),
  );
  stopOnSignal(() => app.close(), log);
}

await new Command("weather-merchant")
  .description("sell GET /weather for QRWP payments (x402 v2, qrwp-channel); GET /health is free")
  .addOption(
    new Option("--api-url <url>", "the merchant's QRWP node API")
      .env("QRWP_API_URL")
      .argParser(parseUrl)
      .default("http://127.0.0.1:7001"),
  )
  .addOption(
    new Option("--data-dir <dir>", "the node's data directory (reads its api-token)").env("QRWP_DATA_DIR"),
  )
  .addOption(
    new Option("--api-token <token>", "the node's API token (instead of --data-dir)").env("QRWP_API_TOKEN"),
  )
  .addOption(
    new Option("--token <address>", "token the price is in")
      .env("QRWP_MERCHANT_TOKEN")
      .argParser(parseAddress)
      .makeOptionMandatory(),
  )
  .addOption(
    new Option("--price <amount>", "price of GET /weather (token base units)")
      .env("QRWP_MERCHANT_PRICE")
      .argParser(parseAmount)
      .default("1000"),
  )
  .addOption(
    new Option("--listen <host:port>", "where the app listens (port 0: any free port)")
      .env("QRWP_MERCHANT_LISTEN")
      .argParser(parseHostPort)
      .default({ host: "127.0.0.1", port: 8402 }, "127.0.0.1:8402"),
  )
  .addOption(
    new Option("--receipts <file>", "SQLite file of the receipts")
      .env("QRWP_MERCHANT_RECEIPTS")
      .default("receipts.sqlite"),
  )
  .addOption(
    new Option(
      "--admin-token <token>",
      "bearer token for GET /v1/receipts (without it the route is off; prefer the env: flags show in ps)",
    )
      .env("QRWP_MERCHANT_ADMIN_TOKEN")
      .argParser(parseNonEmpty),
  )
  .addOption(
    new Option("--log-level <level>", "log level")
      .env("QRWP_LOG_LEVEL")
      .choices(["trace", "debug", "info", "warn", "error"])
      .default("info"),
  )
  .action(main)
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    // Startup failed (bad price, node unreachable, port taken): one line, no stack, exit 1.
    console.error(
      JSON.stringify({ event: "error", message: err instanceof Error ? err.message : String(err) }),
    );
    process.exitCode = 1;
  });
