use super::*;

const CONTRACT: &str = r#"
[server]
listen = "127.0.0.1:8787"
api_keys_env = "QUORATE_API_KEYS"

[providers.openrouter]
kind = "openai"
base_url = "https://openrouter.ai/api/v1"
api_key_env = "OPENROUTER_API_KEY"
timeout_s = 120
max_retries = 2

[models."openrouter/deepseek-v4-pro"]
provider = "openrouter"
upstream = "deepseek/deepseek-v4-pro"
context_length = 128000
input_usd_per_mtok = 0.5
output_usd_per_mtok = 1.5
fallbacks = ["openrouter/kimi-k2.6"]

[models."openrouter/kimi-k2.6"]
provider = "openrouter"
input_usd_per_mtok = "0.15"
"#;

fn invalid(text: &str) -> (String, String) {
    match Config::from_toml(text, "test.toml") {
        Err(ConfigError::Invalid { key, message, .. }) => (key, message),
        other => panic!("expected an invalid config, got {other:?}"),
    }
}

#[test]
fn contract_example_parses() {
    let c = Config::from_toml(CONTRACT, "test.toml").unwrap();
    assert_eq!(c.server.api_keys_env.as_deref(), Some("QUORATE_API_KEYS"));
    let m = c.resolve("openrouter/deepseek-v4-pro").unwrap();
    assert_eq!(m.upstream, "deepseek/deepseek-v4-pro");
    assert_eq!(m.input_usd_per_mtok, Some(Decimal::new(5, 1)));
    let k = c.resolve("openrouter/kimi-k2.6").unwrap();
    assert_eq!(k.upstream, "kimi-k2.6");
    assert_eq!(k.input_usd_per_mtok, Some(Decimal::new(15, 2)));
}

#[test]
fn float_prices_stay_exact() {
    let c = Config::from_toml(
        "[models.\"openai/x\"]\nprovider = \"openai\"\ninput_usd_per_mtok = 0.1\n",
        "t",
    )
    .unwrap();
    assert_eq!(
        c.models["openai/x"].input_usd_per_mtok,
        Some(Price(Decimal::new(1, 1)))
    );
}

#[test]
fn unknown_key_is_named_with_its_path() {
    let (key, message) =
        invalid("[providers.x]\nkind = \"openai\"\nbase_url = \"http://h\"\ntimeout = 3\n");
    assert_eq!(key, "providers.x.timeout");
    assert!(message.contains("unknown field `timeout`"), "{message}");
}

#[test]
fn wrong_type_is_named_with_its_path() {
    let (key, _) = invalid(
        "[providers.x]\nkind = \"openai\"\nbase_url = \"http://h\"\nmax_retries = \"two\"\n",
    );
    assert_eq!(key, "providers.x.max_retries");
    let (key, message) = invalid("[providers.x]\nkind = \"grpc\"\nbase_url = \"http://h\"\n");
    assert_eq!(key, "providers.x.kind");
    assert!(message.contains("grpc"), "{message}");
}

#[test]
fn dangling_references_are_errors() {
    let (key, message) = invalid("[models.m]\nprovider = \"nope\"\nupstream = \"u\"\n");
    assert_eq!(key, "models.\"m\".provider");
    assert!(
        message.contains("openrouter"),
        "lists configured providers: {message}"
    );
    let (key, _) =
        invalid("[models.m]\nprovider = \"openai\"\nupstream = \"u\"\nfallbacks = [\"ghost\"]\n");
    assert_eq!(key, "models.\"m\".fallbacks[0]");
}

#[test]
fn bad_values_are_errors() {
    assert_eq!(
        invalid("[server]\nlisten = \"nowhere\"\n").0,
        "server.listen"
    );
    assert_eq!(
        invalid("[providers.x]\nkind = \"openai\"\nbase_url = \"ftp://h\"\n").0,
        "providers.x.base_url"
    );
    assert_eq!(
        invalid("[models.m]\nprovider = \"openai\"\ninput_usd_per_mtok = -1\nupstream = \"u\"\n").0,
        "models.m.input_usd_per_mtok"
    );
    assert_eq!(
        invalid("[models.m]\nprovider = \"openai\"\n").0,
        "models.\"m\".upstream"
    );
    assert_eq!(invalid("[store]\nurl = \"mysql://h/db\"\n").0, "store.url");
    assert_eq!(invalid("[store]\nqueue = 0\n").0, "store.queue");
    assert_eq!(
        invalid("[telemetry]\notlp_endpoint = \"https://collector/v1/traces\"\n").0,
        "telemetry.otlp_endpoint"
    );
}

