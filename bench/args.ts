/** Command-line argument parsers shared by the benchmarks (commander `argParser`s). */
import { InvalidArgumentError } from "commander";

/** An integer >= 1. */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n) || n < 1)
    throw new InvalidArgumentError("must be an integer >= 1");
  return n;
}

/** A comma-separated list of integers >= 1 (e.g. concurrency levels "1,4"). */
export function concurrencyList(value: string): number[] {
  return value.split(",").map((v) => positiveInt(v.trim()));
}
