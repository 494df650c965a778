/**
 * `qrwp`: the command-line entry point (commander). Composes the channel node's commands (`node/cli.ts`),
 * the watchtower's (`watchtower/cli.ts`) and `qrwp fetch` (`x402/cli.ts`). Every flag also reads an
 * environment variable (shown in --help). Bad flags exit with code 2 and a one-line message; runtime
 * failures exit 1.
 */
import "core-js/actual/promise/with-resolvers.js";
import { Command } from "commander";
import { isQrwpError } from "../protocol/index.js";
import { addNodeCommands } from "../node/cli.js";
import { addWatchtowerCommands } from "../watchtower/cli.js";
import { addFetchCommand } from "../x402/cli.js";

export function buildCli(): Command {
  const program = new Command("qrwp")
    .description("QRWP: a post-quantum hardened payment channel network for EVM chains")
    .version("0.1.0")
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str.split("\n")[0] + "\n") });
  addNodeCommands(program);
  addWatchtowerCommands(program);
  addFetchCommand(program);
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
