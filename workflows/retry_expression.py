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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
    """Parse a retry expression.

    Raises:
        UnsupportedExpression: naming what is outside the subset (a function, a variable, an
            operator) or where it stops parsing.
    """
    parser = _Parser(_tokens(text), text)
    root = parser.or_expression()
    if parser.position != len(parser.tokens):
        unexpected = parser.tokens[parser.position][1]
        raise UnsupportedExpression(f"{text!r}: {unexpected!r} is not supported here")
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

    def or_expression(self) -> Node:
        return self._chain("||", self.and_expression, _or)

    def and_expression(self) -> Node:
        return self._chain("&&", self.comparison, _and)

    def _chain(
        self, op: str, operand: Callable[[], Node], combine: Callable[[Node, Node], Node]
    ) -> Node:
        """`operand (op operand)*`, combined from the left (both operators are left-assoc)."""
        left = operand()
        while self.peek() == ("op", op):
            self.take()
            left = combine(left, operand())
        return left

    def comparison(self) -> Node:
        left = self.unary()
        token = self.peek()
        if token and token[0] == "op" and token[1] in _COMPARISONS:
            self.take()
            return _compare(token[1], left, self.unary(), self.text)
        return left

    def unary(self) -> Node:
        if self.peek() == ("op", "!"):
            self.take()
            operand = self.unary()
            return lambda scope: not _boolean(operand(scope), "!")
        if self.peek() == ("op", "-"):
            self.take()
            operand = self.unary()
            return lambda scope: -_number(operand(scope), "-")
        return self.primary()

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "number":
            number = float(value) if "." in value else int(value)
            return lambda scope: number
        if kind == "string":
            text = re.sub(r"\\(.)", r"\1", value[1:-1])
            return lambda scope: text
        if (kind, value) == ("op", "("):
            inner = self.or_expression()
            self.take(")")
            return inner
        if kind == "name" and value in ("true", "false"):
            return lambda scope: value == "true"
        if kind == "name" and value in VARIABLES:
            return lambda scope: scope[value]
        if kind == "name" and value in ("asInt", "asFloat", "int", "float"):
            self.take("(")
            argument = self.or_expression()
            self.take(")")
            return _convert(value, argument)
        raise UnsupportedExpression(
            f"{self.text!r}: {value!r} is not supported here (variables: {', '.join(VARIABLES)};"
            " functions: asInt, asFloat)"
        )


def _or(left: Node, right: Node) -> Node:
    return lambda scope: _boolean(left(scope), "||") or _boolean(right(scope), "||")


def _and(left: Node, right: Node) -> Node:
    return lambda scope: _boolean(left(scope), "&&") and _boolean(right(scope), "&&")


def _boolean(value: Any, operator: str) -> bool:
    if not isinstance(value, bool):
        raise ExpressionError(f"{operator} needs true or false, got {value!r}")
    return value


def _number(value: Any, operator: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExpressionError(f"{operator} needs a number, got {value!r}")
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


def _compare(operator: str, left: Node, right: Node, text: str) -> Node:
    def compare(scope: Mapping[str, str]) -> bool:
        a, b = left(scope), right(scope)
        if operator == "matches":
            if not (isinstance(a, str) and isinstance(b, str)):
                raise ExpressionError(f"matches needs two strings, got {a!r} and {b!r}")
            return re.search(b, a) is not None
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
        if operator in ("==", "!="):
            # expr-lang: values of different types are not equal ("75" == 75 is false).
            same = a == b if numbers or type(a) is type(b) else False
            return same if operator == "==" else not same
        if not (numbers or (isinstance(a, str) and isinstance(b, str))):
            raise ExpressionError(f"{operator} cannot compare {a!r} and {b!r} in {text!r}")
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[operator]

    return compare
