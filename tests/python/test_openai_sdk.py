"""The official `openai` Python SDK as a black-box client of `quorate serve` (in front of quorate-sim).

Binaries come from $QUORATE_BIN_DIR (default: target/debug); build them first (scripts/test does).
"""

import json
import os
import pathlib
import subprocess
import tempfile
import time

import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("QUORATE_BIN_DIR", ROOT / "target" / "debug"))
GATEWAY_KEY = "gw-test-key"

SCRIPTS = {
    "weather": {"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
    "limited": {"fault": "status", "status": 429, "retry_after": 9},
    "broken": {"fault": "status", "status": 500},
    "midway": {"fault": "error_event", "reply": "one two three four", "cut_after": 2},
    "judge": {
        "json": {
            "consensus": ["the panel agrees"],
            "contradictions": [],
            "partial_coverage": [],
            "unique_insights": [],
            "blind_spots": [],
        }
    },
    "synth": {"reply": "One fused answer."},
    "outer": {"sequence": [{"tool_call": {"name": "fusion", "arguments": {}}}, {"reply": "Answered with the panel."}]},
    # Tries to fetch an internal address (refused), then answers citing a page it never read.
    "researcher": {"sequence": [
        {"tool_call": {"name": "web_fetch", "arguments": {"url": "http://169.254.169.254/latest/meta-data"}}},
        {"reply": "Per https://made.up/x it is so."},
    ]},
}

FUSION = {"id": "fusion", "analysis_models": ["sim/echo", "sim/echo"], "judge": "sim/judge", "model": "sim/synth"}

CONFIG = """
[server]
api_keys_env = "QUORATE_TEST_GATEWAY_KEYS"

[providers.sim]
kind = "openai"
base_url = "http://{sim}/v1"
timeout_s = 5
max_retries = 1
backoff_ms = 10
max_retry_after_s = 5

[models."sim/echo"]
provider = "sim"
upstream = "echo"
input_usd_per_mtok = 1
output_usd_per_mtok = 2
"""


def _start(args, env=None):
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    assert "listening on http://" in line, f"{args[0]} did not start: {line!r}"
    return proc, line.strip().split("http://", 1)[1]


@pytest.fixture(scope="module")
def base_url():
    with tempfile.TemporaryDirectory() as tmp:
        scripts = pathlib.Path(tmp, "scripts.json")
        scripts.write_text(json.dumps(SCRIPTS))
        sim, sim_addr = _start([str(BIN / "quorate-sim"), "--listen", "127.0.0.1:0", "--scripts", str(scripts)])
        config = pathlib.Path(tmp, "quorate.toml")
        config.write_text(CONFIG.format(sim=sim_addr))
        env = dict(
            os.environ,
            QUORATE_TEST_GATEWAY_KEYS=GATEWAY_KEY,
            QUORATE_STORE_URL=f"sqlite://{tmp}/runs.db",
            RUST_LOG="warn",
        )
        gateway, addr = _start(
            [str(BIN / "quorate"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"], env=env
        )
        try:
            yield f"http://{addr}/v1"
        finally:
            for proc in (gateway, sim):
                proc.terminate()
                proc.wait(timeout=10)


@pytest.fixture()
def client(base_url):
    # No SDK retries: each test sees exactly what the gateway answered.
    return openai.OpenAI(base_url=base_url, api_key=GATEWAY_KEY, max_retries=0)


def ask(text):
    return [{"role": "user", "content": text}]


def test_non_streaming(client):
    r = client.chat.completions.create(model="sim/echo", messages=ask("hello there"))
    assert r.choices[0].message.content == "echo: hello there"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (2, 3, 5)
    assert r.usage.model_extra["cost"] == pytest.approx(0.000008)
    assert r.model == "sim/echo"


def test_server_timing_reaches_the_sdk(client):
    raw = client.chat.completions.with_raw_response.create(model="sim/echo", messages=ask("hi"))
    metrics = dict(
        (m.split(";")[0].strip(), float(m.split("dur=")[1].split(";")[0]))
        for m in raw.headers["server-timing"].split(",")
    )
    assert 0 < metrics["upstream"] <= metrics["total"]
    assert raw.parse().choices[0].message.content == "echo: hi"


def test_streaming_reassembles_with_usage(client):
    stream = client.chat.completions.create(
        model="sim/echo", messages=ask("stream me please"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me please"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


def test_tool_calls_round_trip(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = ask("weather in Oslo?")
    r = client.chat.completions.create(
        model="sim/echo", messages=messages, tools=tools, extra_body={"sim": SCRIPTS["weather"]}
    )
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    messages += [r.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "-3C"}]
    r = client.chat.completions.create(
        model="sim/echo", messages=messages, tools=tools, extra_body={"sim": {"reply": "It is -3C."}}
    )
    assert r.choices[0].message.content == "It is -3C."


def test_errors_are_typed_exceptions(client, base_url):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope/missing", messages=ask("x"))
    assert e.value.status_code == 404
    assert "/v1/models" in e.value.message
    # OpenAI's type and string code, which frameworks match on.
    assert (e.value.type, e.value.code) == ("invalid_request_error", "model_not_found")

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="sim/echo", messages=ask("x"), temperature=5)
    assert "temperature" in e.value.message

    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="sim/echo", messages=ask("x"), extra_body={"sim": SCRIPTS["limited"]})
    assert e.value.response.headers["retry-after"] == "9"
    assert (e.value.type, e.value.code) == ("rate_limit_error", "rate_limit_exceeded")

    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="sim/echo", messages=ask("x"), extra_body={"sim": SCRIPTS["broken"]})
    assert e.value.status_code == 502

    bad_key = openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model="sim/echo", messages=ask("x"))


def test_mid_stream_error_raises(client):
    stream = client.chat.completions.create(
        model="sim/echo", messages=ask("x"), stream=True, extra_body={"sim": SCRIPTS["midway"]}
    )
    seen = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
    assert "".join(seen) == "one two "
    assert "mid-stream" in e.value.message
    assert e.value.type == "server_error"


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert "sim/echo" in ids
    assert client.models.retrieve("sim/echo").id == "sim/echo"
    fusion = client.models.retrieve("quorate/fusion")
    assert fusion.owned_by == "quorate"
    assert fusion.model_extra["architecture"]["output_modalities"] == ["text"]
    assert client.models.retrieve("sim/echo").model_extra["canonical_slug"] == "sim/echo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("sim/nothing")


def test_local_model_structured_output(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    r = client.chat.completions.create(
        model="local/smollm2-135m",
        messages=ask("Give the capital city of France and its country as JSON."),
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}},
    )
    data = json.loads(r.choices[0].message.content)
    assert set(data) == {"city", "country"}
    assert all(isinstance(v, str) for v in data.values())
    assert r.usage.model_extra["cost"] == 0


