/**
 * Where a process's time went, by category, from V8 CPU profiles (`node --cpu-prof`; the node processes of
 * a bench write them when `QRWP_CPU_PROF_DIR` is set, see devnet/harness.ts and `npm run bench:profile`).
 *
 *   npx tsx bench/profile-summary.ts <file.cpuprofile | dir>... [--per N] [--phases phases.json] [--top 15]
 *
 * Prints a markdown table (category, ms, % of busy time, ms per payment with `--per N`) and the top self-time
 * functions. Files given together are added up, so give one process at a time; a directory stands for its
 * main-thread profiles (`CPU.<date>.<time>.<pid>.0.<seq>.cpuprofile`; the tsx loader thread is left out).
 * `--phases` takes `{"phases":[{"name","payments","startUs","endUs"}]}` (microseconds of process.hrtime,
 * the monotonic clock V8 stamps its samples with on Linux, as bench/payments.ts writes it) and prints one
 * table per phase from the samples inside it, per payment by its `payments` unless `--per` is given.
 *
 * Attribution: a sample lasts until the next one (the last until the profile's end) and its time is the self
 * time of the frame on top of the stack, categorized as follows.
 * 1. V8 pseudo-frames: `(garbage collector)` -> gc, `(idle)` -> idle, `(program)` -> program (V8 and native
 *    work with no JavaScript on the stack).
 * 2. A frame with a script URL, by the URL: the package patterns of RULES (first match wins), then project
 *    files (a file URL outside node_modules) -> qrwp, except protocol/session.ts -> crypto-aead/session and
 *    the store layer (node/store/* but codecs, host/sqlite.ts, watchtower/store.ts, x402/receipts.ts) ->
 *    sqlite: better-sqlite3's native methods do not appear as frames of their own (V8 does not see them as
 *    callbacks), so a `stmt.get()` is self time of the JavaScript function that calls it, and the store
 *    functions are thin wrappers around such calls. A @noble/hashes or @noble/curves frame called by
 *    another @noble package takes the category of the outermost @noble frame on the stack (ML-DSA's SHAKE
 *    and NTT are crypto-pq, secp256k1's HMAC-DRBG is crypto-ecc).
 * 3. A native frame (no URL: a C++ callback such as Node's `writev`), a Node internal (`node:...`) and a
 *    file of no listed package take the category of the nearest ancestor that has one by rule 2 (the
 *    library or project code that asked for the work).
 * 4. Without such an ancestor (an event-loop entry: a socket read, a timer, the microtask queue):
 *    `node:_http*` and `node:internal/http` -> http, other Node internals and natives -> node-runtime,
 *    anything else -> other.
 * Busy time is everything except idle. The profiler samples the main thread whatever it does, so the
 * fsync of a commit (inside better-sqlite3's COMMIT) counts as busy `sqlite` time: thread time, not CPU.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
/** The JSON of a `.cpuprofile` (timestamps and deltas in microseconds). */
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}
export interface Phase {
  name: string;
  payments?: number;
  startUs: number;
  endUs: number;
}
export interface Summary {
  wallMs: number;
  busyMs: number;
  byCategory: Map<string, number>;
  /** Self time (ms) per function key `name (where) [category]`. */
  byFunction: Map<string, number>;
}

/** URL substring -> category, first match wins (rule 2). */
const RULES: [string, string][] = [
  ["/@noble/post-quantum/", "crypto-pq"],
  ["/@noble/curves/", "crypto-ecc"],
  ["/secp256k1/", "crypto-ecc"],
  ["/elliptic/", "crypto-ecc"],
  ["/bn.js/", "crypto-ecc"],
  ["/@noble/hashes/", "hash"],
  ["/@noble/ciphers/", "crypto-aead/session"],
  ["/better-sqlite3/", "sqlite"],
  ["/@libp2p/", "libp2p"],
  ["/libp2p/", "libp2p"],
  ["/@chainsafe/", "libp2p"],
  ["/node_modules/it-", "libp2p"],
  ["/uint8arraylist/", "libp2p"],
  ["/uint8arrays/", "libp2p"],
  ["/multiformats/", "libp2p"],
  ["/@multiformats/", "libp2p"],
  ["/protons-runtime/", "libp2p"],
  ["yamux", "libp2p"],
  ["noise", "libp2p"],
  ["/fastify/", "http"],
  ["/@fastify/", "http"],
  ["/undici/", "http"],
  ["node:internal/deps/undici", "http"],
  ["/light-my-request/", "http"],
  ["/find-my-way/", "http"],
  ["/avvio/", "http"],
  ["/fast-json-stringify/", "http"],
  ["/cbor-x/", "cbor/zod"],
  ["/zod/", "cbor/zod"],
  ["/pino", "logging"],
  ["/sonic-boom/", "logging"],
  ["/thread-stream/", "logging"],
];

