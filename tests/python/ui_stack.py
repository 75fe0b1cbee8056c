"""The stack the web UI tests drive: a fixture web site (a SearXNG-style search and one page),
quorate-sim with scripted panel members, a judge and a synthesizer, and `quorate serve` with a
run store. `python3 tests/python/ui_stack.py` starts the same stack for working on the UI, with
the UI read from crates/server/ui (edits show on reload)."""

import http.server
import json
import os
import pathlib
import subprocess
import sys
import threading
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("QUORATE_BIN_DIR", ROOT / "target" / "debug"))

TIDES = b"""<html><head><title>How tides work</title></head><body><main>
<p>The Moon's gravity pulls the oceans into two bulges.</p></main></body></html>"""

# Text a model writes is untrusted: these must show as text, never run.
HOSTILE = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'


def analysis():
    return {
        "consensus": ["The Moon's gravity drives the tides"],
        "contradictions": [{"topic": "Main cause", "stances": [
            {"model": "#1", "stance": "the Moon"}, {"model": "#2", "stance": "the Sun"}]}],
        "partial_coverage": [{"point": "Spring tides", "models": ["#1", "#3"]}],
        "unique_insights": [{"insight": "Two bulges, not one", "model": "#1"}],
        "blind_spots": ["Tidal locking"],
    }


def scripts(site):
    tides = f"http://{site}/tides"
    return {
        "alpha": {"sequence": [
            {"tool_calls": [{"name": "web_search", "arguments": {"query": "what causes tides"}}], "cost": 0.001},
            {"reply": f"The **Moon's pull** causes tides, see [How tides work]({tides}).",
             "token_ms": 30, "cost": 0.002},
        ]},
        "beta": {"reply": "Mostly the Sun. " + HOSTILE, "token_ms": 30, "cost": 0.001},
        "gamma": {"reply": "The Moon causes tides; spring tides add the Sun.", "token_ms": 30, "cost": 0.001},
        "broken": {"fault": "status", "status": 500},
        "judge": {"json": analysis(), "cost": 0.0005},
        "synth": {"reply": "Tides come from the Moon's pull [1]; some claim more [7]. " + HOSTILE,
                  "token_ms": 20, "cost": 0.003},
    }


CONFIG = """
[server]
{keys}

[providers.sim]
kind = "openai"
base_url = "http://{sim}/v1"
timeout_s = 10
max_retries = 0

[tools.web_search]
backend = "searxng"
base_url = "http://{site}"

[tools.web_fetch]
allow_hosts = ["{site}"]

[fusion]
default_preset = "tides"

[presets.tides]
panel = ["sim/alpha", "sim/beta", "sim/gamma"]
judge = "sim/judge"
synthesizer = "sim/synth"
member_timeout_s = 10
total_timeout_s = 30
"""

MODELS = ["alpha", "beta", "gamma", "broken", "judge", "synth"]


def model_entries():
    return "".join(
        f'\n[models."sim/{m}"]\nprovider = "sim"\nupstream = "{m}"\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 2\n'
        for m in MODELS
    )


class Site(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        host = self.headers["Host"]
        if url.path == "/search":
            query = urllib.parse.parse_qs(url.query).get("q", [""])[0]
            body = json.dumps({"query": query, "results": [
                {"url": f"http://{host}/tides", "title": "How tides work", "content": "The Moon pulls."}]}).encode()
            self._send("application/json", body)
        elif url.path == "/tides":
            self._send("text/html", TIDES)
        else:
            self.send_error(404)

    def _send(self, kind, body):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _start(args, env=None):
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    assert "listening on http://" in line, f"{args[0]} did not start: {line!r}"
    return proc, line.strip().split("http://", 1)[1]


class Stack:
    """Everything started; `addr` is the gateway's host:port. `keys`: the gateway's keys, if any."""

    def __init__(self, tmp, keys=None, listen="127.0.0.1:0", ui_dir=None):
        self.site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
        threading.Thread(target=self.site.serve_forever, daemon=True).start()
        site = self.site_addr = f"127.0.0.1:{self.site.server_address[1]}"
        tmp = pathlib.Path(tmp)
        (tmp / "scripts.json").write_text(json.dumps(scripts(site)))
        self.sim, sim_addr = _start([str(BIN / "quorate-sim"), "--listen", "127.0.0.1:0",
                                     "--scripts", str(tmp / "scripts.json")])
        keys_line = 'api_keys_env = "QUORATE_UI_TEST_KEYS"' if keys else ""
        (tmp / "quorate.toml").write_text(CONFIG.format(keys=keys_line, sim=sim_addr, site=site) + model_entries())
        env = dict(os.environ, QUORATE_STORE_URL=f"sqlite://{tmp}/runs.db", RUST_LOG="warn")
        if keys:
            env["QUORATE_UI_TEST_KEYS"] = ",".join(keys)
        if ui_dir:
            env["QUORATE_UI_DIR"] = str(ui_dir)
        self.gateway, self.addr = _start([str(BIN / "quorate"), "serve", "--config", str(tmp / "quorate.toml"),
                                          "--listen", listen], env=env)

    def stop(self):
        for proc in (self.gateway, self.sim):
            proc.terminate()
            proc.wait(timeout=10)
        self.site.shutdown()


if __name__ == "__main__":
    import signal
    import tempfile
    import time

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(tmp, ui_dir=ROOT / "crates" / "server" / "ui",
                      listen=sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:0")
        print(stack.addr, flush=True)
        try:
            while True:
                time.sleep(3600)
        finally:
            stack.stop()
