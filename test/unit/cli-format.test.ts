/**
 * The `qrwp` client commands without a node: node/cli-format.ts renders the API's JSON as aligned tables and
 * field blocks, and the real `qrwp` command tree (node/cli.ts + node/cli/api-commands.ts, commander) refuses
 * every bad flag and argument of `info`, `channel …` and `payment …` naming it, before any request is made.
 */
import { expect } from "chai";
import { Command } from "commander";
import {
  formatChannel,
  formatChannelTable,
  formatFields,
  formatPayment,
  formatPaymentTable,
  formatTable,
  formatTimeMs,
  shortHex,
  type ChannelJson,
  type PaymentJson,
} from "../../node/cli-format.js";
import { addNodeCommands } from "../../node/cli.js";

const ADDR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

const channel: ChannelJson = {
  channelId: "12",
  partner: ADDR,
  token: TOKEN,
  state: "opened",
  settleTimeoutSeconds: 600,
  ourDeposit: "100",
  partnerDeposit: "5",
  ourWithdraw: "0",
  partnerWithdraw: "0",
  pendingWithdraw: { ours: "2", partner: null },
  ourBalance: "97",
  partnerBalance: "8",
  ourNonce: "3",
  partnerNonce: "0",
  ourLocked: "0",
  partnerLocked: "0",
  pendingLocks: { ours: 1, partner: 0 },
  closedAtSeconds: null,
  closingParticipant: null,
  totals: { sent: "3", received: "0", sentCount: 2, receivedCount: 0 },
};

describe("node/cli-format", () => {
  it("aligns columns (amounts right), pads labels, shortens hex, prints UTC seconds", () => {
    expect(
      formatTable(
        [{ header: "ID" }, { header: "AMOUNT", align: "right" }],
        [
          ["a", "5"],
          ["long-id", "123456789"],
        ],
      ),
    ).to.equal(["ID          AMOUNT", "a                5", "long-id  123456789"].join("\n"));
    expect(
      formatFields([
        ["a", "1"],
        ["longer", "2"],
        ["empty", ""],
      ]),
    ).to.equal(["a:       1", "longer:  2", "empty:"].join("\n"));
    expect(shortHex(ADDR)).to.equal("0x709979…79C8");
    expect(shortHex("0x1234")).to.equal("0x1234");
    expect(shortHex("not-hex-at-all-but-long")).to.equal("not-hex-at-all-but-long");
    expect(formatTimeMs(Date.UTC(2025, 0, 31, 12, 0, 5, 999))).to.equal("2025-01-31T12:00:05Z");
    expect(formatTimeMs(null)).to.equal("-");
  });

  it("renders channels and payments, with an empty-state line", () => {
    expect(formatChannelTable([])).to.equal("no channels (open one with `qrwp channel open`)");
    const table = formatChannelTable([channel]).split("\n");
    expect(table).to.have.length(2);
    expect(table[1]?.trim().split(/\s{2,}/)).to.deep.equal([
      "12",
      shortHex(ADDR),
      shortHex(TOKEN),
      "opened",
      "97",
      "8",
      "1/0",
      "2",
      "0",
    ]);
    expect(formatChannel(channel)).to.match(new RegExp(`^partner: +${ADDR}$`, "m"));
    expect(formatChannel(channel)).to.match(/^sent: +3 in 2 payments$/m);
    expect(formatChannel(channel)).to.match(/^our withdrawn: +0 \(total 2 in flight\)$/m);
    expect(formatChannel(channel)).to.match(/^partner withdrawn: +0$/m);

    expect(formatPaymentTable([])).to.equal("no payments");
    const routedOut: PaymentJson = {
      paymentId: "r-1",
      kind: "routed",
      direction: "outgoing",
      status: "failed",
      token: TOKEN,
      amount: "1000",
      fee: "12",
      maxFee: null,
      target: ADDR,
      paymentHash: `0x${"ab".repeat(32)}`,
      route: [
        { address: TOKEN, amount: "1012", fee: "12" },
        { address: ADDR, amount: "1000", fee: "0" },
      ],
      attempts: [{}, {}],
      error: { code: "NO_ROUTE", message: "no route with capacity" },
      createdAtMs: Date.UTC(2025, 0, 1),
      completedAtMs: null,
    };
    const row = formatPaymentTable([routedOut])
      .split("\n")[1]
      ?.split(/\s{2,}/);
    expect(row).to.deep.equal([
      "2025-01-01T00:00:00Z",
      "r-1",
      "routed",
      "outgoing",
      "failed",
      "1000",
      "12",
      shortHex(ADDR),
    ]);
    const shown = formatPayment(routedOut);
    expect(shown).to.match(/^error: +NO_ROUTE: no route with capacity$/m);
    expect(shown).to.match(/^attempts: +2$/m);
    expect(shown).to.match(new RegExp(`^ +2  ${ADDR} +1000 +0$`, "m"));
  });
});

