/**
 * What every `qrwp` command that calls a running node's HTTP API shares: the connection options
 * (`--api-url`, `--data-dir` for its `api-token`, or `--api-token`, each with its `QRWP_*` env), the output
 * options (`--json`, `--output table|json`) and the call itself, whose coded API errors become `QrwpError`s
 * (cli/qrwp.ts prints `qrwp: CODE: message` and exits 2 for INVALID_ARGUMENT and CONFLICT, else 1).
 */
import { resolve } from "node:path";
import { Option, type Command } from "commander";
import { QrwpError, type ErrorCode } from "../../protocol/index.js";
import { parseUrl } from "../../host/cli-args.js";
import { readApiToken } from "../../host/keystore.js";

/** The values of {@link withApi}'s options. */
export interface ApiOpts {
  apiUrl: string;
  dataDir?: string;
  apiToken?: string;
}

/** The values of {@link withOutput}'s options. */
export interface OutputOpts {
  output: "table" | "json";
}

/** Options every API client command takes: where the node's API is and its token. */
export function withApi(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--api-url <url>", "the node's HTTP API")
        .env("QRWP_API_URL")
        .argParser(parseUrl)
        .default("http://127.0.0.1:7001"),
    )
    .addOption(
      new Option("--data-dir <dir>", "the node's data directory (for its api-token)").env("QRWP_DATA_DIR"),
    )
    .addOption(
      new Option("--api-token <token>", "API bearer token (instead of --data-dir)").env("QRWP_API_TOKEN"),
    );
}

/** `--output table|json` (env `QRWP_OUTPUT`, default table) and its shorthand `--json`. */
export function withOutput(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--output <format>", "table for people, json for the API's answer as it is")
        .env("QRWP_OUTPUT")
        .choices(["table", "json"])
        .default("table"),
    )
    .addOption(new Option("--json", "same as --output json").implies({ output: "json" }));
}

/**
 * Calls the node's API and returns its JSON answer.
 * @param path - the route with its querystring, e.g. `/v1/payments?limit=10`.
 * @throws QrwpError INVALID_ARGUMENT (field `data-dir`) without a token; PEER_OFFLINE (field `api-url`) when
 *   the API cannot be reached; the API's own code, message and details for an error answer (the field it
 *   names is added to the message when the message does not name it).
 */
export async function requestApi<T = unknown>(
  opts: ApiOpts,
  method: "GET" | "POST",
  path: string,
  body?: unknown,
): Promise<T> {
  const token = opts.apiToken ?? (opts.dataDir ? readApiToken(resolve(opts.dataDir)) : undefined);
  if (!token)
    throw new QrwpError("INVALID_ARGUMENT", "give --data-dir or --api-token", { field: "data-dir" });
  let res: Response;
  try {
    res = await fetch(new URL(path, opts.apiUrl), {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (cause) {
    throw new QrwpError(
      "PEER_OFFLINE",
      `cannot reach the node API at ${opts.apiUrl}`,
      { field: "api-url" },
      { cause },
    );
  }
  const json = (await res.json().catch(() => ({}))) as {
    error?: { code: ErrorCode; message: string; details?: Record<string, unknown> };
  };
  if (!res.ok) {
    const details = json.error?.details ?? {};
    const field = typeof details.field === "string" ? details.field : undefined;
    const message = json.error?.message ?? `HTTP ${res.status}`;
    throw new QrwpError(
      json.error?.code ?? "INTERNAL",
      field && !message.includes(field) ? `${message} (field ${field})` : message,
      details,
    );
  }
  return json as T;
}

/** Calls the node's API and prints its JSON answer (the output of `pay`, `route` and `invoice`). */
export async function callApi(
  opts: ApiOpts,
  method: "GET" | "POST",
  path: string,
  body?: unknown,
): Promise<void> {
  console.log(JSON.stringify(await requestApi(opts, method, path, body), null, 2));
}

/** Calls the node's API and prints the answer as `table` renders it, or its JSON with `--json`. */
export async function showApi<T>(
  opts: ApiOpts & OutputOpts,
  request: { method: "GET" | "POST"; path: string; body?: unknown },
  table: (answer: T) => string,
): Promise<void> {
  const answer = await requestApi<T>(opts, request.method, request.path, request.body);
  console.log(opts.output === "json" ? JSON.stringify(answer, null, 2) : table(answer));
}
