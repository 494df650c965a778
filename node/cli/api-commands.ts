/**
 * The `qrwp` commands that read and drive channels and payments through a running node's HTTP API
 * (node/api/server.ts), as `lncli getinfo | openchannel | listchannels | closechannel | listpayments` users
 * expect:
 *   qrwp info                                        GET  /v1/info
 *   qrwp channel open --partner A --token T --deposit N [--partner-multiaddr M] [--settle-timeout S]
 *                                                    POST /v1/channels
 *   qrwp channel list | show <id>                    GET  /v1/channels[/:id]
 *   qrwp channel deposit <id> --total-deposit N      POST /v1/channels/:id/deposit
 *   qrwp channel withdraw <id> --amount N             POST /v1/channels/:id/withdraw
 *   qrwp channel close <id> [--unilateral]           POST /v1/channels/:id/close
 *   qrwp channel settle <id>                         POST /v1/channels/:id/settle
 *   qrwp payment list [--limit --status --direction --before] | show <paymentId>
 *                                                    GET  /v1/payments[/:id]
 * Human tables by default (node/cli-format.ts), the API's JSON with `--json`. Amounts are token base units.
 */
import { Option, type Command } from "commander";
import {
  parseAddress,
  parseAmount,
  parseChannelId,
  parseIntInRange,
  parseMultiaddr,
  parsePaymentCursor,
  parsePaymentId,
} from "../../host/cli-args.js";
import {
  formatChannel,
  formatChannelTable,
  formatInfo,
  formatPayment,
  formatPaymentTable,
  type ChannelJson,
  type InfoJson,
  type PaymentJson,
} from "../cli-format.js";
import { showApi, withApi, withOutput, type ApiOpts, type OutputOpts } from "./api-client.js";

type Opts = ApiOpts & OutputOpts;

/** The `qrwp payment list` flags of the page after this one: the same filters, `--before` its cursor. */
function nextPageArgs(o: { limit: number; status?: string; direction?: string }, cursor: string): string {
  return [
    ...(o.limit !== 100 ? [`--limit ${o.limit}`] : []),
    ...(o.status !== undefined ? [`--status ${o.status}`] : []),
    ...(o.direction !== undefined ? [`--direction ${o.direction}`] : []),
    `--before ${cursor}`,
  ].join(" ");
}

/** A client command: the API connection and output options added to `cmd`. */
const client = (cmd: Command): Command => withOutput(withApi(cmd));

