// Addresses as written in latch.toml: listener binds, server addresses and CIDR ranges.
// Each function throws an Error whose message is fit for `latch check` output; compile.ts
// attaches the key path and line.

export interface Bind {
  readonly host: string;
  readonly port: number;
}

export interface ServerAddress {
  /** as given to Bun.connect: IPv6 without brackets */
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  /** Host header form: "h:p", "[::1]:p", or "h" when a URL was written without a port */
  readonly authority: string;
}

export interface Cidr {
  readonly v6: boolean;
  /** network address, host bits zeroed: 4 or 16 bytes */
  readonly addr: Uint8Array;
  readonly bits: number;
}

/**
 * Listener address: "127.0.0.1:8080", "[::1]:8080", "host:8080", ":8080" or "*:8080" (all
 * IPv4 interfaces, as HAProxy's `bind :8080`). Port 0 asks the OS for a free port.
 */
export function parseBind(text: string): Bind {
  const { host, port } = splitHostPort(text, null);
  if (port === null) throw new Error(`missing port in "${text}"; write e.g. "127.0.0.1:8080" or ":8080"`);
  return { host: host === "" || host === "*" ? "0.0.0.0" : checkHost(host, text), port: checkPort(port, text, 0) };
}

/**
 * Server address: "127.0.0.1:9001", or a URL "http://h[:p]", "https://h[:p]" (TLS to the
 * backend; "ws://" and "wss://" are the same two). URL ports default to 80 and 443.
 */
export function parseServerAddress(text: string): ServerAddress {
  const scheme = /^([a-z]+):\/\//i.exec(text);
  let rest = text;
  let tls = false;
  let defaultPort: number | null = null;
  if (scheme !== null) {
    const s = scheme[1]!.toLowerCase();
    if (s === "https" || s === "wss") [tls, defaultPort] = [true, 443];
    else if (s === "http" || s === "ws") defaultPort = 80;
    else throw new Error(`unsupported scheme "${scheme[1]}" in "${text}"; use http:// or https://`);
    rest = text.slice(scheme[0].length);
    // A path would have to be prepended to every request; mod_proxy's "ProxyPass / http://h/app/"
    // is not what this key means, so refuse instead of silently dropping it.
    if (rest.endsWith("/")) rest = rest.slice(0, -1);
    if (/[/?#@]/.test(rest)) throw new Error(`"${text}": only scheme, host and port are allowed in a server address`);
  }
  const split = splitHostPort(rest, defaultPort);
  if (split.port === null) throw new Error(`missing port in "${text}"; write e.g. "127.0.0.1:9001" or "http://${rest}"`);
  if (split.host === "") throw new Error(`missing host in "${text}"`);
  const host = checkHost(split.host, text);
  const port = checkPort(split.port, text, 1);
  const hostForm = host.includes(":") ? `[${host}]` : host;
  return { host, port, tls, authority: split.portWritten ? `${hostForm}:${port}` : hostForm };
}

/** "10.0.0.0/8", "2001:db8::/32", or one address ("192.0.2.7" = /32). */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf("/");
  const ip = slash === -1 ? text : text.slice(0, slash);
  const addr = parseIp(ip);
  if (addr === null) throw new Error(`"${ip}" is not an IPv4 or IPv6 address`);
  const max = addr.length * 8;
  let bits = max;
  if (slash !== -1) {
    const b = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(b) || Number(b) > max) throw new Error(`"${text}": prefix length must be 0 to ${max}`);
    bits = Number(b);
  }
  // Zero the host bits so the matcher compares whole bytes without masking the config side.
  for (let i = 0; i < addr.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    addr[i] = addr[i]! & ((0xff << (8 - keep)) & 0xff);
  }
  return { v6: addr.length === 16, addr, bits };
}

/** IPv4 dotted quad -> 4 bytes, IPv6 (with "::" and an optional IPv4 tail) -> 16 bytes. */
export function parseIp(text: string): Uint8Array | null {
  if (!text.includes(":")) return parseIpv4(text);
  let head = text;
  let tail: Uint8Array | null = null;
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    tail = parseIpv4(text.slice(lastColon + 1));
    if (tail === null) return null;
    head = text.slice(0, lastColon + 1) + "0:0"; // stand-in groups for the 4 bytes of the tail
  }
  const halves = head.split("::");
  if (halves.length > 2) return null;
  const groups = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    for (const g of s.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const left = groups(halves[0]!);
  const right = halves.length === 2 ? groups(halves[1]!) : [];
  if (left === null || right === null) return null;
  const missing = 8 - left.length - right.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...left, ...new Array<number>(missing).fill(0), ...right];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  if (tail !== null) out.set(tail, 12);
  return out;
}

function parseIpv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^\d{1,3}$/.test(parts[i]!) || Number(parts[i]) > 255) return null;
    out[i] = Number(parts[i]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

function splitHostPort(text: string, defaultPort: number | null): { host: string; port: string | null; portWritten: boolean } {
  let host: string;
  let after: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close === -1) throw new Error(`"${text}": missing "]" after the IPv6 address`);
    host = text.slice(1, close);
    if (parseIp(host)?.length !== 16) throw new Error(`"${text}": "${host}" is not an IPv6 address`);
    after = text.slice(close + 1);
    if (after !== "" && !after.startsWith(":")) throw new Error(`"${text}": expected ":port" after "]"`);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon !== -1 && text.indexOf(":") !== colon) {
      throw new Error(`"${text}": write IPv6 addresses in brackets, e.g. "[::1]:8080"`);
    }
    host = colon === -1 ? text : text.slice(0, colon);
    after = colon === -1 ? "" : text.slice(colon);
  }
  if (after === "") return { host, port: defaultPort === null ? null : String(defaultPort), portWritten: false };
  return { host, port: after.slice(1), portWritten: true };
}

function checkPort(port: string, text: string, min: number): number {
  if (!/^\d{1,5}$/.test(port) || Number(port) < min || Number(port) > 65535) {
    throw new Error(`"${text}": port must be a number from ${min} to 65535`);
  }
  return Number(port);
}

/** An IP literal or a DNS name (lowercased: names are case-insensitive, Host matching is not). */
function checkHost(host: string, text: string): string {
  if (host.includes(":")) return host; // IPv6, already checked by splitHostPort
  if (/^[\d.]+$/.test(host)) {
    if (parseIpv4(host) === null) throw new Error(`"${text}": "${host}" is not an IPv4 address`);
    return host;
  }
  if (!/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$/.test(host)) {
    throw new Error(`"${text}": "${host}" is not a host name or IP address`);
  }
  return host.toLowerCase();
}
