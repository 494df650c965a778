/**
 * Human output of the `qrwp` API client commands (`node/cli/api-commands.ts`): aligned tables and
 * `label: value` blocks built from the node API's JSON answers (node/api/server.ts). Pure functions, no I/O.
 * Amounts stay in token base units as the API gives them (right-aligned); addresses are shortened in tables
 * (`0xabcdef…1234`) and shown in full in `show` blocks; times are UTC ISO-8601 to the second.
 */

/** A table column: its header and which side its cells line up on (amounts and counts: right). */
export interface Column {
  header: string;
  align?: "left" | "right";
}

/**
 * Lays out `rows` under `columns`: each column as wide as its widest cell, two spaces between columns, no
 * trailing spaces. Each row must have one cell per column.
 * @returns the header line and one line per row, joined by `\n` (no final newline).
 */
export function formatTable(columns: Column[], rows: string[][]): string {
  const widths = columns.map((c, i) => Math.max(c.header.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) =>
        columns[i]?.align === "right" ? cell.padStart(widths[i] ?? 0) : cell.padEnd(widths[i] ?? 0),
      )
      .join("  ")
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...rows.map(line)].join("\n");
}

/** `label: value` lines with the values lined up (labels padded to the longest). */
export function formatFields(fields: [string, string][]): string {
  const width = Math.max(0, ...fields.map(([label]) => label.length + 1));
  return fields.map(([label, value]) => `${(label + ":").padEnd(width)}  ${value}`.trimEnd()).join("\n");
}

/** `0xabcdef…1234` for a 0x-hex string longer than 14 characters (an address, a hash); others unchanged. */
export function shortHex(hex: string): string {
  return /^0x[0-9a-fA-F]{13,}$/.test(hex) ? `${hex.slice(0, 8)}…${hex.slice(-4)}` : hex;
}

