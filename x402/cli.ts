/**
 * `qrwp fetch URL --max-amount N`: an HTTP GET (or another method) that pays an x402 v2 `qrwp-channel` 402
 * through the user's own QRWP node, never more than `--max-amount` (token base units) per request and never
 * twice for one request (`qrwpFetch`). Prints the response body to stdout; the status, and the payment
 * (`PAYMENT-RESPONSE`, decoded) when one was made, go to stderr as one JSON line. Exit 0 on a 2xx, 1
 * otherwise (a 402 the client would not pay included), 2 on bad flags.
 */
import { resolve } from "node:path";
import { Option, type Command } from "commander";
import { decodePaymentResponseHeader } from "@x402/core/http";
import { QrwpError } from "../protocol/index.js";
import { readApiToken } from "../host/keystore.js";
import { parseAddress, parseAmount, parsePositiveInt, parseUrl } from "../host/cli-args.js";
import { qrwpFetch } from "./client.js";

/** Adds `fetch` to the `qrwp` program. */
export function addFetchCommand(program: Command): Command {
  program
    .command("fetch")
    .description("fetch a URL, paying its x402 (HTTP 402, qrwp-channel) price through your node")
    .argument("<url>", "the resource", parseUrl)
    .addOption(
      new Option("--max-amount <amount>", "most to pay for this request (token base units)")
        .argParser(parseAmount)
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--max-fee <amount>", "most routing fees to pay (base units)").argParser(parseAmount),
    )
    .addOption(new Option("--token <address>", "pay only in this token").argParser(parseAddress))
    .addOption(
      new Option("--timeout <seconds>", "stop retrying the payment after this many seconds").argParser(
        parsePositiveInt,
      ),
    )
    .addOption(
      new Option(
        "--prefer <mode>",
        "direct: pay on a channel with the merchant when there is one; routed: never",
      )
        .choices(["direct", "routed"])
        .default("direct"),
    )
    .addOption(new Option("-X, --method <method>", "HTTP method").default("GET"))
    .addOption(
      new Option("--api-url <url>", "your node's HTTP API")
        .env("QRWP_API_URL")
        .argParser(parseUrl)
        .default("http://127.0.0.1:7001"),
    )
    .addOption(
      new Option("--data-dir <dir>", "your node's data directory (for its api-token)").env("QRWP_DATA_DIR"),
    )
    .addOption(
      new Option("--api-token <token>", "API bearer token (instead of --data-dir)").env("QRWP_API_TOKEN"),
    )
    .action(
      async (
        url: string,
        o: {
          maxAmount: string;
          maxFee?: string;
          token?: string;
          timeout?: number;
          prefer: "direct" | "routed";
          method: string;
          apiUrl: string;
          dataDir?: string;
          apiToken?: string;
        },
      ) => {
        const token = o.apiToken ?? (o.dataDir ? readApiToken(resolve(o.dataDir)) : undefined);
        if (!token) {
          throw new QrwpError("INVALID_ARGUMENT", "give --data-dir or --api-token", { field: "data-dir" });
        }
        const res = await qrwpFetch(
          url,
          { method: o.method.toUpperCase() },
          {
            node: { apiUrl: o.apiUrl, token },
            maxAmount: BigInt(o.maxAmount),
            ...(o.maxFee !== undefined ? { maxFee: BigInt(o.maxFee) } : {}),
            ...(o.token !== undefined ? { asset: o.token } : {}),
            ...(o.timeout !== undefined ? { timeoutSeconds: o.timeout } : {}),
            prefer: o.prefer,
          },
        );
        const header = res.headers.get("payment-response");
        let payment: unknown = null;
        if (header) {
          try {
            payment = decodePaymentResponseHeader(header);
          } catch {
            payment = { undecodable: true };
          }
        }
        process.stdout.write(Buffer.from(await res.arrayBuffer()));
        console.error(JSON.stringify({ status: res.status, payment }));
        if (!res.ok) process.exitCode = 1;
      },
    );
  return program;
}
