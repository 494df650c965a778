/**
 * Reading `text/event-stream` bodies (WHATWG HTML §9.2.6) from a `fetch` response, as the node's
 * `GET /v1/events` sends them: the parsing is `eventsource-parser`'s (line endings, comments, fields, multi-line
 * data, events without data not dispatched); this module only adapts it to a byte stream with an abort
 * signal. Browsers' `EventSource` cannot send the bearer token, hence fetch.
 */
import { createParser, type EventSourceParser } from "eventsource-parser";

/** One dispatched event. */
export interface SseEvent {
  /** The `event` field, or `message`. */
  type: string;
  /** The `data` lines joined with `\n`. */
  data: string;
  /** This event's `id` field (an id containing NUL is ignored), or undefined. */
  id: string | undefined;
}

/** Incremental parser: {@link feed} text as it arrives; each complete event goes to `onEvent`. */
export class SseParser {
  readonly #parser: EventSourceParser;

  constructor(onEvent: (event: SseEvent) => void) {
    this.#parser = createParser({
      onEvent: (e) => onEvent({ type: e.event ?? "message", data: e.data, id: e.id }),
    });
  }

  /** Parses `chunk` (decoded text); dispatches every event it completes, in order. */
  feed(chunk: string): void {
    this.#parser.feed(chunk);
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
