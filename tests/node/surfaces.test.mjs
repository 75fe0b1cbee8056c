// The official `openai` npm package as a black-box client of `quorate serve` (in front of
// quorate-sim): the stream loop most Node code writes, and the Responses API.
// Binaries come from $QUORATE_BIN_DIR (default: target/debug); `npm ci` here installs the client.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";

const root = fileURLToPath(new URL("../..", import.meta.url));
const bin = process.env.QUORATE_BIN_DIR ?? join(root, "target", "debug");
const KEY = "sk-node-test";
const FUSION = { id: "fusion", analysis_models: ["sim/echo", "sim/echo"], judge: "sim/judge", model: "sim/synth" };
const SCRIPTS = {
  judge: { json: { consensus: ["agreed"], contradictions: [], partial_coverage: [], unique_insights: [], blind_spots: [] } },
  synth: { reply: "One fused answer.", token_ms: 1 },
};

const running = [];
let dir;
let client;

/** Starts a binary that prints `listening on http://ADDR` first; resolves to ADDR. */
function start(program, args, env) {
  const child = spawn(join(bin, program), args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "ignore"] });
  running.push(child);
  return new Promise((ok, fail) => {
    createInterface({ input: child.stdout }).once("line", (line) => {
      const at = line.indexOf("http://");
      at < 0 ? fail(new Error(`${program} did not start: ${line}`)) : ok(line.slice(at + 7).trim());
    });
    child.once("exit", (code) => fail(new Error(`${program} exited with ${code}`)));
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "quorate-node-"));
  writeFileSync(join(dir, "scripts.json"), JSON.stringify(SCRIPTS));
  const sim = await start("quorate-sim", ["--listen", "127.0.0.1:0", "--scripts", join(dir, "scripts.json")]);
  writeFileSync(join(dir, "quorate.toml"), `
[server]
api_keys_env = "QUORATE_NODE_TEST_KEYS"

[providers.sim]
kind = "openai"
base_url = "http://${sim}/v1"
timeout_s = 5
max_retries = 0

[models."sim/echo"]
provider = "sim"
`);
  const gateway = await start("quorate", ["serve", "--config", join(dir, "quorate.toml"), "--listen", "127.0.0.1:0"], {
    QUORATE_NODE_TEST_KEYS: KEY,
    QUORATE_STORE_URL: `sqlite://${dir}/runs.db`,
    RUST_LOG: "warn",
  });
  client = new OpenAI({ baseURL: `http://${gateway}/v1`, apiKey: KEY, maxRetries: 0 });
});

after(() => {
  for (const child of running) child.kill();
  rmSync(dir, { recursive: true, force: true });
});

test("the usual stream loop runs to the end, plain and fused", async () => {
  // `chunk.choices[0].delta.content` on every chunk: a chunk without a choice would throw.
  let text = "";
  for await (const chunk of await client.chat.completions.create({
    model: "sim/echo", messages: [{ role: "user", content: "loop" }], stream: true,
  })) {
    text += chunk.choices[0].delta.content ?? "";
  }
  assert.equal(text, "echo: loop");

  let fused = "";
  let report;
  for await (const chunk of await client.chat.completions.create({
    model: "quorate/fusion", messages: [{ role: "user", content: "loop" }], stream: true, plugins: [FUSION],
  })) {
    fused += chunk.choices[0].delta.content ?? "";
    report = chunk.fusion ?? report;
  }
  assert.equal(fused, "One fused answer.");
  assert.equal(report.judge, "sim/judge");
});

test("the Responses API, whole and streamed", async () => {
  const response = await client.responses.create({ model: "sim/echo", input: "hello there" });
  assert.equal(response.output_text, "echo: hello there");
  assert.equal(response.usage.total_tokens, 5);

  const kinds = [];
  let text = "";
  for await (const event of await client.responses.create({ model: "sim/echo", input: "stream me", stream: true })) {
    kinds.push(event.type);
    if (event.type === "response.output_text.delta") text += event.delta;
  }
  assert.equal(text, "echo: stream me");
  assert.deepEqual([kinds[0], kinds.at(-1)], ["response.created", "response.completed"]);
});
