"""List prices, and what a call costs at them.

Prices are USD per million tokens (MTok), from Anthropic's, OpenAI's, Google's (Gemini) and
Amazon Bedrock's public pricing pages.
The batch route is billed at half of every rate (:data:`BATCH_DISCOUNT`), on both; OpenAI's flex
tier at its Batch API rates (:data:`FLEX_DISCOUNT`, docs/design.md §B). OpenAI has
no cache-write premium: its ``cache_write`` is its input rate, its ``cache_read`` the cached
input rate. Costs are :class:`~decimal.Decimal`
so that sums are exact and a fleet's figure can be compared to the provider's to the cent.

An unknown model has no price: :meth:`PriceTable.cost` returns ``None`` and callers report tokens
only. A made-up price would be worse than none.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BATCH_DISCOUNT",
    "DEFAULT_PRICES",
    "FLEX_DISCOUNT",
    "Cost",
    "ModelPrice",
    "PriceTable",
    "TokenUsage",
]

#: Multiplier applied to every rate on the batch route.
BATCH_DISCOUNT: Final = Decimal("0.5")
#: Multiplier applied to every rate on the flex route: OpenAI bills flex processing "at Batch
#: API rates" (docs/design.md §B).
FLEX_DISCOUNT: Final = BATCH_DISCOUNT
#: A price is per million tokens: 10**6.
_MTOK_DIGITS: Final = 6


@final
@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens of one call, as the provider's ``usage`` reports them.

    ``input_tokens`` excludes cached tokens; ``cache_write_tokens`` and ``cache_read_tokens``
    count the prompt-cache writes and hits.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
        )


@final
@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens for one model (5-minute cache writes)."""

    input: Decimal
    output: Decimal
    cache_write: Decimal
    cache_read: Decimal

    @classmethod
    def of(cls, input: str, output: str, cache_write: str, cache_read: str) -> ModelPrice:
        """Build a price from decimal strings (``"3"``, ``"0.30"``), exactly."""
        return cls(Decimal(input), Decimal(output), Decimal(cache_write), Decimal(cache_read))


@final
@dataclass(frozen=True, slots=True)
class Cost:
    """What a call (or a sum of calls) costs: at list price, and at the price paid."""

    list_price: Decimal = Decimal(0)
    paid: Decimal = Decimal(0)

    @property
    def saving(self) -> Decimal:
        """List price minus the price paid."""
        return self.list_price - self.paid

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.list_price + other.list_price, self.paid + other.paid)


# Bedrock's on-demand prices for Claude are Anthropic's list prices; from Claude Sonnet 4.5
# and Haiku 4.5 on, its regional endpoints (and geography profiles) cost 10 % more than the
# global ones (global.anthropic.…). Batch inference is half of either, as everywhere.
_BEDROCK_GEOS: Final = ("", "us.", "eu.", "apac.", "jp.", "au.", "us-gov.")
_BEDROCK_GLOBAL: Final = {
    "claude-opus-4-5": ModelPrice.of("5", "25", "6.25", "0.50"),
    "claude-sonnet-4-5": ModelPrice.of("3", "15", "3.75", "0.30"),
    "claude-haiku-4-5": ModelPrice.of("1", "5", "1.25", "0.10"),
}
_BEDROCK_REGIONAL: Final = {
    "claude-opus-4-5": ModelPrice.of("5.50", "27.50", "6.875", "0.55"),
    "claude-sonnet-4-5": ModelPrice.of("3.30", "16.50", "4.125", "0.33"),
    "claude-haiku-4-5": ModelPrice.of("1.10", "5.50", "1.375", "0.11"),
    "claude-opus-4-1": ModelPrice.of("15", "75", "18.75", "1.50"),
    "claude-opus-4-20250514": ModelPrice.of("15", "75", "18.75", "1.50"),
    "claude-sonnet-4-20250514": ModelPrice.of("3", "15", "3.75", "0.30"),
    "claude-3-7-sonnet": ModelPrice.of("3", "15", "3.75", "0.30"),
    "claude-3-5-haiku": ModelPrice.of("0.80", "4", "1", "0.08"),
    "claude-3-haiku": ModelPrice.of("0.25", "1.25", "0.30", "0.03"),
}

