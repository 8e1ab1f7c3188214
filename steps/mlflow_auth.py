"""Set up MLflow's basic-auth users for the cluster: the pipeline (writes runs, versions, aliases),
the model server and the UI viewer (read-only), and the pipeline's grants on its experiment and
registered model. Run by the `mlflow-users` Job (kind/base/mlflow) after every `make kind-up`.

`python -m steps.mlflow_auth --experiment dewpoint --model-name dewpoint-lr`, as MLflow's admin:
MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/PASSWORD (the admin), and for each user
<ROLE>_USERNAME / <ROLE>_PASSWORD with ROLE in PIPELINE, MODEL_SERVER, VIEWER.

Idempotent: existing users get their password set again, grants are set again. The server runs
with `default_permission = READ`, so the read-only users need no grant. The experiment and the
registered model are created here, by the admin, so no other user can create them first and own
them (MLflow grants MANAGE to a resource's creator). Client API: mlflow 3.17.2
mlflow/server/auth/client.py (AuthServiceClient, via mlflow.server.get_app_client).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from steps.cli import BadInput, one_line, run
from steps.settings import MlflowSettings
from steps.stages import MLFLOW_AUTH
from steps.tracking import DOES_NOT_EXIST, error_for

ROLES = ("PIPELINE", "MODEL_SERVER", "VIEWER")
# The pipeline logs runs and models (EDIT on the experiment) and registers versions, moves and
# deletes aliases (promote puts both back on failure) and tags them: MANAGE on the model.
PIPELINE_GRANTS = (("experiment", "EDIT"), ("registered_model", "MANAGE"))


@dataclass(frozen=True)
class User:
    """One basic-auth user: name and password."""

    username: str
    password: str


def users_from_env(environ: Mapping[str, str]) -> dict[str, User]:
    """The users named by <ROLE>_USERNAME / <ROLE>_PASSWORD; BadInput naming a missing one."""
    users = {}
    for role in ROLES:
        name, password = environ.get(f"{role}_USERNAME"), environ.get(f"{role}_PASSWORD")
        if not name or not password:
            raise BadInput(f"set {role}_USERNAME and {role}_PASSWORD (from its Secret)")
        users[role] = User(name, password)
    return users


def ensure_users(
    tracking_uri: str, users: Mapping[str, User], *, experiment: str, model_name: str
) -> list[str]:
    """Create or update every user and the pipeline's grants, as the admin in the environment.

    Returns:
        One line per action taken, for the Job's log (no passwords).

    Raises:
        StepError: the server refused (exit 1) or, as TransientError, could not be reached or
            answered 5xx (exit 75); one line, credentials in URLs redacted.
    """
    import mlflow
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    done = []
    try:
        for user in users.values():
            if _user_exists(auth, user.username):
                auth.update_user_password(user.username, user.password)
                done.append(f"user {user.username}: password set")
            else:
                auth.create_user(user.username, user.password)
                done.append(f"user {user.username}: created")
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        if _registered_model(client, model_name) is None:
            client.create_registered_model(model_name)
        pipeline = users["PIPELINE"].username
        for resource_type, permission in PIPELINE_GRANTS:
            resource_id = experiment_id if resource_type == "experiment" else model_name
            _grant(auth, pipeline, resource_type, resource_id, permission)
            done.append(f"{pipeline}: {permission} on {resource_type} {resource_id}")
    except (MlflowException, requests.RequestException) as exc:
        # No answer or a 5xx is transient (exit 75); a refusal (a bad admin password) is not.
        raise error_for(exc)(f"MLflow auth set-up at {tracking_uri}: {one_line(exc)}") from exc
    return done


def _grant(auth: Any, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Grant `permission`, replacing a grant the user already has on that resource."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, resource_type, resource_id, permission)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, permission)


def _user_exists(auth: Any, username: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(username)
        return True
    except MlflowException as exc:
        if exc.error_code == DOES_NOT_EXIST:
            return False
        raise


def _registered_model(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == DOES_NOT_EXIST:
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    """CLI for the mlflow-users Job (flags declared in steps/stages.py, MLFLOW_AUTH)."""

    def body() -> None:
        args = MLFLOW_AUTH.parse(argv)
        settings = MlflowSettings.from_args(args)
        if not os.environ.get("MLFLOW_TRACKING_USERNAME"):
            raise BadInput("set MLFLOW_TRACKING_USERNAME/PASSWORD to MLflow's admin user")
        users = users_from_env(os.environ)
        for line in ensure_users(
            settings.tracking_uri,
            users,
            experiment=settings.experiment,
            model_name=settings.model_name,
        ):
            print(line)

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
