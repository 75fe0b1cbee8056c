"""The official `openai` Python SDK's Responses API (`client.responses.create`) against
`quorate serve`'s `POST /v1/responses`, in front of quorate-sim: plain and streamed, function
tools both ways, structured output, `previous_response_id` from the run store, fusion, errors.
The gateway and its scripts are test_openai_sdk.py's."""

import json

import openai
import pytest

from test_openai_sdk import FUSION, SCRIPTS, client, base_url  # noqa: F401  (fixtures)

WEATHER = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
CALL = {"sim": {"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}}


def test_a_response_with_usage(client):  # noqa: F811
    r = client.responses.create(model="sim/echo", input="hello there")
    assert r.object == "response" and r.status == "completed"
    assert r.output_text == "echo: hello there"
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (2, 3, 5)
    assert r.id.startswith("gen-")


def test_a_streamed_response_arrives_as_events(client):  # noqa: F811
    events = list(client.responses.create(model="sim/echo", input="stream me please",
                                          instructions="be brief", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds and "response.output_text.done" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: stream me please"
    done = events[-1].response
    assert done.output_text == text and done.usage.output_tokens == 4
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_function_calls_round_trip(client):  # noqa: F811
    r = client.responses.create(model="sim/echo", input="weather in Oslo?", tools=WEATHER, extra_body=CALL)
    call = next(item for item in r.output if item.type == "function_call")
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Oslo"})

    follow_up = client.responses.create(model="sim/echo", tools=WEATHER, input=[
        {"role": "user", "content": "weather in Oslo?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "rain"},
        {"role": "user", "content": [{"type": "input_text", "text": "and tomorrow?"}]},
    ])
    assert follow_up.output_text == "echo: and tomorrow?"

    events = list(client.responses.create(model="sim/echo", input="weather?", tools=WEATHER, stream=True,
                                          extra_body=CALL))
    arguments = next(e.arguments for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(arguments) == {"city": "Oslo"}
    assert events[-1].response.output[-1].type == "function_call"


def test_previous_response_id_continues_from_the_run_store(client):  # noqa: F811
    first = client.responses.create(model="sim/echo", input="my name is Ada")
    second = client.responses.create(model="sim/echo", input="what is my name?", previous_response_id=first.id,
                                     extra_body={"sim": {"reply": "ok"}})
    assert second.output_text == "ok"
    kept = client.get(f"/runs/{second.id}", cast_to=object)
    assert kept["surface"] == "responses"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="sim/echo", input="x", previous_response_id="gen-nothing")
    assert "previous_response_id" in e.value.message


def test_structured_output_and_errors(client):  # noqa: F811
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    r = client.responses.create(model="sim/echo", input="json please",
                                text={"format": {"type": "json_schema", "name": "answer", "schema": schema}},
                                extra_body={"sim": {"json": {"a": "b"}}})
    assert json.loads(r.output_text) == {"a": "b"}
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope/missing", input="x")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="sim/echo", input=[{"type": "reasoning", "summary": []}])
    assert "input[0].type" in e.value.message


def test_a_stream_failing_midway_ends_with_response_failed(client):  # noqa: F811
    events = list(client.responses.create(model="sim/echo", input="x", stream=True,
                                          extra_body={"sim": SCRIPTS["midway"]}))
    assert events[-1].type == "response.failed"
    error = events[-1].response.error
    assert error.code == "upstream_error" and "mid-stream" in error.message


def test_fusion_through_the_responses_api(client):  # noqa: F811
    r = client.responses.create(model="quorate/fusion", input="Why fuse?", extra_body={"plugins": [FUSION]})
    assert r.output_text == "One fused answer."
    assert r.model_extra["fusion"]["judge"] == "sim/judge"
    events = list(client.responses.create(model="quorate/fusion", input="Why fuse?", stream=True,
                                          extra_body={"plugins": [FUSION]}))
    assert events[-1].response.output_text == "One fused answer."
    assert events[-1].response.model_extra["fusion"]["synthesizer"] == "sim/synth"
