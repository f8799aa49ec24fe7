"""User-facing errors: the CLI prints them as one line each and exits with code 2."""


class BnexpError(Exception):
    """Bad input a user can fix (config, data files, paths). Never shown as a traceback."""


class DataError(BnexpError):
    """A data file or folder that cannot be used: missing, truncated, wrong keys or shapes."""


class ConfigError(BnexpError):
    """One or more problems with a config; `str()` gives one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))
