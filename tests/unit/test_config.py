"""The config loader: Plano's forms, interpolation, and one clear message per mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Config, ConfigError, load_config, parse_config, render_config

ENV = {"OPENAI_API_KEY": "sk-openai-1234567890", "ANTHROPIC_API_KEY": "sk-ant-0987654321"}
# Our own Plano-format files (tests/fixtures/plano), and Plano's real ones when a checkout of the
# team's shared folder happens to sit beside the repository (never required).
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plano"
PLANO_DIR = Path(__file__).resolve().parents[3] / "shared" / "plano-configs"
PLANO_ENV = {name: f"sk-test-{name.split('_')[0].lower()}-0123456789" for name in (
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MISTRAL_API_KEY", "DEEPSEEK_API_KEY", "GROQ_API_KEY",
    "GEMINI_API_KEY", "GROK_API_KEY", "TOGETHER_API_KEY")}

# Modelled on Plano's model-affinity demo (v0.3.0, inline preferences, a tracing block).
AFFINITY_DEMO = """
version: v0.3.0
listeners:
  - type: model
    name: model_listener
    port: 12000
model_providers:
  - model: openai/gpt-4o-mini
    access_key: $OPENAI_API_KEY
    default: true
  - model: openai/gpt-4o
    access_key: $OPENAI_API_KEY
    routing_preferences:
      - name: complex_reasoning
        description: complex reasoning tasks, multi-step analysis, or detailed explanations
  - model: anthropic/claude-sonnet-4-20250514
    access_key: ${ANTHROPIC_API_KEY}
    routing_preferences:
      - name: code_generation
        description: generating new code, writing functions, or creating boilerplate
tracing:
  random_sampling: 100
"""


def load(text: str, env: dict[str, str] | None = None) -> Any:
    return parse_config(yaml.safe_load(text), ENV if env is None else env)


def test_plano_affinity_demo_loads() -> None:
    config = load(AFFINITY_DEMO)
    assert config.server.port == 12000
    assert config.default_model == "openai/gpt-4o-mini"
    assert [(p.name, p.models) for p in config.preferences] == [
        ("complex_reasoning", ("openai/gpt-4o",)),
        ("code_generation", ("anthropic/claude-sonnet-4-20250514",)),
    ]
    claude = config.resolve("claude-sonnet-4-20250514")
    assert claude is not None and claude.interface == "anthropic"
    assert claude.access_key == ENV["ANTHROPIC_API_KEY"]
    assert claude.api_base == "https://api.anthropic.com/v1"
    assert config.warnings == (  # Plano's sampling alone, with no collector: nothing to export to
        "tracing: no OTLP endpoint (tracing.otlp_endpoint, OTEL_EXPORTER_OTLP_ENDPOINT); tracing is off",)
    assert not config.tracing.enabled


def test_v040_top_level_preferences_merge_with_inline_ones() -> None:
    config = load("""
version: v0.4.0
model_providers:
  - {model: openai/gpt-4o, access_key: x, routing_preferences: [{name: code, description: write code}]}
  - {model: together_ai/openai/gpt-oss-20b, access_key: y}
  - {model: custom/test-model, base_url: "http://localhost:11223", provider_interface: openai}
  - {model: vllm/coder, base_url: "http://vllm:8000/v1/"}
routing_preferences:
  - name: code
    description: generating code
    examples: [write a parser]
    models: [together_ai/openai/gpt-oss-20b]
  - {name: code understanding, description: explain code, models: [custom/test-model, openai/gpt-4o]}
model_aliases:
  oss: {target: together_ai/openai/gpt-oss-20b}
""")
    code = config.preference("code")
    assert code.models == ("together_ai/openai/gpt-oss-20b", "openai/gpt-4o")
    assert code.description == "generating code" and code.examples == ("write a parser",)
    assert config.preference("code understanding").models == ("custom/test-model", "openai/gpt-4o")
    oss = config.resolve("oss")
    assert oss.provider == "together_ai" and oss.model_id == "openai/gpt-oss-20b"
    assert config.resolve("custom/test-model").api_base == "http://localhost:11223/v1"
    assert config.resolve("coder").api_base == "http://vllm:8000/v1"
    assert config.default_model == "openai/gpt-4o"  # no default: the first provider


def test_plano_features_outside_scope_warn_once_each() -> None:
    config = load("""