/** Adds `info` and `channel open|list|show|deposit|close|settle` to the program. */
export function addChannelCommands(program: Command): Command {
  client(
    program.command("info").description("show the node's address, peer id, chain, hub and watchtowers"),
  ).action((o: Opts) => showApi<InfoJson>(o, { method: "GET", path: "/v1/info" }, formatInfo));

  const channel = program
    .command("channel")
    .description("open, list, show, deposit into, withdraw from, close and settle channels");
  client(
    channel
      .command("open")
      .description("open a channel on-chain with a partner and deposit into it (waits for the transactions)")
      .addOption(
        new Option("--partner <address>", "the partner's address")
          .argParser(parseAddress)
          .makeOptionMandatory(),
      )
      .addOption(
        new Option("--token <address>", "token of the channel").argParser(parseAddress).makeOptionMandatory(),
      )
      .addOption(
        new Option("--deposit <amount>", "our deposit (base units; 0 opens without one)")
          .argParser(parseAmount)
          .makeOptionMandatory(),
      )
      .addOption(
        new Option(
          "--partner-multiaddr <multiaddr>",
          "where to reach the partner, ending in /p2p/<peerId> (needed unless the node already knows it)",
        ).argParser(parseMultiaddr),
      )
      .addOption(
        new Option(
          "--settle-timeout <seconds>",
          "contest window after a unilateral close (node default)",
        ).argParser(parseIntInRange(10, 31_536_000)),
      ),
  ).action(
    (
      o: Opts & {
        partner: string;
        token: string;
        deposit: string;
        partnerMultiaddr?: string;
        settleTimeout?: number;
      },
    ) =>
      showApi<ChannelJson>(
        o,
        {
          method: "POST",
          path: "/v1/channels",
          body: {
            partner: o.partner,
            token: o.token,
            deposit: o.deposit,
            ...(o.partnerMultiaddr !== undefined ? { partnerMultiaddr: o.partnerMultiaddr } : {}),
            ...(o.settleTimeout !== undefined ? { settleTimeoutSeconds: o.settleTimeout } : {}),
          },
        },
        formatChannel,
      ),
  );
  client(channel.command("list").description("list every channel (any state) with its balances")).action(
    (o: Opts) =>
      showApi<{ channels: ChannelJson[] }>(o, { method: "GET", path: "/v1/channels" }, (a) =>
        formatChannelTable(a.channels),
      ),
  );
  client(
    channel
      .command("show")
      .description("show one channel: deposits, balances, locks, nonces, totals")
      .argument("<channelId>", "channel id (see `qrwp channel list`)", parseChannelId),
  ).action((id: string, o: Opts) =>
    showApi<ChannelJson>(o, { method: "GET", path: `/v1/channels/${id}` }, formatChannel),
  );
  client(
    channel
      .command("deposit")
      .description(
        "raise our total deposit in an open channel (monotonic: give the new total, not the increase)",
      )
      .argument("<channelId>", "channel id", parseChannelId)
      .addOption(
        new Option("--total-deposit <amount>", "our new total deposit (base units), above the current one")
          .argParser(parseAmount)
          .makeOptionMandatory(),
      ),
  ).action((id: string, o: Opts & { totalDeposit: string }) =>
    showApi<ChannelJson>(
      o,
      { method: "POST", path: `/v1/channels/${id}/deposit`, body: { totalDeposit: o.totalDeposit } },
      formatChannel,
    ),
  );
  client(
    channel
      .command("withdraw")
      .description(
        "take part of our balance out of an open channel to our wallet (the partner co-signs; " +
          "ChannelHub.setTotalWithdraw pays it through the Bridge; waits for the transaction)",
      )
      .argument("<channelId>", "channel id", parseChannelId)
      .addOption(
        new Option("--amount <amount>", "how much to withdraw (base units), at most our balance")
          .argParser(parseAmount)
          .makeOptionMandatory(),
      ),
  ).action((id: string, o: Opts & { amount: string }) =>
    showApi<ChannelJson>(
      o,
      { method: "POST", path: `/v1/channels/${id}/withdraw`, body: { amount: o.amount } },
      formatChannel,
    ),
  );
  client(
    channel
      .command("close")
      .description(
        "close a channel: cooperatively by default (both sign, paid out at once), or --unilateral " +
          "(on-chain with the partner's latest balance proof; `qrwp channel settle` after the settle timeout)",
      )
      .argument("<channelId>", "channel id", parseChannelId)
      .addOption(
        new Option("--cooperative", "settle with the partner's signature (the default)").conflicts(
          "unilateral",
        ),
      )
      .addOption(new Option("--unilateral", "close without the partner (it is offline or refuses)")),
  ).action((id: string, o: Opts & { unilateral?: boolean }) =>
    showApi<ChannelJson>(
      o,
      { method: "POST", path: `/v1/channels/${id}/close`, body: { cooperative: !o.unilateral } },
      formatChannel,
    ),
  );
  client(
    channel
      .command("settle")
      .description("settle a unilaterally closed channel once its settle timeout has passed")
      .argument("<channelId>", "channel id", parseChannelId),
  ).action((id: string, o: Opts) =>
    showApi<ChannelJson>(o, { method: "POST", path: `/v1/channels/${id}/settle`, body: {} }, formatChannel),
  );

  return program;
}

/** Adds `payment list|show` to the program. */
export function addPaymentCommands(program: Command): Command {
  const payment = program.command("payment").description("list and show payments sent and received");
  client(
    payment
      .command("list")
      .description("list payments, newest first: direct and routed, sent and received")
      .addOption(
        new Option("--limit <n>", "most payments to list, 1-1000")
          .argParser(parseIntInRange(1, 1000))
          .default(100),
      )
      .addOption(
        new Option("--status <status>", "only this status").choices(["pending", "completed", "failed"]),
      )
      .addOption(
        new Option("--direction <direction>", "only this direction").choices(["incoming", "outgoing"]),
      )
      .addOption(
        new Option("--before <cursor>", "the next page: the cursor the previous page printed").argParser(
          parsePaymentCursor,
        ),
      ),
  ).action((o: Opts & { limit: number; status?: string; direction?: string; before?: string }) => {
    const q = new URLSearchParams({ limit: String(o.limit) });
    if (o.status !== undefined) q.set("status", o.status);
    if (o.direction !== undefined) q.set("direction", o.direction);
    if (o.before !== undefined) q.set("before", o.before);
    return showApi<{ payments: PaymentJson[]; nextCursor: string | null }>(
      o,
      { method: "GET", path: `/v1/payments?${q.toString()}` },
      (a) =>
        formatPaymentTable(a.payments) +
        (a.nextCursor ? `\nmore: qrwp payment list ${nextPageArgs(o, a.nextCursor)}` : ""),
    );
  });
  client(
    payment
      .command("show")
      .description("show one payment: status, amount, fee, partner or route, error")
      .argument("<paymentId>", "payment id (see `qrwp payment list`)", parsePaymentId),
  ).action((id: string, o: Opts) =>
    showApi<PaymentJson>(o, { method: "GET", path: `/v1/payments/${encodeURIComponent(id)}` }, formatPayment),
  );
  return program;
}
