/**
 * herald's client: keeps a live copy of a resource herald pushes.
 *
 * ```js
 * import { watch } from '@herald/client';
 * const tasks = watch('https://api.example/tasks', { onState: state => render(state) });
 * ```
 *
 * The copy starts from the stream's `snapshot` and applies every event in order, whatever the
 * route's format (`change`, `patch`, `merge-patch`, `<type>.created/.updated/.deleted`); a
 * `snapshot` later in the stream replaces it. A dropped connection is resumed with
 * `Last-Event-ID` after a back-off, so nothing is missed and nothing is sent twice. A refused
 * credential (the API's 401 or 403, on connecting or as herald's `error` event) ends the watch:
 * it does not reconnect with a credential that cannot work. Where streams are blocked (a proxy
 * that buffers them), it falls back to long polling (`Prefer: wait`) on routes with `cache: true`.
 * The wire protocol: docs/sse.md.
 */
import { applyJsonPatch, applyMergePatch, idString, Items, type ItemEvent, type Json } from './apply.js';
import { SseParser, type Frame } from './sse.js';

export { SseParser, type Frame } from './sse.js';
export { applyJsonPatch, applyMergePatch, type Json } from './apply.js';

/** One event as the stream sent it, its data parsed. */
export interface HeraldEvent {
  /** The `event:` name: `snapshot`, `patch`, `task.updated`, `upstream-status`, … */
  type: string;
  /** The stream's last event id after this event (none for long polling). */
  id: string | undefined;
  data: Json;
}

/** `upstream-status`: whether herald can read the API (docs/sse.md). */
export interface UpstreamStatus {
  ok: boolean;
  status?: number;
  error?: string;
}

/** Why a watch ended. */
export interface WatchEnd {
  /**
   * `closed`: `close()` was called. `refused`: herald or the API refused the request for good
   * (`status` and `body` are its answer, e.g. 401). `not-a-stream`: the URL answered something
   * that is neither an event stream nor a cached representation.
   */
  reason: 'closed' | 'refused' | 'not-a-stream';
  status?: number;
  body?: string;
}

export interface WatchOptions<T = Json> {
  /** Sent with every request, e.g. `{ Authorization: 'Bearer …' }`. */
  headers?: Record<string, string>;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** Called with the copy after the first snapshot and after every event that changed it. */
  onState?: (state: T, event: HeraldEvent) => void;
  /** Called with every event, before `onState`. */
  onEvent?: (event: HeraldEvent) => void;
  /** Called when herald reports the API failing (`ok: false`) or answering again. */
  onStatus?: (status: UpstreamStatus) => void;
  /** Called once when the watch ends; `ended` resolves with the same value. */
  onEnd?: (end: WatchEnd) => void;
  /**
   * For `collection` routes: JSON Pointers to the items in the representation and to an item's
   * id, as the route's `events.collection.items` and `.id` say. Default: `''` and `'/id'`.
   */
  collection?: { items?: string; id?: string };
  /**
   * `stream` (Server-Sent Events), `long-poll` (`GET` with `If-None-Match` and `Prefer: wait`),
   * or `auto` (default): streams, and long polling when two streams in a row give no event
   * within `openTimeout` and none ever did.
   */
  transport?: 'auto' | 'stream' | 'long-poll';
  /** Resume after this id instead of starting from a snapshot. */
  lastEventId?: string;
  /** Reconnection back-off in milliseconds: from `min` (or the stream's `retry:`) doubling to `max`. */
  backoff?: { min?: number; max?: number };
  /** A stream that gives no byte for this long (herald sends a heartbeat every 15 s) is reopened. Default 45 s. */
  idleTimeout?: number;
  /** How long a stream may take to give its first event. Default 10 s. */
  openTimeout?: number;
  /** Long polling: how many seconds herald may hold a request (at most 120). Default 60. */
  wait?: number;
}

export interface Watch<T = Json> {
  /** The live copy; `undefined` until the first snapshot. */
  readonly state: T | undefined;
  /** The id to resume from. */
  readonly lastEventId: string | undefined;
  /** What the watch uses now. */
  readonly transport: 'stream' | 'long-poll';
  /** Resolves when the watch ends (never rejects). */
  readonly ended: Promise<WatchEnd>;
  /** Ends the watch and its connection. */
  close(): void;
}

/** Watches `url` (a route's resource, or its `/event-stream`) and keeps a live copy of it. */
export function watch<T = Json>(url: string | URL, options: WatchOptions<T> = {}): Watch<T> {
  return new LiveCopy<T>(String(url), options);
}

/** How a connection ended: `again` to reconnect at once, else after a back-off. */
type Outcome = 'again' | 'events' | 'nothing';

/** A refusal: the watch ends. */
class Refused extends Error {
  constructor(readonly end: WatchEnd) {
    super(`${end.reason}${end.status ? ` (${end.status})` : ''}`);
  }
}

/** A passing failure: try again, not before `after` milliseconds if given. */
class Retry extends Error {
  constructor(
    message: string,
    readonly after?: number,
  ) {
    super(message);
  }
}

