"""The step contract as data: each stage's flags, output parameters and artifacts, declared once.

`steps/stages.py` declares every stage with the types below. From a declaration come the stage's
CLI (`Stage.parse`: argparse, then one check of every value), its Argo template and the workflow
parameters (`workflows/pipeline.py`), the parameter check that runs first in the workflow and in
the local runner (`steps/check_parameters.py`), and the tables of docs/steps.md (`docs_tables`).
Nothing here knows Argo or Hera.

A bad value is a `BadInput` (one `error:` line, exit code 2) naming the flag or the environment
variable it came from, the value and what is expected; never a traceback or a usage dump.
"""

from __future__ import annotations

import argparse
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from steps.cli import BadInput
from steps.files import (
    ReservedOutputs,
    blocking_parent,
    path_problem,
    what_is_at,
    write_problem,
)
from steps.redaction import redact_value, split_http_url

# ASCII digits only: int() also takes "١٢", "1_000" and "+2". One spelling per number, so a model
# version written "+2" is refused rather than read as version 2 (leading zeros stay accepted).
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 and C1 control characters and DEL
# Characters that show as nothing: format characters (Cf: zero-width space and joiners, BOM,
# bidi marks), unassigned and private-use code points, line/paragraph separators, and the
# fillers and blanks Unicode classes as letters or symbols (Hangul fillers, Braille blank).
_INVISIBLE_CATEGORIES = ("Cf", "Cn", "Co", "Cs", "Zl", "Zp")
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")
_MAX_DIGITS = 64  # longer digit strings are refused before int() or float() sees them
_NOT_GIVEN = (None, "", (), {})  # typed values that mean "not given" (a flag's empty default)
# argparse reads `--` as the end of the options: `--flag=--` reaches no flag as a value
# (Python 3.11 argparse _get_values drops it), so no door takes it as one.
END_OF_OPTIONS = "--"
NOT_A_VALUE = "'--' is no value (a command line reads it as the end of the options)"
# `{{...}}` tags as Argo reads them (v4.1.2 util/template/template.go and validate.go, through
# valyala/fasttemplate v1.2.2 NewTemplate): a tag runs from `{{` to the first `}}` after it, and a
# `{{` with no `}}` after it makes the whole text an error (fasttemplate: "Cannot find end tag").
# Said here, where the steps can read it: a workflow parameter's value holding one is refused at
# every door (`given_value_problem`), check-parameters included.
TAG_START, TAG_END = "{{", "}}"


# Every kind below is a small frozen dataclass with `empty_ok`, `parse` and `describe`.
# `duplicates` pairs the end of one with the start of the next, and with frozen dataclasses
# elsewhere (DeployRequest/DeployResult in steps/deploy_targets/common.py), by shape alone: what
# they share is the dataclass idiom and this protocol, not logic. The path kinds, which did share
# logic, share `_LocalPath`.
class Kind(Protocol):
    """What values a flag takes. `parse` raises ValueError saying what is expected."""

    empty_ok: bool  # an empty value means "not given" (the flag's default) rather than an error

    def parse(self, text: str) -> Any:
        """The typed value of `text`: never blank, and without white space at either end
        unless the kind checks its ends itself (`parse_as_given`)."""
        ...

    def describe(self) -> str:
        """What the kind accepts, for `--help`, error lines and docs/steps.md."""
        ...


@dataclass(frozen=True)
class Integer:
    """A whole number in ASCII digits, within [minimum, maximum]."""

    minimum: int
    maximum: int
    empty_ok: bool = False

    def parse(self, text: str) -> int:
        """The integer; ValueError outside the range or for anything but ASCII digits."""
        if len(text) > _MAX_DIGITS or not _INTEGER.fullmatch(text):
            raise ValueError(f"must be {self.describe()}")
        value = int(text)
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"must be {self.describe()}")
        return value

    def describe(self) -> str:
        """E.g. `an integer from 0 to 4294967295`."""
        return f"an integer from {self.minimum} to {self.maximum}"


@dataclass(frozen=True)
class Number:
    """A finite decimal number within its bounds; `open_*` excludes the bound itself."""

    minimum: float
    maximum: float
    open_minimum: bool = False
    open_maximum: bool = False
    empty_ok: bool = False

    def parse(self, text: str) -> float:
        """The float; ValueError for NaN, infinities, non-ASCII digits and values out of range.

        The bounds are checked on the decimal as written (`Decimal`) as well as on the float it
        rounds to: `599.9999999999999999999` is a float of 600.0, and passed `>= 600`."""
        if len(text) > _MAX_DIGITS or not _DECIMAL.fullmatch(text):
            raise ValueError(f"must be {self.describe()}")
        value = float(text)
        if not (self._within(Decimal(text)) and self._within(Decimal(value))):
            raise ValueError(f"must be {self.describe()}")
        return value

    def _within(self, value: Decimal) -> bool:
        """Whether `value` is within the bounds (`1e-400` is within `> 0`; its float, 0.0, is
        not, and both must be)."""
        low, high = Decimal(str(self.minimum)), Decimal(str(self.maximum))
        low_ok = value > low if self.open_minimum else value >= low
        return low_ok and (value < high if self.open_maximum else value <= high)

    def describe(self) -> str:
        """E.g. `a number > 0 and <= 3600`."""
        low = f"{'>' if self.open_minimum else '>='} {self.minimum:g}"
        high = f"{'<' if self.open_maximum else '<='} {self.maximum:g}"
        return f"a number {low} and {high}"


@dataclass(frozen=True)
class Boolean:
    """`true` or `false`, as written: the enum Argo offers and checks (`choices`), so every door
    takes the same two spellings (`1`, `yes` and `True` passed a step's command line and
    check-parameters, were refused by submit.py and the runner, and gave another data key)."""

    empty_ok: bool = False

    def parse(self, text: str) -> bool:
        """True or False; ValueError for anything else."""
        if text not in self.choices:
            raise ValueError(f"must be {self.describe()}")
        return text == "true"

    def describe(self) -> str:
        """`true or false`."""
        return "true or false"

    @property
    def choices(self) -> tuple[str, ...]:
        """What Argo offers for it: the canonical spellings."""
        return ("true", "false")


@dataclass(frozen=True)
class Choice:
    """One of a fixed list of names (case-sensitive)."""

    options: tuple[str, ...]
    empty_ok: bool = False

    def parse(self, text: str) -> str:
        """The name itself; ValueError naming the options for anything else."""
        if text not in self.options:
            raise ValueError(f"must be {self.describe()}")
        return text

    def describe(self) -> str:
        """E.g. `one of gsod, bigquery`."""
        return f"one of {', '.join(self.options)}"

    @property
    def choices(self) -> tuple[str, ...]:
        """The options, in declaration order."""
        return self.options


def parse_as_given(kind: Kind, text: str) -> Any:
    """`kind.parse(text)` for a value that is not blank, taken as given: white space at either
    end is refused, never dropped, by every flag and every door alike. Argo uses a value as
    given (its enum check, v4.1.2 workflow/validate/validate.go validateArgumentsValues; the
    release mutex, workflow/sync/lock_name.go), and so does check-parameters
    (`given_value_problem`): `promote --tolerance ' 1'` and `SERVE_PORT=' 5001'` were read as 1
    and 5001 by the stage and refused by check-parameters. No legitimate value arrives padded:
    the steps write their output parameters without a newline (`steps.files.ReservedOutputs`) and
    Argo drops one trailing newline from an output parameter's file (v4.1.2
    workflow/executor/executor.go SaveParameters, `strings.TrimSuffix(..., "\n")`), as the
    local runner does (workflows/local_runner/runner.py `_collect_outputs`).

    Raises:
        ValueError: saying what is expected.
    """
    if text != text.strip():
        raise ValueError(f"must be {kind.describe()}, without white space at either end")
    return kind.parse(text)


