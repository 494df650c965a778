/**
 * A reader of `text/event-stream` bodies as WHATWG HTML §9.2.6 "Interpreting an event stream" defines them:
 * lines end in CRLF, LF or CR (a CRLF split across chunks counts once); a line starting with `:` is a
 * comment; `field: value` (one leading space of the value dropped; a line without `:` is a field with an
 * empty value); `data` lines are joined with `\n`; `event` names the type (default `message`); `id` sets
 * the last event id (ignored when it contains NUL) and persists across events; `retry` and unknown fields
 * are ignored; a blank line dispatches the event, unless it had no `data`. A last event not ended by a
 * blank line is dropped, as the spec says.
 *
 * Written here rather than taken from `eventsource-parser` because that package is not installed and the
 * project adds no dependency for ~80 lines (see docs/DECISIONS.md); browsers' `EventSource` cannot send the
 * bearer token.
 */

/** One dispatched event. */
export interface SseEvent {
  /** The `event` field, or `message`. */
  type: string;
  /** The `data` lines joined with `\n`. */
  data: string;
  /** The last event id seen on the stream (the spec's "last event ID buffer"), or undefined. */
  id: string | undefined;
}

/** Incremental parser: {@link feed} text as it arrives; each complete event goes to `onEvent`. */
export class SseParser {
  readonly #onEvent: (event: SseEvent) => void;
  #buffer = "";
  /** The previous chunk ended in CR: a LF starting the next one belongs to it. */
  #afterCR = false;
  #data: string[] = [];
  #type = "";
  #id: string | undefined;

  constructor(onEvent: (event: SseEvent) => void) {
    this.#onEvent = onEvent;
  }

  /** Parses `chunk` (decoded text); dispatches every event it completes, in order. */
  feed(chunk: string): void {
    let text = chunk;
    if (this.#afterCR && text.startsWith("\n")) text = text.slice(1);
    this.#afterCR = false;
    this.#buffer += text;
    let start = 0;
    for (;;) {
      const cr = this.#buffer.indexOf("\r", start);
      const lf = this.#buffer.indexOf("\n", start);
      if (cr < 0 && lf < 0) break;
      const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
      this.#line(this.#buffer.slice(start, end));
      if (this.#buffer[end] === "\r") {
        if (end + 1 === this.#buffer.length) {
          this.#afterCR = true;
          start = end + 1;
          break;
        }
        start = this.#buffer[end + 1] === "\n" ? end + 2 : end + 1;
      } else start = end + 1;
    }
    this.#buffer = this.#buffer.slice(start);
  }

  #line(line: string): void {
    if (line === "") {
      if (this.#data.length > 0) {
        this.#onEvent({ type: this.#type || "message", data: this.#data.join("\n"), id: this.#id });
      }
      this.#data = [];
      this.#type = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#type = value;
    else if (field === "id" && !value.includes("\0")) this.#id = value;
  }
}

/**
 * Reads a `text/event-stream` body to its end (or until `signal` aborts), handing each event to `onEvent`.
 * Resolves when the stream ended or was aborted; rejects on a read error.
 */
export async function readEventStream(
  body: ReadableStream<Uint8Array>,
  onEvent: (event: SseEvent) => void,
  signal?: AbortSignal,
): Promise<void> {
  const parser = new SseParser(onEvent);
  const decoder = new TextDecoder();
  const reader = body.getReader();
  const abort = () => void reader.cancel().catch(() => undefined);
  signal?.addEventListener("abort", abort, { once: true });
  try {
    for (;;) {
      if (signal?.aborted) return;
      const { done, value } = await reader.read();
      if (done) return;
      parser.feed(decoder.decode(value, { stream: true }));
    }
  } catch (err) {
    if (signal?.aborted) return;
    throw err;
  } finally {
    signal?.removeEventListener("abort", abort);
    reader.releaseLock();
  }
}
