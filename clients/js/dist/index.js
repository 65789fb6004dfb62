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
    return new LiveCopy(String(url), options);
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
const SECOND = 1000;
class LiveCopy {
    constructor(url, options) {
        this.options = options;
        this.closed = false;
        /** Streams that gave no event, in a row, while none ever did (for `auto`). */
        this.silentStreams = 0;
        this.everStreamed = false;
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
    close() {
        this.end({ reason: 'closed' });
    }
    end(end) {
        if (this.closed)
            return;
        this.closed = true;
        this.connection?.abort();
        this.finish(end);
        this.options.onEnd?.(end);
    }
    async run() {
        let failures = 0;
        while (!this.closed) {
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
    backoff(failures) {
        const min = this.options.backoff?.min ?? this.retry ?? SECOND;
        const max = this.options.backoff?.max ?? 30 * SECOND;
        const ceiling = Math.min(max, min * 2 ** Math.min(failures - 1, 16));
        return ceiling / 2 + Math.random() * (ceiling / 2);
    }
    /** One stream, read to its end. */
    async stream() {
        const headers = { ...this.options.headers, accept: 'text/event-stream' };
        if (this.lastEventId !== undefined)
            headers['last-event-id'] = this.lastEventId;
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
                if (done)
                    break;
                if (events > 0)
                    idle();
                for (const frame of parser.push(value)) {
                    if (this.closed)
                        return 'again';
                    if (parser.retry !== undefined)
                        this.retry = parser.retry;
                    if (events++ === 0) {
                        idle();
                        this.everStreamed = true;
                        this.silentStreams = 0;
                    }
                    if (!(await this.handle(frame)))
                        return 'again';
                }
            }
        }
        catch (e) {
            if (e instanceof Refused || events === 0) {
                if (!this.everStreamed)
                    this.silentStreams++;
                throw e;
            }
        }
        finally {
            clearTimeout(timer);
            connection.abort();
        }
        if (events > 0)
            return 'events';
        if (!this.everStreamed)
            this.silentStreams++;
        return 'nothing';
    }
    /**
     * Applies one frame. False when the stream should be reopened now (herald is shutting down
     * or was reconfigured).
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
                case 'upstream-status':
                    changed = false;
                    this.options.onStatus?.(data);
                    break;
                case 'error':
                    if (typeof object.status === 'number')
                        throw new Refused({ reason: 'refused', status: object.status, body: frame.data });
                    this.options.onEvent?.(event);
                    return false;
                default:
                    changed = await this.applyItem(frame.event, object);
            }
        }
        catch (e) {
            if (e instanceof Refused)
                throw e;
            // An event the copy cannot take (it is not the state herald diffed against): start
            // again from a snapshot rather than hold a wrong copy.
            this.lastEventId = undefined;
            this.state = undefined;
            throw new Retry(`cannot apply ${frame.event} ${frame.id ?? ''}: ${String(e)}`, 0);
        }
        this.lastEventId = frame.id;
        this.options.onEvent?.(event);
        if (changed && this.state !== undefined)
            this.options.onState?.(this.state, event);
        return true;
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
        let item = event.resourceDetails;
        if (item === undefined && kind !== 'deleted') {
            // A lean event (`payload: lean`) names its item: read it, with the same credentials.
            item = await this.readItem(event);
            if (item === undefined)
                return false;
        }
        this.state = this.items.apply(this.state, kind, id, item);
        return true;
    }
    async readItem(event) {
        const self = event._links?.find(link => link.rel === 'self')?.href;
        if (self === undefined)
            return undefined;
        const res = await this.fetch(new URL(self, this.resourceUrl), {
            headers: { ...this.options.headers, accept: 'application/json' },
            signal: this.connection?.signal,
        });
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
                this.replace(data);
                const event = { type: 'snapshot', id: undefined, data };
                this.options.onEvent?.(event);
                this.options.onState?.(this.state, event);
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
function sleep(ms) {
    return new Promise(resolve => setTimeout(resolve, ms));
}
