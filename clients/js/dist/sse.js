/**
 * An event-stream parser (the WHATWG HTML "server-sent events" interpretation), fed text chunks
 * as they arrive, so that it works over `fetch` in browsers and Node alike.
 */
export class SseParser {
    constructor(lastEventId) {
        this.buffer = '';
        this.event = '';
        this.data = [];
        this.sawCarriageReturn = false;
        this.lastEventId = lastEventId;
    }
    /** Parses `chunk` and returns the frames it completed. */
    push(chunk) {
        const frames = [];
        let text = this.buffer + chunk;
        // A "\r\n" split between two chunks: the "\n" ends no second line.
        if (this.sawCarriageReturn && text.startsWith('\n'))
            text = text.slice(1);
        this.sawCarriageReturn = false;
        let start = 0;
        for (let i = 0; i < text.length; i++) {
            const c = text.charCodeAt(i);
            if (c !== 10 && c !== 13)
                continue;
            this.line(text.slice(start, i), frames);
            if (c === 13) {
                if (i + 1 === text.length)
                    this.sawCarriageReturn = true;
                else if (text.charCodeAt(i + 1) === 10)
                    i++;
            }
            start = i + 1;
        }
        this.buffer = text.slice(start);
        return frames;
    }
    line(line, frames) {
        if (line === '') {
            if (this.data.length > 0) {
                frames.push({ event: this.event || 'message', data: this.data.join('\n'), id: this.lastEventId });
            }
            this.event = '';
            this.data = [];
            return;
        }
        if (line.startsWith(':'))
            return;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' '))
            value = value.slice(1);
        switch (field) {
            case 'event':
                this.event = value;
                break;
            case 'data':
                this.data.push(value);
                break;
            case 'id':
                if (!value.includes('\0'))
                    this.lastEventId = value;
                break;
            case 'retry':
                if (/^\d+$/.test(value))
                    this.retry = Number(value);
                break;
        }
    }
}