#: Current list prices (USD/MTok), keyed by model id or id prefix.
DEFAULT_PRICES: Final[Mapping[str, ModelPrice]] = {
    "claude-opus-4-5": ModelPrice.of("5", "25", "6.25", "0.50"),
    "claude-opus-4-6": ModelPrice.of("5", "25", "6.25", "0.50"),
    "claude-opus-4-7": ModelPrice.of("5", "25", "6.25", "0.50"),
    "claude-opus-4-1": ModelPrice.of("15", "75", "18.75", "1.50"),
    "claude-opus-4-0": ModelPrice.of("15", "75", "18.75", "1.50"),
    "claude-opus-4-20250514": ModelPrice.of("15", "75", "18.75", "1.50"),
    "claude-sonnet-4-6": ModelPrice.of("3", "15", "3.75", "0.30"),
    "claude-sonnet-4-5": ModelPrice.of("3", "15", "3.75", "0.30"),
    "claude-sonnet-4-0": ModelPrice.of("3", "15", "3.75", "0.30"),
    "claude-sonnet-4-20250514": ModelPrice.of("3", "15", "3.75", "0.30"),
    "claude-3-7-sonnet": ModelPrice.of("3", "15", "3.75", "0.30"),
    "claude-haiku-4-5": ModelPrice.of("1", "5", "1.25", "0.10"),
    "claude-3-5-haiku": ModelPrice.of("0.80", "4", "1", "0.08"),
    "claude-3-haiku": ModelPrice.of("0.25", "1.25", "0.30", "0.03"),
    # OpenAI: input, output, cache write (= input), cached input. Keys are prefixes too, so a
    # key is added only where every longer id sharing it has the same price (no "gpt-5" or
    # "o3": "gpt-5.2-pro" and "o3-pro" cost far more); the exceptions get their own keys.
    "gpt-4.1": ModelPrice.of("2", "8", "2", "0.50"),
    "gpt-4.1-mini": ModelPrice.of("0.40", "1.60", "0.40", "0.10"),
    "gpt-4.1-nano": ModelPrice.of("0.10", "0.40", "0.10", "0.025"),
    "gpt-4o": ModelPrice.of("2.50", "10", "2.50", "1.25"),
    "gpt-4o-2024-05-13": ModelPrice.of("5", "15", "5", "5"),
    "gpt-4o-mini": ModelPrice.of("0.15", "0.60", "0.15", "0.075"),
    "o4-mini": ModelPrice.of("1.10", "4.40", "1.10", "0.275"),
    "o4-mini-deep-research": ModelPrice.of("2", "8", "2", "0.50"),
    # Google Gemini (the Gemini Developer API, text; 2.5 Pro at its rate for prompts up to
    # 200k tokens): input, output, cache write (= input: Gemini charges cache storage by the
    # hour instead, which a call's usage does not show), cached input.
    "gemini-2.5-pro": ModelPrice.of("1.25", "10", "1.25", "0.125"),
    "gemini-2.5-flash": ModelPrice.of("0.30", "2.50", "0.30", "0.03"),
    "gemini-2.5-flash-lite": ModelPrice.of("0.10", "0.40", "0.10", "0.01"),
    **{
        # Amazon Bedrock's Claude model ids (llmfleet.providers.bedrock), bare (in-region) and
        # behind the cross-region inference profiles (us., eu., …).
        f"{geo}anthropic.{model}": price
        for geo in _BEDROCK_GEOS
        for model, price in _BEDROCK_REGIONAL.items()
    },
    **{f"global.anthropic.{model}": price for model, price in _BEDROCK_GLOBAL.items()},
}


@final
class PriceTable:
    """Looks up a model's price: an exact id first, then the longest id prefix
    (``claude-sonnet-4-5-20250929`` is priced as ``claude-sonnet-4-5``).

    :param overrides: prices that replace or extend :data:`DEFAULT_PRICES`.
    :param defaults: the base table (``DEFAULT_PRICES`` unless given).
    """

    __slots__ = ("_prices", "_sorted")

    def __init__(
        self,
        overrides: Mapping[str, ModelPrice] | None = None,
        *,
        defaults: Mapping[str, ModelPrice] = DEFAULT_PRICES,
    ) -> None:
        self._prices = {**defaults, **(overrides or {})}
        # Longest prefix first, so "claude-3-5-haiku" wins over a shorter key.
        self._sorted = sorted(self._prices, key=len, reverse=True)

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model``, or ``None`` when the table does not know it."""
        exact = self._prices.get(model)
        if exact is not None:
            return exact
        for key in self._sorted:
            if model.startswith(key):
                return self._prices[key]
        return None

    def cost(
        self, model: str, usage: TokenUsage, *, batch: bool, flex: bool = False
    ) -> Cost | None:
        """What ``usage`` of ``model`` costs at list price and as paid on its route.

        :param batch: the call went through the batch route (billed at :data:`BATCH_DISCOUNT`).
        :param flex: the call was answered on the flex tier (billed at :data:`FLEX_DISCOUNT`).
        :return: the cost, or ``None`` for a model the table does not know.
        """
        price = self.price(model)
        if price is None:
            return None
        # scaleb, not a division: the exponent then depends on the prices only, so the cost
        # of a sum of calls and the sum of their costs are equal digit for digit, string too.
        list_price = (
            price.input * usage.input_tokens
            + price.output * usage.output_tokens
            + price.cache_write * usage.cache_write_tokens
            + price.cache_read * usage.cache_read_tokens
        ).scaleb(-_MTOK_DIGITS)
        if batch:
            return Cost(list_price, list_price * BATCH_DISCOUNT)
        if flex:
            return Cost(list_price, list_price * FLEX_DISCOUNT)
        return Cost(list_price, list_price)
