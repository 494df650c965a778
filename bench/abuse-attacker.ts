/**
 * The attacker process of `bench:abuse` (a child of bench/abuse.ts, so its CPU is measured apart from the
 * bench's). One mode per run, against one target multiaddr:
 *
 *   hello  forged hellos at a fixed rate over a few connections (each on a new stream: write the hello, read
 *          the answer, reset), as the attacker did; nothing signed, one X-Wing key reused
 *   solve  complete handshakes with fresh identities one after another, solving the puzzle honestly
 *   hold   dial new connections at a fixed rate and hold every one it gets, never opening a session
 *
 * Prints `{"event":"ready"}` once set up, runs for --seconds, prints `{"event":"done", ...counts}` and exits
 * when its stdin closes (so the parent can read its CPU first).
 */
import "core-js/actual/promise/with-resolvers.js";
import { Command, Option } from "commander";
import type { Connection } from "@libp2p/interface";
import { dialNew, openStrangerSession, sendForgedHello, startAttackerHost } from "../devnet/attacker.js";
import { positiveInt } from "./common.js";

interface Options {
  target: string;
  mode: "hello" | "solve" | "hold";
  rate: number;
  connections: number;
  seconds: number;
}

const print = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + "\n");

async function main(opts: Options): Promise<void> {
  const host = await startAttackerHost();
  const counts = { sent: 0, challenges: 0, refused: 0, handshakes: 0, failures: 0, held: 0, dialFailures: 0 };
  const deadline = () => Date.now() + opts.seconds * 1000;
  if (opts.mode === "hello") {
    const connections: Connection[] = [];
    // At most 4 new connections a second: libp2p refuses a 6th from one host within a second.
    while (connections.length < opts.connections) {
      await dialNew(host, opts.target).then(
        (c) => connections.push(c),
        () => counts.dialFailures++,
      );
      await new Promise((r) => setTimeout(r, 250));
    }
    print({ event: "ready" });
    const end = deadline();
    const start = Date.now();
    const inflight = new Set<Promise<void>>();
    // The victim closes connections that never open a session: replace one every 250 ms, as a real attacker would.
    let lastRedial = 0;
    while (Date.now() < end) {
      const closed = connections.findIndex((c) => c.status !== "open");
      if (closed >= 0 && Date.now() - lastRedial >= 250) {
        lastRedial = Date.now();
        void dialNew(host, opts.target).then(
          (c) => (connections[closed] = c),
          () => counts.dialFailures++,
        );
      }
      // Fixed rate: send what is due since the start, whatever the answers take.
      const due = Math.floor(((Date.now() - start) / 1000) * opts.rate) - counts.sent;
      for (let k = 0; k < due && inflight.size < 4 * opts.rate; k++) {
        const c = connections[counts.sent % connections.length]!;
        counts.sent++;
        const p = sendForgedHello(host, c, { timeoutMs: 5_000 }).then((answer) => {
          if (answer && answer.length < 100) counts.challenges++;
          else counts.refused++;
        });
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    await Promise.all(inflight);
  } else if (opts.mode === "solve") {
    print({ event: "ready" });
    const end = deadline();
    while (Date.now() < end) {
      try {
        const s = await openStrangerSession(host, opts.target);
        counts.handshakes++;
        s.stream.abort(new Error("done"));
        await s.connection.close().catch(() => undefined);
      } catch {
        counts.failures++;
      }
    }
  } else {
    print({ event: "ready" });
    const end = deadline();
    const held: Connection[] = [];
    while (Date.now() < end) {
      try {
        held.push(await dialNew(host, opts.target));
      } catch {
        counts.dialFailures++;
      }
      await new Promise((r) => setTimeout(r, 1000 / opts.rate));
    }
    counts.held = held.filter((c) => c.status === "open").length;
  }
  print({ event: "done", mode: opts.mode, ...counts });
  // Wait for the parent to read our CPU, then leave.
  process.stdin.resume();
  await new Promise((r) => process.stdin.once("end", r));
  await host.stop();
}

const program = new Command()
  .name("abuse-attacker")
  .requiredOption("--target <multiaddr>", "the victim's multiaddr ending in /p2p/<peerId>")
  .addOption(
    new Option("--mode <mode>", "what to do").choices(["hello", "solve", "hold"]).makeOptionMandatory(),
  )
  .addOption(
    new Option("--rate <n>", "hellos (hello) or dials (hold) per second").argParser(positiveInt).default(200),
  )
  .addOption(
    new Option("--connections <n>", "connections the hellos are spread over")
      .argParser(positiveInt)
      .default(10),
  )
  .addOption(new Option("--seconds <n>", "how long to attack").argParser(positiveInt).default(20))
  .action(async (opts: Options) => {
    await main(opts);
    process.exit(0);
  });
await program.parseAsync();
