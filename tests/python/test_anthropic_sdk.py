"""The official `anthropic` Python SDK as a black-box client of `quorate serve`'s Messages surface
(`POST /v1/messages`), in front of quorate-sim: any configured model and fusion, answered in
Anthropic's shapes. The gateway and its scripts are test_openai_sdk.py's."""

import anthropic
import pytest

from test_openai_sdk import FUSION, GATEWAY_KEY, base_url  # noqa: F401  (a fixture)

WEATHER = [{"name": "get_weather", "description": "The weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.fixture()
def client(base_url):  # noqa: F811
    # The SDK sends the key as x-api-key; no retries, so each test sees what the gateway answered.
    return anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key=GATEWAY_KEY, max_retries=0)


def ask(text):
    return [{"role": "user", "content": text}]


def test_a_message_with_usage_and_cost(client):
    r = client.messages.create(model="sim/echo", max_tokens=50, messages=ask("hello there"))
    assert r.type == "message" and r.role == "assistant"
    assert [b.type for b in r.content] == ["text"]
    assert r.content[0].text == "echo: hello there"
    assert r.stop_reason == "end_turn"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (2, 3)
    assert r.usage.model_extra["cost"] == pytest.approx(0.000008)
    assert r.id.startswith("gen-")


def test_a_streamed_message_arrives_as_anthropic_events(client):
    with client.messages.stream(model="sim/echo", max_tokens=50, system="be brief",
                                messages=ask("stream me please")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream me please"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4


def test_tool_use_round_trips(client):
    r = client.messages.create(model="sim/echo", max_tokens=50, tools=WEATHER, messages=ask("weather in Oslo?"),
                               extra_body={"sim": {"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}})
    assert r.stop_reason == "tool_use"
    call = next(b for b in r.content if b.type == "tool_use")
    assert (call.name, call.input) == ("get_weather", {"city": "Oslo"})

    # The result goes back as a tool_result block, and the model answers.
    follow_up = client.messages.create(model="sim/echo", max_tokens=50, tools=WEATHER, messages=[
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "rain"},
                                     {"type": "text", "text": "and tomorrow?"}]},
    ])
    assert follow_up.content[0].text == "echo: and tomorrow?"

    with client.messages.stream(model="sim/echo", max_tokens=50, tools=WEATHER, messages=ask("weather?"),
                                extra_body={"sim": {"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}}
                                ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[-1].input == {"city": "Oslo"}


def test_errors_are_anthropic_errors(client, base_url):  # noqa: F811
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="nope/missing", max_tokens=5, messages=ask("x"))
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="sim/echo", max_tokens=5, messages=ask("x"), extra_body={"temperature": 5})
    assert "temperature" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="sim/echo", max_tokens=5, messages=[
            {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]}])
    assert e.value.body["error"]["message"].startswith("messages[0].content[0]")
    wrong = anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        wrong.messages.create(model="sim/echo", max_tokens=5, messages=ask("x"))
    assert e.value.body["error"]["type"] == "authentication_error"


def test_count_tokens_on_a_local_model_and_a_clear_refusal_elsewhere(client):
    short = client.messages.count_tokens(model="local/smollm2-135m", messages=ask("Paris?"))
    longer = client.messages.count_tokens(model="local/smollm2-135m",
                                          messages=ask("Which city is the capital of France?"))
    assert 0 < short.input_tokens < longer.input_tokens
    # The sim speaks OpenAI's API, which has no count.
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.count_tokens(model="sim/echo", messages=ask("x"))
    assert "cannot count tokens" in e.value.body["error"]["message"]


def test_fusion_through_the_messages_api(client):
    r = client.messages.create(model="quorate/fusion", max_tokens=200, messages=ask("Why fuse?"),
                               extra_body={"plugins": [FUSION]})
    assert r.content[0].text == "One fused answer."
    assert r.model_extra["fusion"]["judge"] == "sim/judge"
    assert r.usage.input_tokens > 0

    with client.messages.stream(model="quorate/fusion", max_tokens=200, messages=ask("Why fuse?"),
                                extra_body={"plugins": [FUSION]}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "One fused answer."
    assert final.usage.output_tokens > 0

    failing = dict(FUSION, analysis_models=["sim/broken", "sim/broken"])
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(model="quorate/fusion", max_tokens=50, messages=ask("x"),
                               extra_body={"plugins": [failing]})
    assert e.value.status_code == 502
    assert e.value.response.headers["x-should-retry"] == "false"
