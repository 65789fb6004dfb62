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
  /**
   * Called with what the watch recovers from by itself: a dropped connection, an answer to
   * retry, an event the copy could not take (the watch then starts again from a snapshot).
   */
  onError?: (error: Error) => void;
  /** Called once when the watch ends; `ended` resolves with the same value. */
  onEnd?: (end: WatchEnd) => void;
  /**
   * For `collection` routes: JSON Pointers to the items in the representation and to an item's
   * id, as the route's `events.collection.items` and `.id` say. Default: `''` and `'/id'`.
   */
  collection?: { items?: string; id?: string };
  /**
   * `stream` (Server-Sent Events), `long-poll` (`GET` with `If-None-Match` and `Prefer: wait`),
   * or `auto` (default): streams, and long polling when two streams in a row were accepted but
   * sent nothing within `openTimeout` while none ever did (a proxy that holds them back); a
   * stream is tried again every five minutes.
   */
  transport?: 'auto' | 'stream' | 'long-poll';
  /** Resume from a copy saved earlier: `state` as it was at `lastEventId` (both, or neither). */
  lastEventId?: string;
  state?: T;
  /** Reconnection back-off in milliseconds: from `min` (or the stream's `retry:`) doubling to `max`. */
  backoff?: { min?: number; max?: number };
  /** A stream that gives no byte for this long (herald sends a heartbeat every 15 s) is reopened. Default 45 s. */
  idleTimeout?: number;
  /** How long a stream may take to be answered and give its first byte. Default 10 s. */
  openTimeout?: number;
  /** Long polling: how many seconds herald may hold a request (at most 120). Default 60. */
  wait?: number;
}

export interface Watch<T = Json> {
  /** The live copy; `undefined` until the first snapshot. Changed in place: treat it as read-only. */
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
  return new LiveCopy<T>(url, options);
}

/** How a connection ended: `again` to reconnect at once, `events` after the server's `retry:`, `nothing` after a growing back-off. */
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

/** An event the copy cannot take: the copy is not the state herald diffed against. */
class CannotApply extends Error {}

const SECOND = 1000;
/** The shortest reconnection delay, whatever a server's `retry:` or the options say. */
const MIN_DELAY = 100;
/** How often `auto` tries a stream again while it long-polls. */
const PROBE_EVERY = 5 * 60 * SECOND;

class LiveCopy<T> implements Watch<T> {
  state: T | undefined;
  lastEventId: string | undefined;
  transport: 'stream' | 'long-poll';
  readonly ended: Promise<WatchEnd>;

  private readonly streamUrl: URL;
  private readonly resourceUrl: URL;
  private readonly fetch: typeof fetch;
  private readonly items: Items;
  private connection: AbortController | undefined;
  private closed = false;
  private finish!: (end: WatchEnd) => void;
  private wake: (() => void) | undefined;
  /** The server's `retry:` advice, milliseconds. */
  private retry: number | undefined;
  /** Streams accepted that sent nothing, in a row, while none ever did (for `auto`). */
  private silentStreams = 0;
  private everStreamed = false;
  private probeAt = 0;
  private etag: string | undefined;

  constructor(
    url: string | URL,
    private readonly options: WatchOptions<T>,
  ) {
    // Relative URLs are the page's (in a browser).
    const base = (globalThis as { location?: { href: string } }).location?.href;
    this.streamUrl = new URL(url, base);
    this.resourceUrl = new URL(this.streamUrl);
    this.resourceUrl.pathname = this.resourceUrl.pathname.replace(/\/event-stream$/, '');
    if ((options.lastEventId === undefined) !== (options.state === undefined)) {
      throw new TypeError('watch: lastEventId and state resume together: give both or neither');
    }
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.items = new Items(options.collection?.items ?? '', options.collection?.id ?? '/id');
    this.lastEventId = options.lastEventId;
    this.state = options.state;
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
    this.wake?.();
    this.finish(end);
    this.call(this.options.onEnd, end);
  }

  /** Calls one of the user's callbacks: what it throws is reported, and the watch goes on. */
  private call<A extends unknown[]>(callback: ((...args: A) => void) | undefined, ...args: A): void {
    if (callback === undefined) return;
    try {
      callback(...args);
    } catch (e) {
      const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
      if (report) report(e);
      else console.error('herald client: a callback threw', e);
    }
  }

