//! `quorate ask`: one question through the same router the server uses, streamed to stdout.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use quorate_api::{ChatRequest, Message, Role};
use quorate_config::Config;

#[derive(Args)]
pub struct AskArgs {
    /// The question.
    prompt: String,
    /// Model id (a configured model, or provider/upstream-name); default: the config's
    /// `default_model`, else the embedded local model.
    #[arg(long, short, env = "QUORATE_MODEL")]
    model: Option<String>,
    /// A system prompt.
    #[arg(long)]
    system: Option<String>,
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Print usage and cost to stderr after the answer.
    #[arg(long)]
    usage: bool,
}

pub async fn run(config: Config, args: AskArgs) -> anyhow::Result<()> {
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| config.default_model().to_string());
    // A local model may need fetching first: do it here, with a progress display.
    if let Some(gguf) = config.resolve(&model).and_then(|m| m.gguf) {
        crate::pull::fetch(&gguf).await?;
    }
    let router = crate::router(config)?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::new(Role::System, system.clone()));
    }
    messages.push(Message::new(Role::User, args.prompt.clone()));
    let request = ChatRequest {
        model: model.clone(),
        messages,
        stream: Some(true),
        models: None,
        temperature: args.temperature,
        top_p: None,
        max_tokens: args.max_tokens,
        max_completion_tokens: None,
        stop: None,
        tools: None,
        tool_choice: None,
        extra: Default::default(),
    };
    request.validate().map_err(anyhow::Error::msg)?;
    eprintln!("asking {model} …");
    let mut stream = router.stream(request).await?;
    let mut stdout = std::io::stdout().lock();
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        for choice in &chunk.choices {
            if let Some(text) = &choice.delta.content {
                stdout
                    .write_all(text.as_bytes())
                    .context("writing the answer")?;
                stdout.flush().context("writing the answer")?;
            }
        }
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
    }
    writeln!(stdout).context("writing the answer")?;
    if let (true, Some(u)) = (args.usage, usage) {
        eprintln!(
            "usage: {} prompt + {} completion tokens, cost ${}",
            u.prompt_tokens,
            u.completion_tokens,
            u.cost.unwrap_or_default()
        );
    }
    Ok(())
}
