"""Self-contained HTML reports: content, embedded data, no external resources, SVG charts; rendered in headless
Chromium when it is installed."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import numpy as np
import pytest

from moge2_ros.errors import InputError
from moge2_ros.eval.report import read_report_data, write_html_report
from moge2_ros.eval.report_svg import BarChart, LineChart, Series, nice_ticks, render_chart


def _report(path):
    rng = np.random.default_rng(0)
    per_frame = [{"stamp_ns": 10 + i, "time_s": 0.1 * i, "depth_metric/rel": 0.1 + 0.01 * i,
                  "depth_flicker": float("nan") if i == 0 else 0.02} for i in range(5)]
    summary = {"frames": {"frames_evaluated": 5}, "metric depth": {"depth_metric/rel": 0.12}, "note": "a</script>b"}
    images = [("frame 0", [("image", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)),
                           ("depth", np.zeros((24, 32, 3), np.uint8))])]
    t = [r["time_s"] for r in per_frame]
    charts = [LineChart("error over time", "time (s)", "AbsRel",
                        [Series("rel", t, [r["depth_metric/rel"] for r in per_frame]),
                         Series("flicker", t, [r["depth_flicker"] for r in per_frame], dashed=True)]),
              BarChart("error vs range", "depth (m)", "AbsRel", [0, 1, 2, 3], [0.1, float("nan"), 0.3],
                       ["5", "0", "7"])]
    return write_html_report(path, "Test <report>", summary, per_frame, images, charts=charts,
                             notes=["what is measured"], subtitle="sub"), per_frame, summary


def test_report_content_and_embedded_data(tmp_path):
    path, per_frame, summary = _report(tmp_path / "r" / "report.html")
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "Test &lt;report&gt;" in html
    data = read_report_data(path)
    assert data["summary"] == summary
    assert data["per_frame"][0]["depth_flicker"] is None  # NaN -> null
    assert data["per_frame"][3] == per_frame[3]
    assert html.count("<svg") == 2 and html.count("<polyline") >= 2 and html.count("<rect") == 2
    assert html.count("data:image/png;base64,") == 2
    # self-contained: no scripts, styles or images from elsewhere
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "<link" not in html and html.count("<script") == 1
    assert "a</script>b" not in html.split('id="report-data">')[1].split("</script>")[0]
    assert not list(tmp_path.glob("r/.*tmp"))  # atomic write leaves no temporary file


def test_bad_image_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="uint8"):
        write_html_report(tmp_path / "x.html", "t", {}, [], {"bad": np.zeros((4, 4, 3), np.float32)})
    assert not (tmp_path / "x.html").exists()


def test_nice_ticks_cover_the_range():
    for lo, hi in [(0.0, 1.0), (0.013, 0.021), (-3.0, 250.0), (5.0, 5.0)]:
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 12
        steps = np.diff(ticks)
        assert np.allclose(steps, steps[0])
    assert nice_ticks(float("nan"), 1.0) == []
    empty = render_chart(LineChart("empty", "x", "y", [Series("s", [0, 1], [math.nan, None])]))
    assert "no data" in empty


def test_report_renders_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    path, _, _ = _report(tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--screenshot={shot}",
                    "--window-size=1000,1400", path.as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert rgb.shape[:2] == (1400, 1000)
    # the first series colour (#0072B2) of the line chart and the bar colour were painted
    blue = (np.abs(rgb - [0x00, 0x72, 0xB2]).sum(axis=-1) < 30).sum()
    assert blue > 200
    assert rgb.std() > 20  # not a blank page
