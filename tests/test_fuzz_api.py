"""Property-based fuzzing of the public API (documented, ``/rank``, ``/embeddings/frames`` and
OpenAI-compatible routes) with schemathesis, in-process.

Schemathesis generates requests from the app's own OpenAPI schema, both valid ones
(``positive``) and ones that break the schema (``negative``), and each goes through the real
entry service with its in-process Encoder. Whatever is sent, the answer must be a designed
one: never a 5xx other than the overload and time-out answers, always a JSON body that is
valid UTF-8, with a string ``detail`` for every error.

The model field is narrowed to the served model's names so that valid requests get past the
model check and reach media decoding and the Encoder. The network is closed for the test:
name look-ups fail and connections to anything but loopback are refused, so generated URLs
never leave the machine.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import socket
from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from helpers import TEST_MODEL_ID

EMBEDDINGS_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2500"))
OTHER_EXAMPLES = max(1, EMBEDDINGS_EXAMPLES // 5)  # /v1/embeddings, /rank, /embeddings/frames
STATUS_EXAMPLES = 25
STATUS_ROUTES = ("/health", "/models", "/model/current", "/model/capabilities", "/v1/models")
DESIGNED_5XX = {503, 504}  # overload and time-out answers; anything else 5xx is a bug


def _narrowed_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    """``openapi`` with every request's ``model`` limited to the served model's names."""
    schema = copy.deepcopy(openapi)
    for name in ("EmbeddingRequest", "OpenAIEmbeddingRequest", "RankRequest", "FramesRequest"):
        request = schema["components"]["schemas"][name]
        request["properties"]["model"] = {"type": "string", "title": "Model",
                                          "enum": [TEST_MODEL_ID, TEST_MODEL_ID.split("/", 1)[1]]}
    return schema


def _is_loopback(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="module")
def closed_network() -> Iterator[None]:
    """Names resolve to nothing and only loopback accepts connections, for this module."""
    patch = pytest.MonkeyPatch()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def no_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "name resolution is disabled in this test")

    def loopback_only(real: Any):
        def connect(self: socket.socket, address: Any) -> Any:
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
                raise ConnectionRefusedError(f"{address} is outside loopback")
            return real(self, address)
        return connect

    patch.setattr(socket, "getaddrinfo", no_lookup)
    patch.setattr(socket.socket, "connect", loopback_only(real_connect))
    patch.setattr(socket.socket, "connect_ex", loopback_only(real_connect_ex))
    yield
    patch.undo()


@pytest.fixture(scope="module")
def fuzz_schema(service_module, closed_network):
    return schemathesis.openapi.from_dict(_narrowed_schema(service_module.app.openapi()), )


def _requests(operation: Any) -> st.SearchStrategy:
    """Requests that follow the operation's schema and requests that break it."""
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                     operation.as_strategy(GenerationMode.NEGATIVE))


def _assert_designed_answer(response: Any, openai_shape: bool = False) -> None:
    """A designed status and a valid UTF-8 JSON body; an error's message is a non-empty string
    (``detail``, or OpenAI's ``error.message`` where ``openai_shape``)."""
    assert response.status_code < 500 or response.status_code in DESIGNED_5XX, (
        response.status_code, response.content[:500])
    body = json.loads(response.content.decode("utf-8"))  # raises on invalid UTF-8 or JSON
    if response.status_code >= 400:
        message = body.get("error", {}).get("message") if openai_shape else body.get("detail")
        assert isinstance(message, str) and message, body


def _send(api_client: Any, case: Any) -> Any:
    """``case`` through the in-process client (the URL schemathesis gives is a path)."""
    kwargs = case.as_transport_kwargs()
    kwargs.pop("cookies", None)
    return api_client.request(kwargs.pop("method"), kwargs.pop("url"), **kwargs)


@settings(max_examples=EMBEDDINGS_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_embeddings_never_answers_an_undesigned_error(data, fuzz_schema, api_client):
    case = data.draw(_requests(fuzz_schema["/embeddings"]["POST"]), label="request")
    _assert_designed_answer(_send(api_client, case))


@pytest.mark.parametrize("path", ["/v1/embeddings", "/rank", "/embeddings/frames"])
@settings(max_examples=OTHER_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_other_embedding_routes_never_answer_an_undesigned_error(data, path, fuzz_schema, api_client):
    case = data.draw(_requests(fuzz_schema[path]["POST"]), label="request")
    _assert_designed_answer(_send(api_client, case), openai_shape=path.startswith("/v1/"))


@pytest.mark.parametrize("path", STATUS_ROUTES)
@settings(max_examples=STATUS_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_status_routes_never_answer_an_undesigned_error(data, path, fuzz_schema, api_client):
    case = data.draw(_requests(fuzz_schema[path]["GET"]), label="request")
    _assert_designed_answer(_send(api_client, case))
