"""validate writes the kept rows a slice at a time: same file, rows and hash as one filter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps import fetch, validate
from steps.dataset import canonical, data_hash, read_dataset, write_dataset


@pytest.mark.parametrize("shuffled", [False, True])
def test_sliced_filter_equals_one_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shuffled: bool
) -> None:
    dataset = tmp_path / "dataset.parquet"
    assert fetch.main(["--source", "synthetic", "--rows", "3000", "--output", str(dataset)]) == 0
    table, source = read_dataset(dataset)
    if shuffled:  # not in canonical order: the kept rows are sorted (train hashes as it streams)
        table = table.take(list(range(table.num_rows))[::-1])
        write_dataset(table, dataset, source)
    expected, _ = validate.validate_table(table, validate.ValidationPolicy())
    monkeypatch.setattr(validate, "FILTER_SLICE_ROWS", 700)  # five slices, the last one short
    report_path = tmp_path / "validation.json"
    outputs = validate.validate_file(
        dataset, tmp_path / "validated.parquet", report_path, validate.ValidationPolicy()
    )
    kept, metadata = read_dataset(tmp_path / "validated.parquet")
    report = json.loads(report_path.read_text())
    assert kept.equals(canonical(expected) if shuffled else expected)
    assert 0 < kept.num_rows < 3000
    assert outputs["row-count"] == report["rows_out"] == metadata["rows"] == kept.num_rows
    assert report["validated_data_hash"] == metadata["data_hash"] == data_hash(expected)