/** Project files whose self time is mostly better-sqlite3's (invisible) native calls. */
const STORE_FILES =
  /\/(node\/store\/(?!codecs\.ts|types\.ts)[^/]+|host\/sqlite\.ts|watchtower\/store\.ts|x402\/receipts\.ts)$/;

const PSEUDO: Record<string, string> = {
  "(garbage collector)": "gc",
  "(idle)": "idle",
  "(program)": "program",
  "(root)": "program",
};

/** Rule 2: the category a URL decides on its own, or undefined (native, node:, unlisted package). */
function urlCategory(url: string): string | undefined {
  if (url === "") return undefined;
  for (const [needle, category] of RULES) if (url.includes(needle)) return category;
  if (url.startsWith("node:")) return undefined;
  if (url.startsWith("file://") && !url.includes("/node_modules/")) {
    if (url.endsWith("/protocol/session.ts")) return "crypto-aead/session";
    return STORE_FILES.test(url) ? "sqlite" : "qrwp";
  }
  return undefined;
}

const ROOT_URL = pathToFileURL(process.cwd()).href + "/";

/** A short place for a frame: `pkg/file.js:line`, a project-relative path, `node:...` or `native`. */
function where(frame: CallFrame): string {
  const { url, lineNumber } = frame;
  if (url === "") return "native";
  const nm = url.lastIndexOf("/node_modules/");
  const short = nm >= 0 ? url.slice(nm + 14) : url.startsWith(ROOT_URL) ? url.slice(ROOT_URL.length) : url;
  return `${short}:${lineNumber + 1}`;
}

/** The category of every node of `profile` (rules 1-4), by node id. */
function categorize(profile: CpuProfile): Map<number, string> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const out = new Map<number, string>();
  const decide = (node: ProfileNode): string => {
    const { functionName, url } = node.callFrame;
    const pseudo = PSEUDO[functionName];
    if (url === "" && pseudo) return pseudo;
    const own = urlCategory(url);
    if (own && url.includes("/@noble/")) {
      let outermost = own;
      for (let p = parent.get(node.id); p !== undefined; p = parent.get(p)) {
        const ancestorUrl = byId.get(p)!.callFrame.url;
        if (ancestorUrl.includes("/@noble/")) outermost = urlCategory(ancestorUrl)!;
      }
      return outermost;
    }
    if (own) return own;
    for (let p = parent.get(node.id); p !== undefined; p = parent.get(p)) {
      const ancestor = urlCategory(byId.get(p)!.callFrame.url);
      if (ancestor !== undefined) return ancestor;
    }
    if (/^node:(_http|internal\/http)/.test(url)) return "http";
    return url === "" || url.startsWith("node:") ? "node-runtime" : "other";
  };
  for (const n of profile.nodes) out.set(n.id, decide(n));
  return out;
}

/** Adds up the self time of `profiles` (inside `window`, if given) by category and by function. */
export function summarize(profiles: CpuProfile[], window?: Phase): Summary {
  const byCategory = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let wallUs = 0;
  for (const profile of profiles) {
    const categories = categorize(profile);
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const from = Math.max(profile.startTime, window?.startUs ?? -Infinity);
    const to = Math.min(profile.endTime, window?.endUs ?? Infinity);
    wallUs += Math.max(0, to - from);
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      t += profile.timeDeltas[i] ?? 0;
      const next = i + 1 < profile.samples.length ? t + (profile.timeDeltas[i + 1] ?? 0) : profile.endTime;
      const us = Math.min(next, to) - Math.max(t, from); // the part of this sample inside the window
      if (us <= 0) continue;
      const id = profile.samples[i]!;
      const category = categories.get(id)!;
      byCategory.set(category, (byCategory.get(category) ?? 0) + us / 1000);
      const frame = byId.get(id)!.callFrame;
      const key = `${frame.functionName || "(anonymous)"} (${where(frame)}) [${category}]`;
      byFunction.set(key, (byFunction.get(key) ?? 0) + us / 1000);
    }
  }
  const total = [...byCategory.values()].reduce((a, b) => a + b, 0);
  return { wallMs: wallUs / 1000, busyMs: total - (byCategory.get("idle") ?? 0), byCategory, byFunction };
}

