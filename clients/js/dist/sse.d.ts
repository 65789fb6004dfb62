/**
 * An event-stream parser (the WHATWG HTML "server-sent events" interpretation), fed text chunks
 * as they arrive, so that it works over `fetch` in browsers and Node alike. Each chunk is
 * scanned once, however long its lines: a snapshot of many megabytes in small chunks costs what
 * its bytes cost.
 */
/** One dispatched event. */
export interface Frame {
    /** The `event:` field, `message` when absent. */
    event: string;
    /** The `data:` lines joined with newlines. */
    data: string;
    /** The last event id after this frame (the stream's, not only this frame's). */
    id: string | undefined;
}
export declare class SseParser {
    /** The pieces of the line not ended yet. */
    private pending;
    private event;
    private data;
    private sawCarriageReturn;
    /** The stream's last event id: set by `id:` fields, kept across frames. */
    lastEventId: string | undefined;
    /** The reconnection time the server asked for (`retry:`), in milliseconds. */
    retry: number | undefined;
    constructor(lastEventId?: string);
    /** Parses `chunk` and returns the frames it completed. */
    push(chunk: string): Frame[];
    private line;
}
