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

export class SseParser {
  /** The pieces of the line not ended yet. */
  private pending: string[] = [];
  private event = '';
  private data: string[] = [];
  private sawCarriageReturn = false;
  /** The stream's last event id: set by `id:` fields, kept across frames. */
  lastEventId: string | undefined;
  /** The reconnection time the server asked for (`retry:`), in milliseconds. */
  retry: number | undefined;

  constructor(lastEventId?: string) {
    this.lastEventId = lastEventId;
  }

  /** Parses `chunk` and returns the frames it completed. */
  push(chunk: string): Frame[] {
    const frames: Frame[] = [];
    let start = 0;
    // A "\r\n" split between two chunks: the "\n" ends no second line.
    if (this.sawCarriageReturn && chunk.startsWith('\n')) start = 1;
    this.sawCarriageReturn = false;
    for (let i = start; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.pending.push(chunk.slice(start, i));
      const line = this.pending.length === 1 ? this.pending[0] : this.pending.join('');
      this.pending = [];
      this.line(line, frames);
      if (c === 13) {
        if (i + 1 === chunk.length) this.sawCarriageReturn = true;
        else if (chunk.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    if (start < chunk.length) this.pending.push(chunk.slice(start));
    return frames;
  }

  private line(line: string, frames: Frame[]): void {
    if (line === '') {
      if (this.data.length > 0) {
        frames.push({ event: this.event || 'message', data: this.data.join('\n'), id: this.lastEventId });
      }
      this.event = '';
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.event = value;
        break;
      case 'data':
        this.data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
    }
  }
}