def _invisible(char: str) -> bool:
    """Whether `char` shows as nothing (`_INVISIBLE_CATEGORIES`, `_INVISIBLE`)."""
    return char in _INVISIBLE or unicodedata.category(char) in _INVISIBLE_CATEGORIES


def _unseen(text: str) -> str | None:
    """What `text` holds that does not show as itself, as the end of `must be ..., without `:
    control characters (NUL, a line break, ESC, NEL: no value is multi-line, and a NUL cannot
    reach a C library or PostgreSQL), or invisible characters (`_invisible`: a zero-width space,
    a BOM, a bidi mark, U+2028); None for neither. Every Text value, each item of a comma list
    and each name of a pair is refused with either: two names that differ only there look alike
    in MLflow, Argo and an error line."""
    if _CONTROL.search(text):
        return "control characters"
    if any(_invisible(c) for c in text):
        return "invisible characters (zero-width, fillers, line separators)"
    return None


def _item_problem(text: str) -> str | None:
    """Why one item of a value (a comma list's item, a name of a pair) is not taken as given,
    as the end of `must be ..., without `: white space at either end (as `parse_as_given` says
    of a whole value: `2023\\n,2024` is refused, never read as 2023 and 2024), or what `_unseen`
    finds; None for neither."""
    if text != text.strip():
        return "white space at either end"
    return _unseen(text)


@dataclass(frozen=True)
class Text:
    """Free text, optionally matching `pattern` (described as `what`) and at most `max_length`.

    No Text takes a control or an invisible character (`_unseen`): a zero-width space in a
    workflow UID or an experiment name made a value no one could tell from another.
    `visible`: a name people must see to tell apart (a registered model's, which also names the
    pipeline's release mutex, workflows/pipeline.py MUTEX_NAME, and the local release lock):
    refused with white space at either end (the mutex of `m ` is not the one of `m`) even where
    `parse` is called directly; through a flag every value is taken as given (`Flag.convert`,
    `parse_as_given`).
    """

    pattern: str | None = None
    what: str = "text"
    empty_ok: bool = True
    max_length: int = 4096
    visible: bool = False

    def parse(self, text: str) -> str:
        """The text; ValueError if it is too long, holds a control or invisible character
        (`_unseen`), does not match the pattern, or (`visible`) has white space at either end."""
        unseen = _unseen(text)
        if unseen:
            raise ValueError(f"must be {self.describe()}, without {unseen}")
        if self.visible and text != text.strip():
            raise ValueError(f"must be {self.describe()}, without white space at either end")
        if len(text) > self.max_length or (
            self.pattern is not None and not re.fullmatch(self.pattern, text)
        ):
            raise ValueError(f"must be {self.describe()}")
        return text

    def describe(self) -> str:
        """`what`, plus `non-empty` when an empty value is refused."""
        return self.what if self.empty_ok else f"{self.what} (non-empty)"


@dataclass(frozen=True)
class CommaList:
    """`a,b,c`: each item of the kind `item`, each once, taken as given (`_item_problem`: no
    white space around it, so `a, b` is refused too); empty items are ignored, so empty (or
    `,`, or only white space, as every flag reads it: `Flag.convert`) means (), which every
    door reads as "not given" (`Flag.sets`)."""

    item: Kind
    empty_ok: bool = True

    def parse(self, text: str) -> tuple[Any, ...]:
        """The parsed items; ValueError naming the first bad one (`_item_problem`, or refused by
        the item's kind), or one given twice (`2020,2020` fetched the year twice through one
        door and was folded into one by another)."""
        values: list[Any] = []
        for raw in text.split(",") if text.strip() else ():
            if not raw:
                continue
            problem = _item_problem(raw)
            try:
                if problem:
                    raise ValueError(f"must be {self.item.describe()}, without {problem}")
                value = self.item.parse(raw)
            except ValueError as exc:
                raise ValueError(f"item {_shown(raw)} {exc}") from None
            if value in values:
                raise ValueError(f"item {_shown(raw)} is given twice: give each once")
            values.append(value)
        return tuple(values)

    def describe(self) -> str:
        """E.g. `a comma list of an integer from 1901 to 2100`."""
        return f"a comma list, each {self.item.describe()}"


@dataclass(frozen=True)
class Pairs:
    """`ours=theirs,...`: a mapping of names, each of ours one of `keys` and given once, each
    name taken as given (`_item_problem`: `temp= TEMP` or `temp=TEMP, dewp=DEWP` is refused);
    empty (or only white space, as every flag reads it: `Flag.convert`) means {}."""

    keys: tuple[str, ...]
    empty_ok: bool = True

    def parse(self, text: str) -> dict[str, str]:
        """The mapping; ValueError naming the first entry that is not `name=name`, holds a name
        with white space around it or a control or invisible character (`_item_problem`), maps
        a name of ours that is not one of `keys` or is mapped twice, or a source column mapped
        twice."""
        mapping: dict[str, str] = {}
        for item in text.split(",") if text.strip() else ():
            if not item:
                continue
            ours, sep, theirs = item.partition("=")
            if not sep or not ours or not theirs:
                raise ValueError(f"entries must look like temp=TEMP, got {_shown(item)}")
            problem = _item_problem(ours) or _item_problem(theirs)
            if problem:
                raise ValueError(
                    f"entries must look like temp=TEMP, without {problem}, got {_shown(item)}"
                )
            if ours not in self.keys:
                raise ValueError(f"maps {_shown(ours)}, which is none of {', '.join(self.keys)}")
            if ours in mapping:
                raise ValueError(f"maps {_shown(ours)} twice")
            if theirs in mapping.values():
                # Two of ours read from one column: the data would pass validate as identical.
                raise ValueError(
                    f"maps the source column {_shown(theirs)} to two of ours: each needs its own"
                )
            mapping[ours] = theirs
        return mapping

    def describe(self) -> str:
        """E.g. `name=name pairs, comma-separated; names of ours: temp, dewp`."""
        return f"name=name pairs, comma-separated; names of ours: {', '.join(self.keys)}"


@dataclass(frozen=True)
class _LocalPath:
    """A path the system can look up; each path kind below adds its own check (`_check`)."""

    empty_ok: bool = False

    def parse(self, text: str) -> Path:
        """The path; ValueError for a NUL byte, a name longer than the file system allows
        (ENAMETOOLONG), a path that cannot be examined, or one the kind's check refuses."""
        path = Path(text)
        try:
            path.exists()  # ValueError for an embedded NUL byte
            self._check(path)  # OSError for a loop of links, a parent that may not be searched
        except OSError as exc:
            raise ValueError(f"is not a usable path ({exc.strerror or exc})") from None
        except ValueError as exc:
            if "null byte" not in str(exc):
                raise  # the kind's own refusal
            raise ValueError(f"is not a usable path ({exc})") from None
        return path

    def _check(self, path: Path) -> None:
        """Raise ValueError saying what makes `path` unusable for this kind."""

    def written(self) -> bool:
        """Whether the step writes at the path (else it only reads it)."""
        return False


# The words each path kind uses come from steps.files (`what_is_at`, `path_problem`): what is
# there (a directory, a named pipe, ...) and what the flag takes, never "does not exist" for
# something that exists.
_WHERE = " where the step runs"  # on this machine for the local runner; in the pod on a cluster