const SECOND = 1000;

class LiveCopy<T> implements Watch<T> {
  state: T | undefined;
  lastEventId: string | undefined;
  transport: 'stream' | 'long-poll';
  readonly ended: Promise<WatchEnd>;

  private readonly streamUrl: string;
  private readonly resourceUrl: string;
  private readonly fetch: typeof fetch;
  private readonly items: Items;
  private connection: AbortController | undefined;
  private closed = false;
  private finish!: (end: WatchEnd) => void;
  /** The server's `retry:` advice, milliseconds. */
  private retry: number | undefined;
  /** Streams that gave no event, in a row, while none ever did (for `auto`). */
  private silentStreams = 0;
  private everStreamed = false;
  private etag: string | undefined;

  constructor(
    url: string,
    private readonly options: WatchOptions<T>,
  ) {
    const base = url.replace(/\/event-stream(?=$|\?)/, '');
    this.resourceUrl = base;
    this.streamUrl = url;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.items = new Items(options.collection?.items ?? '', options.collection?.id ?? '/id');
    this.lastEventId = options.lastEventId;
    this.transport = options.transport === 'long-poll' ? 'long-poll' : 'stream';
    this.ended = new Promise(resolve => (this.finish = resolve));
    void this.run();
  }

  close(): void {
    this.end({ reason: 'closed' });
  }

