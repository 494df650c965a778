/**
 * Argument parsers shared by the `qrwp` commands (commander `argParser`s): each returns the parsed value or
 * throws commander's `InvalidArgumentError` naming what was expected, so a bad flag exits with code 2 and a
 * one-line message before anything starts.
 */
import { InvalidArgumentError, Option, type Command } from "commander";
import type { PeerLimits } from "./peer-guard.js";

/** A TCP port 0-65535 (0: any free port). */
export function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError("must be a port number 0-65535");
  return n;
}

/** `HOST:PORT`, e.g. `127.0.0.1:7001` → `{host, port}`. */
export function parseHostPort(value: string): { host: string; port: number } {
  const m = /^([^:]+):(\d{1,5})$/.exec(value);
  if (!m) throw new InvalidArgumentError("must be HOST:PORT, e.g. 127.0.0.1:7001");
  return { host: m[1] as string, port: parsePort(m[2] as string) };
}

/** An http(s) or ws(s) URL (returned unchanged). */
export function parseUrl(value: string): string {
  try {
    const u = new URL(value);
    if (!["http:", "https:", "ws:", "wss:"].includes(u.protocol)) throw new Error();
    return value;
  } catch {
    throw new InvalidArgumentError("must be an http(s) or ws(s) URL");
  }
}

/**
 * Collects a repeatable URL flag such as `--rpc` (an environment variable may hold several, comma-separated):
 * each an http(s) or ws(s) URL, in the order given.
 */
export function collectUrls(value: string, previous: string[] | undefined): string[] {
  const urls = value.split(",").map((u) => parseUrl(u.trim()));
  return [...(previous ?? []), ...urls];
}

/** A TCP multiaddr, e.g. `/ip4/127.0.0.1/tcp/9000[/p2p/<peerId>]` (returned unchanged). */
export function parseMultiaddr(value: string): string {
  if (!/^\/(ip4|ip6|dns4|dns6|dns)\/[^/]+\/tcp\/\d{1,5}(\/.*)?$/.test(value)) {
    throw new InvalidArgumentError("must be a TCP multiaddr, e.g. /ip4/127.0.0.1/tcp/9000");
  }
  return value;
}

/** Any string with a non-blank character. */
export function parseNonEmpty(value: string): string {
  if (value.trim() === "") throw new InvalidArgumentError("must not be empty");
  return value;
}

/** An integer >= 1. */
export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

/** A decimal amount of token base units (uint256 range, no leading zeros), returned as a string. */
export function parseAmount(value: string): string {
  if (!/^(0|[1-9][0-9]{0,77})$/.test(value))
    throw new InvalidArgumentError("must be a decimal amount in token base units");
  return value;
}

/** An integer >= 0. */
export function parseNonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("must be a non-negative integer");
  return n;
}

/** A 0x-prefixed 20-byte address (any case; checksummed later where it matters). */
export function parseAddress(value: string): string {
  if (!/^0x[0-9a-fA-F]{40}$/.test(value))
    throw new InvalidArgumentError("must be a 0x-prefixed 20-byte address");
  return value;
}

/** A 0x-prefixed 32-byte hash (e.g. a payment hash). */
export function parseHash(value: string): string {
  if (!/^0x[0-9a-fA-F]{64}$/.test(value))
    throw new InvalidArgumentError("must be a 0x-prefixed 32-byte hash");
  return value;
}

/** A parser of integers in `[min, max]` (e.g. `--limit` 1..1000). */
export function parseIntInRange(min: number, max: number): (value: string) => number {
  return (value: string) => {
    const n = /^(0|[1-9][0-9]{0,15})$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`must be an integer ${min}-${max}`);
    return n;
  };
}

/** A channel id: the ChannelHub's counter, a positive decimal (uint256), returned as a string. */
export function parseChannelId(value: string): string {
  if (!/^[1-9][0-9]{0,77}$/.test(value))
    throw new InvalidArgumentError("must be a channel id (a positive decimal, see `qrwp channel list`)");
  return value;
}

/** A payment id as the node API takes it: 1-128 characters of `A-Z a-z 0-9 . _ : -`. */
export function parsePaymentId(value: string): string {
  if (!/^[A-Za-z0-9._:-]{1,128}$/.test(value))
    throw new InvalidArgumentError("must be 1-128 characters of A-Z a-z 0-9 . _ : -");
  return value;
}

