"""`retryStrategy.expression` as Argo v4.1.2 reads it (workflows/retry_expression.py).

The cases are the examples of Argo's own docs/retries.md ("Conditional retries") and
examples/retry-conditional.yaml at tag v4.1.2, with the values Argo binds: every `lastRetry.*`
variable is a string, the exit code "-1" when there is none (operator.go,
`buildRetryStrategyLocalScope`).
"""

from __future__ import annotations

import re

import pytest

from workflows.pipeline import RETRY_EXPRESSION
from workflows.retry_expression import ExpressionError, UnsupportedExpression, parse


def allows(expression: str, exit_code: int = 1, status: str = "Failed", duration: float = 10.0,
           message: str = "Error (exit code 1)") -> bool:  # fmt: skip
    return parse(expression).allows_retry(exit_code, status, duration, message)


@pytest.mark.parametrize(
    ("expression", "kwargs", "expected"),
    [
        # docs/retries.md: "Retry if code is greater than 1"
        ("asInt(lastRetry.exitCode) > 1", {"exit_code": 2}, True),
        ("asInt(lastRetry.exitCode) > 1", {"exit_code": 1}, False),
        ("asInt(lastRetry.exitCode) > 1", {"exit_code": -1, "status": "Error"}, False),
        # "Retry if not an error"
        ('lastRetry.status != "Error"', {"status": "Failed"}, True),
        ('lastRetry.status != "Error"', {"status": "Error"}, False),
        # "Retry unless duration >= 1 minute"
        ("asInt(lastRetry.duration) < 60", {"duration": 30.0}, True),
        ("asInt(lastRetry.duration) < 60", {"duration": 90.0}, False),
        # "Retry if message matches the regular expression"
        ("lastRetry.message matches 'imminent node shutdown|pod deleted'",
         {"message": "pod deleted"}, True),
        ("lastRetry.message matches 'imminent node shutdown|pod deleted'", {}, False),
        # examples/retry-conditional.yaml, without its template variable
        ('asInt(lastRetry.exitCode) > 1 && lastRetry.status != "Error" && '
         "asInt(lastRetry.duration) < 120 && (true == true || lastRetry.message matches "
         "'imminent node shutdown|pod deleted')", {"exit_code": 2}, True),
        # expr-lang types: a string is never equal to a number
        ("lastRetry.exitCode == 75", {"exit_code": 75}, False),
        ('lastRetry.exitCode == "75"', {"exit_code": 75}, True),
        ("asInt(lastRetry.exitCode) == -1", {"exit_code": -1}, True),
        # precedence: ! binds tightest, && before ||
        ("!(asInt(lastRetry.exitCode) == 2) && false || true", {"exit_code": 2}, True),
        ("not (asInt(lastRetry.exitCode) == 2) and true", {"exit_code": 2}, False),
    ],
)  # fmt: skip
def test_argo_documented_examples(expression: str, kwargs: dict, expected: bool) -> None:
    assert allows(expression, **kwargs) is expected


@pytest.mark.parametrize(
    ("exit_code", "status", "retried"),
    [(75, "Failed", True), (2, "Failed", False), (1, "Failed", False), (-1, "Error", True),
     (137, "Failed", False)],
)  # fmt: skip
def test_the_pipeline_retries_transient_failures_and_argo_errors_only(
    exit_code: int, status: str, retried: bool
) -> None:
    assert allows(RETRY_EXPRESSION, exit_code=exit_code, status=status) is retried


@pytest.mark.parametrize(
    "expression",
    ["lastRetry.exitCode in ['1']", "len(lastRetry.message) > 0", "retries < 3",
     "lastRetry.exitCode ?? '0'", "asInt(lastRetry.exitCode) >", "(true", "1 + 1 == 2"],
)  # fmt: skip
def test_what_is_not_read_is_refused_when_parsed(expression: str) -> None:
    with pytest.raises(UnsupportedExpression):
        parse(expression)


@pytest.mark.parametrize(
    "expression",
    ["asInt(lastRetry.message) == 1", "lastRetry.exitCode < 2", "lastRetry.exitCode",
     "asInt(lastRetry.duration) < 60"],
)  # fmt: skip
def test_run_time_errors_are_errors_not_false(expression: str) -> None:
    """As expr-lang fails (Argo then errors the node) rather than deciding silently."""
    with pytest.raises(ExpressionError):
        allows(expression, duration=12.5)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        # expr-lang compiles a literal pattern with Go's regexp when it compiles the expression
        ("lastRetry.message matches '('", "missing ), unterminated subpattern"),
        ("lastRetry.message matches '[a-'", "unterminated character set"),
        ("lastRetry.message matches '(?=a)b'", "Go's regexp has no assert"),
        ("lastRetry.message matches '(?<!a)b'", "Go's regexp has no assert_not"),
        ("lastRetry.message matches '(a)\\\\1'", "Go's regexp has no groupref"),
        # every variable is a string: these fail however the attempt ended
        ("lastRetry.exitCode < 2", "< cannot compare string with int"),
        ("lastRetry.exitCode", "gives string, not true or false"),
        ("asInt(lastRetry.exitCode)", "gives int, not true or false"),
        ("lastRetry.status && true", "&& needs bool operands, not string"),
        ("!lastRetry.status", "! needs bool operands, not string"),
        ("-lastRetry.duration < 1", "- needs number operands, not string"),
        ("asInt(lastRetry.exitCode) matches '1'", "matches needs two strings, not int, string"),
        ("asInt(true) == 1", "asInt() of a bool"),
    ],
)  # fmt: skip
def test_what_fails_whenever_it_is_evaluated_is_refused_when_parsed(
    expression: str, words: str
) -> None:
    """It was found at the first failed attempt (a re.error traceback for a pattern)."""
    with pytest.raises(ExpressionError, match=re.escape(words)):
        parse(expression)


def test_a_pattern_from_a_variable_that_does_not_compile_is_an_evaluation_error() -> None:
    condition = parse("lastRetry.status matches lastRetry.message")
    with pytest.raises(ExpressionError, match="missing \\)"):
        condition.allows_retry(1, "Failed", 1.0, "(")
