"""Rendering: terminal tables that read at 80 columns, a self-contained report.html, report.md."""

from __future__ import annotations

import base64
import math
import struct
import zlib
from html.parser import HTMLParser

import pandas as pd
import pytest
from report_synthetic import make_results
from rich.cells import cell_len
from rich.console import Console
from test_tables import tables_of

from bnexp.report import Report, all_claims, cell_keys, comparison, load_summary, report_html
from bnexp.report.render import (
    cell_text,
    display_columns,
    fitted_tables,
    print_report,
    report_markdown,
)
from bnexp.report.tables import for_csv

TARGET = {"metric": "train_acc", "value": 0.95}


def png_1x1() -> bytes:
    """A valid 1x1 grey PNG, written by hand (no plotting in the fast tests)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1x1, 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


def report_of(results, plots=()) -> Report:
    df = load_summary(results)
    full = tables_of(results)
    tables = {k: for_csv(v) for k, v in full.items() if not k.startswith("_")}
    return Report(results, tables, list(plots), all_claims(full, TARGET), cell_keys(df), df)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "ghost-sweep"])
def report(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    results = make_results(root / "exp", ghost=request.param)
    plots = []
    for name in ("accuracy", "speedup"):
        path = results / "plots" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(png_1x1())
        plots.append(path)
    return report_of(results, plots)


def test_terminal_tables_fit_80_columns_without_cut_headers_or_wrapped_rows(report):
    frames = [(comparison(report.summary), None)] + [
        (frame, display_columns(name, report.keys))
        for name, frame in report.tables.items()
        if not frame.empty and name != "bn_noise"
    ]
    for frame, columns in frames:
        for table in fitted_tables(frame, columns, 80):
            console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
            console.print(table)
            lines = console.export_text().splitlines()
            text = "\n".join(lines)
            assert "…" not in text, f"a header or value is cut:\n{text}"
            # header, rule, one line per row: a wrapped row would add lines
            assert len(lines) == 2 + len(frame), (
                f"{len(lines)} lines for {len(frame)} rows:\n{text}"
            )
            assert max(cell_len(line) for line in lines) <= 80, text


def test_print_report_reads_at_80_columns(report):
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_report(report, console)
    text = console.export_text()
    assert "…" not in text
    too_wide = [line for line in text.splitlines() if cell_len(line.rstrip()) > 80]
    assert not too_wide, too_wide
    # the short headers are explained (the legend wraps at spaces)
    words = " ".join(text.split())
    assert "speed-up = steps(none)/steps(BN)" in words and "gen gap = train acc − test acc" in words
    for sentence in report.sentences:
        assert "• " + " ".join(cell_text(sentence.replace("**", "")).split()) in words


@pytest.mark.parametrize("detail", ["claims", "summary", "tables"])
def test_claims_are_rendered_and_wrapped_to_the_console(report, detail):
    assert any("**" in s and len(s) > 80 for s in report.sentences)  # what the test is about
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_report(report, console, detail)
    text = console.export_text(styles=True, clear=False)  # bold as ANSI codes, not markdown
    plain = console.export_text()
    assert "**" not in plain, plain
    assert "\x1b[1m" in text  # the claims' names in bold
    assert all(cell_len(line.rstrip()) <= 80 for line in plain.splitlines()), plain
    bullets = [line for line in plain.splitlines() if line.startswith("• ")]
    assert len(bullets) == len(report.sentences)
    # continuation lines are indented under the bullet's text
    claim_lines = plain[plain.index("• ") :].split("\nreport: ")[0].splitlines()
    assert all(line.startswith(("• ", "  ")) for line in claim_lines), claim_lines
    assert ("Summary" in plain) == (detail != "claims")
    assert ("Speed-up to target" in plain) == (detail == "tables")


def test_one_number_format_four_significant_digits_and_no_signed_zero():
    assert cell_text(0.032196904096555415) == "0.0322"
    assert cell_text(-0.002963) == "-0.002963"
    assert cell_text(-0.0) == "0" and cell_text(-1e-9) == "-1e-09"
    assert cell_text(12345.678) == "12350" and cell_text(float("nan")) == "—"
    assert cell_text("-0.000 [-0.003, 0.003]") == "0.000 [-0.003, 0.003]"
    assert cell_text("[-0.000, -0.5] 10-0 -0.0001") == "[0.000, -0.5] 10-0 -0.0001"


def test_csv_tables_round_measured_values_and_keep_keys_and_counts():
    frame = pd.DataFrame(
        {
            "batch_size": [64.0, 16384.0],
            "train.lr": [0.123456789, 0.3],
            "norm": ["none", "torch"],
            "runs": [3.0, 5.0],
            "gen_gap_mean": [0.032196904096555415, -0.00001234567],
            "effect_ci_low": [-0.0000001, float("nan")],
            "slope": [-0.0, 123456.7],
            "effect_n": [3, 3],
        }
    )
    out = for_csv(frame)
    assert "effect_n" not in out.columns
    assert out["batch_size"].tolist() == [64.0, 16384.0]
    assert out["train.lr"].tolist() == [0.123456789, 0.3]
    assert out["runs"].tolist() == [3.0, 5.0]
    assert out["gen_gap_mean"].tolist() == [0.0322, -1.235e-05]
    assert out["effect_ci_low"].iloc[0] == -1e-07 and math.isnan(out["effect_ci_low"].iloc[1])
    assert out["slope"].tolist() == [0.0, 123500.0]
    assert str(out["slope"].iloc[0]) == "0.0"  # not -0.0


class _Page(HTMLParser):
    """Collects what the test checks: list items' text, tags, and every src / href."""

    def __init__(self):
        super().__init__()
        self.items, self.tags, self.refs, self.imgs, self._li = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        self.refs += [a[k] for k in ("src", "href", "action", "data") if k in a]
        if tag == "img":
            self.imgs.append(a)
        if tag == "li":
            self._li = []

    def handle_endtag(self, tag):
        if tag == "li" and self._li is not None:
            self.items.append("".join(self._li))
            self._li = None

    def handle_data(self, data):
        if self._li is not None:
            self._li.append(data)


def test_report_html_is_self_contained_with_every_claim_and_plot(report):
    page = _Page()
    page.feed(report_html(report))
    for sentence in report.sentences:
        assert sentence.replace("**", "") in page.items, sentence
    assert len(page.items) == len(report.sentences)
    embedded = {i["alt"]: i["src"] for i in page.imgs}
    for plot in report.plots:
        src = embedded[plot.stem]
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == plot.read_bytes()
    assert all(r.startswith("data:") for r in page.refs), page.refs
    assert not {"link", "script", "iframe"} & set(page.tags)
    assert page.tags.count("table") == sum(not f.empty for f in report.tables.values())


def test_report_md_lists_each_sentence_once_and_every_table(report):
    md = report_markdown(report)
    for sentence in report.sentences:
        assert md.count(f"- {sentence}\n") == 1
    # a claim judged in several cells states them in one sentence (its claims share the text):
    # as many sentences as distinct (claim, text) pairs, and one per claim kind at most for the
    # families speedup, regularization, trend
    assert len(report.sentences) == len({(c.claim, c.text) for c in report.claims})
    for kind in ("speedup", "regularization", "trend"):
        assert len({c.text for c in report.claims if c.claim == kind}) <= 1
    for name, frame in report.tables.items():
        assert (f"## {name} ([tables/{name}.csv]" in md) == (not frame.empty)
