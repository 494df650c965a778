/**
 * host/http.ts: the strict ajv options and the coded error handler of both APIs (in-process fastify with
 * `inject`, no network), and the uint256 amount parser.
 */
import { expect } from "chai";
import Fastify, { type FastifyInstance } from "fastify";
import { STRICT_AJV, installErrorHandler, parseAmount, parseIntegerParam } from "../../host/http.js";
import { isQrwpError } from "../../protocol/index.js";

describe("host/http: strict request validation", () => {
  let app: FastifyInstance;

  before(async () => {
    app = Fastify({ ajv: STRICT_AJV });
    installErrorHandler(app);
    app.post(
      "/x",
      {
        schema: {
          querystring: {
            type: "object",
            additionalProperties: false,
            properties: { k: { type: "string", pattern: "^[0-9]+$" } },
          },
          body: {
            type: "object",
            additionalProperties: false,
            properties: {
              amount: { type: "string" },
              count: { type: "integer" },
              inner: {
                type: "object",
                required: ["nonce"],
                additionalProperties: false,
                properties: { nonce: { type: "string" } },
              },
            },
          },
        },
      },
      async (req) => ({ body: req.body, query: req.query }),
    );
    await app.ready();
  });
  after(() => app.close());

  const post = async (payload: string, query = "") => {
    const res = await app.inject({
      method: "POST",
      url: `/x${query}`,
      payload,
      headers: { "content-type": "application/json" },
    });
    return {
      status: res.statusCode,
      body: res.json<Record<string, { code: string; details: { field: string } }>>(),
    };
  };
  const expectField = async (payload: string, field: string, query = "") => {
    const r = await post(payload, query);
    expect(r.status, JSON.stringify(r.body)).to.equal(400);
    expect(r.body.error?.code).to.equal("INVALID_ARGUMENT");
    expect(r.body.error?.details.field).to.equal(field);
  };

  it("coerces nothing: a number or an array for a string, a string for an integer are refused", async () => {
    await expectField('{"amount":12345678901234567890}', "amount");
    await expectField('{"amount":["5"]}', "amount");
    await expectField('{"count":"5"}', "count");
    await expectField('{"count":true}', "count");
  });

  it("refuses unknown fields instead of dropping them, naming nested ones by path", async () => {
    await expectField('{"amount":"1","extra":1}', "extra");
    await expectField('{"inner":{"nonce":"1","zzz":2}}', "inner.zzz");
    await expectField('{"inner":{}}', "inner.nonce");
    await expectField("{}", "other", "?other=1");
    await expectField("[]", "body");
  });

  it("passes valid input through unchanged (query values stay strings)", async () => {
    const r = await post('{"amount":"1","count":2,"inner":{"nonce":"3"}}', "?k=7");
    expect(r.status).to.equal(200);
    expect(r.body).to.deep.equal({
      body: { amount: "1", count: 2, inner: { nonce: "3" } },
      query: { k: "7" },
    });
  });
});

describe("host/http: parseAmount and parseIntegerParam", () => {
  const max = (1n << 256n) - 1n;
  const refusal = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      if (isQrwpError(err)) return err;
    }
    return expect.fail("expected a QrwpError");
  };

  it("accepts 0..2^256-1 (or min..), refuses 2^256, signs, leading zeros and exponents, naming the field", () => {
    expect(parseAmount("0", "amount")).to.equal(0n);
    expect(parseAmount(max.toString(), "amount")).to.equal(max);
    for (const bad of [(max + 1n).toString(), "1".repeat(79), "-1", "01", "1e3", "", " 1"]) {
      const e = refusal(() => parseAmount(bad, "maxFee"));
      expect(e.code).to.equal("INVALID_ARGUMENT");
      expect(e.details.field).to.equal("maxFee");
    }
    expect(refusal(() => parseAmount("0", "amount", 1n)).details.field).to.equal("amount");
  });

  it("parses query integers within bounds only", () => {
    expect(parseIntegerParam("10", "k", 1, 10)).to.equal(10);
    for (const bad of ["0", "11", "2.0", "abc", "", "99999999999999999"])
      expect(refusal(() => parseIntegerParam(bad, "k", 1, 10)).details.field).to.equal("k");
  });
});
