"""Request validation at submit (docs/design.md, "Request validation"): a request that breaks
the provider's schema fails alone with InvalidRequestError, and its batch goes out without it;
and the emulator refuses what the real APIs refuse (unknown parameters, unknown models), so
that a request the fleet accepts is one the emulator accepts.

The end-to-end tests use the real SDKs over loopback HTTP, on real clocks (the emulator
serves from its own thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import anthropic
import anyio
import botocore.exceptions
import openai
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from typing_extensions import Required

import llmfleet.providers.bedrock
from llmfleet import (
    InvalidRequestError,
    RoutingPolicy,
    UnbatchableRequestError,
    open_fleet,
)
from llmfleet._cli import main
from llmfleet.emulator import DEFAULT_MODELS, BedrockConfig, EmulatorConfig, run_emulator
from llmfleet.emulator import start_emulator as start_emulator
from llmfleet.providers import _schema
from llmfleet.providers.anthropic import AnthropicProvider
from llmfleet.providers.openai import OpenAIProvider

from bedrock_env import MODEL as BEDROCK_MODEL
from bedrock_env import bedrock_client, stand_in

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from llmfleet.emulator import Emulator

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test-SECRET-validate"
CLAUDE = "claude-haiku-4-5"
GPT = "gpt-4o-mini"
NOWHERE = "http://127.0.0.1:9"  # nothing listens: the tests that use it send nothing


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks on purpose: see the module docstring.
    return str(request.param)


def claude(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "model": CLAUDE,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": text}],
    } | extra


def chat(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": GPT, "messages": [{"role": "user", "content": text}]} | extra


def without(params: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != key}


def anthropic_adapter() -> AnthropicProvider:
    return AnthropicProvider(AsyncAnthropic(api_key=KEY, base_url=NOWHERE))


def openai_adapter() -> OpenAIProvider:
    return OpenAIProvider(AsyncOpenAI(api_key=KEY, base_url=NOWHERE))


def refusal(prepare: Callable[[], object]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        prepare()
    return caught.value


def policy(**overrides: Any) -> RoutingPolicy:
    """A burst of 20 leaves in one batch (min size 20), polls are fast."""
    fields: dict[str, Any] = {
        "sync_max_latency_ms": 1_000,
        "batch_window_ms": 5_000,
        "batch_min_size": 20,
        "batch_max_size": 100,
        "poll_interval_ms": 20,
        "poll_max_interval_ms": 100,
        "batch_api_rpm": None,
    } | overrides
    return RoutingPolicy(**fields)


# -- the schema, from the SDKs' own types ---------------------------------------------------


def test_the_schemas_come_from_the_installed_sdks() -> None:
    messages = _schema.anthropic_messages()
    assert set(messages.required) == {"model", "max_tokens", "messages"}
    assert {"system", "metadata", "stop_sequences", "stream"} <= messages.known
    assert messages.source == f"anthropic {anthropic.__version__}"
    chat_schema = _schema.openai_chat()
    assert set(chat_schema.required) == {"model", "messages"}
    assert {"temperature", "max_completion_tokens", "seed"} <= chat_schema.known
    responses = _schema.openai_responses()
    assert {"input", "instructions", "max_output_tokens", "model"} <= responses.known
    bedrock = _schema.bedrock_claude()
    assert "model" not in bedrock.known
    assert {"anthropic_version", "anthropic_beta"} <= bedrock.known
    assert set(bedrock.required) == {"anthropic_version", "max_tokens", "messages"}


class _Unresolvable(TypedDict, total=False):
    name: Required[NoSuchType]  # type: ignore[name-defined]  # noqa: F821
    size: int


def test_a_schema_whose_annotations_do_not_resolve_is_read_from_their_text() -> None:
    schema = _schema.schema_of("x.create", "test", _Unresolvable)
    assert schema.known == {"name", "size"}
    assert schema.required == ("name",)


# -- what each adapter refuses at submit ----------------------------------------------------


ANTHROPIC_BAD: list[tuple[dict[str, Any], str, str]] = [
    (without(claude(), "max_tokens"), "max_tokens", "add max_tokens="),
    (without(claude(), "model"), "model", "add model="),
    (without(claude(), "messages"), "messages", "add messages="),
    (claude(temperatur=0.5), "temperatur", "not a parameter of messages.create"),
    (claude(max_token=5), "max_token", "did you mean 'max_tokens'"),
    (claude(model=5), "model", "non-empty string"),
    (claude(model=""), "model", "non-empty string"),
    (claude(max_tokens="10"), "max_tokens", "integer >= 1"),
    (claude(max_tokens=True), "max_tokens", "integer >= 1"),
    (claude(max_tokens=-3), "max_tokens", "integer >= 1"),
    (claude(max_tokens=0), "max_tokens", "max_tokens=0 is not allowed inside a batch"),
    (claude(messages=[]), "messages", "at least one"),
    (claude(messages="hi"), "messages", "list of messages"),
    (claude(messages=["hi"]), "messages.0", "dict with 'role'"),
    (
        claude(messages=[{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}]),
        "messages.1.role",
        "'user', 'assistant'",
    ),
    (claude(messages=[{"role": "user"}]), "messages.0.content", "required"),
    (claude(messages=[{"role": "user", "content": 5}]), "messages.0.content", "string or a list"),
    (claude(system=5), "system", "string or a list"),
    (claude(extra_headers={"x": "1"}), "extra_headers", "submit_sync()"),
    (claude(extra_query={"x": "1"}), "extra_query", "submit_sync()"),
    (claude(timeout=3), "timeout", "a batch cannot carry"),
    (claude(extra_body=[1]), "extra_body", "dict of body fields"),
    (claude(latency_budget_ms=60_000), "latency_budget_ms", "argument of submit()"),
    (claude(idempotency_key="k"), "idempotency_key", "argument of submit() and submit_batch()"),
]


@pytest.mark.parametrize(("params", "field", "says"), ANTHROPIC_BAD)
def test_anthropic_refuses_at_prepare_naming_the_field(
    params: dict[str, Any], field: str, says: str
) -> None:
    error = refusal(lambda: anthropic_adapter().prepare("lf_ab_1", params))
    assert error.field == field
    assert str(error).startswith(f"{field}: ")
    assert says in str(error)
    assert isinstance(error, UnbatchableRequestError)
    assert isinstance(error, ValueError)


def test_anthropic_sends_the_body_the_sdk_would_send() -> None:
    """extra_body's fields are merged in, unset markers dropped: the batch carries what a
    direct create(**params) would post (not a literal "extra_body" the API refuses)."""
    params = claude(extra_body={"service_tier": "auto"}, system=anthropic.NOT_GIVEN)
    _, prepared = anthropic_adapter().prepare("lf_ab_1", params)
    assert json.loads(prepared) == claude(service_tier="auto")


def test_anthropic_takes_what_the_sdk_takes_beyond_plain_json_types() -> None:
    """A tuple of messages (the SDK takes any iterable) passes, as a list; a required
    parameter set to the SDK's "not given" marker is missing, as the SDK would send it."""
    adapter = anthropic_adapter()
    _, prepared = adapter.prepare("lf_ab_1", claude(messages=({"role": "user", "content": "t"},)))
    assert json.loads(prepared)["messages"] == [{"role": "user", "content": "t"}]
    error = refusal(lambda: adapter.prepare("lf_ab_2", claude(max_tokens=anthropic.omit)))
    assert error.field == "max_tokens"
    assert "required by messages.create and missing" in str(error)