/** A unix-ms time as `2025-01-31T12:00:00Z` (UTC); `-` for null. */
export function formatTimeMs(ms: number | null | undefined): string {
  return ms === null || ms === undefined ? "-" : new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** `GET /v1/info`'s answer (the fields shown). */
export interface InfoJson {
  address: string;
  peerId: string;
  multiaddrs: string[];
  chainId: string;
  hub: string;
  bridge: string;
  connectedPeers: string[];
  channels: number;
  watchtowers: {
    multiaddr: string;
    address: string | null;
    connected: boolean;
    lastAcceptedAtMs: number | null;
    lastError: { code: string; message: string } | null;
    pendingChannels: number;
    acceptedAppointments: number;
  }[];
}

/** A channel as `GET /v1/channels[/:id]` answer it (amounts: decimal base units). */
export interface ChannelJson {
  channelId: string;
  partner: string;
  token: string;
  state: string;
  settleTimeoutSeconds: number;
  ourDeposit: string;
  partnerDeposit: string;
  ourWithdraw: string;
  partnerWithdraw: string;
  pendingWithdraw: { ours: string | null; partner: string | null };
  ourBalance: string;
  partnerBalance: string;
  ourNonce: string;
  partnerNonce: string;
  ourLocked: string;
  partnerLocked: string;
  pendingLocks: { ours: number; partner: number };
  closedAtSeconds: number | null;
  closingParticipant: string | null;
  totals: { sent: string; received: string; sentCount: number; receivedCount: number };
}

/** A payment as `GET /v1/payments[/:id]` answer it: a direct one (`partner`) or a routed one sent (`target`). */
export interface PaymentJson {
  paymentId: string;
  kind: string;
  direction: string;
  status: string;
  token: string;
  amount: string;
  fee?: string;
  maxFee?: string | null;
  partner?: string;
  channelId?: string;
  nonce?: string;
  target?: string;
  paymentHash?: string;
  route?: { address: string; amount: string; fee: string }[];
  attempts?: unknown[];
  error: { code: string; message: string | null } | null;
  createdAtMs: number;
  completedAtMs: number | null;
}

/** `qrwp info`: identity, chain, peers and each watchtower's status. */
export function formatInfo(info: InfoJson): string {
  const towers = info.watchtowers.length
    ? "\n\n" +
      formatTable(
        [
          { header: "WATCHTOWER" },
          { header: "ADDRESS" },
          { header: "CONNECTED" },
          { header: "ACCEPTED", align: "right" },
          { header: "PENDING", align: "right" },
          { header: "LAST ERROR" },
        ],
        info.watchtowers.map((t) => [
          t.multiaddr,
          t.address ? shortHex(t.address) : "-",
          t.connected ? "yes" : "no",
          String(t.acceptedAppointments),
          String(t.pendingChannels),
          t.lastError ? t.lastError.code : "-",
        ]),
      )
    : "";
  return (
    formatFields([
      ["address", info.address],
      ["peer id", info.peerId],
      ["listening on", info.multiaddrs.join(", ") || "-"],
      ["chain id", info.chainId],
      ["hub", info.hub],
      ["bridge", info.bridge],
      ["channels", String(info.channels)],
      ["connected peers", String(info.connectedPeers.length)],
      ["watchtowers", info.watchtowers.length ? String(info.watchtowers.length) : "none"],
    ]) + towers
  );
}

/** `qrwp channel list`: one line per channel, or a line saying there is none. */
export function formatChannelTable(channels: ChannelJson[]): string {
  if (channels.length === 0) return "no channels (open one with `qrwp channel open`)";
  return formatTable(
    [
      { header: "CHANNEL ID", align: "right" },
      { header: "PARTNER" },
      { header: "TOKEN" },
      { header: "STATE" },
      { header: "OUR BALANCE", align: "right" },
      { header: "PARTNER BALANCE", align: "right" },
      { header: "LOCKS OURS/PARTNER", align: "right" },
      { header: "SENT", align: "right" },
      { header: "RECEIVED", align: "right" },
    ],
    channels.map((c) => [
      c.channelId,
      shortHex(c.partner),
      shortHex(c.token),
      c.state,
      c.ourBalance,
      c.partnerBalance,
      `${c.pendingLocks.ours}/${c.pendingLocks.partner}`,
      String(c.totals.sentCount),
      String(c.totals.receivedCount),
    ]),
  );
}

/** `qrwp channel show|open|deposit|close|settle`: every field of one channel, addresses in full. */
export function formatChannel(c: ChannelJson): string {
  return formatFields([
    ["channel id", c.channelId],
    ["state", c.state],
    ["partner", c.partner],
    ["token", c.token],
    ["settle timeout", `${c.settleTimeoutSeconds} s`],
    ["our deposit", c.ourDeposit],
    ["partner deposit", c.partnerDeposit],
    [
      "our withdrawn",
      c.ourWithdraw + (c.pendingWithdraw.ours ? ` (total ${c.pendingWithdraw.ours} in flight)` : ""),
    ],
    [
      "partner withdrawn",
      c.partnerWithdraw +
        (c.pendingWithdraw.partner ? ` (total ${c.pendingWithdraw.partner} in flight)` : ""),
    ],
    ["our balance", c.ourBalance],
    ["partner balance", c.partnerBalance],
    ["our locked", c.ourLocked],
    ["partner locked", c.partnerLocked],
    ["pending locks", `${c.pendingLocks.ours} ours, ${c.pendingLocks.partner} partner's`],
    ["our nonce", c.ourNonce],
    ["partner nonce", c.partnerNonce],
    ["sent", `${c.totals.sent} in ${c.totals.sentCount} payments`],
    ["received", `${c.totals.received} in ${c.totals.receivedCount} payments`],
    ["closed at", c.closedAtSeconds === null ? "-" : formatTimeMs(c.closedAtSeconds * 1000)],
    ["closed by", c.closingParticipant ?? "-"],
  ]);
}

/** The other side of a payment: the channel partner (direct, or the last hop of a routed one received) or the target. */
const peerOf = (p: PaymentJson) => p.target ?? p.partner ?? "-";

/** `qrwp payment list`: one line per payment, newest first, or a line saying there is none. */
export function formatPaymentTable(payments: PaymentJson[]): string {
  if (payments.length === 0) return "no payments";
  return formatTable(
    [
      { header: "CREATED" },
      { header: "PAYMENT ID" },
      { header: "KIND" },
      { header: "DIRECTION" },
      { header: "STATUS" },
      { header: "AMOUNT", align: "right" },
      { header: "FEE", align: "right" },
      { header: "PEER" },
    ],
    payments.map((p) => [
      formatTimeMs(p.createdAtMs),
      p.paymentId,
      p.kind,
      p.direction,
      p.status,
      p.amount,
      p.fee ?? "-",
      shortHex(peerOf(p)),
    ]),
  );
}

/** `qrwp payment show`: every field of one payment, its route when routed, addresses in full. */
export function formatPayment(p: PaymentJson): string {
  const fields: [string, string][] = [
    ["payment id", p.paymentId],
    ["kind", p.kind],
    ["direction", p.direction],
    ["status", p.status],
    ["amount", p.amount],
    ["token", p.token],
  ];
  if (p.fee !== undefined) fields.push(["fee", p.fee]);
  if (p.maxFee !== undefined) fields.push(["max fee", p.maxFee ?? "-"]);
  if (p.target !== undefined) fields.push(["target", p.target]);
  if (p.partner !== undefined) fields.push(["partner", p.partner]);
  if (p.channelId !== undefined) fields.push(["channel id", p.channelId]);
  if (p.nonce !== undefined) fields.push(["nonce", p.nonce]);
  if (p.paymentHash !== undefined) fields.push(["payment hash", p.paymentHash]);
  if (p.attempts !== undefined) fields.push(["attempts", String(p.attempts.length)]);
  fields.push(
    ["error", p.error ? [p.error.code, p.error.message].filter(Boolean).join(": ") : "-"],
    ["created", formatTimeMs(p.createdAtMs)],
    ["completed", formatTimeMs(p.completedAtMs)],
  );
  const route = p.route?.length
    ? "\n\n" +
      formatTable(
        [
          { header: "HOP", align: "right" },
          { header: "ADDRESS" },
          { header: "AMOUNT", align: "right" },
          {
            header: "FEE",
            align: "right",
          },
        ],
        p.route.map((h, i) => [String(i + 1), h.address, h.amount, h.fee]),
      )
    : "";
  return formatFields(fields) + route;
}
