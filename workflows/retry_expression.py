"""Argo's `retryStrategy.expression`, read the way Argo v4.1.2 reads it, for the local runner.

Argo evaluates the expression with expr-lang (github.com/expr-lang/expr) after each failed
attempt, with `lastRetry.exitCode`, `lastRetry.status`, `lastRetry.duration` and
`lastRetry.message` bound as strings (exit code "-1" when there is none) and `asInt`/`asFloat` as
expr's `int`/`float`; false means "do not retry", and the retry policy must allow the retry too.
Sources, tag v4.1.2: docs/retries.md "Conditional retries"; workflow/controller/operator.go,
`buildRetryStrategyLocalScope` and `processNodeRetries`; util/expr/env/env.go, `GetFuncMap`.

This module parses the subset of expr-lang such conditions use and refuses anything else by name
(`UnsupportedExpression`), so the local runner never guesses: literals (numbers, quoted strings,
`true`, `false`), the four `lastRetry.*` variables, `asInt(...)`/`asFloat(...)`, comparisons
(`== != < <= > >=`), `matches` (a regular expression), `!`/`not`, unary `-`, `&&`/`and`,
`||`/`or` and parentheses, with expr's precedence (`!` > comparisons > `&&` > `||`).

Every variable is a string, so each part's type is known when the expression is parsed: what
can only fail whenever it is evaluated (`lastRetry.exitCode < 2` compares a string with a number,
`lastRetry.exitCode && true`, a result that is no boolean, a `matches` pattern that is no regular
expression Go's regexp compiles, which expr-lang's checker refuses when it compiles the
expression: v1.17.8 checker/checker.go, BinaryNode) is refused then (`ExpressionError`), before
a run starts; only a value (`asInt` of a message that is no number) fails an evaluation.
"""

from __future__ import annotations

import re
import re._parser as re_parser  # the parsed pattern: what RE2 lacks is read from it
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import ge as operator_ge
from operator import gt as operator_gt
from operator import le as operator_le
from operator import lt as operator_lt
from typing import Any

