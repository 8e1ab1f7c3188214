"""Settings for the Argo resources (what to render) and the Argo server (where to send them)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from steps import __version__
from steps.cli import BadInput
from steps.contract import Boolean, Flag, Integer, Kind, Text
from steps.mlflow_env import visible_ascii_problem
from steps.redaction import redact_value, split_url, url_port
from steps.revision import SourceRevision, source_revision
from steps.tracking import TrackingUri
from workflows.argo_rules import NAMESPACE, is_dns_label
from workflows.validate_resources import CronSchedule, TimeZone

DEFAULT_NAMESPACE = "mlops"
DEFAULT_SERVICE_ACCOUNT = "dewpoint-pipeline"
DEFAULT_IMAGE_REPOSITORY = "dewpoint-pipeline/step"
DEFAULT_SCHEDULE = "0 0 * * 0"  # the prototype's schedule: Sundays at midnight
DEFAULT_TIMEZONE = "UTC"
DEFAULT_MLFLOW_TRACKING_URI = "http://mlflow.mlops.svc:5000"
DEFAULT_MLFLOW_PORT = 5050  # local doors' MLflow server on 127.0.0.1 (make demo, submit --local)
# Per-year pods at once (the entrypoint DAG's `parallelism`): PIPELINE_FAN_OUT_PARALLELISM or
# submit.py --fan-out-parallelism. A render setting, not a workflow parameter: Argo's
# `parallelism` is an integer field that takes no `{{...}}` (argoproj/argo-workflows#1780, open;
# v4.1.2 api/jsonschema/schema.json, Template.parallelism `type: integer`).
FAN_OUT_PARALLELISM = Integer(1, 1000)
# A container image reference as Docker reads it (distribution/reference, reference.go):
# [domain[:port]/]path[/path...][:tag][@digest], paths in lowercase.
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = Text(
    rf"(?:{_DOMAIN}(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*(?::{_TAG})?(?:@{_DIGEST})?",
    what="a container image reference (registry/name:tag or name@sha256:digest)",
    empty_ok=False,
    max_length=512,
)


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the setting and the value."""


def parse_bool(name: str, value: str) -> bool:
    """Parse a boolean switch from an environment variable in the steps' own spellings
    (steps.contract.Boolean: `true` or `false`, as Argo's enum); empty is false (unset).

    Raises:
        SettingsError: any other value, naming the variable.
    """
    text = value.strip()
    try:
        return Boolean().parse(text) if text else False
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a boolean; use true or false") from None


def default_image() -> str:
    """The step image tagged with this package's version (the one place the tag is derived)."""
    return f"{DEFAULT_IMAGE_REPOSITORY}:{__version__}"


