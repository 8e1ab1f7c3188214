"""The GSOD parser on GSOD-format fixtures: real quirks, sentinels, legacy and broken files."""

from __future__ import annotations

import datetime as dt
import tarfile
from pathlib import Path

import pyarrow.compute as pc
import pytest

from steps import gsod_format
from steps.dataset import SCHEMA, canonical, data_hash

FIXTURES = Path(__file__).parent / "fixtures" / "gsod"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def rows_of(table) -> list[tuple]:
    return [
        (r["station"], r["date"], r["temp"], r["dewp"], r["frshtt"])
        for r in canonical(table).to_pylist()
    ]


def test_parses_padded_quoted_values_and_keeps_station_ids_and_flags() -> None:
    table = gsod_format.parse_csv(fixture_bytes("01234599999.csv"), "01234599999.csv")
    assert table.schema.equals(SCHEMA)
    assert rows_of(table) == [
        ("01234599999", dt.date(2023, 1, 1), 18.1, 10.3, "001000"),
        ("01234599999", dt.date(2023, 1, 2), -35.0, -41.2, "000000"),
        ("01234599999", dt.date(2023, 1, 4), 33.8, None, "010000"),
        ("01234599999", dt.date(2023, 1, 5), 0.7, -2.8, "110010"),
    ]


def test_station_without_metadata_and_temp_sentinel() -> None:
    table = gsod_format.parse_csv(fixture_bytes("99999912345.csv"))
    assert [r[2] for r in rows_of(table)] == [77.2, None, 79.9]
    assert [r[3] for r in rows_of(table)] == [61.0, 60.4, 64.6]


def test_station_ids_with_letters_and_leap_day() -> None:
    table = gsod_format.parse_csv(fixture_bytes("A0000212345.csv"))
    assert rows_of(table)[1][:2] == ("A0000212345", dt.date(2024, 2, 29))


def test_legacy_op_file_plain_and_gzipped() -> None:
    import gzip

    data = fixture_bytes("123450-99999-1994.op")
    expected = [
        ("12345099999", dt.date(1994, 1, 3), 78.7, 61.2, "000000"),
        ("12345099999", dt.date(1994, 1, 5), 80.8, None, "010000"),
    ]
    assert rows_of(gsod_format.parse_op(data)) == expected
    assert rows_of(gsod_format.parse_op(gzip.compress(data))) == expected


def test_directory_tarball_and_batch_size_give_the_same_data(tmp_path: Path) -> None:
    summary = gsod_format.ParseSummary()
    whole = gsod_format.parse_files(gsod_format.iter_directory(FIXTURES), summary=summary)
    assert (summary.files, summary.rows, whole.num_rows) == (4, 11, 11)
    one_file_per_batch = gsod_format.parse_files(
        gsod_format.iter_directory(FIXTURES), batch_bytes=1
    )
    archive = tmp_path / "2023.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for file in sorted(FIXTURES.iterdir()):
            tar.add(file, arcname=f"2023/{file.name}")
    from_tar = gsod_format.parse_files(gsod_format.iter_tar(archive))
    assert data_hash(whole) == data_hash(one_file_per_batch) == data_hash(from_tar)


def test_header_only_file_is_a_station_year_without_rows() -> None:
    summary = gsod_format.ParseSummary()
    files = [
        ("empty.csv", gsod_format.GSOD_HEADER + b"\n"),
        ("a.csv", fixture_bytes("A0000212345.csv")),
    ]
    table = gsod_format.parse_files(files, summary=summary)
    assert table.num_rows == 2
    assert summary.empty_files == ["empty.csv"]


def test_station_with_every_value_missing_parses_to_nulls() -> None:
    line = fixture_bytes("99999912345.csv").splitlines()[1]
    fields = line.split(b",")
    fields[6] = fields[8] = b'"9999.9"'
    data = gsod_format.GSOD_HEADER + b"\n" + b",".join(fields) + b"\n"
    table = gsod_format.parse_csv(data)
    assert table.num_rows == 1
    assert table.column("temp").null_count == table.column("dewp").null_count == 1


