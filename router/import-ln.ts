/**
 * Importers for real Lightning Network graphs into a {@link ChannelGraph}.
 *
 * - Core Lightning `lightning-cli listchannels` JSON: `{ channels: [...] }`, one record per direction.
 * - LND `lncli describegraph` JSON: `{ nodes: [...], edges: [...] }`, one record per channel with a
 *   policy per direction (`node1_policy` is node1's policy for forwarding node1 -> node2).
 *
 * Units: imported graphs keep **millisatoshi (msat)** as their base unit (capacity, fees, htlc bounds).
 * Lock time: LN expresses the per-hop delta in blocks (`delay` / `time_lock_delta`); QRWP uses seconds, so
 * deltas are converted at {@link SECONDS_PER_BLOCK} = 600 s per block (Bitcoin's target block interval).
 *
 * Every record is validated with zod; a malformed record is skipped and counted, never thrown.
 */
import * as z from "zod";
import { QrwpError } from "../protocol/index.js";
import { ChannelGraph } from "./graph.js";

/** Bitcoin target block interval, used to turn LN cltv deltas (blocks) into seconds. */
export const SECONDS_PER_BLOCK = 600;

/** Outcome of an import. */
export interface ImportResult {
  graph: ChannelGraph;
  /** Directed edges added (or updated). */
  imported: number;
  /** Malformed records skipped. */
  skipped: number;
  /** LND directions without a policy (not an error: the channel is known, that direction is not usable). */
  missingPolicies: number;
  /** Up to 10 short descriptions of skipped records. */
  issues: string[];
}

const MAX_ISSUES = 10;

/** Amount in msat: integer number, decimal string, or CLN's legacy "123msat" string. */
const msat = z
  .union([z.number().int().nonnegative(), z.string().regex(/^\d+(msat)?$/)])
  .transform((v) => (typeof v === "number" ? BigInt(v) : BigInt(v.replace(/msat$/, ""))));

/** Non-negative integer given as a number or decimal string (LND encodes uint64 as strings). */
const uintString = z
  .union([z.number().int().nonnegative(), z.string().regex(/^\d+$/)])
  .transform((v) => BigInt(v));

const clnChannel = z.object({
  source: z.string().min(1),
  destination: z.string().min(1),
  short_channel_id: z.string().min(1),
  satoshis: z.number().int().nonnegative().optional(),
  amount_msat: msat.optional(),
  active: z.boolean(),
  base_fee_millisatoshi: z.number().int().nonnegative(),
  fee_per_millionth: z.number().int().nonnegative(),
  delay: z.number().int().nonnegative(),
  htlc_minimum_msat: msat,
  htlc_maximum_msat: msat.optional(),
});

const lndPolicy = z.object({
  time_lock_delta: z.number().int().nonnegative(),
  min_htlc: uintString,
  fee_base_msat: uintString,
  fee_rate_milli_msat: uintString,
  disabled: z.boolean(),
  max_htlc_msat: uintString.optional(),
});

const lndEdge = z.object({
  channel_id: z.string().min(1),
  node1_pub: z.string().min(1),
  node2_pub: z.string().min(1),
  capacity: uintString,
  node1_policy: lndPolicy.nullable().optional(),
  node2_policy: lndPolicy.nullable().optional(),
});

function newResult(graph: ChannelGraph): ImportResult {
  return { graph, imported: 0, skipped: 0, missingPolicies: 0, issues: [] };
}

function skip(r: ImportResult, where: string, why: string): void {
  r.skipped++;
  if (r.issues.length < MAX_ISSUES) r.issues.push(`${where}: ${why}`);
}

function tryAdd(r: ImportResult, where: string, add: () => void): void {
  try {
    add();
    r.imported++;
  } catch (err) {
    skip(r, where, err instanceof Error ? err.message : String(err));
  }
}

/**
 * Imports CLN `listchannels` JSON (already parsed). Capacity comes from `amount_msat`, else `satoshis`*1000.
 * @throws QrwpError INVALID_ARGUMENT when the top level is not `{ channels: [] }`.
 */
export function importClnListChannels(json: unknown, graph: ChannelGraph = new ChannelGraph()): ImportResult {
  const top = z.object({ channels: z.array(z.unknown()) }).safeParse(json);
  if (!top.success) {
    throw new QrwpError("INVALID_ARGUMENT", "not a CLN listchannels document", { field: "channels" });
  }
  const r = newResult(graph);
  top.data.channels.forEach((raw, i) => {
    const p = clnChannel.safeParse(raw);
    if (!p.success) return skip(r, `channels[${i}]`, p.error.issues[0]?.message ?? "invalid");
    const c = p.data;
    const capacity = c.amount_msat ?? (c.satoshis !== undefined ? BigInt(c.satoshis) * 1000n : undefined);
    if (capacity === undefined) return skip(r, `channels[${i}]`, "no capacity");
    tryAdd(r, `channels[${i}]`, () =>
      graph.addEdge({
        channelId: c.short_channel_id,
        source: c.source,
        target: c.destination,
        capacity,
        feeBaseAmount: BigInt(c.base_fee_millisatoshi),
        feePpm: c.fee_per_millionth,
        lockTimeoutSeconds: c.delay * SECONDS_PER_BLOCK,
        disabled: !c.active,
        htlcMinimum: c.htlc_minimum_msat,
        htlcMaximum: c.htlc_maximum_msat ?? null,
      }),
    );
  });
  return r;
}

/**
 * Imports LND `describegraph` JSON (already parsed). LND capacity is in satoshis and is converted to msat.
 * A null policy leaves that direction out (counted in `missingPolicies`).
 * @throws QrwpError INVALID_ARGUMENT when the top level is not `{ edges: [] }`.
 */
export function importLndDescribeGraph(
  json: unknown,
  graph: ChannelGraph = new ChannelGraph(),
): ImportResult {
  const top = z.object({ edges: z.array(z.unknown()) }).safeParse(json);
  if (!top.success) {
    throw new QrwpError("INVALID_ARGUMENT", "not an LND describegraph document", { field: "edges" });
  }
  const r = newResult(graph);
  top.data.edges.forEach((raw, i) => {
    const p = lndEdge.safeParse(raw);
    if (!p.success) return skip(r, `edges[${i}]`, p.error.issues[0]?.message ?? "invalid");
    const e = p.data;
    const capacity = e.capacity * 1000n;
    const dirs = [
      [e.node1_pub, e.node2_pub, e.node1_policy],
      [e.node2_pub, e.node1_pub, e.node2_policy],
    ] as const;
    for (const [source, target, pol] of dirs) {
      if (!pol) {
        r.missingPolicies++;
        continue;
      }
      if (pol.fee_rate_milli_msat > BigInt(Number.MAX_SAFE_INTEGER)) {
        skip(r, `edges[${i}]`, "fee rate too large");
        continue;
      }
      tryAdd(r, `edges[${i}]`, () =>
        graph.addEdge({
          channelId: e.channel_id,
          source,
          target,
          capacity,
          feeBaseAmount: pol.fee_base_msat,
          feePpm: Number(pol.fee_rate_milli_msat),
          lockTimeoutSeconds: pol.time_lock_delta * SECONDS_PER_BLOCK,
          disabled: pol.disabled,
          htlcMinimum: pol.min_htlc,
          htlcMaximum: pol.max_htlc_msat === undefined || pol.max_htlc_msat === 0n ? null : pol.max_htlc_msat,
        }),
      );
    }
  });
  return r;
}
