// SPEC 9: the compiled binary is ready to accept connections in under 100 ms.
//   npm run build && bun bench/e2e/startup.ts [runs]
// Spawns dist/latch with a small config and measures spawn -> first accepted connection.

import { mkdtempSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const bin = join(import.meta.dir, "../../dist/latch");
if (!existsSync(bin)) {
  console.error("dist/latch is missing: run `npm run build` first");
  process.exit(1);
}
const runs = Number(process.argv[2] ?? 20);
const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
const port = probe.port;
probe.stop(true);
const dir = mkdtempSync(join(tmpdir(), "latch-startup-"));
const cfg = join(dir, "latch.toml");
writeFileSync(
  cfg,
  `[[listen]]\nname = "web"\nbind = "127.0.0.1:${port}"\n  [[listen.route]]\n  path = "/"\n  backend = "app"\n` +
    `[backend.app]\n  [backend.app.persist]\n  mode = "insert"\n  cookie = "SRV"\n` +
    `  [[backend.app.server]]\n  id = "ap01"\n  address = "127.0.0.1:9"\n`,
);
const times: number[] = [];
for (let i = 0; i < runs; i++) {
  const t0 = performance.now();
  const p = Bun.spawn([bin, "run", cfg], { stdout: "ignore", stderr: "ignore" });
  for (;;) {
    try {
      const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
      s.end();
      break;
    } catch {
      if (performance.now() - t0 > 5000) throw new Error("latch did not start within 5 s");
      await Bun.sleep(1);
    }
  }
  times.push(performance.now() - t0);
  p.kill();
  await p.exited;
}
times.sort((a, b) => a - b);
const q = (f: number) => times[Math.min(times.length - 1, Math.floor(f * times.length))].toFixed(1);
console.log(`dist/latch spawn -> accepting: min ${q(0)} ms, median ${q(0.5)} ms, max ${q(1)} ms over ${runs} runs (goal < 100 ms)`);
