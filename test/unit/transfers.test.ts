/**
 * The mediated-transfer state machines driven over a hand-built 3-hop route I -> M1 -> M2 -> T.
 * A tiny in-memory driver plays the node: it feeds each machine's actions to the next machine as events,
 * keeps the sender's channel end of every channel (so every LockedTransfer / Unlock / LockExpired must be
 * a valid channel transition), and checks that every event, applied twice, is a no-op the second time.
 */
import { expect } from "chai";
import { getAddress } from "ethers";
import type {
  ChannelEnd,
  ErrorCode,
  FeeSchedule,
  InitiatorEvent,
  InitiatorState,
  MediatorEvent,
  MediatorState,
  NextHopInfo,
  RouteHopInfo,
  TargetEvent,
  TargetState,
  TransferAction,
  TransferDescription,
} from "../../protocol/index.js";
import {
  DEFAULT_SAFETY_MARGINS,
  EMPTY_CHANNEL_END,
  forwardingFee,
  initiatorSecretFor,
  initiatorStart,
  initiatorStep,
  isTransferDone,
  lockTiming,
  mediatorStart,
  mediatorStep,
  randomSecret,
  secretHashOf,
  targetStart,
  targetStep,
  withLock,
  withUnlock,
  withoutLock,
} from "../../protocol/index.js";

type Name = "I" | "M1" | "M2" | "T";
type MediatorName = "M1" | "M2";

const ADDR: Record<Name, string> = {
  I: getAddress(`0x${"a1".repeat(20)}`),
  M1: getAddress(`0x${"b2".repeat(20)}`),
  M2: getAddress(`0x${"c3".repeat(20)}`),
  T: getAddress(`0x${"d4".repeat(20)}`),
};
const STRANGER = getAddress(`0x${"e5".repeat(20)}`);
/** The channel each node uses towards the next hop: I-M1 = 1, M1-M2 = 2, M2-T = 3. */
const CHANNEL: Record<Exclude<Name, "T">, bigint> = { I: 1n, M1: 2n, M2: 3n };
const NOW = 1_700_000_000n;
const TIMING = lockTiming(DEFAULT_SAFETY_MARGINS);
const DELTA = BigInt(TIMING.expiryDeltaSeconds);
const REVEAL = BigInt(TIMING.revealTimeoutSeconds);
const AMOUNT = 1_000_000n;
const FEES: Record<MediatorName, FeeSchedule> = {
  M1: { feeFlat: 10n, feePpm: 1_000 },
  M2: { feeFlat: 3n, feePpm: 2_500 },
};
const MULTIADDRS = ["/ip4/127.0.0.1/tcp/4001"];

function nameOf(address: string): Name {
  const found = (Object.keys(ADDR) as Name[]).find((n) => ADDR[n].toLowerCase() === address.toLowerCase());
  if (!found) throw new Error(`unknown address ${address}`);
  return found;
}

/** The route the initiator computes: amounts backwards with each mediator's fee, expirations with the delta. */
function buildRoute(amount = AMOUNT, now = NOW): RouteHopInfo[] {
  const expT = now + DELTA;
  const amountM2 = amount + forwardingFee(FEES.M2, amount);
  const amountM1 = amountM2 + forwardingFee(FEES.M1, amountM2);
  return [
    { address: ADDR.M1, amount: amountM1, expiration: expT + 2n * DELTA },
    { address: ADDR.M2, amount: amountM2, expiration: expT + DELTA },
    { address: ADDR.T, amount, expiration: expT },
  ];
}

function describeTransfer(secretHash: string, route = buildRoute()): TransferDescription {
  return {
    paymentId: "pay-1",
    initiator: ADDR.I,
    target: ADDR.T,
    secretHash,
    route,
    initiatorMultiaddrs: MULTIADDRS,
  };
}

interface NetOptions {
  /** Invoice payment: the target knows the secret and the initiator does not. */
  invoice?: boolean;
  invoiceAmount?: bigint;
  route?: RouteHopInfo[];
  next?: Partial<Record<MediatorName, Partial<NextHopInfo>>>;
  fees?: Partial<Record<MediatorName, FeeSchedule>>;
  /** Actions whose delivery is held back (still logged as issued); see {@link Net.release}. */
  drop?: (from: Name, action: TransferAction) => boolean;
  /** The initiator's answer to a SecretRequest it refuses. */
  secretRequestFailure?: ErrorCode;
}

interface Issued {
  from: Name;
  action: TransferAction;
}

/** The node's role in miniature: routes each action to the machine it is for. */
class Net {
  readonly secret = randomSecret();
  readonly secretHash = secretHashOf(this.secret);
  readonly transfer: TransferDescription;
  now = NOW;
  I!: InitiatorState;
  M1?: MediatorState;
  M2?: MediatorState;
  T?: TargetState;
  /** Every action issued, in order. */
  readonly log: Issued[] = [];
  /** Actions held back by `drop`. */
  held: Issued[] = [];
  /** The sender's end of each channel (payments flow I -> T only). */
  readonly ends = new Map<bigint, ChannelEnd>();
  private readonly queue: Issued[] = [];

  constructor(readonly opts: NetOptions = {}) {
    this.transfer = describeTransfer(this.secretHash, opts.route);
  }

  start(): this {
    const r = initiatorStart(this.transfer, this.opts.invoice ? null : this.secret, CHANNEL.I);
    this.I = r.state;
    this.emit("I", r.actions);
    this.run();
    return this;
  }

  issued(from?: Name, type?: TransferAction["type"]): TransferAction[] {
    return this.log
      .filter(
        (e) => (from === undefined || e.from === from) && (type === undefined || e.action.type === type),
      )
      .map((e) => e.action);
  }

  end(channelId: bigint): ChannelEnd {
    return this.ends.get(channelId) ?? EMPTY_CHANNEL_END;
  }

  mediator(name: MediatorName): MediatorState {
    const s = this[name];
    if (!s) throw new Error(`${name} has no state`);
    return s;
  }

  target(): TargetState {
    if (!this.T) throw new Error("T has no state");
    return this.T;
  }

  /** Delivers the held actions matching `pred` (a late message) and runs. */
  release(pred: (e: Issued) => boolean = () => true): void {
    const go = this.held.filter(pred);
    this.held = this.held.filter((e) => !pred(e));
    this.queue.push(...go);
    this.run();
  }

  /** A Tick at `now` to every machine that exists. */
  tickAll(now: bigint): void {
    this.now = now;
    this.stepI({ type: "Tick", nowSeconds: now });
    if (this.M1) this.stepM("M1", { type: "Tick", nowSeconds: now });
    if (this.M2) this.stepM("M2", { type: "Tick", nowSeconds: now });
    if (this.T) this.stepT({ type: "Tick", nowSeconds: now });
    this.run();
  }

  tick(name: Name, now: bigint): TransferAction[] {
    this.now = now;
    const before = this.log.length;
    const e = { type: "Tick" as const, nowSeconds: now };
    if (name === "I") this.stepI(e);
    else if (name === "T") this.stepT(e);
    else this.stepM(name, e);
    const produced = this.log.slice(before).map((x) => x.action);
    this.run();
    return produced;
  }