#[test]
fn pass_through_routing_needs_a_known_provider() {
    let c = Config::builtin();
    let m = c.resolve("openrouter/anthropic/claude-opus").unwrap();
    assert_eq!(m.provider, "openrouter");
    assert_eq!(m.upstream, "anthropic/claude-opus");
    assert!(c.resolve("nosuch/model").is_none());
    assert!(c.resolve("plain-model").is_none());
    assert!(c.resolve("openai/").is_none());
    for id in [
        "openrouter/anthropic/claude-opus",
        "local/qwen2.5-coder-0.5b",
        "nosuch/model",
        "plain-model",
        "openai/",
    ] {
        let resolved = c.resolve(id).map(|m| m.provider);
        assert_eq!(c.provider_of(id), resolved.as_deref(), "{id}");
    }
}

#[test]
fn file_providers_override_builtins_by_name() {
    let c = Config::from_toml(
        "[providers.openai]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9\"\n",
        "t",
    )
    .unwrap();
    assert_eq!(
        c.providers["openai"].base_url.as_deref(),
        Some("http://127.0.0.1:9")
    );
    assert!(c.providers["openai"].api_key_env.is_none());
    assert!(c.providers.contains_key("anthropic"));
}

#[test]
fn local_models_need_a_gguf_and_only_they_take_one() {
    let (key, _) = invalid("[models.\"local/x\"]\nprovider = \"local\"\n");
    assert_eq!(key, "models.\"local/x\".gguf");
    let (key, _) = invalid("[models.\"openai/x\"]\nprovider = \"openai\"\ngguf = \"m.gguf\"\n");
    assert_eq!(key, "models.\"openai/x\".gguf");
    let (key, _) = invalid("[providers.local]\nkind = \"local\"\nbase_url = \"http://h\"\n");
    assert_eq!(key, "providers.local.base_url");
    let (key, _) = invalid("[providers.x]\nkind = \"openai\"\n");
    assert_eq!(key, "providers.x.base_url");
    let (key, _) = invalid("default_model = \"ghost\"\n");
    assert_eq!(key, "default_model");
}

#[test]
fn fusion_on_the_embedded_model_is_the_default() {
    let c = Config::builtin();
    assert_eq!(c.default_model(), "quorate/fusion");
    let local = &c.presets["local"];
    assert!(local.panel.iter().all(|m| m == "local/qwen2.5-coder-1.5b"));
    let m = c.resolve("local/qwen2.5-coder-1.5b").unwrap();
    assert_eq!(
        (m.provider.as_str(), m.gguf.as_deref()),
        ("local", Some("qwen2.5-coder-1.5b"))
    );
}

#[test]
fn the_known_qwen_coder_models_are_configured_local_models() {
    let c = Config::builtin();
    for size in ["0.5b", "1.5b"] {
        let m = c.resolve(&format!("local/qwen2.5-coder-{size}")).unwrap();
        assert_eq!(m.provider, "local");
        assert_eq!(m.gguf, Some(format!("qwen2.5-coder-{size}")));
        assert_eq!(m.context_length, Some(8192), "all sequences' cache, shared");
        assert!(m.supports_tools, "Qwen2.5's chat template renders tools");
    }
    assert_eq!(crate::defaults::LOCAL_MODEL, "local/qwen2.5-coder-1.5b");
}

#[test]
fn readme_config_examples_are_valid() {
    let readme = include_str!("../../../README.md");
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert!(blocks.len() >= 2, "the README shows config examples");
    for block in blocks {
        if let Err(e) = Config::from_toml(block, "README.md") {
            panic!("README example does not load: {e}\n{block}");
        }
    }
}

#[test]
fn server_limits_have_safe_defaults_and_are_checked() {
    let server = Config::builtin().server;
    assert_eq!(
        (
            server.header_timeout_s,
            server.body_timeout_s,
            server.idle_timeout_s
        ),
        (10.0, 30.0, 60.0)
    );
    assert_eq!(
        (server.max_connections, server.max_header_bytes),
        (4096, 32768)
    );
    let c =
        Config::from_toml("[server]\nmax_connections = 8\nbody_timeout_s = 1.5\n", "t").unwrap();
    assert_eq!(
        (c.server.max_connections, c.server.body_timeout_s),
        (8, 1.5)
    );
    for (line, key) in [
        ("header_timeout_s = 0", "server.header_timeout_s"),
        ("idle_timeout_s = -1", "server.idle_timeout_s"),
        ("max_connections = 0", "server.max_connections"),
        ("max_header_bytes = 100", "server.max_header_bytes"),
        ("upstream_idle_s = 0", "server.upstream_idle_s"),
        (
            "upstream_idle_per_host = 200000",
            "server.upstream_idle_per_host",
        ),
        ("body_timeout = 3", "server.body_timeout"),
        ("cors_origins = [\"app.example\"]", "server.cors_origins[0]"),
        (
            "cors_origins = [\"https://a.example/x\"]",
            "server.cors_origins[0]",
        ),
        (
            "cors_origins = [\"*\", \"https://a.example\"]",
            "server.cors_origins",
        ),
    ] {
        assert_eq!(invalid(&format!("[server]\n{line}\n")).0, key, "{line}");
    }
}