def test_fusion_is_an_ordinary_completion_with_a_fusion_object(client):
    r = client.chat.completions.create(
        model="quorate/fusion", messages=ask("Why fuse?"), extra_body={"plugins": [FUSION]}
    )
    assert r.choices[0].message.content == "One fused answer."
    fusion = r.model_extra["fusion"]
    assert [m["status"] for m in fusion["panel"]] == ["ok", "ok"]
    assert fusion["analysis"]["consensus"] == ["the panel agrees"]
    details = r.usage.model_extra["cost_details"]
    assert r.usage.model_extra["cost"] == pytest.approx(details["panel"] + details["judge"] + details["synthesis"])
    assert details["panel"] > 0, "sim/echo is priced"


def test_fusion_streams_progress_events_the_sdk_accepts(client):
    plugin = dict(FUSION, stream_progress=True)
    chunks = list(
        client.chat.completions.create(
            model="openrouter/fusion", messages=ask("Why fuse?"), stream=True, extra_body={"plugins": [plugin]}
        )
    )
    events = [c.model_extra["fusion_event"]["type"] for c in chunks if c.model_extra.get("fusion_event")]
    assert events.count("member_done") == 2 and "judge_done" in events
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "One fused answer."
    assert chunks[-1].usage is None, "no usage chunk unless include_usage"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["fusion"]["judge"] == "sim/judge"


