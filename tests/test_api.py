"""The public surface: exports, docstrings, and the error tree of docs/design.md §5."""

from __future__ import annotations

import inspect

import pytest

import llmfleet
import llmfleet.errors
from llmfleet.errors import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchResultError,
    BatchResultMissingError,
    BatchSubmitError,
    DeadlineExceededError,
    FleetClosedError,
    FleetError,
    FleetUsageError,
    InvalidRequestError,
    JournalError,
    PolicyError,
    UnbatchableRequestError,
    excerpt,
)

ERROR_NAMES = (
    "FleetError",
    "PolicyError",
    "UnbatchableRequestError",
    # A request that breaks the provider's schema, refused alone at submit.
    "InvalidRequestError",
    "FleetClosedError",
    # open_fleet()'s context manager or a fleet used without `async with`.
    "FleetUsageError",
    "BatchSubmitError",
    # docs/design.md §8: deadline_action="fail".
    "DeadlineExceededError",
    # The durable journal (docs/journal.md): a corrupt, foreign or busy journal file.
    "JournalError",
    # open_fleet(broker=...): Redis failed or lost the fleet.
    "BrokerError",
    "BatchResultError",
    "BatchRequestError",
    "BatchRequestExpiredError",
    "BatchRequestCanceledError",
    "BatchResultMissingError",
)


def test_all_is_sorted_and_unique() -> None:
    assert list(llmfleet.__all__) == sorted(set(llmfleet.__all__))


def test_design_names_are_public() -> None:
    for name in (
        "open_fleet",
        "FleetDispatcher",
        "RoutingPolicy",
        "Route",
        "Journal",
        *ERROR_NAMES,
    ):
        assert name in llmfleet.__all__


@pytest.mark.parametrize("name", llmfleet.__all__)
def test_every_public_name_exists_and_is_documented(name: str) -> None:
    obj = getattr(llmfleet, name)
    assert obj.__module__.startswith("llmfleet")
    doc = inspect.getdoc(obj) if not inspect.isclass(obj) else obj.__dict__.get("__doc__")
    assert isinstance(doc, str)
    assert doc.strip(), f"{name} has an empty docstring"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from llmfleet import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(llmfleet.__all__)


def test_public_classes_and_functions_of_the_package_are_all_listed() -> None:
    public = {
        name
        for name, obj in vars(llmfleet).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", "").startswith("llmfleet")
    }
    assert public == set(llmfleet.__all__)


def test_package_and_modules_have_docstrings() -> None:
    assert llmfleet.__doc__
    assert llmfleet.errors.__doc__


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_errors_are_reexported_from_both_places(name: str) -> None:
    assert name in llmfleet.errors.__all__
    assert name in llmfleet.__all__
    assert getattr(llmfleet, name) is getattr(llmfleet.errors, name)


def test_errors_module_exports_only_errors() -> None:
    assert set(llmfleet.errors.__all__) == set(ERROR_NAMES)


def test_errors_module_draws_the_tree() -> None:
    doc = llmfleet.errors.__doc__
    assert doc is not None
    for name in ERROR_NAMES:
        assert name in doc


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (FleetError, Exception),
        (PolicyError, FleetError),
        (PolicyError, ValueError),
        (UnbatchableRequestError, FleetError),
        (UnbatchableRequestError, ValueError),
        (InvalidRequestError, UnbatchableRequestError),
        (InvalidRequestError, ValueError),
        (FleetClosedError, FleetError),
        (FleetUsageError, FleetError),
        (FleetUsageError, TypeError),
        (BatchSubmitError, FleetError),
        (DeadlineExceededError, FleetError),
        (JournalError, FleetError),
        (BatchResultError, FleetError),
        (BatchRequestError, BatchResultError),
        (BatchRequestExpiredError, BatchResultError),
        (BatchRequestCanceledError, BatchResultError),
        (BatchResultMissingError, BatchResultError),
    ],
)
def test_error_tree(child: type[BaseException], parent: type[BaseException]) -> None:
    assert issubclass(child, parent)


@pytest.mark.parametrize(
    ("cls", "not_parent"),
    [
        (FleetClosedError, ValueError),
        (BatchSubmitError, ValueError),
        (BatchResultError, ValueError),
        (BatchSubmitError, BatchResultError),
        (BatchRequestError, BatchRequestExpiredError),
        (BatchResultMissingError, BatchRequestError),
        (FleetError, ValueError),
        (JournalError, ValueError),
    ],
)
def test_error_tree_has_no_extra_edges(
    cls: type[BaseException], not_parent: type[BaseException]
) -> None:
    assert not issubclass(cls, not_parent)


@pytest.mark.parametrize(
    "cls", [BatchRequestExpiredError, BatchRequestCanceledError, BatchResultMissingError]
)
def test_batch_result_errors_carry_ids(cls: type[BatchResultError]) -> None:
    error = cls("it went wrong", batch_id="msgbatch_42", custom_id="lf_ab_7")
    assert error.batch_id == "msgbatch_42"
    assert error.custom_id == "lf_ab_7"
    assert "it went wrong" in str(error)
    assert "msgbatch_42" in str(error)
    assert "lf_ab_7" in str(error)


def test_batch_request_error_carries_type_message_and_ids() -> None:
    error = BatchRequestError(
        "invalid_request_error", "max_tokens too large", batch_id="b1", custom_id="c1"
    )
    assert isinstance(error, BatchResultError)
    assert error.error_type == "invalid_request_error"
    assert error.message == "max_tokens too large"
    assert (error.batch_id, error.custom_id) == ("b1", "c1")
    assert "invalid_request_error" in str(error)
    assert "max_tokens too large" in str(error)


def test_batch_submit_error_carries_size() -> None:
    error = BatchSubmitError("refused", batch_size=12)
    assert error.batch_size == 12
    assert str(error) == "refused"


def test_policy_error_carries_field() -> None:
    error = PolicyError("batch_window_ms", "must be >= 0")
    assert error.field == "batch_window_ms"
    assert "batch_window_ms" in str(error)
    assert "must be >= 0" in str(error)


def test_invalid_request_error_carries_field() -> None:
    error = InvalidRequestError("messages.0.role", "must be 'user' or 'assistant'")
    assert error.field == "messages.0.role"
    assert str(error) == "messages.0.role: must be 'user' or 'assistant'"


def test_excerpt_keeps_short_text_whole() -> None:
    assert excerpt("hello") == "'hello'"
    assert excerpt("x" * 40) == repr("x" * 40)


def test_excerpt_truncates_long_text_visibly() -> None:
    secret_tail = "TAIL-THAT-MUST-NOT-LEAK"
    text = "a" * 100 + secret_tail
    short = excerpt(text)
    assert secret_tail not in short
    assert short.startswith(repr("a" * 40))
    assert "truncated" in short
    assert str(len(text)) in short
    assert len(short) < len(text)


def test_excerpt_limit_is_a_parameter() -> None:
    assert excerpt("abcdef", limit=3).startswith("'abc'")
    assert "truncated, 6 chars" in excerpt("abcdef", limit=3)
    assert excerpt("abc", limit=3) == "'abc'"
    # One over the limit is already truncated.
    assert "truncated" in excerpt("x" * 41)