def _parents_are_directories(path: Path) -> None:
    """ValueError if the nearest existing parent of `path` is not a directory (so `path` could
    never be created)."""
    parent = blocking_parent(path)
    if parent is not None:
        raise ValueError(f"cannot be written: {parent} is not a directory")


def _can_write_in(directory: Path) -> None:
    """ValueError if no file can be made in `directory` (or where it would be created:
    `steps.files.write_problem`), so the step would fail writing after its work (promote
    `--outputs-dir /proc/self` moved the champion, then failed)."""
    problem = write_problem(directory)
    if problem:
        raise ValueError(problem)


@dataclass(frozen=True)
class FilePath(_LocalPath):
    """A file path. `writes`: the step writes it, so anything but a file there (a directory, a
    named pipe, a device) is refused, as is a path under something that is no directory; else
    the step reads it, so it must be a file (links followed) where the step runs."""

    writes: bool = False

    def _check(self, path: Path) -> None:
        if not self.writes:
            problem = path_problem(path, where=_WHERE)
            if problem:
                raise ValueError(problem)
            return
        what = what_is_at(path)
        if what not in (None, "a file"):
            raise ValueError(f"is {what}; give the path of a file to write")
        _parents_are_directories(path)
        _can_write_in(path.parent)  # written beside it, then renamed (steps.files)

    def describe(self) -> str:
        """`a file path (written)` or `an existing file (read)`."""
        return "a file path (written)" if self.writes else "an existing file (read)"

    def written(self) -> bool:
        """`writes`."""
        return self.writes


@dataclass(frozen=True)
class ExistingPath(_LocalPath):
    """A file or directory the step reads, which must exist where the step runs (on this machine
    for the local runner; in the pod on a cluster); a file's name must end in one of `file_ends`
    (any case) when they are given: what the step can read (`--path`: a GSOD file or archive)."""

    file_ends: tuple[str, ...] = ()

    def _check(self, path: Path) -> None:
        problem = path_problem(path, ("a file", "a directory"), where=_WHERE)
        if problem:
            raise ValueError(problem)
        if what_is_at(path) == "a file":
            _check_end(str(path), self.file_ends, "a file whose name")

    def describe(self) -> str:
        """`an existing file or directory (read)`, with the ends a file's name may have."""
        ends = f", a file named *{', *'.join(self.file_ends)}" if self.file_ends else ""
        return f"an existing file or directory (read{ends})"


def _check_end(name: str, ends: tuple[str, ...], what: str) -> None:
    """ValueError unless `name` ends in one of `ends` (any case; none given: any end); `what`
    says what ends so: `a file whose name`, `a URL whose path`."""
    if ends and not name.lower().endswith(ends):
        raise ValueError(f"is {what} ends in none of {', '.join(ends)}")


@dataclass(frozen=True)
class DirectoryPath(_LocalPath):
    """A directory the step creates if needed; anything else there (a file, a named pipe), a
    path under something that is no directory, or (`writable`) one where no file can be made, is
    refused (before the step does any work: promote would otherwise move the champion, then fail
    to write its outputs). `writable=False`: the stage checks that itself, where it writes (deploy
    `--stop` only removes what it can from a read-only state directory). `managed`: the stage
    keeps its own files there and removes some of them (deploy's state directory, whose model
    copies it prunes), so no other path the stage writes may be inside it (`Stage.parse`)."""

    writable: bool = True
    managed: bool = False

    def _check(self, path: Path) -> None:
        what = what_is_at(path)
        if what not in (None, "a directory"):
            raise ValueError(f"is {what}, not a directory")
        _parents_are_directories(path)
        if self.writable:
            _can_write_in(path)

    def describe(self) -> str:
        """`a directory`."""
        return "a directory"

    def written(self) -> bool:
        """Always: the step creates it and writes in it."""
        return True


def _http_url(text: str, what: str) -> str:
    """The path of the http(s) URL `text`; ValueError (never quoting it) for white space, a
    control character, another scheme, no host, a port that is not from 1 to 65535 or empty,
    or a password that ends the host early (`steps.redaction.split_http_url`). The scheme is
    read in any case (`HTTP://`: RFC 3986 section 3.1, schemes are case-insensitive)."""
    Text(r"(?i:https?)://\S+", what=what).parse(text)
    try:
        return split_http_url(text).path
    except ValueError as exc:
        raise ValueError(f"must be {what}: {exc}") from None


def lower_scheme(url: str) -> str:
    """`url` with its scheme (up to the first ':') in lower case, the one spelling of it
    (RFC 3986 section 3.1: "should only produce lowercase scheme names"); the rest as given."""
    scheme, colon, rest = url.partition(":")
    return f"{scheme.lower()}{colon}{rest}"


@dataclass(frozen=True)
class HttpUrl:
    """An http(s) URL with a host and, if any, a port from 1 to 65535: a '/', '#' or '?' left
    unencoded in a password ends the host early and puts part of the password where the port
    goes, which must be refused here rather than by the HTTP client later (quoting it), and a
    port no server listens on would be retried as a transient failure (exit 75)."""

    what: str = "an http(s) URL"
    empty_ok: bool = True

    def parse(self, text: str) -> str:
        """`text` with its scheme in lower case (`lower_scheme`); ValueError for what
        `_http_url` refuses."""
        _http_url(text, self.what)
        return lower_scheme(text)

    def describe(self) -> str:
        """`what`."""
        return self.what


@dataclass(frozen=True)
class UrlOrFile:
    """An http(s) URL with a host, which the step downloads, or else the path of a file the step
    reads, which must be one where the step runs (as a read FilePath); `what` describes both.
    The file's name, or the URL's path, must end in one of `ends` (any case) when given: the
    step reads the format by it."""

    what: str
    empty_ok: bool = True
    ends: tuple[str, ...] = ()

    def parse(self, text: str) -> str:
        """`text`; ValueError for another scheme (`s3://`, `ftp://`, a bare `http://`), a URL
        `_http_url` refuses, a control character, a path where no file is (saying what is
        there), or a name without one of `ends`."""
        Text(what=self.what).parse(text)
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", text):  # a scheme, or a Windows drive
            _check_end(_http_url(text, self.describe()), self.ends, "a URL whose path")
            return lower_scheme(text)
        FilePath().parse(text)
        _check_end(text, self.ends, "a file whose name")
        return text

    def describe(self) -> str:
        """`what`, with the ends a name may have."""
        return f"{self.what}, named *{', *'.join(self.ends)}" if self.ends else self.what


@dataclass(frozen=True)
class Switch:
    """A flag without a value (argparse `store_true`); no environment variable."""

    empty_ok: bool = True

    def parse(self, text: str) -> bool:
        """Switches take no value: never called."""
        raise ValueError("takes no value")

    def describe(self) -> str:
        """`switch`."""
        return "switch (no value)"


# (flag, value or values): a condition on another flag of the stage (`Flag.read_with`, ...).
Condition = tuple[str, str | tuple[str, ...]]


def _wanted(condition: Condition) -> tuple[str, ...]:
    """The values a condition's flag may have."""
    values = condition[1]
    return (values,) if isinstance(values, str) else tuple(values)


def _said(condition: Condition) -> str:
    """`gsod`, or `gsod, bigquery or table`."""
    values = _wanted(condition)
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