  private end(end: WatchEnd): void {
    if (this.closed) return;
    this.closed = true;
    this.connection?.abort();
    this.finish(end);
    this.options.onEnd?.(end);
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.closed) {
      let wait: number | undefined;
      try {
        const outcome = this.transport === 'stream' ? await this.stream() : await this.longPoll();
        if (outcome === 'again') {
          failures = 0;
          continue;
        }
        // A stream that gave events starts the back-off again (at the server's `retry:`).
        failures = outcome === 'events' ? 1 : failures + 1;
      } catch (e) {
        if (this.closed) return;
        if (e instanceof Refused) return this.end(e.end);
        failures++;
        if (e instanceof Retry) wait = e.after;
      }
      const auto = this.options.transport === undefined || this.options.transport === 'auto';
      if (auto && this.transport === 'stream' && !this.everStreamed && this.silentStreams >= 2) {
        this.transport = 'long-poll';
        continue;
      }
      await sleep(wait ?? this.backoff(failures));
    }
  }

  /** Full jitter over an exponential back-off from the server's `retry:` (or `backoff.min`). */
  private backoff(failures: number): number {
    const min = this.options.backoff?.min ?? this.retry ?? SECOND;
    const max = this.options.backoff?.max ?? 30 * SECOND;
    const ceiling = Math.min(max, min * 2 ** Math.min(failures - 1, 16));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** One stream, read to its end. */
  private async stream(): Promise<Outcome> {
    const headers: Record<string, string> = { ...this.options.headers, accept: 'text/event-stream' };
    if (this.lastEventId !== undefined) headers['last-event-id'] = this.lastEventId;
    const connection = this.connect();
    // Until the first event: `openTimeout`; then `idleTimeout` from each chunk.
    let timer = setTimeout(() => connection.abort(), this.options.openTimeout ?? 10 * SECOND);
    const idle = () => {
      clearTimeout(timer);
      timer = setTimeout(() => connection.abort(), this.options.idleTimeout ?? 45 * SECOND);
    };
    let events = 0;
    try {
      const res = await this.fetch(this.streamUrl, { headers, signal: connection.signal, cache: 'no-store' });
      await refusal(res);
      if (!(res.headers.get('content-type') ?? '').startsWith('text/event-stream') || !res.body) {
        throw new Refused({ reason: 'not-a-stream', status: res.status, body: await text(res) });
      }
      const parser = new SseParser(this.lastEventId);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (events > 0) idle();
        for (const frame of parser.push(value)) {
          if (this.closed) return 'again';
          if (parser.retry !== undefined) this.retry = parser.retry;
          if (events++ === 0) {
            idle();
            this.everStreamed = true;
            this.silentStreams = 0;
          }
          if (!(await this.handle(frame))) return 'again';
        }
      }
    } catch (e) {
      if (e instanceof Refused || events === 0) {
        if (!this.everStreamed) this.silentStreams++;
        throw e;
      }
    } finally {
      clearTimeout(timer);
      connection.abort();
    }
    if (events > 0) return 'events';
    if (!this.everStreamed) this.silentStreams++;
    return 'nothing';
  }

  /**
   * Applies one frame. False when the stream should be reopened now (herald is shutting down
   * or was reconfigured).
   */
  private async handle(frame: Frame): Promise<boolean> {
    let data: Json;
    try {
      data = JSON.parse(frame.data) as Json;
    } catch {
      data = frame.data;
    }
    const event: HeraldEvent = { type: frame.event, id: frame.id, data };
    const object = (data !== null && typeof data === 'object' && !Array.isArray(data) ? data : {}) as Record<string, Json>;
    let changed = true;
    try {
      switch (frame.event) {
        case 'snapshot':
        case 'change':
          this.replace(data);
          break;
        case 'patch':
          this.state = applyJsonPatch(this.state as Json, data as never) as T;
          break;
        case 'merge-patch':
          this.state = applyMergePatch(this.state as Json, data) as T;
          break;
        case 'upstream-status':
          changed = false;
          this.options.onStatus?.(data as unknown as UpstreamStatus);
          break;
        case 'error':
          if (typeof object.status === 'number') throw new Refused({ reason: 'refused', status: object.status, body: frame.data });
          this.options.onEvent?.(event);
          return false;
        default:
          changed = await this.applyItem(frame.event, object as unknown as ItemEvent);
      }
    } catch (e) {
      if (e instanceof Refused) throw e;
      // An event the copy cannot take (it is not the state herald diffed against): start
      // again from a snapshot rather than hold a wrong copy.
      this.lastEventId = undefined;
      this.state = undefined;
      throw new Retry(`cannot apply ${frame.event} ${frame.id ?? ''}: ${String(e)}`, 0);
    }
    this.lastEventId = frame.id;
    this.options.onEvent?.(event);
    if (changed && this.state !== undefined) this.options.onState?.(this.state, event);
    return true;
  }

  private replace(data: Json): void {
    this.state = data as T;
    this.items.reset();
  }

  /** A collection's `<type>.created/.updated/.deleted`; false for events that are not item events. */
  private async applyItem(type: string, event: ItemEvent): Promise<boolean> {
    const kind = /\.(created|updated|deleted)$/.exec(type)?.[1] as 'created' | 'updated' | 'deleted' | undefined;
    const id = idString(event.resourceId as Json);
    if (kind === undefined || id === undefined) return false;
    let item = event.resourceDetails;
    if (item === undefined && kind !== 'deleted') {
      // A lean event (`payload: lean`) names its item: read it, with the same credentials.
      item = await this.readItem(event);
      if (item === undefined) return false;
    }
    this.state = this.items.apply(this.state as Json, kind, id, item) as T;
    return true;
  }

  private async readItem(event: ItemEvent): Promise<Json | undefined> {
    const self = event._links?.find(link => link.rel === 'self')?.href;
    if (self === undefined) return undefined;
    const res = await this.fetch(new URL(self, this.resourceUrl), {
      headers: { ...this.options.headers, accept: 'application/json' },
      signal: this.connection?.signal,
    });
    if (res.status === 404) return undefined;
    await refusal(res);
    return (await res.json()) as Json;
  }

  /** One long poll: `again` when herald answered (a change, or "not modified" after holding it). */
  private async longPoll(): Promise<Outcome> {
    const wait = Math.min(this.options.wait ?? 60, 120);
    const headers: Record<string, string> = { ...this.options.headers, accept: 'application/json' };
    if (this.etag !== undefined) {
      headers['if-none-match'] = this.etag;
      headers.prefer = `wait=${wait}`;
    }
    const connection = this.connect();
    const timer = setTimeout(() => connection.abort(), (wait + 30) * SECOND);
    try {
      const res = await this.fetch(this.resourceUrl, { headers, signal: connection.signal, cache: 'no-store' });
      const held = res.headers.get('preference-applied') !== null;
      if (res.status === 304) {
        await res.body?.cancel();
      } else {
        await refusal(res);
        const body = await text(res);
        const etag = res.headers.get('etag') ?? undefined;
        if (etag === undefined) throw new Refused({ reason: 'not-a-stream', status: res.status, body });
        this.etag = etag;
        let data: Json;
        try {
          data = JSON.parse(body) as Json;
        } catch {
          data = body;
        }
        this.replace(data);
        const event: HeraldEvent = { type: 'snapshot', id: undefined, data };
        this.options.onEvent?.(event);
        this.options.onState?.(this.state as T, event);
      }
      // An answer herald did not hold (a route without `cache: true` passes the request
      // through): poll at the back-off's pace instead of in a tight loop.
      return held || headers.prefer === undefined ? 'again' : 'nothing';
    } finally {
      clearTimeout(timer);
      connection.abort();
    }
  }

  private connect(): AbortController {
    const connection = new AbortController();
    this.connection = connection;
    if (this.closed) connection.abort();
    return connection;
  }
}

/** Throws for an answer that is not a success: `Refused` for a final one, `Retry` otherwise. */
async function refusal(res: Response): Promise<void> {
  if (res.ok) return;
  const body = await text(res);
  const after = Number(res.headers.get('retry-after'));
  if (res.status === 408 || res.status === 425 || res.status === 429 || res.status >= 500) {
    throw new Retry(`answered ${res.status}`, Number.isFinite(after) && after > 0 ? Math.min(after, 300) * SECOND : undefined);
  }
  throw new Refused({ reason: 'refused', status: res.status, body });
}

async function text(res: Response): Promise<string> {
  try {
    return await res.text();
  } catch {
    return '';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms));
}
