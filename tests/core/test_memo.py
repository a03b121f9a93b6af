"""The in-process memo: answers made once, the least recently used one dropped first."""

from __future__ import annotations

from keel.core.memo import Memo


def test_memo_makes_each_answer_once_and_drops_the_least_recently_used():
    memo: Memo[int] = Memo(2)
    made = []

    def make(n: int):
        return lambda: made.append(n) or n * 10

    assert memo.get("a", make(1)) == 10 and memo.get("a", make(99)) == 10
    memo.get("b", make(2))
    memo.lookup("a")  # "a" is now the most recent: "b" goes when "c" comes
    memo.get("c", make(3))
    assert made == [1, 2, 3]
    assert "a" in memo and "c" in memo and "b" not in memo
    assert memo.lookup("b") is None and memo.lookup("b", -1) == -1
