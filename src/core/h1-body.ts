// Body framing: where does a message body end? Content-Length counts down; chunked is
// walked by a byte state machine that touches only chunk-size lines and trailers and
// skips data in bulk. Bytes are never changed: chunked bodies pass through as chunked.
// One Framing per connection direction, reused across messages.

export const F_NONE = 0; // no body (or finished)
export const F_LENGTH = 1;
export const F_CHUNKED = 2;
export const F_CLOSE = 3; // response delimited by the server closing

// chunked states
const CS_SIZE0 = 0; // first hex digit of a chunk size
const CS_SIZE = 1; // more hex digits, ';' or CR
const CS_EXT = 2; // chunk extension up to CR
const CS_SIZE_LF = 3;
const CS_DATA = 4;
const CS_DATA_CR = 5;
const CS_DATA_LF = 6;
const CS_TRAILER0 = 7; // start of a trailer line or the final CRLF
const CS_TRAILER = 8;
const CS_TRAILER_LF = 9;
const CS_FINAL_LF = 10;
const CS_TRAILER_NAME = 11; // a trailer field name up to ':'

const HEX = new Int8Array(256).fill(-1);
for (let i = 0; i < 10; i++) HEX[48 + i] = i;
for (let i = 0; i < 6; i++) HEX[65 + i] = HEX[97 + i] = 10 + i;

/** token characters (RFC 9110 5.6.2): what a trailer field name may be made of */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 65; c <= 90; c++) TCHAR[c] = TCHAR[c + 32] = 1;

/** Result of feed() when the framing is broken (bad chunk size, missing CRLF, control bytes). */
export const FRAMING_ERROR = -1;

export class Framing {
  kind = F_NONE;
  /** bytes left of a Content-Length body or of the current chunk */
  remain = 0;
  cs = CS_SIZE0;
  digits = 0;
  done = true;

  startLength(n: number): void {
    this.kind = n > 0 ? F_LENGTH : F_NONE;
    this.remain = n;
    this.done = n <= 0;
  }
  startChunked(): void {
    this.kind = F_CHUNKED;
    this.cs = CS_SIZE0;
    this.remain = 0;
    this.digits = 0;
    this.done = false;
  }
  startClose(): void {
    this.kind = F_CLOSE;
    this.done = false;
  }
  startNone(): void {
    this.kind = F_NONE;
    this.done = true;
  }

  /**
   * Consumes body bytes of buf[start, end). Returns the index where this message ends
   * (then `done` is true) or `end` when it needs more, or FRAMING_ERROR.
   */
  feed(buf: Uint8Array, start: number, end: number): number {
    switch (this.kind) {
      case F_LENGTH: {
        const avail = end - start;
        if (avail < this.remain) {
          this.remain -= avail;
          return end;
        }
        const stop = start + this.remain;
        this.remain = 0;
        this.done = true;
        return stop;
      }
      case F_CHUNKED:
        return this.chunked(buf, start, end);
      case F_CLOSE:
        return end;
    }
    this.done = true;
    return start;
  }

  private chunked(buf: Uint8Array, i: number, end: number): number {
    let cs = this.cs;
    while (i < end) {
      if (cs === CS_DATA) {
        const avail = end - i;
        if (avail < this.remain) {
          this.remain -= avail;
          this.cs = cs;
          return end;
        }
        i += this.remain;
        this.remain = 0;
        cs = CS_DATA_CR;
        continue;
      }
      const c = buf[i++];
      switch (cs) {
        case CS_SIZE0: {
          const d = HEX[c];
          if (d < 0) return FRAMING_ERROR;
          this.remain = d;
          this.digits = 1;
          cs = CS_SIZE;
          break;
        }
        case CS_SIZE: {
          const d = HEX[c];
          if (d >= 0) {
            // 12 hex digits = 256 TiB: anything longer is an overflow attempt
            if (++this.digits > 12) return FRAMING_ERROR;
            this.remain = this.remain * 16 + d;
          } else if (c === 13) cs = CS_SIZE_LF;
          else if (c === 59) cs = CS_EXT; // ';'
          else return FRAMING_ERROR; // spaces, signs, junk
          break;
        }
        case CS_EXT:
          if (c === 13) cs = CS_SIZE_LF;
          else if ((c < 32 && c !== 9) || c === 127) return FRAMING_ERROR;
          break;
        case CS_SIZE_LF:
          if (c !== 10) return FRAMING_ERROR;
          cs = this.remain === 0 ? CS_TRAILER0 : CS_DATA;
          break;
        case CS_DATA_CR:
          if (c !== 13) return FRAMING_ERROR;
          cs = CS_DATA_LF;
          break;
        case CS_DATA_LF:
          if (c !== 10) return FRAMING_ERROR;
          cs = CS_SIZE0;
          break;
        case CS_TRAILER0:
          // a trailer line must be a field line (name ":" value): anything else, such as a
          // request line smuggled after the last chunk, or obs-fold, breaks the framing
          if (c === 13) cs = CS_FINAL_LF;
          else if (TCHAR[c] === 1) cs = CS_TRAILER_NAME;
          else return FRAMING_ERROR;
          break;
        case CS_TRAILER_NAME:
          if (c === 58) cs = CS_TRAILER; // ':'
          else if (TCHAR[c] !== 1) return FRAMING_ERROR;
          break;
        case CS_TRAILER:
          if (c === 13) cs = CS_TRAILER_LF;
          else if ((c < 32 && c !== 9) || c === 127) return FRAMING_ERROR;
          break;
        case CS_TRAILER_LF:
          if (c !== 10) return FRAMING_ERROR;
          cs = CS_TRAILER0;
          break;
        case CS_FINAL_LF:
          if (c !== 10) return FRAMING_ERROR;
          this.cs = CS_SIZE0;
          this.done = true;
          return i;
      }
    }
    this.cs = cs;
    return end;
  }
}
