/**
 * protocol/channel-lifecycle.ts: the one transition function of a channel's on-chain lifecycle, checked
 * case by case and, with fast-check, over random event sequences against what the ChannelHub allows.
 */
import { expect } from "chai";
import fc from "fast-check";
import {
  contestWindowOpen,
  isQrwpError,
  nextLifecycle,
  settleableAtSeconds,
  type ChannelLifecycle,
  type LifecycleEvent,
} from "../../protocol/index.js";

const alice = "0x1111111111111111111111111111111111111111";
const bob = "0x2222222222222222222222222222222222222222";
const opened: ChannelLifecycle = { state: "opened" };

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (isQrwpError(err)) return err.code;
    throw err;
  }
  return "none";
}

describe("protocol/channel-lifecycle", () => {
  it("opened -> closed carries the closer and the close time; settled keeps them", () => {
    const closed = nextLifecycle(opened, { type: "closed", closingParticipant: bob, closedAtSeconds: 1000 });
    expect(closed).to.deep.equal({ state: "closed", closingParticipant: bob, closedAtSeconds: 1000 });
    expect(nextLifecycle(closed, { type: "settled" })).to.deep.equal({
      state: "settled",
      closingParticipant: bob,
      closedAtSeconds: 1000,
    });
  });

  it("a cooperative settle goes from opened to settled with no close data", () => {
    expect(nextLifecycle(opened, { type: "settled" })).to.deep.equal({
      state: "settled",
      closingParticipant: null,
      closedAtSeconds: null,
    });
  });

  it("an event seen twice returns the same object; a late close after settlement changes nothing", () => {
    const closed = nextLifecycle(opened, { type: "closed", closingParticipant: bob, closedAtSeconds: 5 });
    expect(
      nextLifecycle(closed, {
        type: "closed",
        closingParticipant: bob.toUpperCase().replace("0X", "0x"),
        closedAtSeconds: 5,
      }),
    ).to.equal(closed);
    const settled = nextLifecycle(closed, { type: "settled" });
    expect(nextLifecycle(settled, { type: "settled" })).to.equal(settled);
    expect(
      nextLifecycle(settled, { type: "closed", closingParticipant: alice, closedAtSeconds: 9 }),
    ).to.equal(settled);
  });

  it("a close re-mined in another block moves the close time", () => {
    const closed = nextLifecycle(opened, { type: "closed", closingParticipant: bob, closedAtSeconds: 5 });
    expect(
      nextLifecycle(closed, { type: "closed", closingParticipant: bob, closedAtSeconds: 17 }),
    ).to.deep.equal({
      state: "closed",
      closingParticipant: bob,
      closedAtSeconds: 17,
    });
  });

  it("takes the chain's closer when a reorganisation replaced the close; refuses removing a close that was not there", () => {
    const closed = nextLifecycle(opened, { type: "closed", closingParticipant: bob, closedAtSeconds: 5 });
    expect(
      nextLifecycle(closed, { type: "closed", closingParticipant: alice, closedAtSeconds: 6 }),
    ).to.deep.equal({
      state: "closed",
      closingParticipant: alice,
      closedAtSeconds: 6,
    });
    expect(refusal(() => nextLifecycle(opened, { type: "closeRemoved" }))).to.equal("CHANNEL_STATE");
    const settled = nextLifecycle(closed, { type: "settled" });
    expect(refusal(() => nextLifecycle(settled, { type: "closeRemoved" }))).to.equal("CHANNEL_STATE");
    expect(nextLifecycle(closed, { type: "closeRemoved" })).to.deep.equal({ state: "opened" });
  });

  it("settleable strictly after closedAt + settleTimeout; contestable up to it", () => {
    const closed = nextLifecycle(opened, { type: "closed", closingParticipant: bob, closedAtSeconds: 100 });
    expect(settleableAtSeconds(closed, 50)).to.equal(151);
    expect(settleableAtSeconds(opened, 50)).to.equal(null);
    expect(contestWindowOpen(closed, 50, 150)).to.equal(true);
    expect(contestWindowOpen(closed, 50, 151)).to.equal(false);
    expect(contestWindowOpen(opened, 50, 0)).to.equal(false);
  });

  it("over any event sequence: the state never goes back from settled, a closed channel always has its close data", () => {
    const event: fc.Arbitrary<LifecycleEvent> = fc.oneof(
      fc.record({
        type: fc.constant("closed" as const),
        closingParticipant: fc.constantFrom(alice, bob),
        closedAtSeconds: fc.nat(1_000_000),
      }),
      fc.constant({ type: "settled" as const }),
      fc.constant({ type: "closeRemoved" as const }),
    );
    fc.assert(
      fc.property(fc.array(event, { maxLength: 30 }), (events) => {
        let lc: ChannelLifecycle = opened;
        let settledOnce = false;
        for (const e of events) {
          let next: ChannelLifecycle;
          try {
            next = nextLifecycle(lc, e);
          } catch (err) {
            // Refused transitions change nothing and are coded.
            expect(isQrwpError(err) && err.code === "CHANNEL_STATE").to.equal(true);
            continue;
          }
          if (settledOnce) expect(next.state).to.equal("settled");
          if (next.state === "settled") settledOnce = true;
          if (next.state === "closed") {
            expect(next.closingParticipant).to.be.a("string");
            expect(next.closedAtSeconds).to.be.a("number");
          }
          if (next.state === "opened") expect(Object.keys(next)).to.deep.equal(["state"]);
          lc = next;
        }
      }),
    );
  });
});
