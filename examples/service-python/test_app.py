"""Tests for the statistics service, through Flask's test client."""

import unittest

from app import create_app, text_stats


class TextStatsTest(unittest.TestCase):
    def test_words_are_counted_case_insensitively(self) -> None:
        stats = text_stats("Build, build and push. Don't stop")
        self.assertEqual(stats["words"], 6)
        self.assertEqual(stats["top"][0], ("build", 2))

    def test_health_answers_ok(self) -> None:
        answer = create_app().test_client().get("/healthz")
        self.assertEqual((answer.status_code, answer.json), (200, {"status": "ok"}))

    def test_stats_without_text_is_refused(self) -> None:
        answer = create_app().test_client().post("/api/stats", json={"txt": 1})
        self.assertEqual(answer.status_code, 400)
        self.assertEqual(answer.json["error"]["code"], "invalid_request")


if __name__ == "__main__":
    unittest.main()