def name_value_argument(text: str) -> tuple[str, str]:
    """argparse `type` for a `-p name=value` workflow parameter override."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not name=value")
    return name, value


def parameter_overrides(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """`-p` overrides as name -> value, each name given once: `-p x=1 -p x=2` is refused, never
    the last one taken silently (every door: submit.py, the local runner, the demo).

    Raises:
        BadInput: naming the first parameter given twice.
    """
    parameters: dict[str, str] = {}
    for name, value in pairs:
        if name in parameters:
            raise BadInput(f"-p {name!r} is given twice: give each workflow parameter once")
        parameters[name] = value
    return parameters


def add_parameter_overrides(parser: argparse.ArgumentParser) -> None:
    """Add repeatable `-p/--parameter NAME=VALUE`; parsed into a list of (name, value)."""
    parser.add_argument(
        "-p",
        "--parameter",
        type=name_value_argument,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="workflow parameter override (repeatable)",
    )


@dataclass(frozen=True)
class PipelineSettings:
    """What the WorkflowTemplate and CronWorkflow look like: namespace, image, schedule, defaults.

    Read from `PIPELINE_*` environment variables by `from_env`; every field has a default that
    matches docs/steps.md ("Names shared by ...").
    """

    namespace: str = DEFAULT_NAMESPACE
    image: str = field(default_factory=default_image)
    image_pull_policy: str = "IfNotPresent"
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    code_version: str = __version__
    # The checkout that renders the resources (labels on them and on every run).
    revision: SourceRevision = field(default_factory=source_revision)
    schedule: str = DEFAULT_SCHEDULE
    timezone: str = DEFAULT_TIMEZONE
    suspend: bool = False
    mlflow_tracking_uri: str = DEFAULT_MLFLOW_TRACKING_URI
    # Per-year pods running at once: 4 fetch pods at their 1 GiB limit fit a small node.
    fan_out_parallelism: int = 4

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineSettings:
        """Build settings from the variables of SETTING_KINDS (`PIPELINE_NAMESPACE`, ...) and
        `PIPELINE_SUSPEND`, each read with its kind as a step reads a flag's variable: unset or
        empty keeps the default, anything else must be a value of the kind.

        Raises:
            SettingsError: the first variable whose value its kind refuses (blank included),
                naming it, the value and what it takes.
        """
        env = os.environ if environ is None else environ
        base = cls()
        given = {
            field_name: _setting(env, variable, kind, getattr(base, field_name))
            for field_name, (variable, kind) in SETTING_KINDS.items()
        }
        suspend = parse_bool("PIPELINE_SUSPEND", env.get("PIPELINE_SUSPEND", "false"))
        return cls(**given, suspend=suspend)


def pipeline_settings(environ: Mapping[str, str] | None = None) -> PipelineSettings:
    """The render settings of every door (`make render`, `submit.py`, `submit.py --local`,
    `make demo`): `PipelineSettings.from_env`, read here once for all of them.

    Raises:
        BadInput: a PIPELINE_* variable its kind refuses (one line, exit 2).
    """
    try:
        return PipelineSettings.from_env(environ)
    except SettingsError as exc:
        raise BadInput(str(exc)) from None


# Each PipelineSettings field read from the environment (but `suspend`, `parse_bool`): its
# variable and its kind, the rule a value must follow (one reading: the steps' TrackingUri for
# the tracking URI the stages will be given, the validator's cron and time zone rules). The
# tracking URI is for pods elsewhere: its database driver and SQLite file are looked up there
# (by check-parameters), not on the machine that renders.
SETTING_KINDS: dict[str, tuple[str, Kind]] = {
    "namespace": ("PIPELINE_NAMESPACE", NAMESPACE),
    "image": ("PIPELINE_IMAGE", IMAGE_REFERENCE),
    "schedule": ("PIPELINE_SCHEDULE", CronSchedule()),
    "timezone": ("PIPELINE_TIMEZONE", TimeZone()),
    "mlflow_tracking_uri": ("PIPELINE_MLFLOW_TRACKING_URI", TrackingUri(here=False)),
    "fan_out_parallelism": ("PIPELINE_FAN_OUT_PARALLELISM", FAN_OUT_PARALLELISM),
}


def _setting(env: Mapping[str, str], variable: str, kind: Kind, default: object) -> object:
    """`variable`'s value in `env` read with `kind` exactly as a step reads a flag's variable
    (`steps.contract.Flag.convert`), else `default` when it is unset or empty.

    Raises:
        SettingsError: one line naming `variable`, the value and what `kind` takes.
    """
    try:
        return Flag(variable, kind, variable, default=default).convert(
            env.get(variable) or None, variable
        )
    except BadInput as exc:
        raise SettingsError(str(exc)) from None


@dataclass(frozen=True)
class ArgoSettings:
    """Where the Argo server is and how to authenticate: flags first, then env, then defaults."""

    server_url: str
    token: str | None = None
    verify_tls: bool = True
    namespace: str = DEFAULT_NAMESPACE

    @property
    def base_url(self) -> str:
        """The server URL ending in `/`, so relative API paths keep a base path such as `/argo/`.

        Hera's WorkflowsService joins paths with urljoin, which drops the last path segment of a
        host without a trailing slash.
        """
        return self.server_url if self.server_url.endswith("/") else self.server_url + "/"

    @property
    def authorization(self) -> str | None:
        """The Authorization header value: `Bearer <token>` whether or not the prefix was given."""
        return f"Bearer {_bare_token(self.token)}" if self.token else None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add --argo-server, --token, --insecure-skip-verify and --namespace (env fallbacks)."""
        parser.add_argument(
            "--argo-server",
            help="Argo server URL including any base path, e.g. http://localhost/argo/ "
            "(env ARGO_SERVER_URL)",
        )
        parser.add_argument(
            "--token",
            help="Argo bearer token, with or without the 'Bearer ' prefix; omit for server "
            "auth mode (env ARGO_TOKEN)",
        )
        parser.add_argument(
            "--insecure-skip-verify",
            action="store_true",
            default=None,
            help="do not verify the server's TLS certificate (env ARGO_INSECURE_SKIP_VERIFY)",
        )
        parser.add_argument(
            "--namespace",
            help=f"namespace of the resources (env ARGO_NAMESPACE, default {DEFAULT_NAMESPACE})",
        )

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace,
        environ: Mapping[str, str] | None = None,
        default_namespace: str = DEFAULT_NAMESPACE,
    ) -> ArgoSettings:
        """Build settings from parsed flags, then `ARGO_*` env; a missing server URL is an error."""
        env = os.environ if environ is None else environ
        url = args.argo_server or env.get("ARGO_SERVER_URL")
        if not url:
            raise SettingsError(
                "no Argo server: pass --argo-server or set ARGO_SERVER_URL, or run it here "
                "without a cluster with --local (what `make demo` does)"
            )
        check_server_url(url)
        if args.insecure_skip_verify is not None:
            skip = bool(args.insecure_skip_verify)
        else:
            skip = parse_bool(
                "ARGO_INSECURE_SKIP_VERIFY", env.get("ARGO_INSECURE_SKIP_VERIFY", "false")
            )
        return cls(
            server_url=url,
            token=_token(args.token or env.get("ARGO_TOKEN") or None),
            verify_tls=not skip,
            namespace=resolve_namespace(args, env, default_namespace),
        )


