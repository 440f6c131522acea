"""Egress through a real HTTP proxy (proxy.py from PyPI, started here with basic auth): plain
HTTP in absolute form, TLS through a CONNECT tunnel, NO_PROXY bypass, credentials never in an
error; how the config and the environment choose the proxy; and a gateway behind it."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from gateway.config import ConfigError, ProxyConfig, UpstreamConfig, parse_config, render_config
from gateway.errors import BadGateway, ServiceUnavailable
from gateway.upstream import UpstreamClient
from tests.configs import three_models
from tests.support import Runner, ThreadServer, free_port, gateway, wait_for
from tests.unit.test_upstream import BODY, OK, Scripted, reply, until

USER, PASSWORD = "agent", "p@ss:word"  # characters that must be percent-encoded in a URL
SECRET_URL_PART = "p%40ss%3Aword"
MESSAGES = [{"role": "user", "content": "hi"}]


@dataclass
class EgressProxy:
    port: int
    log: Path

    def url(self, password: str = SECRET_URL_PART) -> str:
        return f"http://{USER}:{password}@127.0.0.1:{self.port}"

    def logged(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def egress_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressProxy]:
    folder = tmp_path_factory.mktemp("proxy")
    port = free_port()
    log = folder / "access.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port),
         "--basic-auth", f"{USER}:{PASSWORD}", "--num-workers", "1", "--num-acceptors", "1",
         "--log-level", "INFO", "--log-file", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder,
    )
    try:
        wait_for(lambda: accepts(port), timeout=30, message="proxy.py did not start")
        yield EgressProxy(port, log)
    finally:
        process.terminate()
        process.wait(timeout=10)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def through(proxy: ProxyConfig) -> UpstreamClient:
    client = UpstreamClient(UpstreamConfig(proxy=proxy))
    await client.open()
    return client


def test_plain_http_goes_through_the_proxy_with_its_credentials(
    egress_proxy: EgressProxy, runner: Runner,
) -> None:
    async def main() -> None:
        async with Scripted(reply(OK)) as server:
            upstream = await through(ProxyConfig(http=egress_proxy.url()))
            for _ in range(2):
                response = await upstream.post(server.url("/v1/plain-via-proxy"), {}, BODY)
                assert await response.read() == b'{"ok":true}'
            await upstream.close()
            refused = await through(ProxyConfig(http=egress_proxy.url(password="wrong")))
            response = await refused.post(server.url(), {}, BODY)
            assert response.status == 407  # the proxy's own answer: it asked for credentials
            await response.read()
            await refused.close()
        assert len(server.requests) == 2
        assert b"via: 1.1 proxy.py" in server.requests[0].lower()  # forwarded by the proxy
    runner(main())


def test_tls_goes_through_a_connect_tunnel(
    egress_proxy: EgressProxy, certificates: Path, runner: Runner, monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "ca.pem"))

    async def main() -> None:
        async with Scripted(reply(OK), tls=tls) as server:
            upstream = await through(ProxyConfig(https=egress_proxy.url()))
            for _ in range(3):
                assert await (await upstream.post(server.url(), {}, BODY)).read() == b'{"ok":true}'
            await upstream.close()
            await until(lambda: egress_proxy.logged(f"CONNECT 127.0.0.1:{server.port}"))
            refused = await through(ProxyConfig(https=egress_proxy.url(password="wrong")))
            with pytest.raises(BadGateway) as caught:
                await refused.post(server.url(), {}, BODY)
            assert "407" in caught.value.message and "wrong" not in caught.value.message
            await refused.close()
        assert server.connections == 1  # one tunnel, kept alive for all three requests
    runner(main())


def test_no_proxy_hosts_go_direct_and_a_dead_proxy_is_named_without_its_credentials(
    runner: Runner,
) -> None:
    dead = f"http://{USER}:{SECRET_URL_PART}@127.0.0.1:{free_port()}"

    async def main() -> None:
        async with Scripted(reply(OK)) as server:
            direct = await through(ProxyConfig(http=dead, no_proxy=("localhost", "127.0.0.0/8")))
            assert await (await direct.post(server.url(), {}, BODY)).read() == b'{"ok":true}'
            await direct.close()
            proxied = await through(ProxyConfig(http=dead, no_proxy=("example.com",)))
            with pytest.raises(ServiceUnavailable) as caught:
                await proxied.post(server.url(), {}, BODY)
            assert caught.value.message.startswith("egress proxy 127.0.0.1:")
            assert USER not in caught.value.message and "p%40ss" not in caught.value.message
            await proxied.close()
        assert len(server.requests) == 1
    runner(main())


def upstream_of(environ: dict[str, str], **upstream: object) -> ProxyConfig:
    config = three_models("http://127.0.0.1:9")
    config["upstream"] = upstream
    return parse_config(config, environ=environ).upstream.proxy


def test_the_environment_chooses_the_proxy_unless_the_config_does() -> None:
    environ = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "lower:3128", "HTTP_PROXY": "http://h:2",
               "NO_PROXY": "localhost, .internal"}
    found = upstream_of(environ)
    assert (found.https, found.http) == ("http://lower:3128", "http://h:2")  # lower case first
    assert found.no_proxy == ("localhost", ".internal")
    explicit = upstream_of(environ, proxy="http://egress:8080", no_proxy=["ollama"])
    assert (explicit.https, explicit.http, explicit.no_proxy) == (
        "http://egress:8080", "http://egress:8080", ("ollama",))
    off = upstream_of(environ, proxy="")
    assert (off.https, off.http) == (None, None)


def test_a_bad_proxy_is_a_config_error_that_never_shows_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        upstream_of({"HTTPS_PROXY": "socks5://user:hunter2@corp:1080"})
    assert str(caught.value) == "HTTPS_PROXY: only http:// proxies are supported, not socks5://"
    with pytest.raises(ConfigError) as caught:
        upstream_of({}, proxy="http://user:hunter2@corp:notaport")
    assert str(caught.value).startswith("upstream.proxy:") and "hunter2" not in str(caught.value)
    config = three_models("http://127.0.0.1:9")
    config["upstream"] = {"proxy": "http://user:hunter2@corp:3128"}
    rendered = render_config(parse_config(config, environ={}))
    assert "hunter2" not in rendered and "user:" not in rendered and "http://***@corp:3128" in rendered


def test_a_gateway_behind_an_egress_proxy_serves_an_sdk_client(
    egress_proxy: EgressProxy, simulator: ThreadServer,
) -> None:
    config = three_models(simulator.url)
    config["upstream"] = {"max_retries": 0}
    upstream = simulator.url.removeprefix("http://")
    with gateway(parse_config(config, environ={"HTTP_PROXY": egress_proxy.url()})) as replica:
        with openai.OpenAI(base_url=f"{replica.url}/v1", api_key="k", max_retries=0) as client:
            answer = client.chat.completions.create(model="fast", messages=MESSAGES)
        assert answer.choices[0].message.content
    # Logged as each proxied connection closes: the replica's closed as it stopped.
    wait_for(lambda: egress_proxy.logged(f"POST {upstream}/v1/chat/completions"),
             message="the proxy did not log the gateway's request")
