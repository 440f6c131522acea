"""Client APIs: one object each (`ClientApi`), so a new API is one new module here plus its
translators in `gateway.providers`."""

from gateway.apis.base import ClientApi, ClientRequest, Exchange, StreamTranslator
from gateway.apis.chat import CHAT
from gateway.apis.messages import COUNT_TOKENS, MESSAGES

__all__ = ["CHAT", "COUNT_TOKENS", "MESSAGES", "ClientApi", "ClientRequest", "Exchange", "StreamTranslator"]
