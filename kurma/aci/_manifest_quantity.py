"""Resource quantities of the resource isolators: "500m", "1G", "128Mi", "0.3", 1000.

ace.md, Resource Isolators: quantities are integers in the resource's natural base units
(bytes, cores), written unsuffixed, with metric suffixes (E, P, T, G, M, K), binary ones (Ei,
Pi, Ti, Gi, Mi, Ki), as decimals or in milli-units ("300m"). The reference implementation
uses the Kubernetes parser, which also knows n, u, lowercase k and decimal exponents (1e3);
we accept those too, plus the spec's uppercase K, which Kubernetes lacks.

The exact value is kept as a Fraction so "0.1" is a tenth, not a float near it; callers ask
for `value` (base units, rounded up as Kubernetes does) or `milli_value`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

from ..errors import ValidationError
from ._manifest_json import JSON, type_name

_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "K": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(
    r"\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:([eE][+-]?[0-9]{1,3})|(Ki|Mi|Gi|Ti|Pi|Ei|[numkKMGTPE])?)"
)
MAX_QUANTITY = 2**63 - 1
"""The largest value in base units: Kubernetes (and the kernel's cgroup files) use int64."""


@dataclass(frozen=True)
class Quantity:
    """A non-negative resource amount, kept as written; `amount` is its exact value."""

    text: str

    @classmethod
    def parse(cls, value: JSON, path: str) -> Quantity:
        """Parse a quantity given as a JSON string or number."""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValidationError(path, f"must be a quantity string, got {type_name(value)}")
        text = value if isinstance(value, str) else repr(value)
        if text.startswith("-"):
            raise ValidationError(path, f"must not be negative, got {text!r}")
        if len(text) > 64 or _QUANTITY.fullmatch(text) is None:
            raise ValidationError(
                path, f"must be a quantity such as '500m', '1G' or '128Mi', got {text!r}"
            )
        quantity = cls(text)
        if quantity.amount > MAX_QUANTITY:
            raise ValidationError(path, f"is too large (more than {MAX_QUANTITY}): {text!r}")
        return quantity

    @cached_property
    def amount(self) -> Fraction:
        """The exact value in base units."""
        m = _QUANTITY.fullmatch(self.text)
        if m is None:
            raise ValueError(f"not a quantity: {self.text!r}")
        number, exponent, suffix = m.groups()
        scale = Fraction(10) ** int(exponent[1:]) if exponent else _SUFFIXES[suffix or ""]
        return Fraction(number) * scale

    @property
    def value(self) -> int:
        """The value in base units (bytes, cores ...), rounded up."""
        return math.ceil(self.amount)

    @property
    def milli_value(self) -> int:
        """The value in thousandths of base units (millicores), rounded up."""
        return math.ceil(self.amount * 1000)

    def to_json(self) -> str:
        """The quantity as written (a JSON number comes back as its string form)."""
        return self.text

    def __str__(self) -> str:
        return self.text