def test_the_usual_stream_loop_runs_to_the_end(client):
    # `chunk.choices[0].delta.content` on every chunk: what most client code does. A chunk with
    # `choices: []` (a usage chunk nobody asked for) would make it raise IndexError.
    plain = client.chat.completions.create(model="sim/echo", messages=ask("loop"), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in plain) == "echo: loop"
    fused = client.chat.completions.create(
        model="quorate/fusion", messages=ask("loop"), stream=True, extra_body={"plugins": [FUSION]})
    assert "".join(c.choices[0].delta.content or "" for c in fused) == "One fused answer."
    # Asked for, the usage comes in a last chunk of its own, with the `fusion` object.
    with_usage = list(client.chat.completions.create(
        model="quorate/fusion", messages=ask("loop"), stream=True, stream_options={"include_usage": True},
        extra_body={"plugins": [FUSION]}))
    assert with_usage[-1].choices == [] and with_usage[-1].usage.total_tokens > 0
    assert with_usage[-1].model_extra["fusion"]["synthesizer"] == "sim/synth"


def test_fusion_failure_raises_with_its_reason(client):
    plugin = dict(FUSION, analysis_models=["sim/limited"])
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="quorate/fusion", messages=ask("x"), extra_body={"plugins": [plugin]})
    assert caught.value.status_code == 502
    assert caught.value.body["metadata"]["failure_reason"] == "rate_limited"


def _kept(client, run_id):
    """The run once the store's writer has written it (batches go out within milliseconds)."""
    for _ in range(200):
        try:
            return client.get(f"/runs/{run_id}", cast_to=object)
        except openai.NotFoundError:
            time.sleep(0.025)
    pytest.fail(f"run {run_id} never reached the store")


def test_a_failed_fusion_is_not_retried_by_the_sdk(base_url):
    # The SDK's default: two retries of a 502. Each would run the whole panel again.
    retrying = openai.OpenAI(base_url=base_url, api_key=GATEWAY_KEY)
    plugin = dict(FUSION, analysis_models=["sim/broken", "sim/broken"])
    with pytest.raises(openai.InternalServerError) as caught:
        retrying.chat.completions.with_raw_response.create(
            model="quorate/fusion", messages=ask("x"), extra_body={"plugins": [plugin]})
    headers = caught.value.response.headers
    assert headers["x-should-retry"] == "false"
    kept = _kept(retrying, headers["x-quorate-run-id"])
    assert kept["status"] == 502 and kept["error_kind"] == "all_panels_failed"
    page = retrying.get("/runs", cast_to=object, options={"params": {"model": "quorate/fusion", "status": 502}})
    failed = [r for r in page["data"] if r["error_kind"] == "all_panels_failed"]
    assert len(failed) == 1, "the SDK sent the failed run once"


def test_fusion_tool_through_the_sdk(client):
    tool = {"type": "quorate:fusion", "parameters": {"analysis_models": ["sim/echo"], "model": "sim/judge"}}
    r = client.chat.completions.create(model="sim/outer", messages=ask("Why fuse?"), tools=[tool])
    assert r.choices[0].message.content == "Answered with the panel."
    assert r.model_extra["fusion"]["analysis"]["consensus"] == ["the panel agrees"]
    assert r.model_extra["fusion"]["synthesizer"] == "sim/outer"


def test_server_research_tool_through_the_sdk(client):
    r = client.chat.completions.create(
        model="sim/researcher", messages=ask("What is in the metadata?"), tools=[{"type": "openrouter:web_fetch"}]
    )
    assert r.choices[0].message.content == "Per https://made.up/x it is so."
    research = r.model_extra["research"]
    assert research["tool_calls"] == 1
    assert research["sources"] == [], "the refused fetch retrieved nothing"
    assert research["unverified_citations"] == ["https://made.up/x"]
    assert r.usage.total_tokens > 0
