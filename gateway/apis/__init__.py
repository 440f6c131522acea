"""Client APIs: one object each (`ClientApi`), so a new API is one new module here plus its
translators in `gateway.providers`."""

from gateway.apis import messages
from gateway.apis.base import ClientApi, ClientRequest, Exchange, StreamTranslator
from gateway.apis.chat import CHAT
from gateway.apis.messages import COUNT_TOKENS, MESSAGES
from gateway.errors import GatewayError

__all__ = ["CHAT", "COUNT_TOKENS", "MESSAGES", "ClientApi", "ClientRequest", "Exchange", "StreamTranslator",
           "error_body_for"]


def error_body_for(path: str | bytes, error: GatewayError) -> bytes:
    """An error met before any endpoint has the request (no route, a wrong method, a head or
    body refused on the wire), in the envelope its client reads: Anthropic's under
    /v1/messages (and its routing twin), OpenAI's elsewhere."""
    text = path.decode("latin-1") if isinstance(path, bytes) else path
    anthropic = text.startswith(("/v1/messages", "/routing/v1/messages"))
    return messages.error_body(error) if anthropic else error.body()
