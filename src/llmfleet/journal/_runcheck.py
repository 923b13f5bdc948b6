"""What ``llmfleet run`` tells its user: the endpoint checked once before the run starts
(:func:`check_endpoint`), and the fleet's error messages, written for library users, said
for a command-line user (:func:`for_cli`)."""

from __future__ import annotations

import importlib
import re
from typing import Any, Final

from ..errors import excerpt

__all__ = ["check_endpoint", "for_cli"]

#: Seconds the endpoint check waits for an answer.
CHECK_TIMEOUT_S: Final = 30.0

_BASE_URLS: Final = (
    "Anthropic's base URL has no /v1 (e.g. http://127.0.0.1:8787); OpenAI's ends in /v1 "
    "(e.g. http://127.0.0.1:8787/v1)"
)


async def check_endpoint(
    client: Any, provider: str, base_url: str, key_var: str, *, timeout: float = CHECK_TIMEOUT_S
) -> tuple[bool, str | None]:
    """Ask the endpoint for one batch of its listing (one cheap request, no retry).

    :param client: the SDK client the run uses (``AsyncAnthropic`` or ``AsyncOpenAI``).
    :param provider: ``"anthropic"`` or ``"openai"``.
    :param base_url: the base URL to name in messages.
    :param key_var: the environment variable the key came from.
    :return: ``(ok, message)``: not ok with what is wrong and what to do; ok with a warning
        (the endpoint answered, but with a passing error) or ``None``.
    """
    sdk = importlib.import_module(provider)
    probe = client.with_options(max_retries=0, timeout=timeout)
    batches = probe.batches if provider == "openai" else probe.messages.batches
    try:
        await batches.list(limit=1)
    except sdk.APITimeoutError:
        return False, (
            f"{base_url} did not answer within {timeout:g} s: is the host right, is a proxy "
            "or a firewall in the way?"
        )
    except sdk.APIConnectionError as exc:
        cause = "" if exc.__cause__ is None else f": {str(exc.__cause__)[:120]}"
        return False, (
            f"nothing listens at {base_url} (is the server/emulator running? is the port "
            f"right?){cause}"
        )
    except sdk.APIStatusError as exc:
        return _status(exc.status_code, str(exc.message), base_url, key_var)
    return True, None


def _status(status: int, said: str, base_url: str, key_var: str) -> tuple[bool, str | None]:
    said = excerpt(said, 80)
    if status == 404:
        return False, f"{base_url} answered 404 on the batches route: {_BASE_URLS}"
    if status == 401:
        return False, (
            f"{base_url} refused the API key in {key_var} (401: {said}): set a valid key for "
            "this endpoint"
        )
    if status == 403:
        return False, (
            f"{base_url} denied the batches route to the key in {key_var} (403: {said}): use a "
            "key whose organization or project may use the Batch API"
        )
    if status in (408, 409, 429) or status >= 500:
        # A passing error: the fleet retries those, so the run goes on.
        return True, f"{base_url} answered {status} ({said}); going on, the run retries"
    return False, (
        f"{base_url} answered {status} on the batches route ({said}): check --base-url and "
        "--provider"
    )


# Library advice in the fleet's messages, and what a command-line user does instead. Kept
# loose (a clause, not a whole message), so that a reworded message still loses its advice.
_ADVICE: Final = (
    # "send it with submit_sync() or make it smaller" -> "make it smaller"
    (re.compile(r"\b(?:send it with|use|call) submit_sync\(\)(?: instead)? or "), ""),
    (
        re.compile(r"Submit (?:it |them )?again, or use submit_sync\(\)"),
        "Run the same command again to send it again",
    ),
    # "use max_tokens >= 1 or submit_sync()" -> "use max_tokens >= 1"
    (re.compile(r",? or (?:use |call |send it with )?submit_sync\(\)"), ""),
    (re.compile(r"Call .*? on the client directly\.?"), 'Drop "stream" from the line\'s params.'),
    (re.compile(r"\s*\(or fix it with OpenAIProvider\(.*?\)\)"), ""),
    (re.compile(r"\bpass another journal path\b"), "pass another --journal PATH"),
    (re.compile(r"\buse the (\w+) client with it\b"), r"run it with --provider \1"),
)
# Whatever advice is left that names a library call: the clause that holds it goes.
_CLAUSES: Final = re.compile(r"(;\s+|\.\s+)")
_CALL: Final = re.compile(r"\bsubmit(?:_sync|_batch)?\(")


def for_cli(message: str) -> str:
    """``message`` with advice meant for library users (``submit_sync()``, SDK calls) said
    for a user of ``llmfleet run``, or dropped."""
    for pattern, instead in _ADVICE:
        message = pattern.sub(instead, message)
    if _CALL.search(message) is None:
        return message
    parts = _CLAUSES.split(message)  # clause, separator, clause, ...
    kept = [parts[0]]
    for sep, clause in zip(parts[1::2], parts[2::2], strict=True):
        if _CALL.search(clause) is None:
            kept += [sep, clause]
    if _CALL.search(kept[0]) is not None:
        return message  # the message is the advice: better whole than empty
    return "".join(kept).rstrip()
