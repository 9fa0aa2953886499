// The core reports events (errors with their reason, state changes) through one
// replaceable function: the composition root wires it to a log sink. The core itself
// imports no logging code.

export type Reporter = (level: "info" | "warn" | "error", msg: string) => void;

let sink: Reporter = () => {};

export function setReporter(r: Reporter): void {
  sink = r;
}

export function report(level: "info" | "warn" | "error", msg: string): void {
  sink(level, msg);
}
