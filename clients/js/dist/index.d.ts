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
import { type Json } from './apply.js';
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
    collection?: {
        items?: string;
        id?: string;
    };
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
    backoff?: {
        min?: number;
        max?: number;
    };
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
export declare function watch<T = Json>(url: string | URL, options?: WatchOptions<T>): Watch<T>;
