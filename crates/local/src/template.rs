//! The GGUF's own chat template (`tokenizer.chat_template`, Jinja), rendered with minijinja.
//! llama.cpp's built-in template matching would drop parts of some templates (SmolLM2's default
//! system prompt among them), so the template text itself is the authority.

use llama_cpp_2::model::LlamaModel;
use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use quorate_api::{Message, Role};
use quorate_providers::Error;
use serde::Serialize;
use serde_json::{json, Value};

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    tools: bool,
}

/// A message as Hugging Face chat templates read it: tool call arguments as objects, not text.
#[derive(Serialize)]
struct TemplateMessage {
    role: &'static str,
    content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

impl TemplateMessage {
    fn from(m: &Message) -> Self {
        let tool_calls = m
            .tool_calls
            .iter()
            .flatten()
            .map(|call| {
                let arguments = serde_json::from_str::<Value>(&call.function.arguments)
                    .unwrap_or_else(|_| Value::String(call.function.arguments.clone()));
                json!({"id": call.id, "type": "function",
                    "function": {"name": call.function.name, "arguments": arguments}})
            })
            .collect();
        Self {
            role: role_name(m.role),
            content: m.text(),
            tool_calls,
            tool_call_id: m.tool_call_id.clone(),
            name: m.name.clone(),
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System | Role::Developer => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool | Role::Function => "tool",
    }
}

fn raise_exception(message: String) -> Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    pub fn from_model(model: &LlamaModel) -> Result<Self, Error> {
        let source = model.meta_val_str("tokenizer.chat_template").map_err(|e| {
            Error::Unavailable(format!("the GGUF has no tokenizer.chat_template: {e}"))
        })?;
        let vocab = model.vocab();
        let text = |t| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
        Self::new(&source, text(vocab.bos()), text(vocab.eos()))
    }

    pub fn new(source: &str, bos: String, eos: String) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| {
                Error::Unavailable(format!("the model's chat template does not parse: {e}"))
            })?;
        let mut template = Self {
            env,
            bos,
            eos,
            tools: false,
        };
        template.tools = template.renders_tools();
        Ok(template)
    }

    /// Whether the template shows the model the tools it is given (rendering with a tool
    /// differs from rendering without).
    fn renders_tools(&self) -> bool {
        let probe = [Message::new(Role::User, "Hi")];
        let tool = [
            json!({"type": "function", "function": {"name": "probe_tool_name",
            "description": "", "parameters": {"type": "object", "properties": {}}}}),
        ];
        match self.render(&probe, Some(&tool)) {
            Ok(with) => with.contains("probe_tool_name"),
            Err(_) => false,
        }
    }

    pub fn supports_tools(&self) -> bool {
        self.tools
    }

    /// The conversation laid out for the model, ending with the assistant's turn opened.
    pub fn render(&self, messages: &[Message], tools: Option<&[Value]>) -> Result<String, Error> {
        let messages: Vec<TemplateMessage> = messages.iter().map(TemplateMessage::from).collect();
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Unavailable(format!("chat template: {e}")))?;
        template
            .render(context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => true,
                bos_token => self.bos,
                eos_token => self.eos,
            })
            .map_err(|e| {
                Error::BadRequest(format!(
                    "messages: the model's chat template refused them: {e}"
                ))
            })
    }

    pub fn starts_with_bos(&self, text: &str) -> bool {
        !self.bos.is_empty() && text.starts_with(&self.bos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template as shipped in its GGUF.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_default_system_prompt_and_generation_prompt() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>".into(), "<|im_end|>".into()).unwrap();
        let out = t.render(&[Message::new(Role::User, "Hi")], None).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t
            .render(
                &[
                    Message::new(Role::Developer, "Be terse."),
                    Message::new(Role::User, "Hi"),
                ],
                None,
            )
            .unwrap();
        assert!(out.starts_with("<|im_start|>system\nBe terse.<|im_end|>"));
    }

    /// Qwen2.5-Coder-Instruct's template as shipped in its GGUF: it renders tools and calls.
    const QWEN: &str = include_str!("../tests/data/qwen2.5-chat-template.jinja");

    #[test]
    fn tools_and_calls_reach_a_template_that_renders_them() {
        let smol = ChatTemplate::new(SMOLLM2, String::new(), String::new()).unwrap();
        assert!(!smol.supports_tools());
        let qwen = ChatTemplate::new(QWEN, String::new(), String::new()).unwrap();
        assert!(qwen.supports_tools());
        let tools = [
            json!({"type": "function", "function": {"name": "web_search",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}),
        ];
        let mut call: Message =
            serde_json::from_value(json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "web_search", "arguments": "{\"query\": \"rivers\"}"}}]}))
            .unwrap();
        call.content = None;
        let result: Message = serde_json::from_value(
            json!({"role": "tool", "tool_call_id": "c1", "content": "Danube: 2850 km"}),
        )
        .unwrap();
        let out = qwen
            .render(
                &[Message::new(Role::User, "Longest river?"), call, result],
                Some(&tools),
            )
            .unwrap();
        assert!(out.contains("<tools>\n{\"function\":"), "{out}");
        assert!(
            out.contains(
                "<tool_call>\n{\"name\": \"web_search\", \"arguments\": {\"query\":\"rivers\"}}"
            ),
            "arguments are an object, not a string: {out}"
        );
        assert!(out.contains("<tool_response>\nDanube: 2850 km\n</tool_response>"));
        assert!(out.ends_with("<|im_start|>assistant\n"));
    }

    #[test]
    fn python_methods_and_raise_exception_work() {
        let t = ChatTemplate::new(
            "{% if messages[0].content.strip() == '' %}{{ raise_exception('empty') }}{% endif %}{{ messages[0].content.upper() }}",
            String::new(),
            String::new(),
        )
        .unwrap();
        assert_eq!(
            t.render(&[Message::new(Role::User, " hi ")], None).unwrap(),
            " HI "
        );
        let e = t
            .render(&[Message::new(Role::User, " ")], None)
            .unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("empty"));
    }
}
