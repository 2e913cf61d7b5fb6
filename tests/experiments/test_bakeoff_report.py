"""The bake-off's report page, built from a tiny fake out-dir without training anything:
self-contained HTML (every image an embedded PNG, byte-identical to its file), one table row
per table.json row with the real-vs-real floor first, the shapes table when it exists, and
the announced duration and progress lines."""
import base64
import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest

from experiments import bakeoff
from gen_jax.viz import save_curves, save_grid


class _Page(HTMLParser):
    """Collects ``<tr data-model>`` rows (their cells' text and images) and section titles."""

    def __init__(self):
        super().__init__()
        self.rows, self.titles, self.images, self._row, self._in = [], [], [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-model" in a:
            self._row = {"model": a["data-model"], "class": a.get("class"), "text": [], "images": []}
            self.rows.append(self._row)
        elif tag == "img":
            self.images.append(a)
            if self._row is not None:
                self._row["images"].append(a)
        elif tag == "h2":
            self._in = "h2"

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        if tag == "h2":
            self._in = None

    def handle_data(self, data):
        if self._in == "h2":
            self.titles.append(data)
        elif self._row is not None and data.strip():
            self._row["text"].append(data.strip())


def _row(model, fid, bpd=None):
    return {"model": model, "family": None if model == "real-vs-real" else "latent", "test_bpd": bpd,
            "bpd_kind": None if bpd is None else "exact", "fid": fid, "kid": 0.001, "precision": 0.8,
            "recall": 0.9, "inception_score": 9.0, "train_seconds": None if bpd is None else 12.5,
            "sample_seconds": None, "samples": None, "labels": None}


def _fake_out(base, rows, with_curves=True):
    rng = np.random.default_rng(0)
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, "table.json"), "w") as f:
        json.dump(rows, f)
    for r in rows:
        save_grid(os.path.join(base, "samples", f"{r['model']}.png"), rng.uniform(size=(6, 8, 8, 1)), ncols=3)
        if with_curves and r["model"] != "real-vs-real":
            save_curves(os.path.join(base, "curves", f"{r['model']}.png"),
                        [{"step": s, "loss": 1.0 / (s + 1)} for s in range(5)], ["loss"])


def _parse(path):
    page = _Page()
    with open(path) as f:
        page.feed(f.read())
    return page


def _embedded(img):
    prefix = "data:image/png;base64,"
    assert img["src"].startswith(prefix), img["src"][:40]
    return base64.b64decode(img["src"][len(prefix):])


def test_report_has_every_row_and_every_image_embedded(tmp_path):
    out = str(tmp_path)
    _fake_out(out, [_row("gmm", 9.0, 2.697), _row("vae", 18.0, 1.855), _row("real-vs-real", 1.8)])
    _fake_out(os.path.join(out, "shapes"), [_row("vae_shapes", 30.0, 4.1), _row("real-vs-real", 3.0)])
    page = _parse(bakeoff.write_report(out))
    assert [r["model"] for r in page.rows] == ["real-vs-real", "gmm", "vae", "real-vs-real", "vae_shapes"]
    assert page.titles[1] == "Shapes (32x32 RGB)" and len(page.titles) == 2
    assert page.rows[0]["class"] == "floor" and page.rows[3]["class"] == "floor"
    for r, base in zip(page.rows, [out] * 3 + [os.path.join(out, "shapes")] * 2):
        files = [os.path.join(base, "samples", f"{r['model']}.png")]
        if r["model"] != "real-vs-real":
            files.append(os.path.join(base, "curves", f"{r['model']}.png"))
        assert [_embedded(i) for i in r["images"]] == [open(p, "rb").read() for p in files], r["model"]
    assert len(page.images) == (1 + 2 + 2) + (1 + 2)  # the rows' PNGs and nothing else
    gmm, vae = page.rows[1]["text"], page.rows[2]["text"]
    assert gmm[:3] == ["gmm", "2.697", "exact"] and "5.00x" in gmm and "10.00x" in vae  # FID / floor


def test_report_without_shapes_or_curves_says_what_is_missing(tmp_path):
    out = str(tmp_path)
    _fake_out(out, [_row("gmm", 9.0, 2.697), _row("vae", 18.0, 1.855)], with_curves=False)
    page = _parse(bakeoff.write_report(out))
    assert [r["model"] for r in page.rows] == ["gmm", "vae"] and len(page.titles) == 1
    for r in page.rows:
        assert len(r["images"]) == 1 and r["text"][-1] == "no loss curve"


def test_report_without_a_table_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"write_report: {tmp_path}/table.json does not exist"):
        bakeoff.write_report(str(tmp_path))


def test_start_announces_the_sum_of_row_estimates_and_unknown_rows_are_refused(capsys):
    todo = [("a", {}, 100.0), ("b", {}, 50.0)]
    assert bakeoff.plan_line(todo) == (
        "bake-off: 2 rows + the real-vs-real floor; about 3 min 00 s on an idle 2-core CPU for fresh runs "
        f"(including ~{bakeoff.FEATURE_NET_SECONDS} s for the digits feature network on first use); "
        "finished runs are reused")
    assert all(isinstance(est, (int, float)) and est > 0 for _, _, est in bakeoff.BAKEOFF)
    assert bakeoff.main(["--only", "vae_digits,nope_digits", "--out", "/nonexistent/x"]) == 2
    assert capsys.readouterr().err.startswith("error: --only: nope_digits not in the bake-off; its configs: gmm_digits, ")
