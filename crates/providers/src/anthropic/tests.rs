use super::*;

fn request(v: Value) -> ModelRequest {
    serde_json::from_value::<quorate_api::ChatRequest>(v)
        .unwrap()
        .into()
}

/// The body as it goes on the wire.
fn wire(req: &ModelRequest, stream: bool) -> Result<Value, Error> {
    to_messages_request(req, stream).map(|body| serde_json::to_value(body).unwrap())
}

#[test]
fn request_maps_system_tools_and_tool_results() {
    let req = request(json!({
        "model": "claude",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "get", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "t2", "type": "function", "function": {"name": "get", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "cold"},
            {"role": "tool", "tool_call_id": "t2", "content": "warm"}
        ],
        "tools": [{"type": "function", "function": {"name": "get", "description": "d", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "temperature": 1.7,
        "stop": "END",
        "seed": 1,
        "top_k": 5
    }));
    let body = wire(&req, true).unwrap();
    assert_eq!(body["system"], "be brief");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["temperature"], 1.0);
    assert_eq!(body["stop_sequences"], json!(["END"]));
    assert_eq!(body["tool_choice"], json!({"type": "any"}));
    assert_eq!(
        body["tools"][0],
        json!({"name": "get", "description": "d", "input_schema": {"type": "object"}})
    );
    assert_eq!(body["top_k"], 5, "Anthropic extras pass through");
    assert!(body.get("seed").is_none(), "OpenAI-only fields are dropped");
    assert_eq!(body["stream"], true);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
    );
    assert_eq!(messages[1]["content"][0]["input"], json!({"city": "Oslo"}));
    assert_eq!(messages[2]["role"], "user");
    let results: Vec<&str> = messages[2]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["tool_use_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        ["t1", "t2"],
        "tool results of one turn share one user message"
    );
}

#[test]
fn bad_tool_arguments_name_the_field() {
    let req = request(json!({"model": "c", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}
    ]}));
    let e = wire(&req, false).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("messages[1].tool_calls[0].function.arguments"),
        "{e}"
    );
}

#[test]
fn response_maps_tool_use_stop_reason_and_usage() {
    let c = from_message(serde_json::from_value(json!({
        "id": "msg_1", "model": "claude-x", "stop_reason": "tool_use",
        "content": [{"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "tu_1", "name": "get", "input": {"city": "Oslo"}}],
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7}
    }))
    .unwrap());
    let choice = &c.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(choice.message.text(), "Let me check.");
    let call = &choice.message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(
        (call.id.as_str(), call.function.name.as_str()),
        ("tu_1", "get")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&call.function.arguments).unwrap(),
        json!({"city": "Oslo"})
    );
    let u = c.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (15, 7, 22)
    );
    assert_eq!(finish_reason(StopReason::MaxTokens), "length");
    assert_eq!(finish_reason(StopReason::EndTurn), "stop");
}

#[test]
fn stream_events_become_chunks() {
    let events = [
        json!({"type": "message_start", "message": {"id": "m1", "model": "claude-x", "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "tu", "name": "f", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    ];
    let mut state = StreamState::default();
    let mut chunks = Vec::new();
    let mut done = false;
    for e in &events {
        match state
            .on_event(serde_json::from_value(e.clone()).unwrap())
            .unwrap()
        {
            Step::Emit(c) => chunks.push(c),
            Step::Skip => {}
            Step::Done(c) => {
                chunks.push(c);
                done = true;
            }
        }
    }
    assert!(done);
    let text: String = chunks
        .iter()
        .filter_map(|c| c.choices.first()?.delta.content.clone())
        .collect();
    assert_eq!(text, "Hi");
    let args: String = chunks
        .iter()
        .filter_map(|c| {
            c.choices
                .first()?
                .delta
                .tool_calls
                .as_ref()?
                .first()?
                .function
                .as_ref()?
                .arguments
                .clone()
        })
        .collect();
    assert_eq!(args, "{\"a\":1}");
    let finish: Vec<_> = chunks
        .iter()
        .filter_map(|c| c.choices.first()?.finish_reason.clone())
        .collect();
    assert_eq!(finish, ["tool_calls"]);
    let usage = chunks.last().unwrap().usage.clone().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (12, 9));
}

#[test]
fn stream_error_event_maps_status() {
    let mut state = StreamState::default();
    let e = state
        .on_event(
            serde_json::from_value(json!({"type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"}}))
            .unwrap(),
        )
        .err()
        .unwrap();
    assert!(e.is_retryable());
    assert!(e.to_string().contains("Overloaded"));
}
