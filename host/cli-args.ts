/**
 * Argument parsers shared by the `qrwp` commands (commander `argParser`s): each returns the parsed value or
 * throws commander's `InvalidArgumentError` naming what was expected, so a bad flag exits with code 2 and a
 * one-line message before anything starts.
 */
import { InvalidArgumentError } from "commander";

export function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError("must be a port number 0-65535");
  return n;
}

export function parseHostPort(value: string): { host: string; port: number } {
  const m = /^([^:]+):(\d{1,5})$/.exec(value);
  if (!m) throw new InvalidArgumentError("must be HOST:PORT, e.g. 127.0.0.1:7001");
  return { host: m[1] as string, port: parsePort(m[2] as string) };
}

export function parseUrl(value: string): string {
  try {
    const u = new URL(value);
    if (!["http:", "https:", "ws:", "wss:"].includes(u.protocol)) throw new Error();
    return value;
  } catch {
    throw new InvalidArgumentError("must be an http(s) or ws(s) URL");
  }
}

export function parseMultiaddr(value: string): string {
  if (!/^\/(ip4|ip6|dns4|dns6|dns)\/[^/]+\/tcp\/\d{1,5}(\/.*)?$/.test(value)) {
    throw new InvalidArgumentError("must be a TCP multiaddr, e.g. /ip4/127.0.0.1/tcp/9000");
  }
  return value;
}

export function parseNonEmpty(value: string): string {
  if (value.trim() === "") throw new InvalidArgumentError("must not be empty");
  return value;
}

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

export function parseAmount(value: string): string {
  if (!/^(0|[1-9][0-9]{0,77})$/.test(value))
    throw new InvalidArgumentError("must be a decimal amount in token base units");
  return value;
}

export function parseNonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("must be a non-negative integer");
  return n;
}

export function parseAddress(value: string): string {
  if (!/^0x[0-9a-fA-F]{40}$/.test(value))
    throw new InvalidArgumentError("must be a 0x-prefixed 20-byte address");
  return value;
}

export function parseHash(value: string): string {
  if (!/^0x[0-9a-fA-F]{64}$/.test(value))
    throw new InvalidArgumentError("must be a 0x-prefixed 32-byte hash");
  return value;
}