VARIABLES = ("lastRetry.exitCode", "lastRetry.status", "lastRetry.duration", "lastRetry.message")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|&&|\|\||\?\?|[<>()!,\-+*/%\[\]{}?:.|&^~=])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    )""",
    re.VERBOSE,
)
_WORD_OPERATORS = {"and": "&&", "or": "||", "not": "!", "matches": "matches"}
_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=", "matches")


class UnsupportedExpression(ValueError):
    """The expression uses something outside the subset read here, or does not parse."""


class ExpressionError(ValueError):
    """The expression parsed but cannot be evaluated (as expr-lang would fail at run time)."""


Node = Callable[[Mapping[str, str]], Any]
# The type each part of an expression has: every variable is a string (Argo binds them so).
Typed = tuple[Node, str]  # (evaluate, one of "string", "int", "float", "bool")
_NUMBERS = ("int", "float")


@dataclass(frozen=True)
class RetryExpression:
    """A parsed `retryStrategy.expression`; call `allows_retry` after a failed attempt."""

    text: str
    _root: Node

    def allows_retry(self, exit_code: int, status: str, duration_s: float, message: str) -> bool:
        """The expression's value for the last attempt, as Argo binds it.

        Raises:
            ExpressionError: a run-time error (e.g. `asInt` of a non-number, `<` on strings and
                numbers) or a value that is not a boolean.
        """
        scope = {
            "lastRetry.exitCode": str(exit_code),
            "lastRetry.status": status,
            "lastRetry.duration": f"{duration_s:g}",
            "lastRetry.message": message,
        }
        value = self._root(scope)
        if not isinstance(value, bool):
            raise ExpressionError(f"{self.text!r} gives {value!r}, not true or false")
        return value


def parse(text: str) -> RetryExpression:
    """Parse a retry expression and check its types.

    Raises:
        UnsupportedExpression: naming what is outside the subset (a function, a variable, an
            operator) or where it stops parsing.
        ExpressionError: what fails whenever it is evaluated: an operator given a type it does
            not take, a result that is no boolean, a `matches` pattern that does not compile.
    """
    parser = _Parser(_tokens(text), text)
    root, kind = parser.or_expression()
    if parser.position != len(parser.tokens):
        unexpected = parser.tokens[parser.position][1]
        raise UnsupportedExpression(f"{text!r}: {unexpected!r} is not supported here")
    if kind != "bool":
        raise ExpressionError(f"{text!r} gives {kind}, not true or false")
    return RetryExpression(text, root)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match:
            raise UnsupportedExpression(f"{text!r}: cannot read {text[position:].strip()[:20]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "name" and value in _WORD_OPERATORS:
            kind, value = "op", _WORD_OPERATORS[value]
        tokens.append((kind, value))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], text: str):
        self.tokens, self.text, self.position = tokens, text, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            found = "the end" if token is None else repr(token[1])
            raise UnsupportedExpression(f"{self.text!r}: expected {value or 'more'}, found {found}")
        self.position += 1
        return token

    def or_expression(self) -> Typed:
        return self._chain("||", self.and_expression, _or)

    def and_expression(self) -> Typed:
        return self._chain("&&", self.comparison, _and)

    def _chain(
        self, op: str, operand: Callable[[], Typed], combine: Callable[[Node, Node], Node]
    ) -> Typed:
        """`operand (op operand)*`, combined from the left (both operators are left-assoc)."""
        left = operand()
        while self.peek() == ("op", op):
            self.take()
            right = operand()
            self._need(op, "bool", left, right)
            left = (combine(left[0], right[0]), "bool")
        return left

    def _need(self, op: str, kind: str, *operands: Typed) -> None:
        for _, given in operands:
            if given not in (_NUMBERS if kind == "number" else (kind,)):
                raise ExpressionError(f"{self.text!r}: {op} needs {kind} operands, not {given}")

    def comparison(self) -> Typed:
        left = self.unary()
        token = self.peek()
        if token and token[0] == "op" and token[1] in _COMPARISONS:
            self.take()
            right = self.unary()
            return _compare(token[1], left, right, self.text), "bool"
        return left

    def unary(self) -> Typed:
        if self.peek() == ("op", "!"):
            self.take()
            operand = self.unary()
            self._need("!", "bool", operand)
            return (lambda scope: not operand[0](scope)), "bool"
        if self.peek() == ("op", "-"):
            self.take()
            operand = self.unary()
            self._need("-", "number", operand)
            return (lambda scope: -operand[0](scope)), operand[1]
        return self.primary()

    def primary(self) -> Typed:
        kind, value = self.take()
        if kind == "number":
            number = float(value) if "." in value else int(value)
            return (lambda scope: number), type(number).__name__
        if kind == "string":
            text = re.sub(r"\\(.)", r"\1", value[1:-1])
            return _Literal(text), "string"
        if (kind, value) == ("op", "("):
            inner = self.or_expression()
            self.take(")")
            return inner
        if kind == "name" and value in ("true", "false"):
            return (lambda scope: value == "true"), "bool"
        if kind == "name" and value in VARIABLES:
            return (lambda scope: scope[value]), "string"
        if kind == "name" and value in ("asInt", "asFloat", "int", "float"):
            self.take("(")
            argument = self.or_expression()
            self.take(")")
            if argument[1] == "bool":
                raise ExpressionError(f"{self.text!r}: {value}() of a bool")
            return _convert(value, argument[0]), "int" if value in ("asInt", "int") else "float"
        raise UnsupportedExpression(
            f"{self.text!r}: {value!r} is not supported here (variables: {', '.join(VARIABLES)};"
            " functions: asInt, asFloat)"
        )


@dataclass(frozen=True)
class _Literal:
    """A quoted string: its value is known when the expression is parsed."""

    text: str

    def __call__(self, scope: Mapping[str, str]) -> str:
        return self.text


def _or(left: Node, right: Node) -> Node:
    return lambda scope: _boolean(left(scope), "||") or _boolean(right(scope), "||")


def _and(left: Node, right: Node) -> Node:
    return lambda scope: _boolean(left(scope), "&&") and _boolean(right(scope), "&&")


def _boolean(value: Any, operator: str) -> bool:
    if not isinstance(value, bool):
        raise ExpressionError(f"{operator} needs true or false, got {value!r}")
    return value


def _convert(function: str, argument: Node) -> Node:
    to_int = function in ("asInt", "int")

    def convert(scope: Mapping[str, str]) -> Any:
        value = argument(scope)
        try:
            if isinstance(value, str):
                return int(value.strip()) if to_int else float(value.strip())
            if isinstance(value, bool):
                raise TypeError
            return int(value) if to_int else float(value)
        except (TypeError, ValueError):
            raise ExpressionError(f"{function}({value!r}): not a number") from None

    return convert


def _compare(operator: str, left: Typed, right: Typed, text: str) -> Node:
    """`left operator right`, its types checked now: `==`/`!=` take any two values (of two
    types never equal, as in expr-lang: "75" == 75 is false), `<`... two numbers or two strings,
    `matches` two strings, the pattern compiled now when it is a literal."""
    (first, a_kind), (second, b_kind) = left, right
    numbers = a_kind in _NUMBERS and b_kind in _NUMBERS
    if operator == "matches":
        if (a_kind, b_kind) != ("string", "string"):
            raise ExpressionError(f"{text!r}: matches needs two strings, not {a_kind}, {b_kind}")
        if isinstance(second, _Literal):
            pattern = regular_expression(second.text, text)
            return lambda scope: pattern.search(first(scope)) is not None
        return lambda scope: (
            regular_expression(second(scope), text).search(first(scope)) is not None
        )
    if operator in ("==", "!="):
        same_kind = numbers or a_kind == b_kind
        if operator == "==":
            return lambda scope: same_kind and first(scope) == second(scope)
        return lambda scope: not (same_kind and first(scope) == second(scope))
    if not (numbers or (a_kind, b_kind) == ("string", "string")):
        raise ExpressionError(f"{text!r}: {operator} cannot compare {a_kind} with {b_kind}")
    compare = {"<": operator_lt, "<=": operator_le, ">": operator_gt, ">=": operator_ge}[operator]
    return lambda scope: compare(first(scope), second(scope))


# What Python's `re` reads but Go's regexp (RE2, which expr-lang's `matches` compiles with)
# refuses: lookaround, backreferences, atomic groups and possessive repeats
# (https://github.com/google/re2/wiki/Syntax, "NOT SUPPORTED").
_NOT_RE2 = ("ASSERT", "ASSERT_NOT", "GROUPREF", "GROUPREF_EXISTS", "ATOMIC_GROUP",
            "POSSESSIVE_REPEAT")  # fmt: skip


def regular_expression(pattern: str, text: str) -> re.Pattern[str]:
    """`pattern` compiled, when Go's regexp would compile it too.

    Raises:
        ExpressionError: it does not compile, or uses what RE2 lacks.
    """
    try:
        compiled = re.compile(pattern)
        found = _re_operations(re_parser.parse(pattern))
    except (re.error, RecursionError, OverflowError) as exc:
        raise ExpressionError(f"{text!r}: matches {pattern!r}: {exc}") from None
    lacking = sorted(found & set(_NOT_RE2))
    if lacking:
        raise ExpressionError(
            f"{text!r}: matches {pattern!r}: Go's regexp has no {', '.join(lacking).lower()}"
        )
    return compiled


def _re_operations(parsed: Any) -> set[str]:
    """The names of the operations in a parsed pattern, nested ones included."""
    names: set[str] = set()
    pending = [parsed]
    while pending:
        item = pending.pop()
        if isinstance(item, list | tuple) or type(item).__name__ == "SubPattern":
            pending.extend(item)
        elif type(item).__name__ == "_NamedIntConstant":
            names.add(str(item))
    return names
