"""Samples YAML: parsing, FOV ranges, and every refusal with a message naming file and sample."""

from __future__ import annotations

import pytest

from pyama_lib.core.errors import ParamsError
from pyama_lib.io.samples import (
    Sample,
    check_fovs,
    check_sample_name,
    format_fovs,
    load_samples,
    parse_samples,
)


def _write(tmp_path, text):
    path = tmp_path / "samples.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_samples_with_ranges_and_lists(tmp_path):
    path = _write(
        tmp_path,
        "samples:\n"
        "  - name: control\n"
        "    fovs: '0-3, 7'\n"
        "  - name: dox 1uM\n"
        "    fovs: [9, 8, 8]\n"
        "  - name: 2024\n"  # YAML reads this as an int: taken as its text
        "    fovs: 5\n"
        "    note: ignored\n",
    )
    assert load_samples(path) == [
        Sample("control", (0, 1, 2, 3, 7)),
        Sample("dox 1uM", (8, 9)),
        Sample("2024", (5,)),
    ]


def test_samples_may_share_fovs_as_in_pyama():
    samples = parse_samples({"samples": [{"name": "a", "fovs": "0-2"}, {"name": "b", "fovs": [2]}]})
    assert [s.fovs for s in samples] == [(0, 1, 2), (2,)]


def test_sample_record_normalises_and_checks():
    assert Sample("x", "3, 0-1").fovs == (0, 1, 3)
    assert Sample("x", [2, 1, 2]).fovs == (1, 2)
    with pytest.raises(ParamsError, match="not safe as a file name"):
        Sample("../x", [0])
    with pytest.raises(ParamsError, match="'x' has no FOVs"):
        Sample("x", [])
    with pytest.raises(ParamsError, match="0 or more"):
        Sample("x", [-1])


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("other: 1\n", r"samples.yaml: no 'samples' list"),
        ("", r"samples.yaml: no 'samples' list"),
        ("- name: a\n  fovs: [0]\n", r"samples.yaml: no 'samples' list"),
        ("samples: []\n", r"samples.yaml: 'samples' must be a non-empty list"),
        ("samples: [3]\n", r"samples.yaml: sample #1 is not a mapping"),
        ("samples:\n  - fovs: [0]\n", r"samples.yaml: sample #1 has no name"),
        ("samples:\n  - name: ''\n    fovs: [0]\n", r"sample #1 has no name"),
        ("samples:\n  - name: a\n", r"samples.yaml: sample 'a' has no FOVs"),
        ("samples:\n  - name: a\n    fovs: ''\n", r"sample 'a' has no FOVs"),
        ("samples:\n  - name: a\n    fovs: []\n", r"sample 'a' has no FOVs"),
        ("samples:\n  - name: a\n    fovs: '0-x'\n", r"sample 'a': bad FOV range '0-x'"),
        ("samples:\n  - name: a\n    fovs: '5-2'\n", r"sample 'a': bad FOV range '5-2'"),
        ("samples:\n  - name: a\n    fovs: [0, -1]\n", r"sample 'a': FOVs must be integers"),
        ("samples:\n  - name: a\n    fovs: [0, x]\n", r"sample 'a': FOVs must be integers"),
        ("samples:\n  - name: a\n    fovs: true\n", r"sample 'a': fovs must be a list"),
        (
            "samples:\n  - name: a\n    fovs: '0-3000000000'\n",
            r"sample 'a': FOV range '0-3000000000' goes beyond FOV 99999",
        ),
        (
            "samples:\n  - name: a\n    fovs: [0, 3000000000]\n",
            r"sample 'a': FOVs must be integers",
        ),
        ("samples: [{name: a, fovs: [0]}, {name: a, fovs: [1]}]\n", r"two samples are named 'a'"),
        (
            "samples: [{name: WT, fovs: [0]}, {name: wt, fovs: [1]}]\n",
            r"samples.yaml: two samples are named 'WT' and 'wt'",
        ),
        ("samples: [{name: ../up, fovs: [0]}]\n", r"samples.yaml: sample name '../up' is not safe"),
        ("samples: [\n", r"samples.yaml: not valid YAML"),
    ],
)
def test_bad_samples_files_are_refused_naming_file_and_sample(tmp_path, text, needle):
    with pytest.raises(ParamsError, match=needle):
        load_samples(_write(tmp_path, text))


def test_missing_samples_file(tmp_path):
    with pytest.raises(ParamsError, match=r"nope.yaml: samples file not found"):
        load_samples(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "name",
    [
        "a/b",
        "a\\b",
        "..",
        "a..b",
        "../x",
        ".hidden",
        "-option",
        "a:b",
        "a*b",
        "a?b",
        'a"b',
        "a<b>",
        "a|b",
        "tab\there",
        "trailing ",
        " leading",
        "trailing.",
        "caf\u00e9",
        "x" * 101,
    ],
)
def test_unsafe_sample_names_are_refused(name):
    with pytest.raises(ParamsError, match="sample name"):
        check_sample_name(name)


@pytest.mark.parametrize("name", ["control", "dox 1uM", "WT_rep-2.1", "A+B", "0h", "x" * 100])
def test_safe_sample_names_are_kept(name):
    assert check_sample_name(name) == name


def test_check_fovs_names_sample_missing_fovs_and_what_there_is():
    samples = [Sample("ok", [0, 1]), Sample("far", [1, 7, 8, 9])]
    check_fovs(samples[:1], [0, 1, 2])
    with pytest.raises(ParamsError) as info:
        check_fovs(samples, [0, 1, 2], "my_samples.yaml")
    message = str(info.value)
    assert message.startswith("my_samples.yaml: sample 'far' names FOV(s) 7-9")
    assert "FOVs with traces: 0-2" in message and "'ok'" not in message


def test_format_fovs_inverts_the_range_syntax():
    fovs = [0, 1, 2, 5, 7, 8]
    assert format_fovs(fovs) == "0-2, 5, 7-8"
    assert Sample("s", format_fovs(fovs)).fovs == tuple(fovs)
