import { describe, expect, test } from "bun:test";
import { parseBind, parseCidr, parseIp, parseServerAddress } from "./address.ts";

describe("parseBind", () => {
  test.each([
    ["127.0.0.1:8080", "127.0.0.1", 8080],
    ["[::1]:8080", "::1", 8080],
    ["[::]:443", "::", 443],
    [":8080", "0.0.0.0", 8080],
    ["*:8080", "0.0.0.0", 8080],
    ["LocalHost:80", "localhost", 80],
    ["127.0.0.1:0", "127.0.0.1", 0],
  ])("%p", (text, host, port) => {
    expect(parseBind(text)).toEqual({ host, port });
  });

  test.each([
    ["127.0.0.1", /missing port/],
    ["8080", /missing port/],
    ["::1:8080", /brackets/],
    ["[::1]8080", /":port"/],
    ["[::1:8080", /missing "\]"/],
    ["127.0.0.1:65536", /port/],
    ["127.0.0.1:http", /port/],
    ["300.0.0.1:80", /not an IPv4/],
    ["bad_host:80", /not a host name/],
  ])("%p is refused", (text, why) => {
    expect(() => parseBind(text)).toThrow(why);
  });
});

describe("parseServerAddress", () => {
  test.each([
    ["127.0.0.1:9001", { host: "127.0.0.1", port: 9001, tls: false, authority: "127.0.0.1:9001" }],
    ["http://app.local:8080", { host: "app.local", port: 8080, tls: false, authority: "app.local:8080" }],
    ["http://app.local", { host: "app.local", port: 80, tls: false, authority: "app.local" }],
    ["https://App.Example.com", { host: "app.example.com", port: 443, tls: true, authority: "app.example.com" }],
    ["https://h:8443/", { host: "h", port: 8443, tls: true, authority: "h:8443" }],
    ["wss://h", { host: "h", port: 443, tls: true, authority: "h" }],
    ["[::1]:9001", { host: "::1", port: 9001, tls: false, authority: "[::1]:9001" }],
    ["https://[2001:db8::1]", { host: "2001:db8::1", port: 443, tls: true, authority: "[2001:db8::1]" }],
  ])("%p", (text, want) => {
    expect(parseServerAddress(text)).toEqual(want);
  });

  test.each([
    ["127.0.0.1", /missing port/],
    ["127.0.0.1:0", /port/],
    ["ftp://h:21", /unsupported scheme/],
    ["http://h:80/app", /only scheme, host and port/],
    ["http://user@h", /only scheme, host and port/],
    ["http://:80", /missing host/],
  ])("%p is refused", (text, why) => {
    expect(() => parseServerAddress(text)).toThrow(why);
  });
});

describe("parseIp / parseCidr", () => {
  test("IPv4 and IPv6 forms", () => {
    expect(parseIp("10.1.2.3")).toEqual(new Uint8Array([10, 1, 2, 3]));
    expect(parseIp("::1")).toEqual(new Uint8Array([...new Array(15).fill(0), 1]));
    expect(parseIp("::")).toEqual(new Uint8Array(16));
    expect(parseIp("2001:db8::ff00:42:8329")).toEqual(
      new Uint8Array([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0x42, 0x83, 0x29]),
    );
    expect(parseIp("::ffff:192.0.2.1")).toEqual(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]));
    expect(parseIp("1:2:3:4:5:6:7:8")?.length).toBe(16);
    for (const bad of ["1.2.3", "1.2.3.256", "1::2::3", "1:2:3:4:5:6:7:8:9", "12345::", "g::1", "1:2:3:4:5:6:7::8", "fe80::1%eth0"]) {
      expect(parseIp(bad)).toBeNull();
    }
  });

  test("CIDR: network bytes with host bits cleared", () => {
    expect(parseCidr("10.0.0.0/8")).toEqual({ v6: false, addr: new Uint8Array([10, 0, 0, 0]), bits: 8 });
    expect(parseCidr("192.168.77.200/20")).toEqual({ v6: false, addr: new Uint8Array([192, 168, 64, 0]), bits: 20 });
    expect(parseCidr("192.0.2.7")).toEqual({ v6: false, addr: new Uint8Array([192, 0, 2, 7]), bits: 32 });
    const v6 = parseCidr("2001:db8:abcd::1/36");
    expect(v6.v6).toBe(true);
    expect(v6.bits).toBe(36);
    expect([...v6.addr.slice(0, 6)]).toEqual([0x20, 0x01, 0x0d, 0xb8, 0xa0, 0]);
    expect(parseCidr("0.0.0.0/0").addr).toEqual(new Uint8Array(4));
  });

  test.each([["10.0.0.0/33"], ["10.0.0.0/"], ["10.0.0.0/x"], ["::/129"], ["nope/8"]])("%p is refused", (text) => {
    expect(() => parseCidr(text)).toThrow();
  });
});