  private async run(): Promise<void> {
    let failures = 0;
    const auto = this.options.transport === undefined || this.options.transport === 'auto';
    while (!this.closed) {
      if (auto) this.choose();
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
        if (e instanceof CannotApply) this.lastEventId = undefined;
        this.call(this.options.onError, e instanceof Error ? e : new Error(String(e)));
      }
      await this.sleep(wait ?? this.backoff(failures));
    }
  }

  /** `auto`: long polling after two silent streams while none ever worked; a stream again now and then. */
  private choose(): void {
    if (this.transport === 'stream' && !this.everStreamed && this.silentStreams >= 2) {
      this.transport = 'long-poll';
      this.probeAt = Date.now() + PROBE_EVERY;
    } else if (this.transport === 'long-poll' && Date.now() >= this.probeAt) {
      // One silent stream is enough to go back.
      this.transport = 'stream';
      this.silentStreams = 1;
      this.probeAt = Date.now() + PROBE_EVERY;
    }
  }

  /** Full jitter over an exponential back-off from the server's `retry:` (or `backoff.min`). */
  private backoff(failures: number): number {
    const min = Math.max(MIN_DELAY, this.options.backoff?.min ?? this.retry ?? SECOND);
    const max = Math.max(min, this.options.backoff?.max ?? 30 * SECOND);
    const ceiling = Math.min(max, min * 2 ** Math.min(failures - 1, 16));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** Waits `ms`, or less if the watch is closed meanwhile. */
  private sleep(ms: number): Promise<void> {
    return new Promise(resolve => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** One stream, read to its end. */
  private async stream(): Promise<Outcome> {
    const headers: Record<string, string> = { ...this.options.headers, accept: 'text/event-stream' };
    if (this.lastEventId) headers['last-event-id'] = this.lastEventId;
    const connection = this.connect();
    // Until the answer's first byte: `openTimeout`; then `idleTimeout` from each chunk.
    let opened = false;
    let timer = setTimeout(() => connection.abort(), this.options.openTimeout ?? 10 * SECOND);
    const idle = () => {
      clearTimeout(timer);
      timer = setTimeout(() => connection.abort(), this.options.idleTimeout ?? 45 * SECOND);
    };
    let accepted = false;
    let events = 0;
    try {
      const res = await this.fetch(this.streamUrl, { headers, signal: connection.signal, cache: 'no-store' });
      await refusal(res);
      const type = (res.headers.get('content-type') ?? '').toLowerCase();
      if (!type.startsWith('text/event-stream') || !res.body) {
        throw new Refused({ reason: 'not-a-stream', status: res.status, body: await text(res) });
      }
      accepted = true;
      const parser = new SseParser(this.lastEventId);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        idle();
        if (!opened) {
          opened = true;
          this.everStreamed = true;
          this.silentStreams = 0;
        }
        for (const frame of parser.push(value)) {
          if (this.closed) return 'again';
          if (parser.retry !== undefined) this.retry = parser.retry;
          events++;
          const next = await this.handle(frame);
          if (next !== undefined) return next;
        }
      }
    } catch (e) {
      if (e instanceof Refused || e instanceof CannotApply) throw e;
      // Held back: answered and silent, or not answered within `openTimeout` at all.
      if (!opened && (accepted || connection.signal.aborted) && !this.closed) this.silentStreams++;
      if (events === 0) throw e;
      // A dropped stream that gave events: resumed from the last id after the server's `retry:`.
      this.call(this.options.onError, e instanceof Error ? e : new Error(String(e)));
    } finally {
      clearTimeout(timer);
      connection.abort();
    }
    if (!opened && accepted) this.silentStreams++;
    return events > 0 ? 'events' : 'nothing';
  }

  /**
   * Applies one frame; an outcome when the stream should end (herald's `error` event), else
   * `undefined`.
   */
  private async handle(frame: Frame): Promise<Outcome | undefined> {
    let data: Json;
    try {
      data = JSON.parse(frame.data) as Json;
    } catch {
      data = frame.data;
    }
    const event: HeraldEvent = { type: frame.event, id: frame.id, data };
    const object = (data !== null && typeof data === 'object' && !Array.isArray(data) ? data : {}) as Record<string, Json>;
    let changed = true;
    switch (frame.event) {
      case 'upstream-status':
        this.lastEventId = frame.id;
        this.call(this.options.onEvent, event);
        this.call(this.options.onStatus, data as unknown as UpstreamStatus);
        return undefined;
      case 'error':
        this.call(this.options.onEvent, event);
        if (typeof object.status === 'number') throw new Refused({ reason: 'refused', status: object.status, body: frame.data });
        // herald is shutting down or was reconfigured: again after the server's `retry:`.
        return 'events';
    }
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
        default:
          changed = await this.applyItem(frame.event, object as unknown as ItemEvent);
      }
    } catch (e) {
      if (e instanceof CannotApply || !(e instanceof Error) || e.name === 'AbortError' || e instanceof TypeError) {
        throw e;
      }
      throw new CannotApply(`cannot apply ${frame.event} ${frame.id ?? ''}: ${e.message}`);
    }
    if (this.closed) return 'again';
    this.lastEventId = frame.id;
    this.call(this.options.onEvent, event);
    if (changed && this.state !== undefined) this.call(this.options.onState, this.state, event);
    return undefined;
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
    if (this.state === undefined) throw new CannotApply(`${type} before a snapshot`);
    let item = event.resourceDetails;
    if (item === undefined && kind !== 'deleted') {
      // A lean event (`payload: lean`) names its item: read it, with the same credentials.
      item = await this.readItem(event);
      if (item === undefined) return false;
    }
    // Keyed as the held items are (a number beyond 2^53 rounds alike on both sides).
    const key = (item !== undefined ? this.items.key(item) : undefined) ?? id;
    this.state = this.items.apply(this.state as Json, kind, key, item) as T;
    return true;
  }

  /** A lean event's item, from its `self` link: only on the watched origin, which the headers are for. */
  private async readItem(event: ItemEvent): Promise<Json | undefined> {
    const self = event._links?.find(link => link.rel === 'self')?.href;
    if (self === undefined) throw new CannotApply(`a lean ${event.eventType} without a self link`);
    const url = new URL(self, this.resourceUrl);
    if (url.origin !== this.resourceUrl.origin) {
      throw new CannotApply(`a lean ${event.eventType} links to another origin (${url.origin})`);
    }
    const res = await this.fetch(url, {
      headers: { ...this.options.headers, accept: 'application/json' },
      signal: this.connection?.signal,
    });
    // Gone since: its `deleted` event follows.
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
        if (this.closed) return 'again';
        this.replace(data);
        const event: HeraldEvent = { type: 'snapshot', id: undefined, data };
        this.call(this.options.onEvent, event);
        this.call(this.options.onState, this.state as T, event);
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
