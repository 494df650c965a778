/**
 * x402/sse.ts (eventsource-parser under it) against WHATWG HTML §9.2.6 "Interpreting an event stream": line
 * endings (CRLF split across chunks), comments, fields without a colon, multi-line data, each event's own id
 * (one with NUL ignored), events without data, and a stream cut in the middle of an event.
 */
import { expect } from "chai";
import fc from "fast-check";
import { SseParser, readEventStream, type SseEvent } from "../../x402/sse.js";

function parseAll(chunks: string[]): SseEvent[] {
  const out: SseEvent[] = [];
  const p = new SseParser((e) => out.push(e));
  for (const c of chunks) p.feed(c);
  return out;
}

const STREAM =
  ": keep-alive\r\n" +
  'event: payment\r\nid: 1\r\ndata: {"a":1}\r\n\r\n' +
  "data: line one\ndata:line two\n\n" +
  "event: close\rid: 7\rdata\r\r" +
  "event: nothing\nid: 8\n\n" +
  "id: bad\0id\ndata: x\n\n" +
  "event: cut\ndata: never dispatched\n";

const EXPECTED: SseEvent[] = [
  { type: "payment", data: '{"a":1}', id: "1" },
  { type: "message", data: "line one\nline two", id: undefined },
  { type: "close", data: "", id: "7" },
  { type: "message", data: "x", id: undefined },
];

describe("unit: x402 SSE reader", () => {
  it("parses fields, comments, line endings and ids as the spec says", () => {
    expect(parseAll([STREAM])).to.deep.equal(EXPECTED);
  });

  it("gives the same events however the stream is cut into chunks (CRLF split included)", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 1, max: STREAM.length - 1 }), { maxLength: 12 }),
        (cuts) => {
          const at = [0, ...cuts.sort((x, y) => x - y), STREAM.length];
          const chunks = at.slice(1).map((end, i) => STREAM.slice(at[i], end));
          expect(parseAll(chunks)).to.deep.equal(EXPECTED);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("reads a byte stream whose UTF-8 characters are split across chunks", async () => {
    const bytes = new TextEncoder().encode('event: payment\ndata: {"memo":"€ ü"}\n\n');
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < bytes.length; i += 3) c.enqueue(bytes.slice(i, i + 3));
        c.close();
      },
    });
    const out: SseEvent[] = [];
    await readEventStream(body, (e) => out.push(e));
    expect(out).to.deep.equal([{ type: "payment", data: '{"memo":"€ ü"}', id: undefined }]);
  });
});
