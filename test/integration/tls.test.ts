// TLS termination on a listener and TLS to an `https://` backend, with a self-signed
// certificate made by openssl for the test.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startLatch, type Running } from "../helpers/latch.ts";

let dir = "";
let cert = "", key = "";
let backend: ReturnType<typeof Bun.serve> | null = null;
let latch: Running | null = null;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "latch-tls-"));
  cert = join(dir, "cert.pem");
  key = join(dir, "key.pem");
  const r = Bun.spawnSync([
    "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ]);
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  backend = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: Bun.file(cert), key: Bun.file(key) },
    fetch: (req) =>
      new Response(`secure backend saw ${req.headers.get("x-forwarded-proto")} ${new URL(req.url).pathname}`),
  });
  latch = startLatch(`
[[listen]]
name = "tls"
bind = "127.0.0.1:0"
tls = { cert = "${cert}", key = "${key}" }
  [[listen.route]]
  path = "/"
  backend = "secure"
[backend.secure]
  [backend.secure.persist]
  mode = "insert"
  cookie = "SRV"
  secure = true
  [[backend.secure.server]]
  id = "s1"
  address = "https://127.0.0.1:${backend.port}"
`);
});

afterAll(async () => {
  await latch?.stop();
  backend?.stop(true);
});

test("TLS is terminated on the listener and re-established to an https:// backend", async () => {
  const res = await fetch(`https://127.0.0.1:${latch!.port}/hello`, { tls: { rejectUnauthorized: false } });
  expect(res.status).toBe(200);
  expect(await res.text()).toBe("secure backend saw https /hello");
  expect(res.headers.get("set-cookie")).toBe("SRV=s1; Path=/; Secure");
});

test("keep-alive works over TLS on both sides", async () => {
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`https://127.0.0.1:${latch!.port}/n${i}`, {
      tls: { rejectUnauthorized: false },
      headers: { cookie: "SRV=s1" },
    });
    expect(await res.text()).toBe(`secure backend saw https /n${i}`);
  }
});
