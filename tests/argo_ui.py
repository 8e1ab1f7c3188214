"""How the Argo UI (v4.1.2) fills a configured link, ported for tests: the same lookup, so a link
that would open the wrong page in the UI fails here."""

from __future__ import annotations

import re
from typing import Any

# Fields of a link in the workflow-controller ConfigMap: v4.1.2 pkg/apis/workflow/v1alpha1/info.go
# (type Link). The config is read with yaml.UnmarshalStrict (config/controller.go), so any other
# field is an error.
LINK_FIELDS = {"name", "scope", "url", "target"}
LINK_SCOPES = {"workflow", "pod", "pod-logs", "event-source-logs", "sensor-logs", "workflow-list",
               "chat"}  # fmt: skip
# argo-server --allowed-link-protocol default (cmd/argo/commands/server.go).
ALLOWED_PROTOCOLS = {"http", "https"}


def process_url(url: str, obj: dict[str, Any]) -> str:
    """v4.1.2 ui/src/shared/components/links.tsx `processURL`: each `${a.b.c}` becomes
    `obj[a][b][c]` (a list index is a segment too); a missing value is `null`, or the empty
    string under `workflow.` (labels/annotations keys may hold dots; not used by our links)."""

    def replace(match: re.Match[str]) -> str:
        parts = match.group(1).split(".")
        empty = "" if parts[0] == "workflow" else "null"
        value: Any = obj
        for part in parts:
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            elif isinstance(value, dict) and value.get(part):
                value = value[part]
            else:
                return empty
        return str(value) if value else empty

    return re.sub(r"\$\{([^}]*)\}", replace, url)


def workflow_page_object(workflow: dict[str, Any]) -> dict[str, Any]:
    """The object the workflow page hands to `processURL` for `workflow`-scope links
    (ui/src/workflows/components/workflow-details/workflow-details.tsx, openLink)."""
    status = workflow.get("status") or {}
    return {
        "metadata": {k: workflow["metadata"].get(k) for k in ("namespace", "name")},
        "workflow": workflow,
        "status": {k: status.get(k) for k in ("startedAt", "finishedAt")},
    }