@dataclass(frozen=True)
class Flag:
    """One command-line flag of a stage.

    Attributes:
        name: kebab-case without dashes (`http-timeout` is `--http-timeout`, `args.http_timeout`).
        kind: what values it takes.
        help: one line for `--help` and docs/steps.md.
        default: the typed value when neither the flag nor `env` is given (None: unset).
        env: environment variable read when the flag is absent (an empty variable is unset).
        units: deg F, seconds, rows... shown in help and docs.
        required: the step cannot run without a value.
        parameter: in the Argo pipeline, the workflow parameter this flag takes; several flags
            may take the same one, and its value must then suit every one of them.
        parameter_default: the workflow parameter's default when it differs from `default`.
        by_env: in a pod, pass the value through `env`, never on the command line (it may hold
            credentials, and argv is readable by every process on the node).
        env_from_pod: `env` is set by the pod itself (the downward API: POD_NAMESPACE), not by
            a user, so a value read from it is never "set by the user" (`read_with`).
        read_with: (flag, value or values): the stage reads this flag only when that other flag
            has that value (`("source", "gsod")`) or one of those values; a value the user set
            (`Flag.sets`) otherwise is refused, never silently ignored. It is also the flag's
            heading in `--help` (`group`).
        required_with: (flag, value): the stage cannot run without a value for this flag when
            that other flag has that value (`table-uri` with `("source", "table")`); an empty or
            missing one is refused then, before any work.
    """

    name: str
    kind: Kind
    help: str
    default: Any = None
    env: str | None = None
    units: str | None = None
    required: bool = False
    parameter: str | None = None
    parameter_default: str | None = None
    by_env: bool = False
    env_from_pod: bool = False
    read_with: Condition | None = None
    required_with: Condition | None = None

    @property
    def group(self) -> str | None:
        """The heading of the flags read only in one case (`target local`), from `read_with`."""
        return f"{self.read_with[0]} {_said(self.read_with)}" if self.read_with else None

    @property
    def option(self) -> str:
        """`--name`."""
        return f"--{self.name}"

    @property
    def dest(self) -> str:
        """The attribute name on the parsed namespace."""
        return self.name.replace("-", "_")

    def convert(self, raw: str | None, source: str | None = None) -> Any:
        """The typed value of `raw` (None: not given, so the default).

        Raises:
            BadInput: naming `source` (the flag, or the variable the value came from).
        """
        source = source or self.option
        if raw is None:
            if self.required and self.default is None:
                raise BadInput(f"{self.option} is required: {self.expected()}")
            return self.default
        if not raw.strip():
            if self.kind.empty_ok and not self.required:
                return self.default
            said = "empty" if not raw else "blank (only white space)"
            raise BadInput(f"{source} is {said}: {self.expected()}")
        if raw == END_OF_OPTIONS:  # every door refuses it as the step's command line would
            raise BadInput(f"{source} {NOT_A_VALUE}")
        try:
            return parse_as_given(self.kind, raw)
        except ValueError as exc:
            raise BadInput(f"{source} {_shown(raw)}: {exc}{_in(self.units)}") from None

    def canonical(self, raw: str) -> str:
        """`raw`, a value the flag takes, in its one spelling: parsed and written back
        (`render_value`: `0100` is `100`, `HTTP://h` is `http://h`); a path looked up where the
        step runs is not looked up here, only stripped.

        Raises:
            BadInput: as `convert`, for a value the flag refuses.
        """
        if _names_a_path_where_the_step_runs(self, raw):
            return raw.strip()
        return render_value(self.convert(raw))

    def given(
        self, namespace: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> tuple[str | None, str | None]:
        """(raw value, where it came from) as the user gave it: from the command line
        (`namespace`; where None, meaning the flag), else from `env` in `environ` (default this
        process's environment; an empty variable is unset; where `ENV (for --flag)`), else
        (None, None)."""
        environ = os.environ if environ is None else environ
        raw = getattr(namespace, self.dest)
        if raw is None and self.env and environ.get(self.env):
            return environ[self.env], f"{self.env} (for {self.option})"
        return raw, None

    def sets(self, value: Any) -> bool:
        """Whether a typed value, given by the user, sets the flag: not empty once parsed (`,` is
        no item) and not its default (nor its workflow parameter's, which the pipeline passes
        to every task whatever the source): a default is never "set by the user"."""
        defaults = [self.default]
        if self.parameter_default is not None:
            defaults.append(self.convert(self.parameter_default))
        return value not in _NOT_GIVEN and all(value != d for d in defaults)

    def default_text(self) -> str:
        """The default as it is written on the command line (empty for none)."""
        return render_value(self.default)

    def expected(self) -> str:
        """`give <what the kind accepts>[, in <units>]`: the end of an error line."""
        return f"give {self.kind.describe()}{_in(self.units)}"


@dataclass(frozen=True)
class Output:
    """An output parameter: written to `<outputs-dir>/<name>` and printed as JSON."""

    name: str
    help: str


@dataclass(frozen=True)
class Artifact:
    """A file the stage reads (`output=False`) or writes, named by its path flag.

    In a pod it lives at `/work/in/<file>` or `/work/out/<file>`; Argo moves it between stages.
    """

    name: str
    flag: str
    file: str
    help: str
    output: bool = False


OUTPUTS_DIR = Flag(
    "outputs-dir",
    DirectoryPath(),
    "write each output parameter to a file named after it here",
    env="STEP_OUTPUTS_DIR",
)


@dataclass(frozen=True)
class Stage:
    """A stage of the pipeline: `python -m steps <name> [flags]`.

    Every stage also takes `--outputs-dir` (OUTPUTS_DIR), added here.
    """

    name: str
    help: str
    flags: tuple[Flag, ...]
    outputs: tuple[Output, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    all_flags: tuple[Flag, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        flags = (*self.flags, OUTPUTS_DIR)
        names = [f.name for f in flags]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"stage {self.name}: flag(s) declared twice: {', '.join(repeated)}")
        for artifact in self.artifacts:
            if artifact.flag not in names:
                raise ValueError(f"stage {self.name}: artifact {artifact.name} names no flag")
        for flag in flags:
            for condition in (flag.read_with, flag.required_with):
                if condition and condition[0] not in names:
                    raise ValueError(f"stage {self.name}: {flag.option} names no flag {condition}")
        object.__setattr__(self, "all_flags", flags)

    def flag(self, name: str) -> Flag:
        """The flag called `name` (without dashes); KeyError if the stage has none."""
        for flag in self.all_flags:
            if flag.name == name:
                return flag
        raise KeyError(f"stage {self.name} has no flag --{name}")

    def parser(self) -> argparse.ArgumentParser:
        """The argparse parser: every value a string, checked afterwards by `parse`."""
        parser = OneLineParser(prog=f"python -m steps {self.name}", description=self.help)
        groups: dict[str | None, Any] = {None: parser}
        for flag in self.all_flags:
            if flag.group not in groups:
                groups[flag.group] = parser.add_argument_group(flag.group)
            target = groups[flag.group]
            if isinstance(flag.kind, Switch):
                target.add_argument(flag.option, action="store_true", help=flag.help)
            else:
                target.add_argument(flag.option, default=None, help=_help_line(flag))
        return parser

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """Parse and check the command line; values become typed (int, float, Path, ...).

        Each flag is read from the command line, else from its environment variable, else its
        default. `--help` prints and exits 0.

        Raises:
            BadInput: an unknown flag, a missing value or a value its kind refuses.
        """
        namespace = self.parser().parse_args(argv)
        by_user: dict[str, str] = {}  # flag name -> where the user set it (`Flag.sets`)
        named: dict[str, str] = {}  # flag name -> where its value came from, for error lines
        for flag in self.all_flags:
            if isinstance(flag.kind, Switch):
                if getattr(namespace, flag.dest):
                    by_user[flag.name] = flag.option
                continue
            raw, source = flag.given(namespace)
            value = flag.convert(raw, source)
            setattr(namespace, flag.dest, value)
            named[flag.name] = source or flag.option
            if raw is not None and flag.sets(value) and not (source and flag.env_from_pod):
                by_user[flag.name] = source or flag.option
        for flag in self.all_flags:  # what the user set first, then what is missing
            if flag.read_with and flag.name in by_user:
                other, said = flag.read_with[0], _said(flag.read_with)
                actual = render_value(getattr(namespace, other.replace("-", "_")))
                if actual not in _wanted(flag.read_with):
                    raise BadInput(
                        f"{by_user[flag.name]} is read only with --{other} {said}, and --{other} "
                        f"is {actual!r}: leave {flag.option} out or set --{other} {said}"
                    )
        for flag in self.all_flags:
            given = getattr(namespace, flag.dest) not in _NOT_GIVEN
            if flag.required_with and not given:
                other = flag.required_with[0]
                actual = render_value(getattr(namespace, other.replace("-", "_")))
                if actual in _wanted(flag.required_with):
                    raise BadInput(
                        f"{flag.option} is required with --{other} {actual}: {flag.expected()}"
                    )
        self._refuse_shared_paths(namespace, named)
        self.refuse_occupied_outputs(namespace, named[OUTPUTS_DIR.name])
        return namespace

    def check_given(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        fixed: Callable[[str], bool],
        where: str,
    ) -> None:
        """Check, before the stage runs, the values a caller has fixed already (a container's
        literal arguments and environment): an unknown flag, a flag without its value, and each
        value `fixed` says is final that its flag's kind refuses. Values filled in later, paths
        (looked up where the stage runs) and switches are left to the stage. A `--help` makes
        the stage print its help and exit 0: nothing to check then.

        An argument filled in later is left out, and with it the arguments whose meaning it
        decides (`literal_options`); every other one is checked, each on its own: a literal
        `--rows=abc` beside `--source={{...}}` is refused now. A flag's variable in the
        environment is read when no argument names the flag and none filled in later could
        (`_options_named`): `--rain-only={{...}}` sets only --rain-only, while a whole
        `{{...}}` argument may be any option.

        Args:
            args: the arguments after `python -m steps <stage>`, as written.
            env: the stage's environment as written (`Flag.env` is read for a flag not given).
            fixed: whether a value as written is the one the stage will get.
            where: what gave them, to start the error line (`template fetch`).

        Raises:
            BadInput: naming `where`, the flag (or variable) and the value.
        """
        if "-h" in args or "--help" in args:
            return
        literal = self.literal_options(args, fixed)
        parser = self.parser()
        parser.prog = f"{where}: python -m steps {self.name}"
        # `--rows={{...}} --rows=5`: the stage refuses a flag given twice, whatever the values.
        named = [arg.partition("=")[0] for arg in args if arg.startswith("--") and "=" in arg]
        for option in named:
            if named.count(option) > 1 and fixed(option):
                parser.error(f"argument {option}: given twice; give it once")
        namespace = parser.parse_args(literal)
        named = self._options_named(args, fixed)
        for flag in self.all_flags:
            if isinstance(flag.kind, Switch):
                continue
            raw, source = getattr(namespace, flag.dest), f"{where}: {flag.option}"
            unnamed = named is not None and flag.option not in named
            if raw is None and unnamed and flag.env and env.get(flag.env):
                raw, source = env[flag.env], f"{where}: env {flag.env} (for {flag.option})"
            if raw is None or not fixed(raw) or _names_a_path_where_the_step_runs(flag, raw):
                continue
            flag.convert(raw, source)

    def _options_named(self, args: Sequence[str], fixed: Callable[[str], bool]) -> set[str] | None:
        """The options `args` name (`--x=v`, `--x v`), or None when an argument filled in later
        could be an option itself: a `--{{...}}` name, or a `{{...}}` that is no value of the
        option before it."""
        takes_value = {f.option for f in self.all_flags if not isinstance(f.kind, Switch)}
        named: set[str] = set()
        value_next = False
        for arg in args:
            if value_next:
                value_next = False
                continue
            if arg.startswith("--"):
                option, equals, _ = arg.partition("=")
                if not fixed(option):
                    return None
                named.add(option)
                value_next = not equals and option in takes_value
            elif not fixed(arg):
                return None
        return named

    def given_values(
        self, args: Sequence[str | None], env: Mapping[str, str], names: Sequence[str], where: str
    ) -> dict[str, Any] | None:
        """The typed values the stage will read for the flags `names` from the command line
        `args` (after `python -m steps <stage>`) and the environment `env` (a flag not given:
        its variable there, else its default), as its own parse reads them; None when an
        argument is not known yet (None: filled in later) or `--help` is asked for.

        Raises:
            BadInput: a value its flag refuses, naming `where` and the flag (or variable).
        """
        if any(a is None for a in args) or "-h" in args or "--help" in args:
            return None
        parser = self.parser()
        parser.prog = f"{where}: python -m steps {self.name}"
        namespace = parser.parse_args([str(a) for a in args])
        values = {}
        for name in names:
            flag = self.flag(name)
            if isinstance(flag.kind, Switch):
                values[name] = bool(getattr(namespace, flag.dest))
                continue
            raw, source = flag.given(namespace, env)
            values[name] = flag.convert(raw, f"{where}: {source or flag.option}")
        return values

    def literal_options(self, args: Sequence[str], fixed: Callable[[str], bool]) -> list[str]:
        """The arguments of `args` whose meaning is known now: all of them when every one is
        `fixed`; else each fixed `--flag=value` and switch, and a fixed `--flag value` pair.
        One filled in later is left out, and unless it is `--flag=...` the argument after it
        (it might be `--rows`, which takes the next one); so is a `--flag` whose value is."""
        if all(fixed(arg) for arg in args):
            return list(args)
        switches = {f.option for f in self.all_flags if isinstance(f.kind, Switch)}
        literal: list[str] = []
        position = 0
        while position < len(args):
            arg = args[position]
            takes_value = arg.startswith("--") and "=" not in arg and arg not in switches
            if not fixed(arg):  # `--x={{...}}` is one argument; `{{...}}` may be `--rows`
                position += 1 if "=" in arg.partition("{{")[0] else 2
                continue
            pair = list(args[position : position + 2] if takes_value else [arg])
            position += len(pair)
            if arg.startswith("--") and all(fixed(a) for a in pair):
                literal += pair
        return literal

    def refuse_occupied_outputs(
        self, namespace: argparse.Namespace, where: str = OUTPUTS_DIR.option
    ) -> None:
        """BadInput when an output parameter's file in `--outputs-dir` is taken by something a
        file cannot replace (a directory, a named pipe): the step would fail writing its outputs
        after its work (promote would have moved the champion), so it is refused before. `where`
        names where the directory came from (`STEP_OUTPUTS_DIR (for --outputs-dir)`)."""
        outputs_dir = getattr(namespace, OUTPUTS_DIR.dest, None)
        if outputs_dir is None:
            return
        written = FilePath(writes=True)
        for output in self.outputs:
            path = Path(outputs_dir) / output.name
            try:
                written.parse(str(path))
            except ValueError as exc:
                raise BadInput(
                    f"{where} {_shown(str(outputs_dir))}: the file of output "
                    f"parameter {output.name} {exc}"
                ) from None

    def _refuse_shared_paths(self, namespace: argparse.Namespace, named: Mapping[str, str]) -> None:
        """BadInput when a path the stage writes is also another path of the command line: two
        outputs at one path (`validate --output X --report X`), an output over an input, or a
        path under a file the stage writes, or inside a directory the stage manages
        (`DirectoryPath.managed`). The outputs are the path flags whose kind writes
        (`_LocalPath.written`) and the declared output parameters' files in `--outputs-dir`.
        `named`: flag name -> where its value came from (the flag, or `ENV (for --flag)`)."""
        paths: list[tuple[str, Path, bool, bool]] = []  # (what, path, written, is a file)
        for flag in self.all_flags:
            value = getattr(namespace, flag.dest, None)
            if isinstance(flag.kind, _LocalPath) and value is not None:
                is_file = isinstance(flag.kind, FilePath)
                paths.append((named[flag.name], Path(value), flag.kind.written(), is_file))
        outputs_dir = getattr(namespace, OUTPUTS_DIR.dest, None)
        if outputs_dir is not None:
            paths += [(f"the output parameter file {o.name} of {named[OUTPUTS_DIR.name]}",
                       Path(outputs_dir) / o.name, True, True) for o in self.outputs]  # fmt: skip
        for i, (what, path, written, is_file) in enumerate(paths):
            for other, other_path, other_written, other_is_file in paths[:i]:
                if not (written or other_written):
                    continue
                both = f"{other} and {what}"
                if _same_path(path, other_path):
                    hint = "give each output its own path" if written and other_written else (
                        "an output may not replace an input; give it another path")  # fmt: skip
                    raise BadInput(f"{both} name the same path {_shown(str(path))}: {hint}")
                if (other_is_file and _inside(path, other_path)) or (
                    is_file and _inside(other_path, path)
                ):
                    raise BadInput(
                        f"{both} ({_shown(str(other_path))}, {_shown(str(path))}): one is under "
                        "the other, which is a file; give each its own path"
                    )
                for (out, out_path), (inp, in_path), in_written in (
                    ((what, path), (other, other_path), other_written),
                    ((other, other_path), (what, path), written),
                ):
                    # `train --input D --holdout-out D/h.parquet`: the next run reads it as input.
                    if (
                        not in_written
                        and what_is_at(in_path) == "a directory"
                        and _inside(out_path, in_path)
                    ):
                        raise BadInput(
                            f"{out} {_shown(str(out_path))} is inside {inp} "
                            f"{_shown(str(in_path))}, a directory the stage reads: what it "
                            "writes there would be read as input; give it a path outside"
                        )
        managed = [(named[f.name], Path(getattr(namespace, f.dest))) for f in self.all_flags
                   if getattr(f.kind, "managed", False) and getattr(namespace, f.dest, None)
                   and _read(f, namespace)]  # fmt: skip
        for what, path, written, _ in paths:
            for where, directory in managed:
                if written and _inside(path, directory):
                    # `deploy --outputs-dir <state-dir>/models`: served, then pruned, exit 1.
                    raise BadInput(
                        f"{what} {_shown(str(path))} is inside {where} {_shown(str(directory))}, "
                        "a directory the stage manages (it removes what it did not put there): "
                        "give it a path outside"
                    )

    def reserve_outputs(self, outputs_dir: Path | None) -> ReservedOutputs:
        """Its declared output parameters' files, reserved in `outputs_dir`
        (`steps.files.ReservedOutputs`): enter it before the stage changes anything, `write` them
        after; a missing or extra output is a bug (ValueError)."""
        return ReservedOutputs(outputs_dir, [o.name for o in self.outputs])

    def write_outputs(self, outputs_dir: Path | None, outputs: Mapping[str, Any]) -> None:
        """`reserve_outputs` and `write` at once, for a stage that changes nothing outside its
        own files."""
        with self.reserve_outputs(outputs_dir) as reserved:
            reserved.write(outputs)


@dataclass(frozen=True)
class WorkflowParameter:
    """A workflow parameter of the Argo pipeline, derived from the stage flags that take it.

    Attributes:
        name: kebab-case, as Argo shows it.
        default: its value when a run does not set it.
        help: the first flag's help (and units).
        choices: the enum Argo offers (from a Choice or Boolean flag), else None.
        flags: every (stage name, flag) that takes it, in pipeline order.
    """

    name: str
    default: str
    help: str
    choices: tuple[str, ...] | None
    flags: tuple[tuple[str, Flag], ...]

    @property
    def by_env(self) -> bool:
        """Whether its flags take it through their environment variable (credentials)."""
        return any(flag.by_env for _, flag in self.flags)

    def check(self, raw: str) -> None:
        """Raise BadInput unless `raw` suits every flag that takes this parameter."""
        for stage, flag in self.flags:
            flag.convert(raw, f"workflow parameter {self.name} ({stage} {flag.option})")


def workflow_parameters(stages: Iterable[Stage]) -> tuple[WorkflowParameter, ...]:
    """The workflow parameters named by the stages' flags (`Flag.parameter`), in first-use order.

    Raises:
        ValueError: two flags taking one parameter disagree on its default or its choices.
    """
    taken: dict[str, list[tuple[str, Flag]]] = {}
    for stage in stages:
        for flag in stage.all_flags:
            if flag.parameter:
                taken.setdefault(flag.parameter, []).append((stage.name, flag))
    parameters = []
    for name, flags in taken.items():
        defaults = {_parameter_default(flag) for _, flag in flags if _parameter_default(flag)}
        enums = {choices_of(flag.kind) for _, flag in flags} - {None}
        if len(defaults) > 1 or len(enums) > 1:
            raise ValueError(
                f"workflow parameter {name}: its flags disagree (defaults {sorted(defaults)}, "
                f"choices {sorted(enums)})"
            )
        first = flags[0][1]
        parameters.append(
            WorkflowParameter(
                name,
                defaults.pop() if defaults else "",
                first.help + (f" ({first.units})" if first.units else ""),
                enums.pop() if enums else None,
                tuple(flags),
            )
        )
    return tuple(parameters)


def given_value_problem(name: str, value: Any) -> str | None:
    """Why a workflow parameter value given for a run (`-p name=value`) would not reach the steps
    as written on Argo, or None.

    - `{{`: Argo substitutes a value into the template's inputs, then substitutes that template's
      text again with the workflow's variables (v4.1.2 workflow/common/util.go SubstituteParams:
      its first `template.Replace` runs over the JSON that holds the input values), so a value's
      own `{{workflow.name}}` is replaced and `{{=...}}` evaluated; one with no `}}` after it
      makes fasttemplate refuse the whole text (util/template/template.go NewTemplate;
      valyala/fasttemplate v1.2.2 template.go Reset: "Cannot find end tag") and the workflow
      fails validation (workflow/validate/validate.go) or never starts (workflow/controller/
      operator.go setExecWorkflow -> substituteGlobalVariables). A lone `}}` stays text.
    - white space around it: Argo uses the text as given (the enum check, validate.go
      validateArgumentsValues; the release mutex's name, workflow/sync/lock_name.go
      getMutexLockName): `model-name=foo ` and `foo` would be two mutexes. Every flag refuses
      it too (`parse_as_given`); said here as well for the doors that leave a path to the pod
      (`check_workflow_parameters`, `paths_here=False`). A value of white space only is left to
      the flags: each reads it as empty (`Flag.convert`: its default, or "is blank" for a flag
      that needs a value).
    """
    text = value if isinstance(value, str) else render_value(value)
    shown = _shown(text)
    if TAG_START in text:
        return (
            f"workflow parameter {name}={shown} holds '{TAG_START}', which Argo reads as the start "
            "of a variable and substitutes (or refuses, unclosed): leave it out"
        )
    if text.strip() and text != text.strip():  # only blank: every flag reads it as empty
        return (
            f"workflow parameter {name}={shown} has white space around it, which Argo keeps "
            "(its enum check, the release mutex) and no step takes: leave it out"
        )
    return None


def _names_a_path_where_the_step_runs(flag: Flag, raw: str) -> bool:
    """Whether `raw` for `flag` is a path looked up where the step runs (a path kind, or the
    path form of a UrlOrFile), or names something else only that machine can tell about (a kind
    with `looked_up_where_the_step_runs`: a tracking URI's database driver or SQLite file): on a
    cluster that is inside the pod, not on this machine."""
    if isinstance(flag.kind, _LocalPath):
        return True
    looked_up = getattr(flag.kind, "looked_up_where_the_step_runs", None)
    if looked_up is not None:
        return bool(looked_up(raw))
    return isinstance(flag.kind, UrlOrFile) and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", raw)


def check_workflow_parameters(
    values: Mapping[str, str],
    parameters: Iterable[WorkflowParameter],
    *,
    paths_here: bool = True,
) -> None:
    """Check each value in `values` whose name is one of `parameters` against its flags, then
    as Argo passes it on (`given_value_problem`: check-parameters refuses what submit.py and the
    runner refuse); then
    refuse a value that sets a flag (`Flag.sets`: not empty once parsed, not the default) its
    stage would not read (`Flag.read_with`, e.g. `gsod-path` or `synthetic-rows=2000` with a
    `source` other than `gsod` or `synthetic`), as the stage's own parse does; and an empty or
    missing one (its default) for a flag its stage needs then (`Flag.required_with`, e.g.
    `table-uri` with `source=table`).

    `paths_here=False` (submit.py's Argo door: the steps run in pods) leaves a path that is
    looked up where the step runs (`gsod-path`, a `table-uri` file) to the workflow's first
    task (check-parameters), which runs there; every other value is checked here.

    Raises:
        BadInput: for the first value a flag would refuse, naming the parameter and the flag.
    """
    parameters = tuple(parameters)
    for parameter in parameters:
        if parameter.name not in values:
            continue
        raw = values[parameter.name]
        if paths_here or not any(
            _names_a_path_where_the_step_runs(flag, raw) for _, flag in parameter.flags
        ):
            parameter.check(raw)
        problem = given_value_problem(parameter.name, raw)
        if problem:
            raise BadInput(problem)
    for parameter in parameters:  # what the user set first, then what is missing
        raw = values.get(parameter.name)
        for stage, flag in parameter.flags:
            where = f"workflow parameter {parameter.name} ({stage} {flag.option})"
            if flag.read_with and raw is not None and _parameter_sets(flag, raw, paths_here):
                other, actual = _condition_parameter(stage, flag.read_with, values, parameters)
                said = _said(flag.read_with)
                if other and actual not in _wanted(flag.read_with):
                    raise BadInput(
                        f"{where} is read only with {other}={said}, and {other} is "
                        f"{actual!r}: leave {parameter.name} at its default "
                        f"({parameter.default!r}) or set {other}={said}"
                    )
    for parameter in parameters:
        given = bool(values.get(parameter.name, parameter.default).strip())
        for stage, flag in parameter.flags:
            if flag.required_with and not given:
                where = f"workflow parameter {parameter.name} ({stage} {flag.option})"
                other, actual = _condition_parameter(stage, flag.required_with, values, parameters)
                if other and actual in _wanted(flag.required_with):
                    raise BadInput(f"{where} is required with {other}={actual}: {flag.expected()}")


def _parameter_sets(flag: Flag, raw: str, paths_here: bool) -> bool:
    """Whether the workflow parameter value `raw` (already checked) sets `flag`, as the stage's
    own door decides it (`Flag.sets`): `,` for a comma list and a default are not set. A path
    looked up where the step runs, when that is not here, is set when not blank."""
    if not paths_here and _names_a_path_where_the_step_runs(flag, raw):
        return bool(raw.strip())
    return flag.sets(flag.convert(raw))


def _condition_parameter(
    stage: str,
    condition: Condition,
    values: Mapping[str, str],
    parameters: Sequence[WorkflowParameter],
) -> tuple[str | None, str]:
    """For a condition (flag, value) of a flag of `stage` (`Flag.read_with`, `required_with`):
    the workflow parameter that `stage` takes for that flag and its value in `values` (else its
    default); (None, "") when the stage takes none for it."""
    for candidate in parameters:
        if any(s == stage and f.name == condition[0] for s, f in candidate.flags):
            return candidate.name, values.get(candidate.name, candidate.default).strip()
    return None, ""


def parameter_check_stage(name: str, parameters: Sequence[WorkflowParameter]) -> Stage:
    """A stage taking every workflow parameter as a flag of the same name, to check them all.

    Its flags accept any text: the check itself is `check_workflow_parameters`, which applies
    the kinds of the flags that take each parameter. A parameter passed by environment variable
    in the pipeline (credentials) is read from that variable here too.
    """
    flags = []
    for parameter in parameters:
        env = next((flag.env for _, flag in parameter.flags if flag.by_env), None)
        flags.append(
            Flag(parameter.name, Text(), f"workflow parameter: {parameter.help}", env=env,
                 parameter=parameter.name, by_env=env is not None)
        )  # fmt: skip
    return Stage(
        name,
        "Check every workflow parameter against the flags of every stage that takes it, "
        "before any stage runs; exit 2 naming the first bad one.",
        tuple(flags),
    )


def _read(flag: Flag, namespace: argparse.Namespace) -> bool:
    """Whether the stage reads `flag` with the values of `namespace` (`Flag.read_with`)."""
    if not flag.read_with:
        return True
    other = getattr(namespace, flag.read_with[0].replace("-", "_"))
    return render_value(other) in _wanted(flag.read_with)


def _same_path(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one path once made absolute and links resolved, or one file
    (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _inside(inner: Path, outer: Path) -> bool:
    """Whether `inner` is below `outer` once both are made absolute and links resolved."""
    return Path(os.path.realpath(outer)) in Path(os.path.realpath(inner)).parents


def _parameter_default(flag: Flag) -> str:
    return flag.parameter_default if flag.parameter_default is not None else flag.default_text()


def _once(parser: Any, action: argparse.Action, option_string: str | None) -> None:
    """Refuse `action`'s option when this parse has seen it already (`OneLineParser`)."""
    given = getattr(parser, "_given_options", None)
    if given is not None and option_string is not None:
        if action.dest in given:
            parser.error(f"argument {'/'.join(action.option_strings)}: given twice; give it once")
        given.add(action.dest)


class _StoreOnce(argparse._StoreAction):
    """argparse's `store` action, refusing an option given twice: argparse keeps the last one
    silently (`--rows=5 --rows=abc`, as a template's args written by hand may hold it)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        _once(parser, self, option_string)
        super().__call__(parser, namespace, values, option_string)


class _StoreTrueOnce(argparse._StoreTrueAction):
    """argparse's `store_true` action, refusing a switch given twice (`deploy --stop --stop`),
    as `_StoreOnce` refuses an option with a value."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        _once(parser, self, option_string)
        super().__call__(parser, namespace, values, option_string)


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises BadInput (one line, exit 2) instead of printing usage and exiting.

    Every command line of the project uses it (the stages, submit.py, the demo, the local
    runner), so an unknown flag or a bad value is one `error:` line from `steps.cli.run`. Parse
    inside the body given to `run`, or the BadInput escapes as a traceback. An option that
    takes one value, and a switch, may be given once (`_StoreOnce`, `_StoreTrueOnce`). No
    option may be abbreviated (`allow_abbrev` is always False): `--ren` for `--render` would
    change meaning the day another flag starts with the same letters.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)
        self.register("action", "store_true", _StoreTrueOnce)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """argparse's, counting the options given (`_StoreOnce`) afresh for each parse."""
        self._given_options: set[str] = set()
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> None:  # type: ignore[override]
        """Called by argparse for an unknown flag, a missing value or a refused `type=`."""
        raise BadInput(f"{message} (see {self.prog} --help)")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """argparse's, but arguments it does not know are quoted as every value is (`_shown`:
        redacted, control characters escaped, cut short), at most three of them: argparse
        echoes them whole, an ESC or a pasted URL with its password included."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            shown = ", ".join(_shown(extra) for extra in extras[:3])
            more = f" (and {len(extras) - 3} more)" if len(extras) > 3 else ""
            self.error(f"unrecognized arguments: {shown}{more}")
        return parsed

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        """`--flag=--` is refused: argparse drops the `--` and hands back [] (Python 3.11) or
        None instead of a string, which was a traceback or the default taken silently."""
        if action.option_strings and action.nargs is None and arg_strings == [END_OF_OPTIONS]:
            self.error(f"argument {'/'.join(action.option_strings)}: {NOT_A_VALUE}")
        return super()._get_values(action, arg_strings)


def argparse_type(kind: Kind) -> Callable[[str], Any]:
    """An argparse `type=` that parses with `kind` (the same rule as a declared flag's), so a
    command line outside the stages checks its numbers and ports as the stages do.

    A refused value becomes argparse's own error, `argument --x: 'v': must be ...`, which
    OneLineParser turns into BadInput.
    """

    def parse(text: str) -> Any:
        if not text.strip() and not kind.empty_ok:  # `--render ''` is no directory, not `.`
            said = "empty" if not text else "blank (only white space)"
            raise argparse.ArgumentTypeError(f"{_shown(text)} is {said}: give {kind.describe()}")
        try:
            return parse_as_given(kind, text) if text.strip() else kind.parse("")
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{_shown(text)}: {exc}") from None

    parse.__name__ = type(kind).__name__  # argparse names the type in some messages
    return parse


def non_empty_path(text: str) -> Path:
    """An argparse `type=` for a path a command line checks later (`--render`, `--run-dir`,
    `--cache-dir`): `''` or white space is refused, never read as `Path('')`, the current
    directory (`submit.py --render ''` wrote there)."""
    if not text.strip():
        said = "empty" if not text else "blank (only white space)"
        raise argparse.ArgumentTypeError(f"{_shown(text)} is {said}: give a path")
    return Path(text)


def render_value(value: Any) -> str:
    """A typed value as text on a command line or in Argo: `true`, `1,2`, `a=b`, `` for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(render_value(v) for v in value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def choices_of(kind: Kind) -> tuple[str, ...] | None:
    """The fixed list of values a kind takes (Choice, Boolean), else None."""
    return getattr(kind, "choices", None)


def _help_line(flag: Flag) -> str:
    parts = [flag.help + _conditions(flag), f"{flag.kind.describe()}{_in(flag.units)}"]
    if flag.env:
        parts.append(f"env {flag.env}")
    if flag.default is not None:
        parts.append(f"default {flag.default_text()}")
    return f"{parts[0]} ({'; '.join(parts[1:])})".replace("%", "%%")


def _conditions(flag: Flag) -> str:
    """`; read only with --source table; required with --source table`, as they apply."""
    said = [("read only with", flag.read_with), ("required with", flag.required_with)]
    return "".join(f"; {what} --{c[0]} {_said(c)}" for what, c in said if c)


def _in(units: str | None) -> str:
    return f", in {units}" if units else ""


def _shown(raw: str) -> str:
    """`raw` as an error line quotes it: credentials masked first (`redact_value`), then cut to
    60 characters, so a long `user:password@` is never cut before it could be masked."""
    text = redact_value(raw)
    return repr(text if len(text) <= 60 else text[:57] + "...")


# ---------------------------------------------------------------- docs/steps.md


def flag_table(stage: Stage) -> str:
    """The Markdown table of a stage's flags: flag, env, values, default, workflow parameter."""
    rows = [
        "| flag | env | values | default | workflow parameter | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for flag in stage.all_flags:
        values = flag.kind.describe() + _in(flag.units)
        default = "required" if flag.required else _code(flag.default_text())
        parameter = _code(flag.parameter or "")
        rows.append(
            f"| `{flag.option}` | {_code(flag.env or '')} | {values} | {default} | {parameter} "
            f"| {flag.help}{_conditions(flag)} |"
        )
    return "\n".join(rows)


def io_table(stage: Stage) -> str:
    """The Markdown table of a stage's output parameters and artifacts."""
    rows = ["| output parameter / artifact | flag | meaning |", "|---|---|---|"]
    rows += [f"| `{o.name}` | | {o.help} |" for o in stage.outputs]
    for a in stage.artifacts:
        where = f"`/work/{'out' if a.output else 'in'}/{a.file}`"
        direction = "writes" if a.output else "reads"
        rows.append(f"| artifact `{a.name}` ({direction} {where}) | `--{a.flag}` | {a.help} |")
    return "\n".join(rows)


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


_BEGIN = "<!-- BEGIN generated from steps/stages.py: {} -->"
_END = "<!-- END generated: {} -->"


def parameter_table(parameters: Iterable[WorkflowParameter]) -> str:
    """The Markdown table of the workflow parameters: default, choices, the flags that take it."""
    rows = [
        "| workflow parameter | default | choices | taken by | meaning |",
        "|---|---|---|---|---|",
    ]
    for p in parameters:
        taken = ", ".join(f"{stage} `{flag.option}`" for stage, flag in p.flags)
        choices = ", ".join(f"`{c}`" for c in p.choices) if p.choices else ""
        rows.append(f"| `{p.name}` | {_code(p.default)} | {choices} | {taken} | {p.help} |")
    return "\n".join(rows)


def generated_blocks(
    stages: Iterable[Stage], parameters: Iterable[WorkflowParameter] = ()
) -> dict[str, str]:
    """Block name -> generated Markdown: `workflow parameters`, then `<stage> flags` and
    `<stage> outputs` per stage."""
    blocks = {"workflow parameters": parameter_table(parameters)} if parameters else {}
    for stage in stages:
        blocks[f"{stage.name} flags"] = flag_table(stage)
        if stage.outputs or stage.artifacts:
            blocks[f"{stage.name} outputs"] = io_table(stage)
    return blocks


def fill_generated(text: str, blocks: Mapping[str, str]) -> str:
    """`text` with every generated block replaced by its current content.

    Raises:
        ValueError: a block of `blocks` has no markers in `text`, or markers name no block.
    """
    found = re.findall(r"<!-- BEGIN generated from steps/stages.py: (.+?) -->", text)
    missing = sorted(set(blocks) - set(found))
    unknown = sorted(set(found) - set(blocks))
    if missing or unknown:
        raise ValueError(f"generated blocks missing: {missing}; unknown: {unknown}")
    for name, body in blocks.items():
        begin, end = _BEGIN.format(name), _END.format(name)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        replacement = f"{begin}\n{body}\n{end}"
        text = pattern.sub(lambda _match, new=replacement: new, text)
    return text
