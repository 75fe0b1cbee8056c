//! The GGUF's own chat template (`tokenizer.chat_template`, Jinja), rendered with minijinja.
//! llama.cpp's built-in template matching would drop parts of some templates (SmolLM2's default
//! system prompt among them), so the template text itself is the authority.

use llama_cpp_2::model::LlamaModel;
use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use quorate_api::{Message, Role};
use quorate_providers::Error;
use serde::Serialize;

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

#[derive(Serialize)]
struct TemplateMessage {
    role: &'static str,
    content: String,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System | Role::Developer => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
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
        Ok(Self { env, bos, eos })
    }

    pub fn render(&self, messages: &[Message]) -> Result<String, Error> {
        let messages: Vec<TemplateMessage> = messages
            .iter()
            .map(|m| TemplateMessage {
                role: role_name(m.role),
                content: m.text(),
            })
            .collect();
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Unavailable(format!("chat template: {e}")))?;
        template
            .render(context! {
                messages => messages,
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
        let out = t.render(&[Message::new(Role::User, "Hi")]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t
            .render(&[
                Message::new(Role::Developer, "Be terse."),
                Message::new(Role::User, "Hi"),
            ])
            .unwrap();
        assert!(out.starts_with("<|im_start|>system\nBe terse.<|im_end|>"));
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
            t.render(&[Message::new(Role::User, " hi ")]).unwrap(),
            " HI "
        );
        let e = t.render(&[Message::new(Role::User, " ")]).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("empty"));
    }
}
