"""The providers the dispatcher's property tests run against, behind one recording wrapper.

Each :class:`Kind` opens a provider: the in-memory :class:`~fakes.FakeProvider`, or a real
adapter (``AnthropicProvider``, ``OpenAIProvider``, ``GeminiProvider``) over its official SDK
talking to the emulator's ASGI app **in process** (``httpx2.ASGITransport``: no socket, no
server thread), so that the test's virtual clock still drives the fleet. The provider comes
wrapped in a :class:`Recorder`, which sees every batch create the same way whatever the
vendor. A kind also says how to build a request and how to read a reply, so the tests
themselves are written once.

Requests are built from a text, and the last user text decides the outcome on every kind: a
text holding :data:`ERRORED` comes back as an error (the fake's ``outcome`` reads it, the
emulator honours it as its ``[[errored]]`` marker), any other is echoed in the reply.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
from anthropic import AsyncAnthropic
from anthropic.types import Message
from google import genai
from google.genai.types import GenerateContentResponse, HttpOptions
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from llmfleet.emulator import EmulatorConfig
from llmfleet.emulator._app import build_app
from llmfleet.emulator._state import State
from llmfleet.providers import BatchStatus, ErrorInfo, ItemResult, Provider, adapter_for

from bedrock_env import MODEL as BEDROCK_MODEL
from bedrock_env import inline, shared_stand_in
from bedrock_env import provider as bedrock_provider
from fakes import FakeMessage, FakeProvider, request
from fakes import text_of as _messages_text

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence


__all__ = [
    "ADAPTERS",
    "ANTHROPIC",
    "BEDROCK",
    "ERRORED",
    "FAKE",
    "GEMINI",
    "KINDS",
    "OPENAI",
    "Kind",
    "Recorder",
]

#: Put in a request's text, it makes that request come back errored, on every kind.
ERRORED = "[[errored]]"
BASE_URL = "http://emulator.test"


@dataclass(frozen=True, slots=True)
class Create:
    """One batch create that succeeded: when it was sent, its id, and what it carried."""

    at: float
    batch_id: str
    ids: list[str]
    texts: list[str]
    requests: list[tuple[str, dict[str, Any]]]


class Recorder:
    """A :class:`~llmfleet.providers.Provider` that delegates to another and records each batch
    create as ``(anyio.current_time(), ids, texts)`` (a :class:`Create`).

    Every member of the protocol is spelled out: from Python 3.12 a runtime protocol check
    looks attributes up statically, so a ``__getattr__`` alone would not pass for a provider.
    ``__getattr__`` serves the optional ones (``batch_key``) and the adapter's extras.

    :param max_batch_bytes: what to tell the fleet instead of the inner provider's limit.
    """

    def __init__(self, inner: Provider, *, max_batch_bytes: int | None = None) -> None:
        self._inner = inner
        self.name = inner.name
        self.max_batch_requests = inner.max_batch_requests
        self.max_batch_bytes = inner.max_batch_bytes if max_batch_bytes is None else max_batch_bytes
        self.results_requests = inner.results_requests
        self.creates: list[Create] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    # -- what the tests read --------------------------------------------------------------

    @property
    def batch_of(self) -> dict[str, str]:
        """The batch each sent custom_id went out in."""
        return {cid: create.batch_id for create in self.creates for cid in create.ids}

    @property
    def sent_ids(self) -> list[str]:
        """Every custom_id sent in a batch, in order of the creates."""
        return [cid for create in self.creates for cid in create.ids]

    # -- the protocol ---------------------------------------------------------------------

    async def create_batch(self, requests: Sequence[tuple[str, Any]]) -> str:
        at = anyio.current_time()
        reqs = [(cid, _decoded(prepared)) for cid, prepared in requests]
        batch_id = await self._inner.create_batch(requests)
        self.creates.append(
            Create(
                at,
                batch_id,
                [cid for cid, _ in reqs],
                [text_of(params) for _, params in reqs],
                reqs,
            )
        )
        return batch_id

    def check(self, params: Mapping[str, Any]) -> None:
        self._inner.check(params)

    def prepare(self, custom_id: str, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._inner.prepare(custom_id, params)

    def model_of(self, params: Mapping[str, Any]) -> str:
        return self._inner.model_of(params)

    def tokens_of(self, value: Any) -> tuple[int, int, int, int] | None:
        return self._inner.tokens_of(value)

    async def call(self, params: Mapping[str, Any]) -> Any:
        return await self._inner.call(params)

    async def find_batch(
        self, *, count: int, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        return await self._inner.find_batch(
            count=count, created_after=created_after, exclude=exclude
        )

    async def poll(self, batch_id: str) -> BatchStatus:
        return await self._inner.poll(batch_id)

    async def list_page(
        self, cursor: str | None
    ) -> tuple[list[tuple[str, BatchStatus]], str | None]:
        return await self._inner.list_page(cursor)

    def results(self, batch_id: str) -> AsyncIterator[tuple[str, ItemResult]]:
        # The inner iterator itself, so that the fleet's aclosing() closes it.
        return self._inner.results(batch_id)

    async def cancel(self, batch_id: str) -> None:
        await self._inner.cancel(batch_id)

    def classify(self, exc: BaseException) -> ErrorInfo | None:
        return self._inner.classify(exc)


def text_of(params: Mapping[str, Any]) -> str:
    """The last user text of a request of any kind (Gemini's ``contents`` a string here)."""
    contents = params.get("contents")
    if isinstance(contents, str):
        return contents
    return _messages_text(params)


def index_of(text: str) -> int:
    """The caller index in a text made by the tests (``call-7``, ``call-7 [[errored]]``)."""
    return int(text.split()[0].removeprefix("call-"))


# -- the in-memory fake -----------------------------------------------------------------------


def _fake_outcome(custom_id: str, params: dict[str, Any]) -> ItemResult:
    text = text_of(params)
    if ERRORED in text:
        return ItemResult("errored", error_type="api_error", message=f"no {index_of(text)}")
    return ItemResult("succeeded", value=FakeMessage(custom_id, text, "batch"))


@asynccontextmanager
async def _open_fake(turnaround: float) -> AsyncIterator[Recorder]:
    yield Recorder(FakeProvider(turnaround=turnaround, outcome=_fake_outcome))


def _fake_reply(value: Any) -> tuple[str, str | None]:
    assert isinstance(value, FakeMessage)
    assert value.custom_id is not None
    return value.text, value.custom_id


# -- the real adapters over the emulator, in process ------------------------------------------


@asynccontextmanager
async def _emulated(make: Callable[[httpx2.AsyncClient], Any]) -> AsyncIterator[Recorder]:
    """The adapter ``open_fleet(make(http_client))`` would use, over a fresh emulator whose
    batches end as soon as they are created (its clock is the wall clock)."""
    state = State(EmulatorConfig(turnaround_s=0))
    # The Anthropic results_url is absolute: any host reaches the app through this transport.
    state.base_url = BASE_URL
    transport = httpx2.ASGITransport(app=build_app(state))
    async with httpx2.AsyncClient(transport=transport) as http, make(http) as client:
        recorder = Recorder(adapter_for(client))
        # The SDK resolves its platform headers in a worker thread on a client's first
        # request: make that request now, before the fleet's timers run, or an auto-jumping
        # clock would jump while the thread runs.
        await recorder.list_page(None)
        yield recorder


def _open_anthropic(turnaround: float) -> AbstractAsyncContextManager[Recorder]:
    return _emulated(
        lambda http: AsyncAnthropic(
            api_key="test", base_url=BASE_URL, http_client=http, max_retries=0
        )
    )


def _open_openai(turnaround: float) -> AbstractAsyncContextManager[Recorder]:
    return _emulated(
        lambda http: AsyncOpenAI(
            api_key="test", base_url=f"{BASE_URL}/v1", http_client=http, max_retries=0
        )
    )


def _open_gemini(turnaround: float) -> AbstractAsyncContextManager[Recorder]:
    # The SDK's async side over the given httpx2 client (no per-loop pool: trio works too).
    return _emulated(
        lambda http: (
            genai.Client(
                api_key="test",
                http_options=HttpOptions(base_url=BASE_URL, httpx_async_client=http),
            ).aio
        )
    )


def _gemini_request(text: str) -> dict[str, Any]:
    return {"model": "gemini-2.5-flash", "contents": text}


def _gemini_reply(value: Any) -> tuple[str, str | None]:
    assert isinstance(value, GenerateContentResponse)
    assert value.text is not None
    return value.text, None


def _anthropic_reply(value: Any) -> tuple[str, str | None]:
    assert isinstance(value, Message)
    block = value.content[0]
    assert block.type == "text"
    return block.text, None


def _openai_request(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def _openai_reply(value: Any) -> tuple[str, str | None]:
    assert isinstance(value, ChatCompletion)
    content = value.choices[0].message.content
    assert content is not None
    return content, None


# -- Bedrock over its stand-in, botocore in line ------------------------------------------------


@asynccontextmanager
async def _open_bedrock(turnaround: float) -> AsyncIterator[Recorder]:
    """The Bedrock adapter over the shared stand-in (jobs end when next read; a fresh bucket
    each time) and moto's S3, real
    HTTP on 127.0.0.1, with botocore called in line: the loop's thread blocks for each
    request's few milliseconds, so the test's virtual clock stands still meanwhile, as it does
    for the in-process ASGI transport of the other adapters. Jobs of one record are allowed
    (the properties cut batches of 1 to 8 calls)."""
    await anyio.lowlevel.checkpoint()
    emu, bucket = shared_stand_in()
    yield Recorder(bedrock_provider(emu, bucket, run_sync=inline))


def _bedrock_request(text: str) -> dict[str, Any]:
    return {**request(text), "model": BEDROCK_MODEL}


# -- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    """One provider the properties run against, and how to speak to it."""

    name: str
    #: A context manager yielding a fresh provider, wrapped; ``turnaround`` (virtual seconds
    #: from create to end) is the fake's alone: the emulator ends batches at once.
    open: Callable[[float], AbstractAsyncContextManager[Recorder]]
    #: The ``submit_batch`` params of a request whose last user text is the argument.
    request: Callable[[str], dict[str, Any]]
    #: The text of a reply, and the custom_id it carries if the reply says.
    reply: Callable[[Any], tuple[str, str | None]]
    #: ``(error_type, message)`` of the error a caller gets for a request holding ERRORED,
    #: from the caller's index.
    error: Callable[[int], tuple[str, str]]
    #: Hypothesis examples per property (HTTP in process is slower than the fake).
    max_examples: int = 60

    def __str__(self) -> str:
        return self.name


FAKE = Kind(
    "fake",
    _open_fake,
    request,
    _fake_reply,
    lambda index: ("api_error", f"no {index}"),
)
ANTHROPIC = Kind(
    "anthropic",
    _open_anthropic,
    request,
    _anthropic_reply,
    lambda index: ("api_error", "Internal server error (injected by the llmfleet emulator)."),
    max_examples=15,
)
OPENAI = Kind(
    "openai",
    _open_openai,
    _openai_request,
    _openai_reply,
    lambda index: ("server_error", "server_error (injected by the llmfleet emulator)."),
    max_examples=15,
)
GEMINI = Kind(
    "gemini",
    _open_gemini,
    _gemini_request,
    _gemini_reply,
    lambda index: ("INTERNAL", "internal (injected by the llmfleet emulator)."),
    max_examples=15,
)
BEDROCK = Kind(
    "bedrock",
    _open_bedrock,
    _bedrock_request,
    _anthropic_reply,
    lambda index: ("500", "Internal error processing the record (injected by the stand-in)."),
    max_examples=5,
)
ADAPTERS = [ANTHROPIC, OPENAI, GEMINI]
KINDS = [FAKE, *ADAPTERS]


def _decoded(prepared: Any) -> dict[str, Any]:
    """A prepared request is the adapter's own: a dict (the fake), its encoded JSON
    (Anthropic), ``((endpoint, model), encoded JSON)`` (OpenAI), ``(model, encoded
    modelInput)`` (Bedrock) or ``(model, encoded InlinedRequest)`` (Gemini: its metadata,
    the custom_id, is the adapter's, not a param)."""
    if isinstance(prepared, dict):
        return dict(prepared)
    if isinstance(prepared, tuple):
        prepared = prepared[1]
    decoded: dict[str, Any] = json.loads(prepared)
    if "contents" in decoded:
        decoded.pop("metadata", None)
    return decoded