  stepI(e: InitiatorEvent): void {
    const r = initiatorStep(this.I, e);
    const again = initiatorStep(r.state, e);
    expect(again.actions, `duplicate ${e.type} to I`).to.deep.equal([]);
    expect(again.state, `duplicate ${e.type} to I`).to.deep.equal(r.state);
    this.I = r.state;
    this.emit("I", r.actions);
  }

  stepM(name: MediatorName, e: MediatorEvent): void {
    const r = mediatorStep(this.mediator(name), e, ADDR[name], TIMING);
    const again = mediatorStep(r.state, e, ADDR[name], TIMING);
    expect(again.actions, `duplicate ${e.type} to ${name}`).to.deep.equal([]);
    expect(again.state, `duplicate ${e.type} to ${name}`).to.deep.equal(r.state);
    this[name] = r.state;
    this.emit(name, r.actions);
  }

  stepT(e: TargetEvent): void {
    const r = targetStep(this.target(), e, ADDR.T, TIMING);
    const again = targetStep(r.state, e, ADDR.T, TIMING);
    expect(again.actions, `duplicate ${e.type} to T`).to.deep.equal([]);
    expect(again.state, `duplicate ${e.type} to T`).to.deep.equal(r.state);
    this.T = r.state;
    this.emit("T", r.actions);
  }

  private emit(from: Name, actions: TransferAction[]): void {
    for (const action of actions) {
      this.log.push({ from, action });
      if (this.opts.drop?.(from, action)) this.held.push({ from, action });
      else this.queue.push({ from, action });
    }
  }

  private run(): void {
    for (let e = this.queue.shift(); e; e = this.queue.shift()) this.deliver(e);
  }

  private deliver({ from, action: a }: Issued): void {
    switch (a.type) {
      case "SendLockedTransfer": {
        this.ends.set(a.channelId, withLock(this.end(a.channelId), a.lock));
        const to = nameOf(a.partner);
        const payer = { channelId: a.channelId, partner: ADDR[from], lock: a.lock };
        if (to === "T") {
          const invoice = this.opts.invoice
            ? { secret: this.secret, amount: this.opts.invoiceAmount ?? AMOUNT }
            : null;
          const r = targetStart({
            self: ADDR.T,
            transfer: a.transfer,
            payer,
            invoice,
            timing: TIMING,
            nowSeconds: this.now,
          });
          this.T = r.state;
          this.emit("T", r.actions);
        } else if (to === "M1" || to === "M2") {
          const next: NextHopInfo = {
            channelId: CHANNEL[to],
            distributable: 10n ** 30n,
            online: true,
            ...this.opts.next?.[to],
          };
          const r = mediatorStart({
            self: ADDR[to],
            transfer: a.transfer,
            payer,
            next,
            fees: this.opts.fees?.[to] ?? FEES[to],
            timing: TIMING,
            nowSeconds: this.now,
          });
          this[to] = r.state;
          this.emit(to, r.actions);
        } else {
          throw new Error("a LockedTransfer to the initiator");
        }
        return;
      }
      case "SendSecretRequest": {
        expect(nameOf(a.to)).to.equal("I");
        expect(a.secretHash).to.equal(this.transfer.secretHash);
        const e = {
          type: "SecretRequest" as const,
          from: ADDR[from],
          amount: a.amount,
          expiration: a.expiration,
        };
        const secret = initiatorSecretFor(this.I, e);
        this.stepI(e);
        if (secret !== null) this.stepT({ type: "SecretRevealed", secret, secretHash: secretHashOf(secret) });
        else
          this.stepT({
            type: "SecretRequestFailed",
            code: this.opts.secretRequestFailure ?? "PAYMENT_NOT_FOUND",
            message: "the initiator refused the secret request",
          });
        return;
      }
      case "SendRevealSecret": {
        const to = nameOf(a.to);
        const e = {
          type: "RevealSecret" as const,
          from: ADDR[from],
          secret: a.secret,
          secretHash: secretHashOf(a.secret),
        };
        if (to === "I") this.stepI(e);
        else if (to === "M1" || to === "M2") this.stepM(to, e);
        else throw new Error("RevealSecret to the target");
        return;
      }
      case "SendUnlock": {
        expect(secretHashOf(a.secret)).to.equal(a.secretHash);
        this.ends.set(a.channelId, withUnlock(this.end(a.channelId), a.secretHash));
        const to = nameOf(a.partner);
        if (to === "T") this.stepT({ type: "Unlocked" });
        else if (to === "M1" || to === "M2") this.stepM(to, { type: "Unlocked" });
        return;
      }
      case "SendLockExpired": {
        this.ends.set(a.channelId, withoutLock(this.end(a.channelId), a.secretHash));
        const to = nameOf(a.partner);
        if (to === "T") this.stepT({ type: "LockExpiredReceived" });
        else if (to === "M1" || to === "M2") this.stepM(to, { type: "LockExpiredReceived" });
        return;
      }
      case "SendTransferFailed": {
        const to = nameOf(a.to);
        const e = {
          type: "TransferFailed" as const,
          from: ADDR[from],
          reason: { code: a.code, message: a.message, failedAt: a.failedAt },
        };
        if (to === "I") this.stepI(e);
        else if (to === "M1" || to === "M2") this.stepM(to, e);
        else throw new Error("TransferFailed to the target");
        return;
      }
      default:
        // RegisterSecret, CloseChannel, PaymentSucceeded, AttemptFailed, PaymentReceived: node-local.
        return;
    }
  }
}

const route = buildRoute();
const [HOP_M1, HOP_M2, HOP_T] = route as [RouteHopInfo, RouteHopInfo, RouteHopInfo];

/** Expects exactly one issued action of `type` by `from` and returns it. */
function one<T extends TransferAction["type"]>(
  net: Net,
  from: Name,
  type: T,
): Extract<TransferAction, { type: T }> {
  const found = net.issued(from, type);
  expect(found, `${from} ${type}`).to.have.length(1);
  return found[0] as Extract<TransferAction, { type: T }>;
}

function expectNone(net: Net, ...types: TransferAction["type"][]): void {
  for (const t of types) expect(net.issued(undefined, t), t).to.deep.equal([]);
}

/** The route's lock for one hop. */
const lockOf = (hop: RouteHopInfo, secretHash: string) => ({
  amount: hop.amount,
  expiration: hop.expiration,
  secretHash,
});

