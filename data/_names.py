"""Invented Chinese place names with their pinyin (no real names of the area)."""

from __future__ import annotations

import numpy as np

__all__ = ["NameMaker"]

_SYLLABLES = (
    ("岚", "lan"), ("朗", "lang"), ("曼", "man"), ("弄", "nong"), ("芒", "mang"),
    ("允", "yun"), ("糯", "nuo"), ("班", "ban"), ("岗", "gang"), ("坝", "ba"),
    ("溪", "xi"), ("云", "yun"), ("石", "shi"), ("松", "song"), ("竹", "zhu"),
    ("茶", "cha"), ("象", "xiang"), ("雀", "que"), ("金", "jin"), ("银", "yin"),
    ("凤", "feng"), ("龙", "long"), ("泉", "quan"), ("沙", "sha"), ("平", "ping"),
    ("安", "an"), ("和", "he"), ("宁", "ning"), ("永", "yong"), ("丰", "feng"),
    ("新", "xin"), ("清", "qing"), ("明", "ming"), ("桂", "gui"), ("岩", "yan"),
    ("峰", "feng"), ("林", "lin"), ("湾", "wan"), ("塘", "tang"), ("寨", "zhai"),
    ("营", "ying"), ("树", "shu"), ("花", "hua"), ("柳", "liu"), ("梅", "mei"),
    ("翠", "cui"), ("碧", "bi"), ("霞", "xia"), ("珑", "long"), ("杉", "shan"),
    ("桥", "qiao"), ("坡", "po"), ("垭", "ya"), ("箐", "qing"), ("冲", "chong"),
    ("苗", "miao"), ("禾", "he"), ("谷", "gu"), ("源", "yuan"), ("宝", "bao"),
    ("玉", "yu"), ("瑶", "yao"), ("椰", "ye"), ("蕉", "jiao"), ("藤", "teng"),
    ("鹤", "he"), ("鹿", "lu"), ("莲", "lian"), ("荷", "he"), ("晨", "chen"),
)


class NameMaker:
    """Hands out unique invented names (hanzi, pinyin) of two or three syllables."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def take(self, n: int, *, syllables: int = 2) -> list[tuple[str, str]]:
        """Return ``n`` unused names as (hanzi, capitalised pinyin) pairs."""
        out: list[tuple[str, str]] = []
        while len(out) < n:
            picks = self._rng.integers(0, len(_SYLLABLES), size=(2 * (n - len(out)) + 8, syllables))
            for row in picks:
                hanzi = "".join(_SYLLABLES[i][0] for i in row)
                if hanzi in self._used or len(set(row)) < syllables:
                    continue
                self._used.add(hanzi)
                out.append((hanzi, "".join(_SYLLABLES[i][1] for i in row).capitalize()))
                if len(out) == n:
                    break
        return out