def resolve_namespace(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    default: str = DEFAULT_NAMESPACE,
) -> str:
    """The namespace: `--namespace`, then `ARGO_NAMESPACE`, then `default`."""
    env = os.environ if environ is None else environ
    if args.namespace:
        namespace, where = args.namespace, "--namespace"
    elif env.get("ARGO_NAMESPACE"):
        namespace, where = env["ARGO_NAMESPACE"], "ARGO_NAMESPACE"
    else:
        return default
    if not is_dns_label(namespace):
        raise SettingsError(
            f"{where}={namespace[:80]!r} is not a Kubernetes namespace name (at most 63 "
            "lowercase letters, digits and '-', starting and ending with a letter or digit)"
        )
    return namespace


def check_server_url(url: str) -> None:
    """Refuse an Argo server URL that no request could be sent to: not http(s), no host, a bad
    port, spaces, or text `urllib` cannot split (`http://[::1`).

    Raises:
        SettingsError: naming the URL and what is wrong with it.
    """
    shown = repr(redact_value(url)[:200])
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"Argo server URL {shown} must start with http:// or https://")
    try:
        parts = split_url(url)
        port = url_port(parts)  # ValueError for a port that is not 0-65535, never quoting it
    except ValueError as exc:
        raise SettingsError(f"Argo server URL {shown} is not a URL: {exc}") from None
    if not parts.hostname:
        raise SettingsError(f"Argo server URL {shown} names no host, e.g. http://localhost/argo/")
    if port == 0 or any(c.isspace() for c in url):
        raise SettingsError(f"Argo server URL {shown} has a bad port or a space in it")


def _token(token: str | None) -> str | None:
    """The token as given; one that is empty after its `Bearer ` prefix is an error (an empty
    `$(make -s argo-token)` would otherwise send no credentials and meet a 401 later), and so is
    one that cannot go in the Authorization header as it is (`visible_ascii_problem`): requests
    quoted a token with a line break whole in its error (exit 1), and a non-latin-1 one was a
    UnicodeEncodeError traceback. The token is never shown."""
    if token is None:
        return None
    if token.strip().lower() in ("", "bearer"):
        raise SettingsError(
            "the Argo token (--token or ARGO_TOKEN) is empty after its 'Bearer ' prefix: "
            "set it to `make -s argo-token`'s output"
        )
    problem = visible_ascii_problem(_bare_token(token))
    if problem:
        raise SettingsError(f"the Argo token (--token or ARGO_TOKEN) {problem}")
    return token


def _bare_token(token: str) -> str:
    """`token` without white space around it and without its `Bearer ` prefix (any case)."""
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[len("bearer ") :].strip()
    return token
