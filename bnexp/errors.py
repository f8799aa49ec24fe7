"""User-facing errors: the CLI prints them as one line each and exits with code 2."""

from __future__ import annotations

import re
from dataclasses import dataclass


class BnexpError(Exception):
    """Bad input a user can fix (config, data files, paths). Never shown as a traceback."""


class DataError(BnexpError):
    """A data file or folder that cannot be used: missing, truncated, wrong keys or shapes."""


class RunsFailed(BnexpError):
    """Every run a sweep trained failed; the message gives the first run's error."""


class ConfigError(BnexpError):
    """One or more problems with a config; `str()` gives one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))

    @property
    def details(self) -> list[Problem]:
        """Each problem as data (file, line, key, message), for programs (bnexp.validate)."""
        return [Problem.parse(p) for p in self.problems]


# `file[:line[:col]]: [sweep cell (...): ][dotted.key: ]message` or `--set key: message`
_PROBLEM = re.compile(
    r"^(?:--set (?P<set>\S+?)|(?P<file>.+?)(?::(?P<line>\d+))?(?::\d+)?)"
    r"(?:: sweep cell \((?P<cell>.*?)\))?: (?:(?P<key>[A-Za-z_<][\w.\[\]<>-]*): )?(?P<msg>.*)$"
)


@dataclass(frozen=True)
class Problem:
    """One problem of a config: where it is and what is wrong."""

    file: str | None  # the YAML file ("<dict>", "<yaml>" for in-memory configs); None for --set
    line: int | None  # 1-based line in `file`, when known
    key: str | None  # dotted key, e.g. train.lr or sweep.train.seed[1]; None for the whole file
    message: str  # what is wrong, with what was found and expected
    text: str  # the whole line as printed

    @classmethod
    def parse(cls, text: str) -> Problem:
        m = _PROBLEM.match(text)
        if m is None:
            return cls(None, None, None, text, text)
        key = m["set"] or m["key"]
        line = int(m["line"]) if m["line"] else None
        return cls(m["file"], line, key.strip("'") if key else None, m["msg"], text)