/** A page cursor of the node's `GET /v1/payments` (its `nextCursor`: `<ms>-<0|1>-<seq>`). */
export function parsePaymentCursor(value: string): string {
  if (!/^(0|[1-9][0-9]{0,15})-[01]-[1-9][0-9]{0,15}$/.test(value))
    throw new InvalidArgumentError("must be a nextCursor printed by `qrwp payment list`");
  return value;
}

/** The `--puzzle-bits`, `--max-connections`, … options of every QRWP process with a libp2p host. */
export interface PeerLimitOptions {
  puzzleBits?: number;
  maxConnections?: number;
  maxConnectionsPerIp?: number;
  maxStrangerSessions?: number;
  strangerIdleMs?: number;
  frameTimeoutMs?: number;
  preSessionTimeoutMs?: number;
}

/**
 * Adds the peer-limit options (each with its `QRWP_*` env) to `cmd`; their defaults are `DEFAULT_PEER_LIMITS`
 * of `host/peer-guard.ts`, and PROTOCOL.md §3.1 and §5 explains each.
 */
export function addPeerLimitOptions(cmd: Command): Command {
  const int = (flag: string, env: string, help: string, parse: (v: string) => number) =>
    cmd.addOption(new Option(flag, help).env(env).argParser(parse));
  int(
    "--puzzle-bits <bits>",
    "QRWP_PUZZLE_BITS",
    "handshake puzzle for strangers, bits (default 15)",
    (v) => {
      // The difficulty climbs up to 5 bits under load, and an initiator solves at most 22.
      const n = parseNonNegativeInt(v);
      if (n > 17) throw new InvalidArgumentError("must be at most 17");
      return n;
    },
  );
  int(
    "--max-connections <n>",
    "QRWP_MAX_CONNECTIONS",
    "connections kept; strangers evicted beyond (default 256)",
    parsePositiveInt,
  );
  int(
    "--max-connections-per-ip <n>",
    "QRWP_MAX_CONNECTIONS_PER_IP",
    "connections kept per remote IP (default 64)",
    parsePositiveInt,
  );
  int(
    "--max-stranger-sessions <n>",
    "QRWP_MAX_STRANGER_SESSIONS",
    "sessions with peers we share nothing with (default 64)",
    parsePositiveInt,
  );
  int(
    "--stranger-idle-ms <ms>",
    "QRWP_STRANGER_IDLE_MS",
    "a stranger's silent session closes after this (default 60000)",
    parsePositiveInt,
  );
  int(
    "--frame-timeout-ms <ms>",
    "QRWP_FRAME_TIMEOUT_MS",
    "a started frame must arrive within this (default 10000)",
    parsePositiveInt,
  );
  int(
    "--pre-session-timeout-ms <ms>",
    "QRWP_PRE_SESSION_TIMEOUT_MS",
    "an inbound connection must open a session within this (default 10000)",
    parsePositiveInt,
  );
  return cmd;
}

/** The `PeerLimits` overrides given by {@link addPeerLimitOptions}' options (only those set). */
export function peerLimitsFromOptions(opts: PeerLimitOptions): Partial<PeerLimits> {
  const limits: Partial<PeerLimits> = {};
  if (opts.puzzleBits !== undefined) limits.puzzleDifficultyBits = opts.puzzleBits;
  if (opts.maxConnections !== undefined) limits.maxConnections = opts.maxConnections;
  if (opts.maxConnectionsPerIp !== undefined) limits.maxConnectionsPerIp = opts.maxConnectionsPerIp;
  if (opts.maxStrangerSessions !== undefined) limits.maxStrangerSessions = opts.maxStrangerSessions;
  if (opts.strangerIdleMs !== undefined) limits.strangerSessionIdleMs = opts.strangerIdleMs;
  if (opts.frameTimeoutMs !== undefined) limits.frameTimeoutMs = opts.frameTimeoutMs;
  if (opts.preSessionTimeoutMs !== undefined) limits.preSessionTimeoutMs = opts.preSessionTimeoutMs;
  return limits;
}