describe("qrwp info | channel | payment: bad flags and arguments", () => {
  /** Parses `args` with the real command tree; resolves with commander's error (no action may run). */
  async function refusal(args: string[]): Promise<{ code: string; stderr: string }> {
    let stderr = "";
    const program = new Command("qrwp")
      .exitOverride()
      .configureOutput({ writeErr: (s) => (stderr += s), writeOut: () => undefined });
    addNodeCommands(program);
    try {
      await program.parseAsync([...args, "--api-url", "http://127.0.0.1:1", "--api-token", "t"], {
        from: "user",
      });
    } catch (err) {
      return { code: (err as { code: string }).code, stderr };
    }
    return expect.fail(`qrwp ${args.join(" ")} was accepted`);
  }

  it("names the flag or argument of each bad value", async () => {
    const cases: [string[], RegExp][] = [
      [["channel", "show", "0"], /channelId/],
      [["channel", "show", "12abc"], /channelId/],
      [["channel", "close", "-1"], /channelId|unknown option/],
      [["channel", "deposit", "3", "--total-deposit", "1e18"], /--total-deposit/],
      [["channel", "deposit", "3"], /--total-deposit/],
      [["channel", "open", "--partner", "0x12", "--token", TOKEN, "--deposit", "1"], /--partner/],
      [["channel", "open", "--partner", ADDR, "--token", "eth", "--deposit", "1"], /--token/],
      [["channel", "open", "--partner", ADDR, "--token", TOKEN], /--deposit/],
      [["channel", "open", "--partner", ADDR, "--token", TOKEN, "--deposit", "01"], /--deposit/],
      [
        [
          "channel",
          "open",
          "--partner",
          ADDR,
          "--token",
          TOKEN,
          "--deposit",
          "1",
          "--partner-multiaddr",
          "bob",
        ],
        /--partner-multiaddr/,
      ],
      [
        ["channel", "open", "--partner", ADDR, "--token", TOKEN, "--deposit", "1", "--settle-timeout", "5"],
        /--settle-timeout/,
      ],
      [["channel", "close", "3", "--cooperative", "--unilateral"], /--cooperative/],
      [["channel", "settle"], /channelId/],
      [["payment", "list", "--limit", "0"], /--limit/],
      [["payment", "list", "--limit", "1001"], /--limit/],
      [["payment", "list", "--status", "done"], /--status/],
      [["payment", "list", "--direction", "in"], /--direction/],
      [["payment", "list", "--before", "yesterday"], /--before/],
      [["payment", "show", "bad id!"], /paymentId/],
      [["payment", "show", "x".repeat(129)], /paymentId/],
      [["info", "--output", "yaml"], /--output/],
      [["pay", "--target", ADDR, "--token", TOKEN, "--amount", "1", "--payment-id", "a b"], /--payment-id/],
    ];
    for (const [args, pattern] of cases) {
      const { code, stderr } = await refusal(args);
      expect(code, args.join(" ")).to.match(/^commander\./);
      expect(stderr, args.join(" ")).to.match(pattern);
    }
  });
});
