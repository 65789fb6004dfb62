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
import { applyJsonPatch, applyMergePatch, idString, Items } from './apply.js';
import { SseParser } from './sse.js';
export { SseParser } from './sse.js';
export { applyJsonPatch, applyMergePatch } from './apply.js';
/** Watches `url` (a route's resource, or its `/event-stream`) and keeps a live copy of it. */
export function watch(url, options = {}) {
    return new LiveCopy(url, options);
}
/** A refusal: the watch ends. */
class Refused extends Error {
    constructor(end) {
        super(`${end.reason}${end.status ? ` (${end.status})` : ''}`);
        this.end = end;
    }
}
/** A passing failure: try again, not before `after` milliseconds if given. */
class Retry extends Error {
    constructor(message, after) {
        super(message);
        this.after = after;
    }
}
/** An event the copy cannot take: the copy is not the state herald diffed against. */
class CannotApply extends Error {
}
const SECOND = 1000;
/** The shortest reconnection delay, whatever a server's `retry:` or the options say. */
const MIN_DELAY = 100;
/** How often `auto` tries a stream again while it long-polls. */
const PROBE_EVERY = 5 * 60 * SECOND;
class LiveCopy {
    constructor(url, options) {
        this.options = options;
        this.closed = false;
        /** Streams accepted that sent nothing, in a row, while none ever did (for `auto`). */
        this.silentStreams = 0;
        this.everStreamed = false;
        this.probeAt = 0;
        // Relative URLs are the page's (in a browser).
        const base = globalThis.location?.href;
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
    close() {
        this.end({ reason: 'closed' });
    }
    end(end) {
        if (this.closed)
            return;
        this.closed = true;
        this.connection?.abort();
        this.wake?.();
        this.finish(end);
        this.call(this.options.onEnd, end);
    }
    /** Calls one of the user's callbacks: what it throws is reported, and the watch goes on. */
    call(callback, ...args) {
        if (callback === undefined)
            return;
        try {
            callback(...args);
        }
        catch (e) {
            const report = globalThis.reportError;
            if (report)
                report(e);
            else
                console.error('herald client: a callback threw', e);
        }
    }
    async run() {
        let failures = 0;
        const auto = this.options.transport === undefined || this.options.transport === 'auto';
        while (!this.closed) {
            if (auto)
                this.choose();
            let wait;
            try {
                const outcome = this.transport === 'stream' ? await this.stream() : await this.longPoll();
                if (outcome === 'again') {
                    failures = 0;
                    continue;
                }
                // A stream that gave events starts the back-off again (at the server's `retry:`).
                failures = outcome === 'events' ? 1 : failures + 1;
            }
            catch (e) {
                if (this.closed)
                    return;
                if (e instanceof Refused)
                    return this.end(e.end);
                failures++;
                if (e instanceof Retry)
                    wait = e.after;
                if (e instanceof CannotApply)
                    this.lastEventId = undefined;
                this.call(this.options.onError, e instanceof Error ? e : new Error(String(e)));
            }
            await this.sleep(wait ?? this.backoff(failures));
        }
    }
    /** `auto`: long polling after two silent streams while none ever worked; a stream again now and then. */
    choose() {
        if (this.transport === 'stream' && !this.everStreamed && this.silentStreams >= 2) {
            this.transport = 'long-poll';
            this.probeAt = Date.now() + PROBE_EVERY;
        }
        else if (this.transport === 'long-poll' && Date.now() >= this.probeAt) {
            // One silent stream is enough to go back.
            this.transport = 'stream';
            this.silentStreams = 1;
            this.probeAt = Date.now() + PROBE_EVERY;
        }
    }
    /** Full jitter over an exponential back-off from the server's `retry:` (or `backoff.min`). */
    backoff(failures) {
        const min = Math.max(MIN_DELAY, this.options.backoff?.min ?? this.retry ?? SECOND);
        const max = Math.max(min, this.options.backoff?.max ?? 30 * SECOND);
        const ceiling = Math.min(max, min * 2 ** Math.min(failures - 1, 16));
        return ceiling / 2 + Math.random() * (ceiling / 2);
    }
    /** Waits `ms`, or less if the watch is closed meanwhile. */
    sleep(ms) {
        return new Promise(resolve => {
            const timer = setTimeout(resolve, ms);
            this.wake = () => {
                clearTimeout(timer);
                resolve();
            };
        });
    }
    /** One stream, read to its end. */
    async stream() {
        const headers = { ...this.options.headers, accept: 'text/event-stream' };
        if (this.lastEventId)
            headers['last-event-id'] = this.lastEventId;
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
                if (done)
                    break;
                idle();
                if (!opened) {
                    opened = true;
                    this.everStreamed = true;
                    this.silentStreams = 0;
                }
                for (const frame of parser.push(value)) {
                    if (this.closed)
                        return 'again';
                    if (parser.retry !== undefined)
                        this.retry = parser.retry;
                    events++;
                    const next = await this.handle(frame);
                    if (next !== undefined)
                        return next;
                }
            }
        }
        catch (e) {
            if (e instanceof Refused || e instanceof CannotApply)
                throw e;
            // Held back: answered and silent, or not answered within `openTimeout` at all.
            if (!opened && (accepted || connection.signal.aborted) && !this.closed)
                this.silentStreams++;
            if (events === 0)
                throw e;
            // A dropped stream that gave events: resumed from the last id after the server's `retry:`.
            this.call(this.options.onError, e instanceof Error ? e : new Error(String(e)));
        }
        finally {
            clearTimeout(timer);
            connection.abort();
        }
        if (!opened && accepted)
            this.silentStreams++;
        return events > 0 ? 'events' : 'nothing';
    }
    /**
     * Applies one frame; an outcome when the stream should end (herald's `error` event), else
     * `undefined`.
     */
    async handle(frame) {
        let data;
        try {
            data = JSON.parse(frame.data);
        }
        catch {
            data = frame.data;
        }
        const event = { type: frame.event, id: frame.id, data };
        const object = (data !== null && typeof data === 'object' && !Array.isArray(data) ? data : {});
        let changed = true;
        switch (frame.event) {
            case 'upstream-status':
                this.lastEventId = frame.id;
                this.call(this.options.onEvent, event);
                this.call(this.options.onStatus, data);
                return undefined;
            case 'error':
                this.call(this.options.onEvent, event);
                if (typeof object.status === 'number')
                    throw new Refused({ reason: 'refused', status: object.status, body: frame.data });
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
                    this.state = applyJsonPatch(this.state, data);
                    break;
                case 'merge-patch':
                    this.state = applyMergePatch(this.state, data);
                    break;
                default:
                    changed = await this.applyItem(frame.event, object);
            }
        }
        catch (e) {
            if (e instanceof CannotApply || !(e instanceof Error) || e.name === 'AbortError' || e instanceof TypeError) {
                throw e;
            }
            throw new CannotApply(`cannot apply ${frame.event} ${frame.id ?? ''}: ${e.message}`);
        }
        if (this.closed)
            return 'again';
        this.lastEventId = frame.id;
        this.call(this.options.onEvent, event);
        if (changed && this.state !== undefined)
            this.call(this.options.onState, this.state, event);
        return undefined;
    }
    replace(data) {
        this.state = data;
        this.items.reset();
    }
    /** A collection's `<type>.created/.updated/.deleted`; false for events that are not item events. */
    async applyItem(type, event) {
        const kind = /\.(created|updated|deleted)$/.exec(type)?.[1];
        const id = idString(event.resourceId);
        if (kind === undefined || id === undefined)
            return false;
        if (this.state === undefined)
            throw new CannotApply(`${type} before a snapshot`);
        let item = event.resourceDetails;
        if (item === undefined && kind !== 'deleted') {
            // A lean event (`payload: lean`) names its item: read it, with the same credentials.
            item = await this.readItem(event);
            if (item === undefined)
                return false;
        }
        // Keyed as the held items are (a number beyond 2^53 rounds alike on both sides).
        const key = (item !== undefined ? this.items.key(item) : undefined) ?? id;
        this.state = this.items.apply(this.state, kind, key, item);
        return true;
    }
    /** A lean event's item, from its `self` link: only on the watched origin, which the headers are for. */
    async readItem(event) {
        const self = event._links?.find(link => link.rel === 'self')?.href;
        if (self === undefined)
            throw new CannotApply(`a lean ${event.eventType} without a self link`);
        const url = new URL(self, this.resourceUrl);
        if (url.origin !== this.resourceUrl.origin) {
            throw new CannotApply(`a lean ${event.eventType} links to another origin (${url.origin})`);
        }
        const res = await this.fetch(url, {
            headers: { ...this.options.headers, accept: 'application/json' },
            signal: this.connection?.signal,
        });
        // Gone since: its `deleted` event follows.
        if (res.status === 404)
            return undefined;
        await refusal(res);
        return (await res.json());
    }
    /** One long poll: `again` when herald answered (a change, or "not modified" after holding it). */
    async longPoll() {
        const wait = Math.min(this.options.wait ?? 60, 120);
        const headers = { ...this.options.headers, accept: 'application/json' };
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
            }
            else {
                await refusal(res);
                const body = await text(res);
                const etag = res.headers.get('etag') ?? undefined;
                if (etag === undefined)
                    throw new Refused({ reason: 'not-a-stream', status: res.status, body });
                this.etag = etag;
                let data;
                try {
                    data = JSON.parse(body);
                }
                catch {
                    data = body;
                }
                if (this.closed)
                    return 'again';
                this.replace(data);
                const event = { type: 'snapshot', id: undefined, data };
                this.call(this.options.onEvent, event);
                this.call(this.options.onState, this.state, event);
            }
            // An answer herald did not hold (a route without `cache: true` passes the request
            // through): poll at the back-off's pace instead of in a tight loop.
            return held || headers.prefer === undefined ? 'again' : 'nothing';
        }
        finally {
            clearTimeout(timer);
            connection.abort();
        }
    }
    connect() {
        const connection = new AbortController();
        this.connection = connection;
        if (this.closed)
            connection.abort();
        return connection;
    }
}
/** Throws for an answer that is not a success: `Refused` for a final one, `Retry` otherwise. */
async function refusal(res) {
    if (res.ok)
        return;
    const body = await text(res);
    const after = Number(res.headers.get('retry-after'));
    if (res.status === 408 || res.status === 425 || res.status === 429 || res.status >= 500) {
        throw new Retry(`answered ${res.status}`, Number.isFinite(after) && after > 0 ? Math.min(after, 300) * SECOND : undefined);
    }
    throw new Refused({ reason: 'refused', status: res.status, body });
}
async function text(res) {
    try {
        return await res.text();
    }
    catch {
        return '';
    }
}