OPENAI_BAD: list[tuple[dict[str, Any], str, str]] = [
    (chat(temperatur=0.5), "temperatur", "did you mean 'temperature'"),
    (chat(model=""), "model", "non-empty string"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role", "'developer'"),
    (chat(messages=[]), "messages", "at least one"),
    (chat(max_completion_tokens=0), "max_completion_tokens", "integer >= 1"),
    (chat(max_tokens="5"), "max_tokens", "integer >= 1"),
    (chat(timeout=3), "timeout", "submit_sync()"),
    (chat(latency_budget_ms=9), "latency_budget_ms", "submit_batch() always batches"),
    ({"input": "hi"}, "model", "one batch, one model"),
    ({"model": GPT, "input": []}, "input", "non-empty list"),
    ({"model": GPT, "input": "x", "max_output_tokens": 0}, "max_output_tokens", ">= 1"),
    ({"model": GPT, "input": "x", "messagez": 1}, "messagez", "responses.create"),
]


@pytest.mark.parametrize(("params", "field", "says"), OPENAI_BAD)
def test_openai_refuses_at_prepare_naming_the_field(
    params: dict[str, Any], field: str, says: str
) -> None:
    error = refusal(lambda: openai_adapter().prepare("lf_ab_1", params))
    assert error.field == field
    assert says in str(error)


def test_openai_accepts_what_its_sdk_types_allow() -> None:
    adapter = openai_adapter()
    adapter.prepare("c1", chat(temperature=0.2, max_completion_tokens=5, seed=1))
    adapter.prepare("c2", {"model": GPT, "input": "x", "instructions": "be brief"})
    # A parameter newer than the SDK goes in extra_body: the caller vouches for it.
    _, (_, body) = adapter.prepare("c3", chat(extra_body={"brand_new": True}))
    assert json.loads(body)["brand_new"] is True


BEDROCK_BAD: list[tuple[dict[str, Any], str]] = [
    ({"model": BEDROCK_MODEL, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    (claude(model=BEDROCK_MODEL, temperatur=1), "temperatur"),
    (claude(model=BEDROCK_MODEL, messages=[{"role": "bot", "content": "x"}]), "messages.0.role"),
    (claude(model=BEDROCK_MODEL, max_tokens=0), "max_tokens"),
]


@pytest.mark.parametrize(("params", "field"), BEDROCK_BAD)
def test_bedrock_applies_the_anthropic_schema_to_its_bodies(
    params: dict[str, Any], field: str
) -> None:
    from llmfleet.providers.bedrock import BedrockClient, BedrockProvider

    adapter = BedrockProvider(
        BedrockClient(role_arn="arn:aws:iam::123456789012:role/r", bucket="b", endpoint_url=NOWHERE)
    )
    error = refusal(lambda: adapter.prepare("lf_ab_1", params))
    assert error.field == field
    # A good body passes: anthropic_version is the adapter's, model travels beside it.
    adapter.prepare("lf_ab_2", claude(model=BEDROCK_MODEL))


async def test_leaked_keywords_are_refused_with_a_hint_on_every_route() -> None:
    """latency_budget_ms and idempotency_key are llmfleet's own arguments: where they land in
    the API params (submit_sync, submit_batch), the call is refused with what to do, not sent
    (the SDK would raise a bare TypeError, the API a 400)."""
    async with (
        AsyncAnthropic(api_key=KEY, base_url=NOWHERE, max_retries=0) as client,
        open_fleet(client, policy=policy()) as fleet,
    ):
        with pytest.raises(InvalidRequestError, match="submit_batch\\(\\) always batches") as e:
            await fleet.submit_batch(latency_budget_ms=60_000, **claude())
        assert e.value.field == "latency_budget_ms"
        with pytest.raises(InvalidRequestError, match="argument of submit\\(\\)") as e:
            await fleet.submit_sync(latency_budget_ms=100, **claude())
        assert e.value.field == "latency_budget_ms"
        with pytest.raises(InvalidRequestError, match="submit_sync\\(\\) never uses") as e:
            await fleet.submit_sync(idempotency_key="k1", **claude())
        assert e.value.field == "idempotency_key"
        assert fleet.stats.sync_calls == fleet.stats.batched_calls == 0


# -- one bad request, alone, through the real SDKs -------------------------------------------


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(EmulatorConfig(turnaround_s=0.05)) as emulator:
        yield emulator


async def burst(
    submit: Callable[..., Any], good: list[dict[str, Any]], bad: dict[str, dict[str, Any]]
) -> tuple[list[Any], dict[str, Any]]:
    """Submit every request at once; each caller's result or error."""
    answers: list[Any] = [None] * len(good)
    errors: dict[str, Any] = {}

    async def one_good(i: int) -> None:
        answers[i] = await submit(**good[i])

    async def one_bad(name: str) -> None:
        try:
            errors[name] = await submit(**bad[name])
        except Exception as exc:
            errors[name] = exc

    async with anyio.create_task_group() as tg:
        for name in bad:
            tg.start_soon(one_bad, name)
        for i in range(len(good)):
            tg.start_soon(one_good, i)
    return answers, errors


async def test_anthropic_two_bad_callers_fail_alone_and_twenty_share_one_batch(
    emu: Emulator,
) -> None:
    good = [claude(f"call-{i}") for i in range(20)]
    bad = {"no max_tokens": without(claude("x"), "max_tokens"), "typo": claude(temperatur=1)}
    async with (
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy()) as fleet,
    ):
        answers, errors = await burst(fleet.submit_batch, good, bad)
        # submit() with a budget the batch route serves is checked the same way.
        with pytest.raises(InvalidRequestError) as loose:
            await fleet.submit(latency_budget_ms=60_000, **claude(messages=[]))
    assert loose.value.field == "messages"
    for i, message in enumerate(answers):
        assert type(message) is Message
        assert message.content[0].type == "text"
        assert message.content[0].text == f"call-{i}"
    assert {name: (type(e), e.field) for name, e in errors.items()} == {
        "no max_tokens": (InvalidRequestError, "max_tokens"),
        "typo": (InvalidRequestError, "temperatur"),
    }
    [batch] = emu.batches.values()
    assert len(batch.custom_ids) == 20
    assert set(batch.results.values()) == {"succeeded"}
    assert fleet.stats.batched_calls == 20  # the refused calls were never routed


async def test_openai_two_bad_callers_fail_alone_and_twenty_share_one_batch(
    emu: Emulator,
) -> None:
    good = [chat(f"call-{i}") for i in range(20)]
    bad = {"no model": without(chat("x"), "model"), "typo": chat(temperatur=1)}
    async with (
        AsyncOpenAI(api_key=KEY, base_url=emu.url + "/v1") as client,
        open_fleet(client, policy=policy()) as fleet,
    ):
        answers, errors = await burst(fleet.submit_batch, good, bad)
    for i, completion in enumerate(answers):
        assert type(completion) is ChatCompletion
        assert completion.choices[0].message.content == f"call-{i}"
    assert {name: (type(e), e.field) for name, e in errors.items()} == {
        "no model": (InvalidRequestError, "model"),
        "typo": (InvalidRequestError, "temperatur"),
    }
    [batch] = emu.openai.batches.values()
    assert batch.status == "completed"
    assert len(batch.custom_ids) == 20


async def test_bedrock_a_bad_caller_fails_alone_and_the_job_holds_the_rest() -> None:
    async with stand_in(BedrockConfig(min_records=5)) as (emu, bucket):
        good = [claude(f"call-{i}", model=BEDROCK_MODEL) for i in range(5)]
        bad = {"typo": claude(model=BEDROCK_MODEL, temperatur=1)}
        policy_ = policy(sync_max_latency_ms=0, batch_min_size=5)
        async with open_fleet(bedrock_client(emu, bucket), policy=policy_) as fleet:
            answers, errors = await burst(fleet.submit_batch, good, bad)
        assert [m.content[0].text for m in answers] == [f"call-{i}" for i in range(5)]
        assert isinstance(errors["typo"], InvalidRequestError)
        assert errors["typo"].field == "temperatur"
        [job] = emu.jobs.values()
        assert (job.status, job.records) == ("Completed", 5)


def test_run_writes_the_bad_line_invalid_and_answers_the_500_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    lines = [json.dumps({"custom_id": f"r{i}", "params": claude(f"line {i}")}) for i in range(500)]
    lines.insert(250, json.dumps({"custom_id": "bad", "params": without(claude(), "max_tokens")}))
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    with start_emulator(EmulatorConfig(turnaround_s=0.1)) as emu:
        code = main(
            [
                "run",
                str(tmp_path / "in.jsonl"),
                "-o",
                str(tmp_path / "out.jsonl"),
                "--base-url",
                emu.url,
                "--batch-size",
                "500",
                "--window",
                "5",
                "--poll",
                "0.05",
                "--no-progress",
            ]
        )
        assert code == 1  # not every line succeeded
        [batch] = emu.batches.values()
        assert len(batch.custom_ids) == 500
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == 501
    statuses = [o["status"] for o in out]
    assert statuses.count("succeeded") == 500
    bad = out[250]
    assert (bad["custom_id"], bad["status"]) == ("bad", "invalid")
    assert bad["error"]["type"] == "InvalidRequestError"
    assert bad["error"]["message"].startswith("max_tokens: required")


# -- the emulator refuses what the APIs refuse -------------------------------------------------


async def test_emulator_anthropic_refuses_unknown_params_and_models(emu: Emulator) -> None:
    async with AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(**claude(), extra_body={"temperatur": 1})
        body: Any = refused.value.body
        assert body["error"] == {
            "type": "invalid_request_error",
            "message": "temperatur: Extra inputs are not permitted",
        }
        with pytest.raises(anthropic.NotFoundError) as missing:
            await client.messages.create(**claude(model="claude-nonexistent-9"))
        assert missing.value.status_code == 404
        body = missing.value.body
        assert body["error"] == {
            "type": "not_found_error",
            "message": "model: claude-nonexistent-9",
        }
        # In a batch: an unknown parameter refuses the whole create (the reason the fleet
        # checks first) ...
        requests: list[Any] = [
            {"custom_id": "ok", "params": claude("ok")},
            {"custom_id": "typo", "params": claude(temperatur=1)},
        ]
        with pytest.raises(anthropic.BadRequestError, match=r"requests\.1\.params\.temperatur"):
            await client.messages.batches.create(requests=requests)
        assert emu.batches == {}
        # ... an unknown model errors its own request only.
        requests[1] = {"custom_id": "nomodel", "params": claude(model="claude-nonexistent-9")}
        batch = await client.messages.batches.create(requests=requests)
        emu.end_batch(batch.id)
        results = {
            r.custom_id: r.result async for r in await client.messages.batches.results(batch.id)
        }
    assert results["ok"].type == "succeeded"
    errored = results["nomodel"]
    assert errored.type == "errored"
    assert errored.error.error.type == "not_found_error"
    assert errored.error.error.message == "model: claude-nonexistent-9"


async def test_emulator_openai_refuses_unknown_params_and_models(emu: Emulator) -> None:
    async with AsyncOpenAI(api_key=KEY, base_url=emu.url + "/v1", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(**chat(), extra_body={"temperatur": 1})
        assert refused.value.status_code == 400
        assert refused.value.param == "temperatur"
        assert refused.value.message.endswith("Unrecognized request argument supplied: temperatur")
        with pytest.raises(openai.BadRequestError, match="Unrecognized request argument"):
            await client.responses.create(model=GPT, input="x", extra_body={"messagez": 1})
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(**chat(model="gpt-nonexistent-9"))
        assert missing.value.code == "model_not_found"
        assert "`gpt-nonexistent-9` does not exist" in missing.value.message
        # In a batch, each line is answered on its own.
        lines = [
            {"custom_id": "ok", "body": chat("ok")},
            {"custom_id": "typo", "body": chat(temperatur=1)},
        ]
        typo = await batch_lines(client, emu, lines)
        assert typo["ok"]["response"]["status_code"] == 200
        assert typo["typo"]["response"]["status_code"] == 400
        assert typo["typo"]["response"]["body"]["error"]["param"] == "temperatur"
        nomodel = await batch_lines(
            client, emu, [{"custom_id": "nomodel", "body": chat(model="gpt-nonexistent-9")}]
        )
        response = nomodel["nomodel"]["response"]
        assert response["status_code"] == 404
        assert response["body"]["error"]["code"] == "model_not_found"


async def batch_lines(
    client: AsyncOpenAI, emu: Emulator, lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """Run one chat batch of ``lines`` on the emulator; its output and error lines by id."""
    data = b"".join(
        json.dumps({"method": "POST", "url": "/v1/chat/completions"} | line).encode() + b"\n"
        for line in lines
    )
    upload = await client.files.create(
        file=("in.jsonl", data, "application/jsonl"), purpose="batch"
    )
    batch = await client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    emu.openai.end_batch(batch.id)
    batch = await client.batches.retrieve(batch.id)
    out: dict[str, Any] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            text = (await client.files.content(file_id)).text
            out |= {json.loads(x)["custom_id"]: json.loads(x) for x in text.splitlines() if x}
    return out


async def test_emulator_bedrock_refuses_extraneous_keys_on_both_routes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with stand_in(BedrockConfig(min_records=2)) as (emu, bucket):
        async with open_fleet(bedrock_client(emu, bucket), policy=policy()) as fleet:
            with pytest.raises(botocore.exceptions.ClientError) as refused:
                await fleet.submit_sync(**claude(model=BEDROCK_MODEL, temperatur=1))
            error = refused.value.response["Error"]
            assert error["Code"] == "ValidationException"
            assert "extraneous key [temperatur] is not permitted" in error["Message"]
            # Past the fleet's own check, a job's bad record errors alone.
            monkeypatch.setattr(llmfleet.providers.bedrock, "wire_body", lambda *a: a[0])
            good = [claude("ok", model=BEDROCK_MODEL)]
            bad = {"typo": claude(model=BEDROCK_MODEL, temperatur=1)}
            fleet_policy_min = policy(sync_max_latency_ms=0, batch_min_size=2)
        async with open_fleet(bedrock_client(emu, bucket), policy=fleet_policy_min) as fleet:
            answers, errors = await burst(fleet.submit_batch, good, bad)
        assert answers[0].content[0].text == "ok"
        assert "extraneous key [temperatur]" in str(errors["typo"])


def test_emulator_models_knob() -> None:
    config = EmulatorConfig()
    assert config.models is DEFAULT_MODELS
    assert {CLAUDE, "claude-sonnet-4-6", GPT, "gpt-4.1-mini", "gpt-4.1"} <= DEFAULT_MODELS
    config.models = None
    config.models = frozenset({"my-model"})
    with pytest.raises(TypeError, match="frozenset of model ids"):
        config.models = ["my-model"]  # type: ignore[assignment]


async def test_emulator_models_none_serves_any_model() -> None:
    async with (
        run_emulator(EmulatorConfig(models=None)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=0) as client,
    ):
        message = await client.messages.create(**claude(model="my-own-model"))
        assert message.model == "my-own-model"
        emu.config.models = frozenset({CLAUDE})
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(**claude(model="my-own-model"))


def test_emulator_command_line_serves_any_model_when_told() -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    for flags, served in (([], False), (["--any-model"], True)):
        process = subprocess.Popen(
            [sys.executable, "-m", "llmfleet.emulator", "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            with anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0) as client:
                try:
                    client.messages.create(**claude(model="my-own-model"))
                except anthropic.NotFoundError:
                    assert not served
                else:
                    assert served
        finally:
            process.terminate()
            process.communicate(timeout=10)


# -- the fleet accepts what the emulator accepts ----------------------------------------------


ANTHROPIC_GOOD: list[dict[str, Any]] = [
    claude(),
    claude(system="be brief"),
    claude(system=[{"type": "text", "text": "be brief"}]),
    claude(stop_sequences=["END"], metadata={"user_id": "u1"}),
    claude(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
    claude(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    ),
    claude(stream=False),
]
# JSON-only cases (the emulator is sent these as they are): request options and leaked
# keywords are not sent by the SDK as such, and are compared elsewhere.
ANTHROPIC_REFUSED = [
    params
    for params, field, _ in ANTHROPIC_BAD
    if field not in ("extra_headers", "extra_query", "timeout", "extra_body")
]


@pytest.fixture(scope="module")
def sync_emu() -> Iterator[Emulator]:
    # Any model: the fleet cannot know which models exist (it checks shapes), so a model the
    # emulator does not serve is not a disagreement.
    with start_emulator(EmulatorConfig(turnaround_s=None, models=None)) as emulator:
        yield emulator


def emulator_refuses(emu: Emulator, params: dict[str, Any]) -> bool:
    """Whether the emulator's ``POST /v1/messages`` refuses this body (sent with the real SDK's
    HTTP stack, as it is)."""
    with anthropic.Anthropic(api_key=KEY, base_url=emu.url, max_retries=0) as client:
        try:
            client.post("/v1/messages", cast_to=Message, body=params)
        except anthropic.BadRequestError:
            return True
    return False


def fleet_refuses(params: dict[str, Any]) -> bool:
    try:
        adapter = anthropic_adapter()
        adapter.check(params)
        adapter.prepare("lf_ab_1", params)
    except UnbatchableRequestError:
        return True
    return False


@pytest.mark.parametrize("params", ANTHROPIC_GOOD + ANTHROPIC_REFUSED)
def test_the_fleet_refuses_exactly_what_the_emulator_refuses(
    sync_emu: Emulator, params: dict[str, Any]
) -> None:
    assert fleet_refuses(params) == emulator_refuses(sync_emu, params)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
)
_KEYS = st.sampled_from(
    ["model", "max_tokens", "messages", "system", "metadata", "stop_sequences", "temperatur"]
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    drop=st.lists(_KEYS, max_size=2),
    change=st.dictionaries(_KEYS, _JSON, max_size=2),
    message=st.fixed_dictionaries(
        {}, optional={"role": st.sampled_from(["user", "assistant", "bot"]), "content": _JSON}
    ),
)
def test_fleet_and_emulator_agree_on_mutated_requests(
    sync_emu: Emulator, drop: list[str], change: dict[str, Any], message: dict[str, Any]
) -> None:
    params = claude()
    params["messages"] = [*params["messages"], message] if message else params["messages"]
    for key in drop:
        params.pop(key, None)
    params |= change
    assert fleet_refuses(params) == emulator_refuses(sync_emu, params), params


OPENAI_REFUSED = [
    params for params, field, _ in OPENAI_BAD if field not in ("timeout", "latency_budget_ms")
]
OPENAI_GOOD: list[dict[str, Any]] = [
    chat(),
    chat(temperature=0.2, max_completion_tokens=5, seed=1, n=1),
    chat(messages=[{"role": "developer", "content": "be brief"}, {"role": "user", "content": "x"}]),
    {"model": GPT, "input": "x", "instructions": "be brief", "max_output_tokens": 16},
    {"model": GPT, "input": [{"role": "user", "content": "x"}]},
]


def openai_emulator_refuses(emu: Emulator, params: dict[str, Any]) -> bool:
    """Whether the emulator's direct route refuses this body (sent with the real ``openai``
    SDK's HTTP stack, as it is)."""
    path = "/chat/completions" if "messages" in params else "/responses"
    with openai.OpenAI(api_key=KEY, base_url=emu.url + "/v1", max_retries=0) as client:
        try:
            client.post(path, cast_to=ChatCompletion, body=params)
        except openai.BadRequestError:
            return True
    return False


@pytest.mark.parametrize("params", OPENAI_GOOD + OPENAI_REFUSED)
def test_the_openai_fleet_refuses_exactly_what_the_emulator_refuses(
    sync_emu: Emulator, params: dict[str, Any]
) -> None:
    try:
        adapter = openai_adapter()
        adapter.check(params)
        adapter.prepare("lf_ab_1", params)
        fleet = False
    except UnbatchableRequestError:
        fleet = True
    assert fleet == openai_emulator_refuses(sync_emu, params)
