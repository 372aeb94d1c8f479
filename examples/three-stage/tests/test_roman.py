"""Tests for the numerals and the request routing, run against the built archive."""

import unittest

from roman.numerals import from_roman, to_roman
from roman.server import answer


class NumeralsTest(unittest.TestCase):
    def test_known_numbers_are_spelled_as_expected(self) -> None:
        known = {4: "IV", 14: "XIV", 1994: "MCMXCIV", 3999: "MMMCMXCIX"}
        for number, text in known.items():
            self.assertEqual(to_roman(number), text)

    def test_every_numeral_reads_back_to_its_number(self) -> None:
        for number in range(1, 4000):
            self.assertEqual(from_roman(to_roman(number)), number)

    def test_out_of_range_and_malformed_input_is_refused(self) -> None:
        calls = [
            lambda: to_roman(0),
            lambda: from_roman("IIII"),
            lambda: from_roman(""),
        ]
        for call in calls:
            with self.assertRaises(ValueError):
                call()


class RoutingTest(unittest.TestCase):
    def test_routes_answer_json_with_the_right_status(self) -> None:
        self.assertEqual(answer("/roman?n=12"), (200, {"roman": "XII"}))
        self.assertEqual(answer("/number?roman=xii"), (200, {"number": 12}))
        self.assertEqual(answer("/healthz"), (200, {"status": "ok"}))
        self.assertEqual(answer("/roman?n=x")[0], 400)
        self.assertEqual(answer("/nowhere")[0], 404)


if __name__ == "__main__":
    unittest.main()