def test_crlf_line_endings_and_missing_final_newline() -> None:
    data = fixture_bytes("01234599999.csv").replace(b"\n", b"\r\n").rstrip()
    assert rows_of(gsod_format.parse_csv(data)) == rows_of(
        gsod_format.parse_csv(fixture_bytes("01234599999.csv"))
    )


def broken(kind: str) -> bytes:
    good = fixture_bytes("01234599999.csv")
    if kind == "truncated":
        return good[: len(good) - 40]
    if kind == "wrong-header":
        return good.replace(b'"DEWP"', b'"DEW_POINT"', 1)
    if kind == "non-utf8":
        return good.replace(b'"01234599999","2023-01-02"', b'"0123\xff599999","2023-01-02"')
    if kind == "non-numeric":
        return good.replace(b'"  33.8"', b'"  warm"')
    if kind == "empty":
        return b""
    if kind == "bad-date":
        return good.replace(b"2023-01-05", b"2023-13-05")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", "bad.csv"),
        ("wrong-header", "wrong header, column 9 is 'DEW_POINT', expected 'DEWP'"),
        ("non-utf8", "bad.csv"),
        ("non-numeric", "bad.csv"),
        ("empty", "empty"),
        ("bad-date", "bad.csv"),
    ],
)
def test_broken_file_fails_the_parse_naming_the_file(kind: str, message: str) -> None:
    files = [("good.csv", fixture_bytes("A0000212345.csv")), ("bad.csv", broken(kind))]
    with pytest.raises(gsod_format.GsodFormatError) as info:
        gsod_format.parse_files(files)
    text = str(info.value)
    assert message in text and "bad.csv" in text
    assert "good.csv" not in text
    assert "\n" not in text


def test_truncated_inside_the_last_field_is_caught_by_the_flag_check() -> None:
    good = fixture_bytes("01234599999.csv").rstrip(b"\n")
    cut = good[: len(good) - 3]  # "110010" -> "110" and no closing quote
    with pytest.raises(gsod_format.GsodFormatError, match=r"bad\.csv line 5: FRSHTT"):
        gsod_format.parse_files([("bad.csv", cut + b'"\n')])


def test_broken_legacy_file_names_the_file() -> None:
    data = fixture_bytes("123450-99999-1994.op")
    with pytest.raises(gsod_format.GsodFormatError, match=r"old\.op line 3"):
        gsod_format.parse_op(data[:-30], "old.op")


def test_sentinel_only_for_exact_value() -> None:
    # Only 9999.9 means missing for TEMP; other odd values pass through for validate to judge.
    data = fixture_bytes("A0000212345.csv").replace(b'"  68.2"', b'" 999.9"')
    table = gsod_format.parse_csv(data)
    assert pc.max(table.column("temp")).as_py() == 999.9


def test_year_folders_are_read_station_first_in_canonical_order(tmp_path: Path) -> None:
    from steps.dataset import _is_sorted

    later = {b'"2023-': b'"2024-', b'"2024-02-2': b'"2028-02-2'}  # the same stations, later
    for year in ("2024", "2023"):
        folder = tmp_path / year
        folder.mkdir()
        for name in ("A0000212345.csv", "01234599999.csv"):
            data = fixture_bytes(name)
            for old, new in later.items() if year == "2024" else ():
                data = data.replace(old, new)
            (folder / name).write_bytes(data)
    names = [name for name, _ in gsod_format.iter_directory(tmp_path)]
    assert names == [
        "2023/01234599999.csv",
        "2024/01234599999.csv",
        "2023/A0000212345.csv",
        "2024/A0000212345.csv",
    ]
    assert _is_sorted(gsod_format.parse_files(gsod_format.iter_directory(tmp_path)))


def test_non_utf8_station_name_is_ignored_because_name_is_not_read() -> None:
    # Latin-1 in NAME (a column the dataset does not use) must not fail a whole year's fetch.
    data = fixture_bytes("A0000212345.csv").replace(b"FICTIONAL", b"FICTI\xd3NAL")
    assert rows_of(gsod_format.parse_csv(data)) == rows_of(
        gsod_format.parse_csv(fixture_bytes("A0000212345.csv"))
    )
