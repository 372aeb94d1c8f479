"""Convert between integers and Roman numerals (1 to 3999)."""

from __future__ import annotations

SYMBOLS = (
    (1000, "M"),
    (900, "CM"),
    (500, "D"),
    (400, "CD"),
    (100, "C"),
    (90, "XC"),
    (50, "L"),
    (40, "XL"),
    (10, "X"),
    (9, "IX"),
    (5, "V"),
    (4, "IV"),
    (1, "I"),
)


def to_roman(number: int) -> str:
    """Spell ``number`` in Roman numerals, largest symbols first."""
    if not 0 < number < 4000:
        raise ValueError("Roman numerals cover 1 to 3999.")
    digits = []
    for value, symbol in SYMBOLS:
        count, number = divmod(number, value)
        digits.append(symbol * count)
    return "".join(digits)


def from_roman(text: str) -> int:
    """Read a Roman numeral, refusing any spelling that to_roman would not give."""
    total, rest = 0, text.upper()
    for value, symbol in SYMBOLS:
        while rest.startswith(symbol):
            total, rest = total + value, rest[len(symbol) :]
    if rest or not 0 < total < 4000 or to_roman(total) != text.upper():
        raise ValueError(f"{text!r} is not a Roman numeral.")
    return total
