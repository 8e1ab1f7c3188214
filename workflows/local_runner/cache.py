"""What a cluster keeps between runs, kept in a local directory: the artifact repository that
key-only artifacts live in, and the ConfigMaps that memoized templates cache their outputs in.

Layout of `cache_dir`: `artifacts/<key>` is the object (a file, or a directory of files for a key
used as a prefix) Argo would store at `<key>` in the artifact repository; `memoize/<name>.json`
is the `data` of ConfigMap `<name>`: cache key -> entry. Entries have Argo's shape (`nodeID`,
`outputs`, `creationTimestamp`, `lastHitTimestamp`); a hit is an entry with a node id no older
than the template's `maxAge`, and updates its `lastHitTimestamp` (Argo v4.1.2
workflow/controller/cache/configmap_cache.go and cache.go). Delete a file under `memoize/` (or
one key in it) to invalidate, as `kubectl delete configmap <name>` does on a cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.files import NotRegularFile, OverBound, read_regular, write_text_atomically
from steps.processes import exclusive_lock
from workflows.argo_rules import memo_key_problem
from workflows.local_runner.planning import LocalRunError

# Kubernetes refuses a ConfigMap whose data exceeds this (docs/memoization.md, FAQ): Argo then
# fails the node ("error creating cache entry ... Too long").
CONFIGMAP_MAX_CHARS = 1_048_576
# The most bytes of a cache file read: `save_entry` keeps a ConfigMap's entries within
# CONFIGMAP_MAX_CHARS of compact JSON (ASCII: json.dumps escapes the rest) and writes them
# indented by two spaces, at most 7 levels deep (entry, outputs, parameters, one parameter, ...),
# which makes the shortest value, `""`, at most 6 times longer; a larger file was never written
# here, and reading one whole (or a device such as /dev/zero) would only exhaust memory.
CACHE_FILE_MAX_BYTES = 8 * CONFIGMAP_MAX_CHARS
# Seconds to wait for another local run's update of the same ConfigMap file (a holder keeps it
# for one read and write of a JSON file of at most CONFIGMAP_MAX_CHARS), then refuse.
CACHE_LOCK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LocalCache:
    """The artifact repository and memoization ConfigMaps of local runs, under `root`."""

    root: Path

    # --- key-only artifacts --------------------------------------------------------------------

    def artifact_path(self, key: str) -> Path:
        """Where the object at `key` lives here.

        Raises:
            LocalRunError: a key that names no place inside the repository (`key_problem`).
        """
        problem = key_problem(key)
        if problem:
            raise LocalRunError(problem)
        return self.root / "artifacts" / posixpath.normpath(key)

    def put(self, key: str, source: Path) -> Path:
        """Store the file or directory `source` at `key`, replacing what was there (an upload);
        return where it now lives."""
        target = self.artifact_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(_STAGING.format(target.name))
        _remove(staging)
        if source.is_dir():
            shutil.copytree(source, staging)
        else:
            shutil.copy2(source, staging)
        _remove(target)
        staging.rename(target)
        return target

    def get(self, key: str, target: Path) -> bool:
        """Copy the object at `key` to `target`: a file, or every file under the key as a prefix
        (a directory), as Argo's S3 driver loads a key (workflow/artifacts/s3/s3.go,
        loadS3Artifact); False when nothing is there, a directory without files included (a
        bucket has no empty prefix: S3 answers NoSuchKey)."""
        source = self.artifact_path(key)
        if not source.exists() or (
            source.is_dir() and not any(p.is_file() for p in source.rglob("*"))
        ):
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        return True

    # --- memoization ---------------------------------------------------------------------------

    def load_entry(self, cache: str, key: str, max_age_s: float) -> dict[str, Any] | None:
        """The outputs cached under `key` in ConfigMap `cache`, when they are a hit (an entry with
        a node id, created at most `max_age_s` seconds ago); a hit's `lastHitTimestamp` is updated.

        Raises:
            LocalRunError: the key is not one Argo accepts, or the cache file is not JSON.
        """
        _check_key(key)
        with self._entries(cache) as entries:
            entry = entries.get(key)
            if not isinstance(entry, Mapping) or not entry.get("nodeID"):
                return None
            created = _parse_time(entry.get("creationTimestamp"))
            if created is None or (_now() - created).total_seconds() > max_age_s:
                return None
            entries[key] = {**entry, "lastHitTimestamp": _format_time(_now())}
            return dict(entries[key].get("outputs") or {})

    def save_entry(self, cache: str, key: str, node_id: str, outputs: Mapping[str, Any]) -> None:
        """Cache `outputs` (Argo's Outputs: parameters, artifacts) under `key` in `cache`.

        Raises:
            LocalRunError: a bad key, or the ConfigMap would exceed Kubernetes' 1 MiB.
        """
        _check_key(key)
        now = _format_time(_now())
        with self._entries(cache) as entries:
            entries[key] = {"nodeID": node_id, "outputs": dict(outputs),
                            "creationTimestamp": now, "lastHitTimestamp": now}  # fmt: skip
            size = sum(len(k) + len(json.dumps(v)) for k, v in entries.items())
            if size > CONFIGMAP_MAX_CHARS:
                del entries[key]
                raise LocalRunError(
                    f"error creating cache entry: ConfigMap {cache!r} would hold {size} "
                    f"characters; Kubernetes allows {CONFIGMAP_MAX_CHARS}"
                )

    def check_entries(self, cache: str) -> None:
        """Raise LocalRunError when ConfigMap `cache` has a file here that is not JSON."""
        if (self.root / "memoize" / f"{cache}.json").exists():
            self.entries(cache)

    def entries(self, cache: str) -> dict[str, Any]:
        """Every entry of ConfigMap `cache` (empty when it does not exist)."""
        with self._entries(cache) as entries:
            return dict(entries)

    @contextmanager
    def _entries(self, cache: str) -> Iterator[dict[str, Any]]:
        """The entries of `cache`, read and written back under an exclusive lock."""
        path = self.root / "memoize" / f"{cache}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(
            path.parent / f".{cache}.lock",
            CACHE_LOCK_TIMEOUT_S,
            lambda _waiting: None,  # held for one small read and write: not worth a line
            what="local run updating this cache",
            error=LocalRunError,
        ):
            try:
                entries = _read_entries(path) if path.exists() else {}
            except ValueError as exc:
                raise LocalRunError(f"memoization cache {path} is not JSON: {exc}") from None
            except (NotRegularFile, OverBound) as exc:
                raise LocalRunError(f"memoization cache: {exc}") from None
            except OSError as exc:
                raise LocalRunError(
                    f"memoization cache {path} cannot be read: {exc.strerror or exc}"
                ) from None
            if not isinstance(entries, dict):
                raise LocalRunError(
                    f"memoization cache {path} is not a JSON object of entries (a ConfigMap's "
                    f"data) but {type(entries).__name__}: delete the file to start it afresh"
                )
            before = json.dumps(entries, sort_keys=True)
            yield entries
            if json.dumps(entries, sort_keys=True) != before:
                write_text_atomically(path, json.dumps(entries, indent=2, sort_keys=True) + "\n")


def _read_entries(path: Path) -> Any:
    """The JSON in cache file `path`, a key written twice in one object refused (Kubernetes
    refuses a ConfigMap's duplicate fields; json.loads would keep the last silently).

    Raises:
        NotRegularFile, OverBound: not a regular file, or over CACHE_FILE_MAX_BYTES.
        ValueError: not UTF-8 JSON, or a key given twice.
    """
    data = read_regular(path, CACHE_FILE_MAX_BYTES)  # OSError: left to the caller
    return json.loads(data.decode(), object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    entries: dict[str, Any] = {}
    for key, value in pairs:
        if key in entries:
            raise ValueError(f"key {key[:60]!r} is given twice in one object")
        entries[key] = value
    return entries


# The longest file name the file systems a cache directory lives on hold (NAME_MAX of ext4, xfs,
# btrfs, tmpfs), in bytes: an S3 key (up to 1024 bytes) or a ConfigMap name (up to 253) longer
# than a file here can name was an OSError after earlier tasks had run.
NAME_MAX = 255
_STAGING = ".{}.uploading"  # `put` uploads beside the target under this name first


def key_problem(key: str) -> str | None:
    """Why `key` names no object inside the repository here, or None: an empty or absolute key,
    one whose `..` segments leave it (it would be a path outside the cache directory), a NUL
    byte, or a segment longer than a file name here (NAME_MAX, with `put`'s staging name)."""
    normal = posixpath.normpath(key) if key else ""
    if key.startswith("/") or normal in ("", ".") or normal == ".." or normal.startswith("../"):
        return (
            f"artifact key {key!r} is not a relative key in the repository (no '/' first, no "
            "'..' leaving it)"
        )
    if "\0" in key:
        return f"artifact key {key[:60]!r} holds a NUL byte, which no file name here can"
    for segment in normal.split("/"):
        if len(_STAGING.format(segment).encode()) > NAME_MAX:
            return (
                f"artifact key segment {segment[:40]!r}... is {len(segment.encode())} bytes; a "
                f"file here holds at most {NAME_MAX - len(_STAGING.format('').encode())}"
            )
    return None


def cache_name_problem(cache: str) -> str | None:
    """Why ConfigMap `cache` cannot be kept here, or None: its file, lock file (`_entries`) or
    the file its update is written to first (steps.files.write_atomically: `.<file>.<8
    characters>.tmp`) would have a name longer than NAME_MAX."""
    names = (f"{cache}.json", f".{cache}.lock", f".{cache}.json.{'x' * 8}.tmp")
    extra = max(len(name) for name in names) - len(cache)
    if len(cache.encode()) + extra > NAME_MAX:
        return (
            f"memoize.cache.configMap.name {cache[:40]!r}... is {len(cache.encode())} characters;"
            f" a cache file here can be named for at most {NAME_MAX - extra}"
        )
    return None


def _check_key(key: str) -> None:
    problem = memo_key_problem(key)
    if problem:
        raise LocalRunError(problem)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _format_time(moment: dt.datetime) -> str:
    """RFC 3339 in UTC, as Kubernetes writes a metav1.Time."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
