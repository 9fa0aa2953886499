// Node's Buffer has latin1Slice (Bun implements it natively; ~80 ns for a header field)
// but @types leave it out. It decodes bytes 1:1 to code points, unlike TextDecoder("latin1").
declare global {
  interface Buffer {
    latin1Slice(start?: number, end?: number): string;
  }
}
export {};
