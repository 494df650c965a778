/**
 * The unpaid-request cap of the x402 paywall (x402/rate-limit.ts) with explicit clocks: per-IP and global
 * token buckets, refill, `Retry-After`, refused requests take no token, paid requests give theirs back, the
 * bounded IP table, bad options.
 */
import { expect } from "chai";
import { UnpaidRateLimiter } from "../../x402/index.js";

describe("x402 unpaid rate limiter", () => {
  it("allows a burst of perIpPerSecond per IP, refills continuously and tells when to retry", () => {
    const l = new UnpaidRateLimiter({ perSecond: 100, perIpPerSecond: 3 }, 0);
    for (let i = 0; i < 3; i++) expect(l.take("1.1.1.1", 0)).to.deep.equal({ ok: true });
    expect(l.take("1.1.1.1", 0)).to.deep.equal({ ok: false, retryAfterSeconds: 1 });
    expect(l.take("2.2.2.2", 0).ok, "another IP has its own bucket").to.equal(true);
    expect(l.take("1.1.1.1", 300).ok).to.equal(false);
    expect(l.take("1.1.1.1", 340).ok, "one token after 1/3 s").to.equal(true);
    expect(l.take("1.1.1.1", 340).ok).to.equal(false);
    expect(l.take("1.1.1.1", 10_000).ok, "full again").to.equal(true);
  });

  it("caps all IPs together at perSecond; a refused request takes no token from either bucket", () => {
    const l = new UnpaidRateLimiter({ perSecond: 4, perIpPerSecond: 2 }, 0);
    const ok = ["a", "a", "b", "b", "c", "d"].map((ip) => l.take(ip, 0).ok);
    expect(ok).to.deep.equal([true, true, true, true, false, false]);
    // "c" was refused by the global bucket only: its own bucket is still full once the global one refills.
    expect(l.take("c", 500).ok).to.equal(true);
    expect(l.take("c", 500).ok).to.equal(true);
    expect(l.take("c", 500).ok).to.equal(false);
  });

  it("a paid request gives its 402's token back, never above the burst", () => {
    const l = new UnpaidRateLimiter({ perSecond: 100, perIpPerSecond: 2 }, 0);
    // A paying client: 402 (take) then paid retry (refund), ten times within one millisecond.
    for (let i = 0; i < 10; i++) {
      expect(l.take("1.1.1.1", 0).ok, `payment ${i}`).to.equal(true);
      l.refund("1.1.1.1", 0);
    }
    // Refunds do not raise the burst above perIpPerSecond.
    for (let i = 0; i < 5; i++) l.refund("1.1.1.1", 0);
    expect([0, 1, 2].map(() => l.take("1.1.1.1", 0).ok)).to.deep.equal([true, true, false]);
    // A refund for an IP never seen changes nothing for it (and does not throw).
    l.refund("9.9.9.9", 0);
    expect(l.trackedIps).to.equal(1);
  });

  it("allows() tells whether take() would pass, without taking", () => {
    const l = new UnpaidRateLimiter({ perSecond: 100, perIpPerSecond: 2 }, 0);
    expect(l.allows("1.1.1.1", 0)).to.equal(true);
    expect(l.trackedIps, "asking tracks nobody").to.equal(0);
    l.take("1.1.1.1", 0);
    expect(l.allows("1.1.1.1", 0)).to.equal(true);
    l.take("1.1.1.1", 0);
    expect(l.allows("1.1.1.1", 0)).to.equal(false);
    expect(l.allows("2.2.2.2", 0)).to.equal(true);
    expect(l.allows("1.1.1.1", 500), "one token back after 1/2 s").to.equal(true);
  });

  it("a slow rate gives a longer Retry-After; false disables a bucket", () => {
    const slow = new UnpaidRateLimiter({ perSecond: false, perIpPerSecond: 0.25 }, 0);
    expect(slow.take("x", 0).ok).to.equal(true); // a bucket holds at least one token
    expect(slow.take("x", 0)).to.deep.equal({ ok: false, retryAfterSeconds: 4 });
    expect(slow.take("x", 3000)).to.deep.equal({ ok: false, retryAfterSeconds: 1 });
    expect(slow.take("x", 4000).ok).to.equal(true);
    const off = new UnpaidRateLimiter({ perSecond: false, perIpPerSecond: false }, 0);
    for (let i = 0; i < 1000; i++) expect(off.take("x", 0).ok).to.equal(true);
    expect(off.trackedIps).to.equal(0);
  });

  it("remembers at most maxTrackedIps addresses (least recently seen forgotten)", () => {
    const l = new UnpaidRateLimiter({ perSecond: false, perIpPerSecond: 1, maxTrackedIps: 100 }, 0);
    for (let i = 0; i < 10_000; i++) l.take(`10.0.${i >> 8}.${i & 255}`, 0);
    expect(l.trackedIps).to.equal(100);
  });

  it("refuses bad options", () => {
    for (const o of [
      { perSecond: 0 },
      { perIpPerSecond: -1 },
      { perSecond: Number.NaN },
      { maxTrackedIps: 0 },
    ])
      expect(() => new UnpaidRateLimiter(o), JSON.stringify(o)).to.throw(/must be/);
  });
});