describe("protocol/transfers", () => {
  describe("forwardingFee", () => {
    it("is feeFlat + floor(amount * feePpm / 1e6)", () => {
      expect(forwardingFee({ feeFlat: 0n, feePpm: 0 }, 123n)).to.equal(0n);
      expect(forwardingFee({ feeFlat: 7n, feePpm: 0 }, 123n)).to.equal(7n);
      expect(forwardingFee({ feeFlat: 0n, feePpm: 1_000_000 }, 123n)).to.equal(123n);
      expect(forwardingFee({ feeFlat: 0n, feePpm: 1 }, 999_999n)).to.equal(0n);
      expect(forwardingFee({ feeFlat: 0n, feePpm: 1 }, 1_000_000n)).to.equal(1n);
      expect(forwardingFee(FEES.M2, AMOUNT)).to.equal(3n + 2_500n);
      expect(forwardingFee(FEES.M1, 1_002_503n)).to.equal(10n + 1_002n);
    });

    it("the hand-built route: amounts grow by each fee, expirations by the expiry delta", () => {
      expect(DELTA).to.equal(468n);
      expect(REVEAL).to.equal(216n);
      expect(route.map((h) => h.amount)).to.deep.equal([1_003_515n, 1_002_503n, 1_000_000n]);
      expect(route.map((h) => h.expiration - NOW)).to.deep.equal([3n * DELTA, 2n * DELTA, DELTA]);
      expect(Number(HOP_T.expiration - NOW)).to.be.at.least(TIMING.minFinalExpirySeconds);
    });
  });

  describe("happy path, spontaneous payment (the initiator holds the secret)", () => {
    let net: Net;
    beforeEach(() => {
      net = new Net().start();
    });

    it("each hop forwards exactly the lock the route states", () => {
      const sh = net.secretHash;
      const fromI = one(net, "I", "SendLockedTransfer");
      expect(fromI).to.deep.equal({
        type: "SendLockedTransfer",
        channelId: CHANNEL.I,
        partner: ADDR.M1,
        lock: lockOf(HOP_M1, sh),
        transfer: net.transfer,
      });
      const fromM1 = one(net, "M1", "SendLockedTransfer");
      expect(fromM1).to.deep.include({ channelId: CHANNEL.M1, partner: ADDR.M2, lock: lockOf(HOP_M2, sh) });
      const fromM2 = one(net, "M2", "SendLockedTransfer");
      expect(fromM2).to.deep.include({ channelId: CHANNEL.M2, partner: ADDR.T, lock: lockOf(HOP_T, sh) });
      expect(fromM1.transfer).to.deep.equal(net.transfer);
      expect(fromM2.transfer).to.deep.equal(net.transfer);
    });

    it("the target asks the initiator for the secret, stating its lock", () => {
      expect(one(net, "T", "SendSecretRequest")).to.deep.equal({
        type: "SendSecretRequest",
        to: ADDR.I,
        multiaddrs: MULTIADDRS,
        paymentId: "pay-1",
        secretHash: net.secretHash,
        amount: AMOUNT,
        expiration: HOP_T.expiration,
      });
    });

    it("the secret goes upstream hop by hop and every hop issues exactly one Unlock", () => {
      const reveals = net.issued(undefined, "SendRevealSecret");
      expect(net.log.filter((e) => e.action.type === "SendRevealSecret").map((e) => e.from)).to.deep.equal([
        "T",
        "M2",
        "M1",
      ]);
      expect(reveals.map((a) => (a as { to: string }).to)).to.deep.equal([ADDR.M2, ADDR.M1, ADDR.I]);
      for (const r of reveals) expect(r).to.deep.include({ secret: net.secret });

      const expected: [Name, bigint, string][] = [
        ["I", CHANNEL.I, ADDR.M1],
        ["M1", CHANNEL.M1, ADDR.M2],
        ["M2", CHANNEL.M2, ADDR.T],
      ];
      for (const [from, channelId, partner] of expected) {
        expect(one(net, from, "SendUnlock")).to.deep.equal({
          type: "SendUnlock",
          channelId,
          partner,
          secretHash: net.secretHash,
          secret: net.secret,
        });
      }
      expect(net.issued(undefined, "SendUnlock")).to.have.length(3);
      // Unlocks go downstream-first: a mediator pays its payee as soon as it learns the secret.
      expect(net.log.filter((e) => e.action.type === "SendUnlock").map((e) => e.from)).to.deep.equal([
        "M2",
        "M1",
        "I",
      ]);
    });

    it("the initiator issues PaymentSucceeded, the target PaymentReceived with the route's amount", () => {
      expect(one(net, "I", "PaymentSucceeded")).to.deep.equal({
        type: "PaymentSucceeded",
        secret: net.secret,
      });
      expect(one(net, "T", "PaymentReceived")).to.deep.equal({ type: "PaymentReceived", amount: AMOUNT });
      expect(net.issued(undefined, "PaymentSucceeded")).to.have.length(1);
      expect(net.issued(undefined, "PaymentReceived")).to.have.length(1);
      expectNone(
        net,
        "SendTransferFailed",
        "SendLockExpired",
        "AttemptFailed",
        "RegisterSecret",
        "CloseChannel",
      );
    });

    it("ends in the final states, with every channel paid the route's amount and no lock left", () => {
      expect(net.I).to.deep.include({
        status: "succeeded",
        unlockSent: true,
        lockRemoved: false,
        failure: null,
      });
      for (const m of ["M1", "M2"] as const) {
        expect(net.mediator(m)).to.deep.include({
          secret: net.secret,
          payerStatus: "unlocked",
          payeeStatus: "unlocked",
          secretSentUpstream: true,
          failure: null,
        });
      }
      expect(net.target()).to.deep.include({ status: "unlocked", secret: net.secret, failure: null });
      for (const s of [net.I, net.mediator("M1"), net.mediator("M2"), net.target()])
        expect(isTransferDone(s), s.role).to.equal(true);
      expect(net.end(CHANNEL.I)).to.deep.equal({ nonce: 2n, transferredAmount: HOP_M1.amount, locks: [] });
      expect(net.end(CHANNEL.M1)).to.deep.equal({ nonce: 2n, transferredAmount: HOP_M2.amount, locks: [] });
      expect(net.end(CHANNEL.M2)).to.deep.equal({ nonce: 2n, transferredAmount: AMOUNT, locks: [] });
      // Each mediator keeps exactly its fee.
      expect(HOP_M1.amount - HOP_M2.amount).to.equal(forwardingFee(FEES.M1, HOP_M2.amount));
      expect(HOP_M2.amount - AMOUNT).to.equal(forwardingFee(FEES.M2, AMOUNT));
    });

    it("replaying every event after the end changes nothing (Ticks included)", () => {
      const snapshot = structuredClone({ I: net.I, M1: net.M1, M2: net.M2, T: net.T });
      const logLength = net.log.length;
      net.stepI({ type: "RevealSecret", from: ADDR.M1, secret: net.secret, secretHash: net.secretHash });
      net.stepI({
        type: "TransferFailed",
        from: ADDR.M1,
        reason: { code: "NO_ROUTE", message: "late", failedAt: ADDR.M2 },
      });
      for (const m of ["M1", "M2"] as const) {
        net.stepM(m, {
          type: "RevealSecret",
          from: STRANGER,
          secret: net.secret,
          secretHash: net.secretHash,
        });
        net.stepM(m, { type: "Unlocked" });
        net.stepM(m, { type: "LockExpiredReceived" });
        net.stepM(m, { type: "ForwardFailed", code: "PEER_OFFLINE", message: "late" });
      }
      net.stepM("M1", {
        type: "TransferFailed",
        from: ADDR.M2,
        reason: { code: "NO_ROUTE", message: "late", failedAt: ADDR.M2 },
      });
      net.stepT({ type: "SecretRevealed", secret: net.secret, secretHash: net.secretHash });
      net.stepT({ type: "SecretRequestFailed", code: "TIMEOUT", message: "late" });
      net.stepT({ type: "Unlocked" });
      net.stepT({ type: "LockExpiredReceived" });
      net.tickAll(HOP_M1.expiration + 1_000n);
      expect(net.log.length).to.equal(logLength);
      expect({ I: net.I, M1: net.M1, M2: net.M2, T: net.T }).to.deep.equal(snapshot);
    });
  });

  describe("initiatorSecretFor", () => {
    it("returns the secret only for the target stating the route's last amount and expiration", () => {
      const net = new Net({ drop: (_f, a) => a.type === "SendSecretRequest" }).start();
      const ok = {
        type: "SecretRequest" as const,
        from: ADDR.T,
        amount: AMOUNT,
        expiration: HOP_T.expiration,
      };
      expect(initiatorSecretFor(net.I, ok)).to.equal(net.secret);
      expect(initiatorSecretFor(net.I, { ...ok, from: ADDR.T.toLowerCase() })).to.equal(net.secret);
      expect(initiatorSecretFor(net.I, { ...ok, from: ADDR.M2 })).to.equal(null);
      expect(initiatorSecretFor(net.I, { ...ok, from: STRANGER })).to.equal(null);
      expect(initiatorSecretFor(net.I, { ...ok, amount: AMOUNT - 1n })).to.equal(null);
      expect(initiatorSecretFor(net.I, { ...ok, amount: AMOUNT + 1n })).to.equal(null);
      expect(initiatorSecretFor(net.I, { ...ok, expiration: HOP_T.expiration + 1n })).to.equal(null);
      expect(initiatorSecretFor(net.I, { ...ok, expiration: HOP_T.expiration - 1n })).to.equal(null);
      // A SecretRequest changes nothing by itself.
      expect(initiatorStep(net.I, ok)).to.deep.equal({ state: net.I, actions: [] });
      // Not once the attempt is over.
      const failed = initiatorStep(net.I, {
        type: "TransferFailed",
        from: ADDR.M1,
        reason: { code: "NO_ROUTE", message: "x", failedAt: ADDR.M1 },
      }).state;
      expect(initiatorSecretFor(failed, ok)).to.equal(null);
      const expired = initiatorStep(net.I, { type: "Tick", nowSeconds: HOP_M1.expiration }).state;
      expect(initiatorSecretFor(expired, ok)).to.equal(null);
    });

    it("returns null for an invoice payment (the initiator has no secret)", () => {
      const { state } = initiatorStart(describeTransfer(secretHashOf(randomSecret())), null, 1n);
      expect(
        initiatorSecretFor(state, {
          type: "SecretRequest",
          from: ADDR.T,
          amount: AMOUNT,
          expiration: HOP_T.expiration,
        }),
      ).to.equal(null);
    });

    it("a refused SecretRequest makes the target decline upstream, failing the payment back to the initiator", () => {
      // The initiator refuses because its attempt already failed on its side.
      const net = new Net({ drop: (_f, a) => a.type === "SendSecretRequest" }).start();
      net.I = { ...net.I, status: "failed" };
      net.release();
      const declined = one(net, "T", "SendTransferFailed");
      expect(declined).to.deep.include({ to: ADDR.M2, code: "PAYMENT_NOT_FOUND", failedAt: ADDR.T });
      expect(net.target().failure).to.deep.include({ code: "PAYMENT_NOT_FOUND", failedAt: ADDR.T });
      expect(one(net, "M2", "SendLockExpired")).to.deep.include({ channelId: CHANNEL.M2, partner: ADDR.T });
      expect(one(net, "M2", "SendTransferFailed")).to.deep.include({ to: ADDR.M1, failedAt: ADDR.T });
      expect(net.end(CHANNEL.M2).locks).to.deep.equal([]);
      expect(net.target().status).to.equal("expired");
      expect(isTransferDone(net.target())).to.equal(true);
    });
  });

  describe("happy path, invoice payment (the target holds the secret)", () => {
    let net: Net;
    beforeEach(() => {
      net = new Net({ invoice: true }).start();
    });

    it("the target reveals at once: no SecretRequest", () => {
      expectNone(net, "SendSecretRequest");
      expect(net.log.find((e) => e.from === "T")?.action).to.deep.equal({
        type: "SendRevealSecret",
        to: ADDR.M2,
        secret: net.secret,
      });
    });

    it("every hop issues exactly one Unlock; the initiator learns the secret and succeeds", () => {
      for (const n of ["I", "M1", "M2"] as const) one(net, n, "SendUnlock");
      expect(one(net, "I", "PaymentSucceeded")).to.deep.equal({
        type: "PaymentSucceeded",
        secret: net.secret,
      });
      expect(net.I.secret).to.equal(net.secret);
      expect(one(net, "T", "PaymentReceived")).to.deep.equal({ type: "PaymentReceived", amount: AMOUNT });
      expect(net.end(CHANNEL.M2)).to.deep.equal({ nonce: 2n, transferredAmount: AMOUNT, locks: [] });
      expectNone(
        net,
        "SendTransferFailed",
        "SendLockExpired",
        "AttemptFailed",
        "RegisterSecret",
        "CloseChannel",
      );
      for (const s of [net.I, net.mediator("M1"), net.mediator("M2"), net.target()])
        expect(isTransferDone(s), s.role).to.equal(true);
    });

    it("a lock paying less than the invoice is declined with INVALID_TRANSFER", () => {
      const short = new Net({ invoice: true, invoiceAmount: AMOUNT + 1n }).start();
      expect(one(short, "T", "SendTransferFailed")).to.deep.include({
        to: ADDR.M2,
        code: "INVALID_TRANSFER",
        failedAt: ADDR.T,
      });
      expectNone(short, "SendRevealSecret", "SendUnlock", "PaymentSucceeded");
      expect(one(short, "I", "AttemptFailed")).to.deep.include({
        code: "INVALID_TRANSFER",
        failedAt: ADDR.T,
      });
    });
  });

  describe("mediator declines", () => {
    const secretHash = secretHashOf(`0x${"42".repeat(32)}`);
    const transfer = describeTransfer(secretHash);

    function m2Params(
      over: Partial<Parameters<typeof mediatorStart>[0]> = {},
    ): Parameters<typeof mediatorStart>[0] {
      return {
        self: ADDR.M2,
        transfer,
        payer: { channelId: CHANNEL.M1, partner: ADDR.M1, lock: lockOf(HOP_M2, secretHash) },
        next: { channelId: CHANNEL.M2, distributable: HOP_T.amount, online: true },
        fees: FEES.M2,
        timing: TIMING,
        nowSeconds: NOW,
        ...over,
      };
    }

    function expectDecline(r: ReturnType<typeof mediatorStart>, code: ErrorCode, self = ADDR.M2): void {
      expect(r.actions).to.have.length(1);
      const a = r.actions[0] as Extract<TransferAction, { type: "SendTransferFailed" }>;
      expect(a).to.deep.include({
        type: "SendTransferFailed",
        to: ADDR.M1,
        paymentId: "pay-1",
        secretHash,
        code,
        failedAt: self,
      });
      expect(a.message).to.be.a("string").that.is.not.empty;
      expect(r.state).to.deep.include({
        payerStatus: "declined",
        payeeStatus: "none",
        payee: null,
        failure: { code, message: a.message, failedAt: self },
      });
      expect(isTransferDone(r.state)).to.equal(true);
    }

    it("forwards at the exact limits (fee, delta, outgoing expiry, capacity)", () => {
      const r = mediatorStart(m2Params({ nowSeconds: HOP_T.expiration - REVEAL }));
      expect(r.actions).to.deep.equal([
        {
          type: "SendLockedTransfer",
          channelId: CHANNEL.M2,
          partner: ADDR.T,
          lock: lockOf(HOP_T, secretHash),
          transfer,
        },
      ]);
      expect(r.state).to.deep.include({
        payerStatus: "pending",
        payeeStatus: "pending",
        payee: { channelId: CHANNEL.M2, partner: ADDR.T, lock: lockOf(HOP_T, secretHash) },
        failure: null,
      });
      expect(isTransferDone(r.state)).to.equal(false);
      // Our address in another case still finds us on the route.
      expect(mediatorStart(m2Params({ self: ADDR.M2.toLowerCase() })).actions[0]?.type).to.equal(
        "SendLockedTransfer",
      );
    });

    it("FEE_TOO_LOW when the incoming lock does not cover the forwarded amount plus our fee", () => {
      expectDecline(
        mediatorStart(m2Params({ fees: { ...FEES.M2, feeFlat: FEES.M2.feeFlat + 1n } })),
        "FEE_TOO_LOW",
      );
      expectDecline(
        mediatorStart(m2Params({ fees: { ...FEES.M2, feePpm: FEES.M2.feePpm + 1 } })),
        "FEE_TOO_LOW",
      );
    });

    it("EXPIRY_TOO_SOON when the incoming lock leaves less than the expiry delta", () => {
      const tight = describeTransfer(secretHash, [
        HOP_M1,
        { ...HOP_M2, expiration: HOP_T.expiration + DELTA - 1n },
        HOP_T,
      ]);
      const payer = {
        channelId: CHANNEL.M1,
        partner: ADDR.M1,
        lock: { ...lockOf(HOP_M2, secretHash), expiration: HOP_T.expiration + DELTA - 1n },
      };
      expectDecline(mediatorStart(m2Params({ transfer: tight, payer })), "EXPIRY_TOO_SOON");
      // Same route, a larger delta of our own.
      expectDecline(
        mediatorStart(m2Params({ timing: { ...TIMING, expiryDeltaSeconds: TIMING.expiryDeltaSeconds + 1 } })),
        "EXPIRY_TOO_SOON",
      );
    });

    it("EXPIRY_TOO_SOON when the outgoing lock would expire within the reveal timeout", () => {
      const r = mediatorStart(m2Params({ nowSeconds: HOP_T.expiration - REVEAL + 1n }));
      expectDecline(r, "EXPIRY_TOO_SOON");
      expect((r.actions[0] as { message: string }).message).to.match(/outgoing/);
    });

    it("INSUFFICIENT_CAPACITY when we cannot send the forwarded amount", () => {
      expectDecline(
        mediatorStart(
          m2Params({ next: { channelId: CHANNEL.M2, distributable: HOP_T.amount - 1n, online: true } }),
        ),
        "INSUFFICIENT_CAPACITY",
      );
      expectDecline(
        mediatorStart(m2Params({ next: { channelId: CHANNEL.M2, distributable: 0n, online: true } })),
        "INSUFFICIENT_CAPACITY",
      );
    });

    it("PEER_OFFLINE when the next hop is unreachable", () => {
      expectDecline(
        mediatorStart(
          m2Params({ next: { channelId: CHANNEL.M2, distributable: 10n ** 30n, online: false } }),
        ),
        "PEER_OFFLINE",
      );
    });

    it("UNKNOWN_TARGET with no channel to the next hop, or when we are not a mediator on the route", () => {
      expectDecline(
        mediatorStart(m2Params({ next: { channelId: null, distributable: 0n, online: true } })),
        "UNKNOWN_TARGET",
      );
      expectDecline(mediatorStart(m2Params({ self: STRANGER })), "UNKNOWN_TARGET", STRANGER);
      // The last hop is the target, not a mediator.
      expectDecline(mediatorStart(m2Params({ self: ADDR.T })), "UNKNOWN_TARGET", ADDR.T);
    });

    it("INVALID_TRANSFER when the incoming lock is below what the route states for us", () => {
      const payer = { channelId: CHANNEL.M1, partner: ADDR.M1, lock: lockOf(HOP_M2, secretHash) };
      expectDecline(
        mediatorStart(m2Params({ payer: { ...payer, lock: { ...payer.lock, amount: HOP_M2.amount - 1n } } })),
        "INVALID_TRANSFER",
      );
      expectDecline(
        mediatorStart(
          m2Params({ payer: { ...payer, lock: { ...payer.lock, expiration: HOP_M2.expiration - 1n } } }),
        ),
        "INVALID_TRANSFER",
      );
    });

    const networkDeclines: [string, ErrorCode, NetOptions][] = [
      ["FEE_TOO_LOW", "FEE_TOO_LOW", { fees: { M2: { feeFlat: 10_000n, feePpm: 0 } } }],
      [
        "EXPIRY_TOO_SOON (delta)",
        "EXPIRY_TOO_SOON",
        { route: [HOP_M1, { ...HOP_M2, expiration: HOP_T.expiration + DELTA - 1n }, HOP_T] },
      ],
      [
        "EXPIRY_TOO_SOON (outgoing too soon)",
        "EXPIRY_TOO_SOON",
        // A route whose final expiry is already within the reveal timeout, with correct deltas before it.
        {
          route: [
            { ...HOP_M1, expiration: NOW + REVEAL - 1n + 2n * DELTA },
            { ...HOP_M2, expiration: NOW + REVEAL - 1n + DELTA },
            { ...HOP_T, expiration: NOW + REVEAL - 1n },
          ],
        },
      ],
      ["INSUFFICIENT_CAPACITY", "INSUFFICIENT_CAPACITY", { next: { M2: { distributable: AMOUNT - 1n } } }],
      ["PEER_OFFLINE", "PEER_OFFLINE", { next: { M2: { online: false } } }],
      ["UNKNOWN_TARGET (no channel)", "UNKNOWN_TARGET", { next: { M2: { channelId: null } } }],
    ];
    for (const [label, code, opts] of networkDeclines) {
      it(`${label} at M2 fails back to the initiator: M1 removes its lock and fails upstream`, () => {
        const net = new Net(opts).start();
        const declined = one(net, "M2", "SendTransferFailed");
        expect(declined).to.deep.include({ to: ADDR.M1, code, failedAt: ADDR.M2 });
        expectNone(
          net,
          "SendSecretRequest",
          "SendRevealSecret",
          "SendUnlock",
          "PaymentSucceeded",
          "PaymentReceived",
        );
        expect(net.issued("M2", "SendLockedTransfer")).to.deep.equal([]);
        expect(net.T).to.equal(undefined);
        // M1: LockExpired downstream, TransferFailed upstream with M2's reason.
        expect(one(net, "M1", "SendLockExpired")).to.deep.equal({
          type: "SendLockExpired",
          channelId: CHANNEL.M1,
          partner: ADDR.M2,
          secretHash: net.secretHash,
        });
        expect(one(net, "M1", "SendTransferFailed")).to.deep.equal({ ...declined, to: ADDR.I });
        // I: LockExpired on the first hop and AttemptFailed with the original reason.
        expect(one(net, "I", "SendLockExpired")).to.deep.equal({
          type: "SendLockExpired",
          channelId: CHANNEL.I,
          partner: ADDR.M1,
          secretHash: net.secretHash,
        });
        expect(one(net, "I", "AttemptFailed")).to.deep.equal({
          type: "AttemptFailed",
          code,
          message: declined.message,
          failedAt: ADDR.M2,
        });
        expect(net.I).to.deep.include({ status: "failed", lockRemoved: true, unlockSent: false });
        expect(net.mediator("M1")).to.deep.include({ payerStatus: "declined", payeeStatus: "failed" });
        expect(net.mediator("M2").payerStatus).to.equal("declined");
        for (const ch of [CHANNEL.I, CHANNEL.M1])
          expect(net.end(ch)).to.deep.equal({ nonce: 2n, transferredAmount: 0n, locks: [] });
        for (const s of [net.I, net.mediator("M1"), net.mediator("M2")])
          expect(isTransferDone(s), s.role).to.equal(true);
      });
    }
  });

  describe("downstream failures", () => {
    it("the target declining (lock expires too soon) fails every hop back to the initiator", () => {
      // Deltas are fine for the mediators, but the final lock is inside the target's minimum final expiry.
      const expT = NOW + BigInt(TIMING.minFinalExpirySeconds) - 1n;
      const net = new Net({
        route: [
          { ...HOP_M1, expiration: expT + 2n * DELTA },
          { ...HOP_M2, expiration: expT + DELTA },
          { ...HOP_T, expiration: expT },
        ],
      }).start();
      expect(one(net, "T", "SendTransferFailed")).to.deep.include({
        to: ADDR.M2,
        code: "EXPIRY_TOO_SOON",
        failedAt: ADDR.T,
      });
      expect(net.target()).to.deep.include({ status: "expired" });
      for (const [m, ch, down] of [
        ["M2", CHANNEL.M2, ADDR.T],
        ["M1", CHANNEL.M1, ADDR.M2],
      ] as const) {
        expect(one(net, m, "SendLockExpired")).to.deep.include({ channelId: ch, partner: down });
        expect(one(net, m, "SendTransferFailed")).to.deep.include({
          code: "EXPIRY_TOO_SOON",
          failedAt: ADDR.T,
        });
      }
      expect(one(net, "I", "SendLockExpired")).to.deep.include({ channelId: CHANNEL.I, partner: ADDR.M1 });
      expect(one(net, "I", "AttemptFailed")).to.deep.include({ code: "EXPIRY_TOO_SOON", failedAt: ADDR.T });
      for (const ch of [CHANNEL.I, CHANNEL.M1, CHANNEL.M2]) expect(net.end(ch).locks).to.deep.equal([]);
      for (const s of [net.I, net.mediator("M1"), net.mediator("M2"), net.target()])
        expect(isTransferDone(s), s.role).to.equal(true);
    });

    it("a target that is not the payment's target declines with UNKNOWN_TARGET", () => {
      const secretHash = secretHashOf(randomSecret());
      const r = targetStart({
        self: ADDR.T,
        transfer: { ...describeTransfer(secretHash), target: STRANGER },
        payer: { channelId: CHANNEL.M2, partner: ADDR.M2, lock: lockOf(HOP_T, secretHash) },
        invoice: null,
        timing: TIMING,
        nowSeconds: NOW,
      });
      expect(r.actions).to.have.length(1);
      expect(r.actions[0]).to.deep.include({
        type: "SendTransferFailed",
        code: "UNKNOWN_TARGET",
        failedAt: ADDR.T,
      });
      expect(r.state.status).to.equal("declined");
      const short = targetStart({
        self: ADDR.T,
        transfer: describeTransfer(secretHash),
        payer: {
          channelId: CHANNEL.M2,
          partner: ADDR.M2,
          lock: { ...lockOf(HOP_T, secretHash), amount: AMOUNT - 1n },
        },
        invoice: null,
        timing: TIMING,
        nowSeconds: NOW,
      });
      expect(short.actions[0]).to.deep.include({ code: "INVALID_TRANSFER", to: ADDR.M2 });
    });

    it("a ForwardFailed (the LockedTransfer could not be delivered) fails upstream with us as failedAt", () => {
      const net = new Net({ drop: (f, a) => f === "M2" && a.type === "SendLockedTransfer" }).start();
      net.stepM("M2", { type: "ForwardFailed", code: "PEER_OFFLINE", message: "no session" });
      net.release((e) => e.action.type !== "SendLockedTransfer");
      expect(one(net, "M2", "SendTransferFailed")).to.deep.include({
        to: ADDR.M1,
        code: "PEER_OFFLINE",
        failedAt: ADDR.M2,
      });
      expect(net.mediator("M2")).to.deep.include({ payerStatus: "declined", payeeStatus: "failed" });
      expect(one(net, "I", "AttemptFailed")).to.deep.include({ code: "PEER_OFFLINE", failedAt: ADDR.M2 });
      expect(isTransferDone(net.mediator("M2"))).to.equal(true);
    });

    it("a TransferFailed from anyone but our payee is ignored, by the mediator and the initiator", () => {
      const net = new Net({ drop: (_f, a) => a.type === "SendSecretRequest" }).start();
      const reason = { code: "NO_ROUTE" as const, message: "forged", failedAt: STRANGER };
      const m1 = net.mediator("M1");
      expect(
        mediatorStep(m1, { type: "TransferFailed", from: STRANGER, reason }, ADDR.M1, TIMING),
      ).to.deep.equal({
        state: m1,
        actions: [],
      });
      expect(
        mediatorStep(m1, { type: "TransferFailed", from: ADDR.I, reason }, ADDR.M1, TIMING),
      ).to.deep.equal({
        state: m1,
        actions: [],
      });
      expect(initiatorStep(net.I, { type: "TransferFailed", from: ADDR.M2, reason })).to.deep.equal({
        state: net.I,
        actions: [],
      });
    });

    it("once it knows the secret, a mediator ignores TransferFailed and ForwardFailed (it can claim)", () => {
      const net = new Net({ drop: (f, a) => f === "M1" && a.type === "SendUnlock" }).start();
      const m2 = net.mediator("M2");
      expect(m2.secret).to.equal(net.secret);
      expect(
        mediatorStep(
          m2,
          {
            type: "TransferFailed",
            from: ADDR.T,
            reason: { code: "NO_ROUTE", message: "x", failedAt: ADDR.T },
          },
          ADDR.M2,
          TIMING,
        ),
      ).to.deep.equal({ state: m2, actions: [] });
      expect(
        mediatorStep(m2, { type: "ForwardFailed", code: "PEER_OFFLINE", message: "x" }, ADDR.M2, TIMING),
      ).to.deep.equal({ state: m2, actions: [] });
    });
  });

  describe("Ticks: expiry and going on-chain", () => {
    it("a lock expiring with no secret is removed and the failure goes upstream, hop by hop", () => {
      // The initiator never answers the SecretRequest.
      const net = new Net({ drop: (_f, a) => a.type === "SendSecretRequest" }).start();
      for (const s of [net.I, net.mediator("M1"), net.mediator("M2"), net.target()])
        expect(isTransferDone(s), s.role).to.equal(false);
      net.tickAll(HOP_T.expiration - 1n);
      expect(
        net.log.filter(
          (e) => e.action.type !== "SendLockedTransfer" && e.action.type !== "SendSecretRequest",
        ),
      ).to.deep.equal([]);

      net.tickAll(HOP_T.expiration);
      expect(one(net, "M2", "SendLockExpired")).to.deep.equal({
        type: "SendLockExpired",
        channelId: CHANNEL.M2,
        partner: ADDR.T,
        secretHash: net.secretHash,
      });
      expect(one(net, "M2", "SendTransferFailed")).to.deep.include({
        to: ADDR.M1,
        code: "LOCK_EXPIRED",
        failedAt: ADDR.M2,
      });
      expect(net.target()).to.deep.include({ status: "expired" });
      expect(net.mediator("M2")).to.deep.include({ payeeStatus: "expired", payerStatus: "declined" });
      // The failure runs upstream at once: M1 and I remove their locks early.
      expect(one(net, "M1", "SendLockExpired")).to.deep.include({ channelId: CHANNEL.M1, partner: ADDR.M2 });
      expect(one(net, "M1", "SendTransferFailed")).to.deep.include({
        to: ADDR.I,
        code: "LOCK_EXPIRED",
        failedAt: ADDR.M2,
      });
      expect(one(net, "I", "AttemptFailed")).to.deep.include({ code: "LOCK_EXPIRED", failedAt: ADDR.M2 });
      expect(one(net, "I", "SendLockExpired")).to.deep.include({ channelId: CHANNEL.I, partner: ADDR.M1 });
      for (const ch of [CHANNEL.I, CHANNEL.M1, CHANNEL.M2]) expect(net.end(ch).locks).to.deep.equal([]);
      for (const s of [net.I, net.mediator("M1"), net.mediator("M2"), net.target()])
        expect(isTransferDone(s), s.role).to.equal(true);

      // Later Ticks and the late SecretRequest change nothing: the initiator refuses it, the target ignores that.
      const n = net.log.length;
      net.tickAll(HOP_M1.expiration + 10n);
      net.release();
      expect(net.log.slice(n)).to.deep.equal([]);
      expect(net.target().status).to.equal("expired");
      expectNone(net, "SendUnlock", "SendRevealSecret", "PaymentSucceeded", "PaymentReceived");
    });

    it("each hop expires its own lock when nothing is relayed (Tick at each expiration)", () => {
      const net = new Net({
        drop: (_f, a) =>
          a.type === "SendSecretRequest" || a.type === "SendTransferFailed" || a.type === "SendLockExpired",
      }).start();
      expect(net.tick("M1", HOP_M2.expiration - 1n)).to.deep.equal([]);
      expect(net.tick("I", HOP_M1.expiration - 1n)).to.deep.equal([]);
      expect(net.tick("M2", HOP_T.expiration)).to.have.length(2);
      expect(net.tick("M1", HOP_M2.expiration)).to.deep.equal([
        { type: "SendLockExpired", channelId: CHANNEL.M1, partner: ADDR.M2, secretHash: net.secretHash },
        {
          type: "SendTransferFailed",
          to: ADDR.I,
          paymentId: "pay-1",
          secretHash: net.secretHash,
          code: "LOCK_EXPIRED",
          message: "the downstream lock expired unclaimed",
          failedAt: ADDR.M1,
        },
      ]);
      expect(net.tick("I", HOP_M1.expiration)).to.deep.equal([
        { type: "SendLockExpired", channelId: CHANNEL.I, partner: ADDR.M1, secretHash: net.secretHash },
        {
          type: "AttemptFailed",
          code: "LOCK_EXPIRED",
          message: "the lock expired before the secret was revealed",
          failedAt: ADDR.M1,
        },
      ]);
      expect(net.I).to.deep.include({ status: "expired", lockRemoved: true });
      expect(isTransferDone(net.I)).to.equal(true);
      // The held LockExpired messages are valid channel transitions when they finally arrive.
      net.release((e) => e.action.type === "SendLockExpired");
      for (const ch of [CHANNEL.I, CHANNEL.M1, CHANNEL.M2]) expect(net.end(ch).locks).to.deep.equal([]);
    });

    it("a mediator that knows the secret but is not unlocked by expiration - revealTimeout registers it and closes", () => {
      const net = new Net({ drop: (f, a) => f === "M1" && a.type === "SendUnlock" }).start();
      const m2 = net.mediator("M2");
      expect(m2).to.deep.include({ secret: net.secret, payerStatus: "pending", payeeStatus: "unlocked" });
      expect(isTransferDone(m2)).to.equal(false);
      // The target was paid off-chain by M2 all the same.
      expect(one(net, "T", "PaymentReceived")).to.deep.include({ amount: AMOUNT });
      expect(net.tick("M2", HOP_M2.expiration - REVEAL - 1n)).to.deep.equal([]);
      expect(net.tick("M2", HOP_M2.expiration - REVEAL)).to.deep.equal([
        { type: "RegisterSecret", secret: net.secret },
        { type: "CloseChannel", channelId: CHANNEL.M1 },
      ]);
      expect(net.mediator("M2").payerStatus).to.equal("onchain");
      expect(isTransferDone(net.mediator("M2"))).to.equal(true);
      expect(net.tick("M2", HOP_M2.expiration + 1n)).to.deep.equal([]);
      // M1 itself was unlocked by the initiator: nothing to do on-chain there.
      expect(net.tick("M1", HOP_M1.expiration)).to.deep.equal([]);
      expect(net.mediator("M1").payerStatus).to.equal("unlocked");
    });

    it("a target that revealed but is not unlocked by expiration - revealTimeout registers the secret and closes", () => {
      const net = new Net({ drop: (f, a) => f === "M2" && a.type === "SendUnlock" }).start();
      expect(net.target()).to.deep.include({ status: "revealed", secret: net.secret });
      expect(isTransferDone(net.target())).to.equal(false);
      expect(net.tick("T", HOP_T.expiration - REVEAL - 1n)).to.deep.equal([]);
      expect(net.tick("T", HOP_T.expiration - REVEAL)).to.deep.equal([
        { type: "RegisterSecret", secret: net.secret },
        { type: "CloseChannel", channelId: CHANNEL.M2 },
      ]);
      expect(net.target().status).to.equal("onchain");
      // The payment is still owed to the target: it completes when the lock is unlocked (on-chain here).
      expect(isTransferDone(net.target())).to.equal(false);
      expectNone(net, "PaymentReceived");
      net.release();
      expect(one(net, "T", "PaymentReceived")).to.deep.include({ amount: AMOUNT });
      expect(isTransferDone(net.target())).to.equal(true);
    });

    it("the invoice target also goes on-chain when not unlocked in time", () => {
      const net = new Net({ invoice: true, drop: (f, a) => f === "M2" && a.type === "SendUnlock" }).start();
      expect(net.tick("T", HOP_T.expiration - REVEAL)).to.deep.equal([
        { type: "RegisterSecret", secret: net.secret },
        { type: "CloseChannel", channelId: CHANNEL.M2 },
      ]);
    });

    it("a target still waiting for the secret does nothing on Tick; the payer's LockExpired ends it", () => {
      const net = new Net({ drop: (_f, a) => a.type === "SendSecretRequest" }).start();
      expect(net.tick("T", HOP_T.expiration + 100n)).to.deep.equal([]);
      expect(net.target().status).to.equal("requested");
      net.stepT({ type: "LockExpiredReceived" });
      expect(net.target().status).to.equal("expired");
      expect(isTransferDone(net.target())).to.equal(true);
    });
  });

  describe("idempotence and robustness", () => {
    it("a RevealSecret for another secret hash changes nothing", () => {
      const net = new Net({ drop: (_f, a) => a.type === "SendSecretRequest" }).start();
      const other = randomSecret();
      const e = {
        type: "RevealSecret" as const,
        from: ADDR.M1,
        secret: other,
        secretHash: secretHashOf(other),
      };
      expect(initiatorStep(net.I, e)).to.deep.equal({ state: net.I, actions: [] });
      const m1 = net.mediator("M1");
      expect(mediatorStep(m1, { ...e, from: ADDR.M2 }, ADDR.M1, TIMING)).to.deep.equal({
        state: m1,
        actions: [],
      });
      const t = net.target();
      expect(
        targetStep(
          t,
          { type: "SecretRevealed", secret: other, secretHash: secretHashOf(other) },
          ADDR.T,
          TIMING,
        ),
      ).to.deep.equal({
        state: t,
        actions: [],
      });
    });

    it("an upper-case secret hash in the transfer description still matches the revealed secret", () => {
      const secret = randomSecret();
      const upper = `0x${secretHashOf(secret).slice(2).toUpperCase()}`;
      const transfer = describeTransfer(upper);
      const { state } = initiatorStart(transfer, null, CHANNEL.I);
      const r = initiatorStep(state, {
        type: "RevealSecret",
        from: ADDR.M1,
        secret,
        secretHash: secretHashOf(secret),
      });
      // Succeeded first: the initiator does not wait for its Unlock's round trip.
      expect(r.actions.map((a) => a.type)).to.deep.equal(["PaymentSucceeded", "SendUnlock"]);
      const m = mediatorStart({
        self: ADDR.M2,
        transfer,
        payer: { channelId: CHANNEL.M1, partner: ADDR.M1, lock: lockOf(HOP_M2, upper) },
        next: { channelId: CHANNEL.M2, distributable: AMOUNT, online: true },
        fees: FEES.M2,
        timing: TIMING,
        nowSeconds: NOW,
      });
      const revealed = mediatorStep(
        m.state,
        { type: "RevealSecret", from: ADDR.T, secret, secretHash: secretHashOf(secret) },
        ADDR.M2,
        TIMING,
      );
      // Upstream first: the secret is on the payer's critical path, the payee's Unlock is not.
      expect(revealed.actions.map((a) => a.type)).to.deep.equal(["SendRevealSecret", "SendUnlock"]);
      const t = targetStart({
        self: ADDR.T,
        transfer,
        payer: { channelId: CHANNEL.M2, partner: ADDR.M2, lock: lockOf(HOP_T, upper) },
        invoice: null,
        timing: TIMING,
        nowSeconds: NOW,
      });
      const tr = targetStep(
        t.state,
        { type: "SecretRevealed", secret, secretHash: secretHashOf(secret) },
        ADDR.T,
        TIMING,
      );
      expect(tr.actions.map((a) => a.type)).to.deep.equal(["SendRevealSecret"]);
    });

    it("a secret learnt after the mediator failed is neither forwarded nor revealed upstream", () => {
      const net = new Net({ next: { M2: { online: false } } }).start();
      // M1 saw M2 decline; now a secret turns up anyway (e.g. registered on-chain by someone).
      const m1 = net.mediator("M1");
      expect(m1).to.deep.include({ payerStatus: "declined", payeeStatus: "failed" });
      const r = mediatorStep(
        m1,
        { type: "RevealSecret", from: ADDR.M2, secret: net.secret, secretHash: net.secretHash },
        ADDR.M1,
        TIMING,
      );
      expect(r.actions).to.deep.equal([]);
      expect(r.state.secret).to.equal(net.secret);
      expect(r.state.secretSentUpstream).to.equal(false);
    });

    it("a mediator takes the secret from any source: it unlocks its payee and reveals upstream", () => {
      const net = new Net({ drop: (f, a) => f === "M2" && a.type === "SendRevealSecret" }).start();
      const m1 = net.mediator("M1");
      expect(m1.secret).to.equal(null);
      // The secret reaches M1 from somewhere other than M2 (e.g. the chain); M1 still unlocks M2 and reveals to I.
      const r = mediatorStep(
        m1,
        { type: "RevealSecret", from: STRANGER, secret: net.secret, secretHash: net.secretHash },
        ADDR.M1,
        TIMING,
      );
      expect(r.actions).to.deep.equal([
        { type: "SendRevealSecret", to: ADDR.I, secret: net.secret },
        {
          type: "SendUnlock",
          channelId: CHANNEL.M1,
          partner: ADDR.M2,
          secretHash: net.secretHash,
          secret: net.secret,
        },
      ]);
      expect(r.state.secretSentUpstream).to.equal(true);
    });
  });
});