version: v0.3.0
listeners: [{type: model, name: l, port: 10000, max_retries: 3, timeout: 30s}]
overrides: {llm_routing_model: plano/arch-router, optimize_context_window: true}
model_providers:
  - {model: plano/arch-router, base_url: "http://localhost:11434"}
  - {model: openai/gpt-4o-mini, access_key: k, default: true}
system_prompt: hi
prompt_targets: [{name: x}]
endpoints: {api: {endpoint: "example:443"}}
routing: {routing_budget: {max_switch_spend_pct: 20}}
model_metrics_sources: [{type: cost}]
""")
    assert config.routing.router.type == "llm" and config.routing.router.model == "plano/arch-router"
    assert config.upstream.total_timeout_ms == 30_000
    assert len(config.warnings) == 7
    assert {w.split(":")[0] for w in config.warnings} == {
        "listeners[0].max_retries", "overrides.optimize_context_window", "system_prompt",
        "prompt_targets", "endpoints", "routing.routing_budget", "model_metrics_sources"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_providers: [{model: openai/gpt-4o, access_key: $NOPE_KEY}]",
         "model_providers[0].access_key: environment variable NOPE_KEY is not set"),
        ("model_providers: [{model: openai/gpt-4o, acess_key: x}]",
         "model_providers[0].acess_key: unknown key (did you mean 'access_key'?)"),
        ("model_providers: [{model: openai/gpt-4o}]\nroutng: {}",
         "routng: unknown key (did you mean 'routing'?)"),
        ("model_providers: [{model: openai/gpt-4o}]\nrouting: {session_ttl_seconds: ten}",
         "routing.session_ttl_seconds: expected an integer, got 'ten'"),
        ("model_providers: [{model: openai/gpt-4o}]\nrouting: {session_max_entries: 20000}",
         "routing.session_max_entries: must be at most 10000 with the memory store, got 20000"),
        ("model_providers: [{model: openai/gpt-4o}]\nrouting: {session_cache: {url: 'redis://r'},"
         " session_max_entries: 2000000}",
         "routing.session_max_entries: must be at most 1000000, got 2000000"),
        ("model_providers: [{model: openai/gpt-4o}]\n"
         "routing_preferences: [{name: a, description: b, models: [gpt-5]}]",
         "routing_preferences[0].models[0]: unknown model 'gpt-5'"),
        ("model_providers: [{model: gpt-4o}]", "model_providers[0].model: expected provider/model-id"),
        ("model_providers: [{model: custom/m}]", "model_providers[0].base_url: is required"),
        ("model_providers: [{model: openai/a, default: true}, {model: openai/b, default: true}]",
         "model_providers: more than one model has default: true"),
        ("model_providers: [{model: openai/a}]\nmodel_aliases: {x: {target: b}}",
         "model_aliases.x.target: unknown model 'b'"),
        ("model_providers: [{model: openai/a}]\nrouting: {router: {type: llm}}",
         "routing.router: the llm router needs a model"),
        ("model_providers: [{model: anthropic/a}]\nrouting: {router: {type: llm, model: anthropic/a}}",
         "routing.router: the llm router speaks the OpenAI API; 'anthropic/a' is an anthropic model"),
        ("listeners: [{type: model, port: 1}, {type: model, port: 2}]\nmodel_providers: [{model: openai/a}]",
         "listeners[1].type: one model listener is served, and listeners[0] is one"),
        ("model_providers: [{model: openai/a}]\noverrides: {llm_routing_model: nope}",
         "overrides.llm_routing_model: unknown router model 'nope'"),
        ("model_providers: [{model: openai/a}]\nrouting: {on_pinned_failure: retry}",
         "routing.on_pinned_failure: expected one of error, reroute, got 'retry'"),
        ("model_providers: [{model: openai/a, default: maybe}]",
         "model_providers[0].default: expected true or false, got 'maybe'"),
        ("model_providers: {model: openai/a}", "model_providers: expected a list"),
        ("version: v9\nmodel_providers: [{model: openai/a}]", "version: expected one of"),
        ("model_providers: []", "model_providers: at least one model provider is required"),
        ("model_providers: [{model: openai/a}]\nauth: {keys: [{key: k}], protect: [metrics, admin]}",
         "auth.protect[1]: expected one of metrics, models, openapi, got 'admin'"),
        ("model_providers: [{model: openai/a}]\nauth: {protect: [metrics]}",
         "auth.protect: needs auth.keys or auth.admin_keys"),
        ("model_providers: [{model: openai/a}]\nlimits: {header_timeout_seconds: 0}",
         "limits.header_timeout_seconds: must be between 0.1 and 3600"),
        ("model_providers: [{model: openai/a}]\nserver: {max_connections: 0}",
         "server.max_connections: must be between 1 and 1000000"),
        # accepted before, then every request to the model was a 500 (or a 404 upstream)
        ("model_providers: [{model: custom/a, base_url: 'http://h:99999/v1'}]",
         "model_providers[0].base_url: bad port in 'http://h:99999/v1'"),
        ("model_providers: [{model: custom/a, base_url: 'http://h:abc'}]",
         "model_providers[0].base_url: bad port in 'http://h:abc'"),
        ("model_providers: [{model: custom/a, base_url: 'http://h/v1?x=1'}]",
         "model_providers[0].base_url: expected the API root, with no ?query or #fragment"),
        ("model_providers: [{model: custom/a, base_url: 'http://my host/v1'}]",
         "model_providers[0].base_url: expected an http(s) URL"),
        ("model_providers: [{model: openai/a}, {model: 'anthropic/*', model_prefixes: ['']}]",
         "model_providers[1].model_prefixes: contains an empty prefix"),
        ("model_providers: [{model: openai/a}]\nauth: {keys: [{kee: k1}]}",
         "auth.keys[0].kee: unknown key (did you mean 'key'?)"),
        ("model_providers: [{model: openai/a}]\nauth: {keys: [{key: k1, tenant: a}, {key: k1, tenant: b}]}",
         "auth.keys[1].key: is the same key as auth.keys[0].key"),
        # names go back in response headers: a line break there left every such request unanswered
        ("model_providers: [{model: openai/a}]\n"
         "routing_preferences: [{name: \"multi\\nline\", description: b, models: [openai/a]}]",
         "routing_preferences[0].name: must be latin-1 text with no control character"),
        ("model_providers: [{model: \"openai/caf\\u00e9\\u2019\"}]",
         "model_providers[0].model: must be latin-1 text with no control character"),
    ],
)
def test_mistakes_name_the_key_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(text)
    assert str(caught.value).startswith(message), str(caught.value)


KEYED = """
model_providers: [{model: openai/a, access_key: $KEY}]
auth: {keys: [{key: $KEY, tenant: t}], admin_keys: [$KEY]}
"""


def test_an_empty_key_list_says_that_nothing_is_checked() -> None:
    assert "auth.keys: empty, so every request is served without a key" in load(
        "model_providers: [{model: openai/a}]\nauth: {keys: []}").warnings


def test_a_wildcard_that_says_it_is_not_the_default_loads() -> None:
    """`default: 'false'` (a string, as an env variable gives it) was read as true, and refused."""
    config = load("model_providers: [{model: openai/a}, {model: 'anthropic/*', default: 'false'}]")
    assert config.wildcards[0].model == "anthropic/*"


def test_inbound_limits_and_protected_endpoints_load() -> None:
    config = load(
        "model_providers: [{model: openai/a}]\n"
        "limits: {max_header_count: 50, header_timeout_seconds: 2.5, body_timeout_seconds: 30}\n"
        "server: {max_connections: 100}\n"
        "auth: {admin_keys: [adm-key], protect: [openapi, metrics, openapi]}"
    )
    limits = config.limits
    assert (limits.max_header_count, limits.header_timeout_seconds) == (50, 2.5)
    assert limits.body_timeout_seconds == 30
    assert config.server.max_connections == 100
    assert config.auth.protect == ("openapi", "metrics")
    defaults = load("model_providers: [{model: openai/a}]")
    assert (defaults.limits.max_header_bytes, defaults.limits.max_header_count) == (65536, 100)
    assert (defaults.server.max_connections, defaults.auth.protect) == (4096, ())


def test_keys_read_from_a_file_lose_their_newline() -> None:
    config = load(KEYED, {"KEY": "sk-from-a-file\n"})
    assert config.models["openai/a"].access_key == "sk-from-a-file"
    assert config.auth.keys[0].key == "sk-from-a-file"
    assert config.auth.admin_keys == ("sk-from-a-file",)


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        (KEYED, {"KEY": "sk-one\nsk-two"}, "model_providers[0].access_key: contains a line break"),
        (KEYED, {"KEY": "sk-caf\u00e9\u2019"},
         "model_providers[0].access_key: must be latin-1 text (it is sent in an HTTP header)"),
        ("model_providers: [{model: openai/a, access_key: [sk-verysecretkey123]}]", {},
         "model_providers[0].access_key: expected a string, got a list"),
        ("model_providers: [{model: openai/a}]\nauth: {keys: [{key: {k: sk-verysecretkey123}}]}", {},
         "auth.keys[0].key: expected a string, got a dict"),
        ("model_providers: [{model: openai/a}]\nauth: {admin_keys: sk-verysecretkey123}", {},
         "auth.admin_keys: expected a list, got a str"),
        ("model_providers: [{model: openai/a}]\nauth: {admin_keys: [$KEY]}", {"KEY": "a\rb"},
         "auth.admin_keys[0]: contains a line break"),
        ("model_providers: [{model: openai/a}]\nauth: {keys: [sk-verysecretkey123]}", {},
         "auth.keys[0]: expected a mapping, got a string"),
        ("model_providers: [{model: custom/a, base_url: 'https://u:sk-verysecretkey123@h/v1'}]", {},
         "model_providers[0].base_url: credentials in the URL are not sent; give the key as access_key"),
        ("model_providers: [{model: custom/a, base_url: 'ftp://u:sk-verysecretkey123@h/v1'}]", {},
         "model_providers[0].base_url: expected an http(s) URL, got 'ftp://***@h/v1'"),
        ("model_providers: [{model: openai/a}]\n"
         "routing: {session_cache: {url: 'rediss//:sk-verysecretkey123@h'}}", {},
         "routing.session_cache.url: expected a redis://, rediss://, redis+sentinel:// or unix:// URL"),
    ],
)
def test_a_bad_key_is_named_by_its_path_and_never_echoed(
    text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(text, env)
    assert str(caught.value) == message
    assert "secret" not in str(caught.value) and "sk-one" not in str(caught.value)


def test_interpolation_forms() -> None:
    config = load(
        "model_providers: [{model: openai/a, access_key: 'pre-${K}-$K', base_url: '${URL:-http://x:1}'}]\n"
        "routing: {session_cache: {url: '${REDIS_URL:-}'}}",
        {"K": "v"},
    )
    provider = config.providers[0]
    assert provider.access_key == "pre-v-v" and provider.api_base == "http://x:1/v1"
    assert config.routing.session_cache.type == "memory"


def test_render_masks_every_secret() -> None:
    config = load(
        AFFINITY_DEMO
        + "auth: {keys: [{key: gw-secret-key, tenant: a}], admin_keys: [adm-secret]}\n"
        + "routing: {session_cache: {url: 'redis://:redis-pass@with-an-at@r:6379/0'}}\n"
    )
    text = render_config(config)
    for secret in (*ENV.values(), "gw-secret-key", "adm-secret", "redis-pass", "with-an-at"):
        assert secret not in text
    assert "redis://:***@r:6379/0" in text
    assert yaml.safe_load(text)["routing"]["session_cache"]["type"] == "redis"


@pytest.mark.parametrize("form", ["${KEY:?set it}", "${KEY-x}", "${ KEY }", "pre-${KEY"])
def test_an_interpolation_form_that_is_not_supported_is_an_error_not_a_literal_key(form: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(f"model_providers: [{{model: openai/a, access_key: '{form}'}}]", {"KEY": "sk-1"})
    assert str(caught.value).startswith("model_providers[0].access_key: unsupported ${...} form")
    literal = load("model_providers: [{model: openai/a, access_key: 'a$${b}'}]")
    assert literal.providers[0].access_key == "a${b}"


def test_a_file_not_in_utf8_or_with_a_key_twice_is_one_error(tmp_path: Path) -> None:
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text("model_providers: [{model: openai/a}]\n", encoding="utf-16")
    with pytest.raises(ConfigError, match=r"not UTF-8 text .*save it as UTF-8"):
        load_config(utf16)
    twice = tmp_path / "twice.yaml"
    twice.write_text("model_providers: [{model: openai/a}]\nrouting: {session_ttl_seconds: 60}\n"
                     "routing: {on_pinned_failure: reroute}\n")
    with pytest.raises(ConfigError, match=r"key 'routing' appears twice in one mapping \(line 3\)"):
        load_config(twice)
    merged = tmp_path / "merged.yaml"  # a merge key's keys may be overridden beside it
    merged.write_text("base: &b {model: openai/a, default: true}\n"
                      "model_providers: [{<<: *b, default: false}]\n")
    with pytest.raises(ConfigError, match="base: unknown key"):  # parsed: only the extra key is refused
        load_config(merged)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("model_providers: [\n  - {model: a\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(broken)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_root_config_yaml_loads() -> None:
    config = load_config(Path(__file__).parents[2] / "config.yaml", environ=ENV)
    assert [p.model for p in config.providers] == [
        "openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-sonnet-4-20250514"]
    assert config.routing.session_cache.type == "memory"
    redis = load_config(Path(__file__).parents[2] / "config.yaml",
                        environ={**ENV, "REDIS_URL": "redis://r:6379/0"})
    assert redis.routing.session_cache.type == "redis"


def check_v030_inline_preferences(config: Config) -> None:
    assert config.version == "v0.3.0" and config.server.port == 12100
    assert config.default_model == "openai/gpt-4o-mini"
    assert [(p.name, p.description.split(",")[0], p.models) for p in config.preferences] == [
        ("plan_review", "weighing a multi-step plan", ("openai/gpt-4.1",)),
        ("test writing", "writing unit tests", ("anthropic/claude-sonnet-4-5",)),
    ]
    claude = config.models["anthropic/claude-sonnet-4-5"]
    assert (claude.interface, claude.api_base) == ("anthropic", "https://api.anthropic.com/v1")
    assert claude.access_key == PLANO_ENV["ANTHROPIC_API_KEY"]


def check_v040_top_level_preferences(config: Config) -> None:
    assert config.version == "v0.4.0"
    assert {p.name: p.models for p in config.preferences} == {
        "quick_answers": ("openai/gpt-4o-mini",),
        "architecture": ("anthropic/claude-opus-4-1", "openai/gpt-5.1"),
        "debugging": ("openai/gpt-5.1", "anthropic/claude-opus-4-1", "openai/gpt-4o-mini"),
    }
    assert config.routing.session_ttl_seconds == 900
    cache = config.routing.session_cache
    assert (cache.type, cache.url) == ("redis", "redis://pins.internal:6380/2")


def check_provider_catalogue(config: Config) -> None:
    assert (config.server.host, config.server.port) == ("127.0.0.1", 12300)
    assert config.default_model == "openai/gpt-4o"  # default: true on the second entry
    bases = {p.provider: p.api_base for p in config.providers}
    assert bases == {
        "openai": "https://api.openai.com/v1",
        "anthropic": "https://api.anthropic.com/v1",
        "mistral": "https://api.mistral.ai/v1",
        "deepseek": "https://api.deepseek.com/v1",
        "groq": "https://api.groq.com/openai/v1",
        "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
        "xai": "https://api.x.ai/v1",
        "together_ai": "https://api.together.xyz/v1",
        "lab_box": "http://10.0.0.7:9000/v1",
        "vllm": "http://vllm.internal:8000/v1",
    }
    oss = config.resolve("openai/gpt-oss-120b")
    assert oss is not None and (oss.provider, oss.model_id) == ("together_ai", "openai/gpt-oss-120b")
    assert oss.access_key == PLANO_ENV["TOGETHER_API_KEY"]
    assert config.models["anthropic/claude-haiku-4-5"].access_key == PLANO_ENV["ANTHROPIC_API_KEY"]
    lab = config.resolve("qwen-coder")
    assert lab is not None and lab.interface == "openai" and lab.access_key is None
    assert [p.interface for p in config.providers].count("anthropic") == 1


def check_model_aliases(config: Config) -> None:
    assert dict(config.aliases) == {
        "team.fast.v2": "openai/gpt-4o-mini",
        "team.think.v2": "openai/o4-mini",
        "team.think.latest": "openai/o4-mini",
    }
    think = config.resolve("team.think.v2")
    assert think is not None and think.model == "openai/o4-mini"
    assert config.preferences == ()


def check_local_llm_router(config: Config) -> None:
    picker = "plano/hf.co/example-org/Route-Picker-0.5B.gguf:Q5_K_S"
    assert (config.routing.router.type, config.routing.router.model) == ("llm", picker)
    router = config.models[picker]
    assert router.model_id == "hf.co/example-org/Route-Picker-0.5B.gguf:Q5_K_S"
    assert (router.interface, router.api_base) == ("openai", "http://127.0.0.1:11434/v1")
    assert config.default_model == "openai/gpt-4o-mini"
    assert {p.name: p.models for p in config.preferences} == {
        "sql help": ("openai/gpt-4o",), "release notes": ("openai/gpt-4.1",)}


def check_prompt_gateway(config: Config) -> None:
    (home,) = config.providers
    assert (home.provider, home.model_id, home.interface) == ("home_llm", "mistral-nemo", "openai")
    assert home.api_base == "http://192.168.1.20:8080/v1" and home.access_key is None
    assert config.default_model == "home_llm/mistral-nemo"


def check_routing_budget(config: Config) -> None:
    assert config.routing.session_ttl_seconds == 1200
    assert config.preference("refactoring").models == ("anthropic/claude-sonnet-4-5",)
    assert config.warnings[0] == (
        "routing.routing_budget: Plano's switch-cost budget is not implemented; ignored")


def check_agent_listeners_state(config: Config) -> None:
    assert config.version == "v0.4.0"  # no version key
    assert (config.server.host, config.server.port) == ("0.0.0.0", 12800)  # the model listener
    assert config.upstream.total_timeout_ms == 45_000  # its timeout: 45s
    assert config.default_model == "anthropic/claude-haiku-4-5"  # no default: the first entry
    assert config.models["openai/gpt-4o"].access_key == PLANO_ENV["OPENAI_API_KEY"]
    assert config.warnings[0] == "listeners[0].type: 'agent' listeners are a Plano feature; ignored"


@dataclass(frozen=True)
class Expected:
    warned: tuple[str, ...]  # key paths of the Plano features the gateway ignores, in order
    check: Callable[[Config], None]


EXPECTED = {
    "v030_inline_preferences.yaml": Expected(("tracing",), check_v030_inline_preferences),
    "v040_top_level_preferences.yaml": Expected(
        ("tracing.trace_arch_internal", "tracing"), check_v040_top_level_preferences),
    "provider_catalogue.yaml": Expected(("listeners[0].max_retries", "tracing"), check_provider_catalogue),
    "model_aliases.yaml": Expected(("tracing",), check_model_aliases),
    "local_llm_router.yaml": Expected(("tracing",), check_local_llm_router),
    "prompt_gateway.yaml": Expected(
        ("tracing.trace_arch_internal", "tracing", "system_prompt", "prompt_targets", "endpoints"),
        check_prompt_gateway),
    "routing_budget.yaml": Expected(
        ("routing.routing_budget", "tracing", "model_metrics_sources"), check_routing_budget),
    "agent_listeners_state.yaml": Expected(
        ("listeners[0].type", "listeners[1].type", "state_storage"), check_agent_listeners_state),
}


def test_every_own_plano_fixture_has_its_expectations() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_own_plano_fixture_resolves(name: str) -> None:
    config = load_config(FIXTURES / name, environ=PLANO_ENV)
    expected = EXPECTED[name]
    assert tuple(w.split(": ")[0] for w in config.warnings) == expected.warned
    expected.check(config)


# Plano's real files join our own when they are beside the repository; without them the list
# still holds our fixtures, so the test neither skips nor passes on nothing.
PLANO_FILES = sorted(FIXTURES.glob("*.yaml")) + sorted(PLANO_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", PLANO_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_plano_format_files_load_with_one_warning_per_ignored_feature(path: Path) -> None:
    config = load_config(path, environ=PLANO_ENV)
    assert config.providers and config.default_model in config.models
    paths = [w.split(": ")[0] for w in config.warnings]
    assert len(paths) == len(set(paths)), config.warnings
    # Each says what becomes of the key: ignored, or (tracing with no collector) off.
    assert all(w.endswith(("; ignored", "; tracing is off")) for w in config.warnings), config.warnings


def test_check_config_command_on_an_own_fixture() -> None:
    environ = {k: v for k, v in os.environ.items()
               if not k.endswith("_API_KEY") and not k.startswith("PG_") and k != "REDIS_URL"}
    keys = {"OPENAI_API_KEY": "sk-live-fixture-openai-1", "ANTHROPIC_API_KEY": "sk-ant-fixture-2"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(FIXTURES / "agent_listeners_state.yaml")],
        capture_output=True, text=True, env={**environ, **keys}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: listeners[0].type: 'agent' listeners are a Plano feature; ignored",
        "warning: listeners[1].type: 'prompt' listeners are a Plano feature; ignored",
        "warning: state_storage: a Plano feature outside this gateway's scope; ignored",
    ]
    printed = yaml.safe_load(result.stdout)
    assert printed["server"]["port"] == 12800
    assert [p["model"] for p in printed["model_providers"]] == [
        "anthropic/claude-haiku-4-5", "openai/gpt-4o"]
    for key in keys.values():
        assert key not in result.stdout + result.stderr


def test_first_byte_timeout_alone_keeps_its_old_meaning_for_one_release_with_a_warning() -> None:
    base = {"model_providers": [{"model": "openai/gpt-4o", "access_key": "k"}]}
    alone = parse_config({**base, "upstream": {"first_byte_timeout_ms": 5000}}, environ={})
    assert (alone.upstream.first_byte_timeout_ms, alone.upstream.read_timeout_ms) == (5000, 5000)
    assert any(w.startswith("upstream.first_byte_timeout_ms: now bounds only") for w in alone.warnings)
    both = parse_config({**base, "upstream": {"first_byte_timeout_ms": 5000, "read_timeout_ms": 9000}},
                        environ={})
    assert (both.upstream.first_byte_timeout_ms, both.upstream.read_timeout_ms) == (5000, 9000)
    assert both.warnings == ()
    with pytest.raises(ConfigError, match=r"^upstream.max_response_bytes: must be between 1024"):
        parse_config({**base, "upstream": {"max_response_bytes": 10}}, environ={})


def test_a_name_a_wildcard_serves_is_resolved_once_and_the_memory_of_names_is_bounded() -> None:
    config = parse_config({"model_providers": [
        {"model": "openai/gpt-4o", "access_key": "k", "default": True},
        {"model": "anthropic/*", "access_key": "k"}]}, environ={})
    first = config.resolve("claude-opus-4-8")
    assert first is not None and first.model == "anthropic/claude-opus-4-8"
    assert config.resolve("claude-opus-4-8") is first  # remembered, not made again
    assert config.resolve("anthropic/claude-haiku-4-5") is not None
    assert config.resolve("mistral-large") is None and config.resolve("mistral-large") is None
    for n in range(5000):  # client-chosen names: the memory of them stays bounded
        config.resolve(f"anthropic/claude-{n}")
    assert len(config._through_wildcards) <= 1024
    assert config.resolve("claude-opus-4-8") == first
