// The session runtime over the sealed-cookie store: the shared contract, then what only the
// cookie store does (rotation through re-sealing, stateless renewal, size accounting).
import { describe, expect, test } from "bun:test";
import { deriveKey } from "./seal.ts";
import { parseLine, sync, PASSPHRASE, sessionContract, sessionOptions, T0 } from "./session.case.ts";
import { SessionManager } from "./session.ts";

sessionContract("cookie", { make: (o) => new SessionManager(sessionOptions(o)), revocable: false });

const OLD = "the passphrase we used last year";

describe("store = cookie", () => {
  test("rotation: a cookie sealed with an old passphrase opens and is re-sealed with the first on the next response", async () => {
    const before = new SessionManager(sessionOptions({ passphrases: [OLD] })).runtime(false);
    const during = new SessionManager(sessionOptions({ passphrases: [PASSPHRASE, OLD] })).runtime(false);
    const after = new SessionManager(sessionOptions({ passphrases: [PASSPHRASE] })).runtime(false);

    const old = parseLine(sync(before.commit(sync(before.open(null, T0)), "user=alice", false, T0))).value;
    const s = sync(during.open(old, T0 + 1000));
    expect(s).toMatchObject({ status: "ok", data: "user=alice", resealNeeded: true });
    // nothing changed and update_interval has not passed, yet it is re-issued
    const resealed = parseLine(sync(during.commit(s, null, false, T0 + 1000))).value;
    expect(Buffer.from(resealed, "base64url")[1]).toBe(deriveKey("main", PASSPHRASE).id);
    expect(during.stats.resealed).toBe(1);
    expect(during.open(resealed, T0 + 2000)).toMatchObject({ status: "ok", resealNeeded: false, created: T0 / 1000 });
    // once the old passphrase is removed
    expect(after.open(resealed, T0 + 3000)).toMatchObject({ status: "ok", data: "user=alice" });
    expect(after.open(old, T0 + 3000)).toMatchObject({ status: "invalid", data: "" });
  });

  test("renewal is a fresh seal (new nonce, new creation time); a sealed cookie cannot be revoked before it expires", () => {
    const r = new SessionManager(sessionOptions()).runtime(false);
    const first = parseLine(sync(r.commit(sync(r.open(null, T0)), "a=1", false, T0))).value;
    const renewed = parseLine(sync(r.commit(sync(r.open(first, T0 + 5000)), null, true, T0 + 5000))).value;
    expect(Buffer.from(renewed, "base64url").subarray(2, 14).equals(Buffer.from(first, "base64url").subarray(2, 14))).toBe(false);
    expect(r.open(renewed, T0 + 6000)).toMatchObject({ status: "ok", created: T0 / 1000 + 5 });
    expect(r.open(first, T0 + 6000)).toMatchObject({ status: "ok", created: T0 / 1000 });
  });

  test("open and commit are synchronous", () => {
    const r = new SessionManager(sessionOptions()).runtime(false);
    const s = r.open(null, T0);
    expect(s instanceof Promise).toBe(false);
    expect(r.commit(sync(s), "a=1", false, T0) instanceof Uint8Array).toBe(true);
  });

  test("a cookie over 4096 bytes is still sent, and counted", () => {
    const r = new SessionManager(sessionOptions()).runtime(false);
    const big = `blob=${"x".repeat(3500)}`;
    const line = sync(r.commit(sync(r.open(null, T0)), big, false, T0));
    expect(parseLine(line).value.length).toBeGreaterThan(4096);
    expect(r.stats.oversize).toBe(1);
  });

  test("no idle and no max_age: a browser-session cookie, no Max-Age", () => {
    const r = new SessionManager(sessionOptions({ idle: 0, maxAge: 0 })).runtime(false);
    expect(parseLine(sync(r.commit(sync(r.open(null, T0)), "a=1", false, T0))).attrs).toBe("; Path=/; HttpOnly; SameSite=Lax");
  });

  test("a request header the backend could be tricked by is impossible: only printable ASCII goes out", () => {
    const r = new SessionManager(sessionOptions()).runtime(false);
    const line = sync(r.commit(sync(r.open(null, T0)), "a=%0d%0aX-Admin:+1&b=%E6%97%A5", false, T0));
    const s = sync(r.open(parseLine(line).value, T0));
    const h = Buffer.from(r.requestHeader(s)!).toString("latin1");
    expect(h).toBe("X-Session: a=%0D%0AX-Admin%3A+1&b=%E6%97%A5\r\n");
  });

  test("runtime views: one per TLS flag, sharing the counters", () => {
    const m = new SessionManager(sessionOptions());
    expect(m.runtime(false)).toBe(m.runtime(false));
    expect(m.runtime(true)).not.toBe(m.runtime(false));
    expect(m.runtime(true).stats).toBe(m.runtime(false).stats);
    expect(m.runtime(true).stats).toBe(m.stats);
  });
});