const fixed = (v: number, digits: number) => v.toFixed(digits);

/** Markdown: the category table (busy categories by time, then idle) and the top `top` functions. */
export function formatSummary(s: Summary, options: { per?: number; top?: number } = {}): string {
  const { per, top = 15 } = options;
  const perHead = per ? ` ms/payment (${per}) |` : "";
  const lines = [
    `wall ${fixed(s.wallMs, 0)} ms, busy ${fixed(s.busyMs, 0)} ms (${fixed((100 * s.busyMs) / Math.max(s.wallMs, 1e-9), 1)}% of wall)`,
    "",
    `| category | ms | % busy |${perHead}`,
    `|---|---:|---:|${per ? "---:|" : ""}`,
  ];
  const rows = [...s.byCategory].filter(([c]) => c !== "idle").sort((a, b) => b[1] - a[1]);
  rows.push(["busy (total)", s.busyMs], ["idle", s.byCategory.get("idle") ?? 0]);
  for (const [category, ms] of rows) {
    const pct = category === "idle" ? "" : fixed((100 * ms) / Math.max(s.busyMs, 1e-9), 1);
    lines.push(`| ${category} | ${fixed(ms, 0)} | ${pct} |${per ? ` ${fixed(ms / per, 3)} |` : ""}`);
  }
  lines.push("", `top ${top} functions by self time:`, "", `| ms | % busy | function |`, `|---:|---:|---|`);
  const functions = [...s.byFunction].filter(([k]) => !k.startsWith("(idle)")).sort((a, b) => b[1] - a[1]);
  for (const [key, ms] of functions.slice(0, top))
    lines.push(`| ${fixed(ms, 0)} | ${fixed((100 * ms) / Math.max(s.busyMs, 1e-9), 1)} | ${key} |`);
  return lines.join("\n");
}

/** Reads the profiles named by `paths` (files, or directories of main-thread profiles). */
export function loadProfiles(paths: string[]): CpuProfile[] {
  const files = paths.flatMap((p) =>
    statSync(p).isDirectory()
      ? readdirSync(p)
          .filter((f) => /^CPU\.\d+\.\d+\.\d+\.0\.\d+\.cpuprofile$/.test(f))
          .sort()
          .map((f) => join(p, f))
      : [p],
  );
  if (files.length === 0) throw new Error(`no .cpuprofile files in ${paths.join(", ")}`);
  return files.map((f) => JSON.parse(readFileSync(f, "utf8")) as CpuProfile);
}

/** The phases of a `--phases` file. */
export function loadPhases(path: string): Phase[] {
  return (JSON.parse(readFileSync(path, "utf8")) as { phases: Phase[] }).phases;
}

function main(argv: string[]): void {
  const paths: string[] = [];
  let per: number | undefined;
  let top = 15;
  let phasesFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--per") per = Number(argv[++i]);
    else if (arg === "--top") top = Number(argv[++i]);
    else if (arg === "--phases") phasesFile = argv[++i];
    else paths.push(arg);
  }
  if (paths.length === 0 || (per !== undefined && !(per > 0)) || !(top >= 0)) {
    console.error(
      "usage: tsx bench/profile-summary.ts <file.cpuprofile | dir>... [--per N] [--phases f.json] [--top 15]",
    );
    process.exit(2);
  }
  const profiles = loadProfiles(paths);
  if (!phasesFile) {
    console.log(formatSummary(summarize(profiles), { per, top }));
    return;
  }
  for (const phase of loadPhases(phasesFile)) {
    console.log(`\n### ${phase.name}\n`);
    console.log(formatSummary(summarize(profiles, phase), { per: per ?? phase.payments, top }));
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url))
  main(process.argv.slice(2));
