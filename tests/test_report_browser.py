"""The report in a real browser: headless Chromium renders it with no errors, and the screenshot is not blank.

Errors are caught by the page itself (``window.onerror``, CSP violations, ``console.error`` → ``#gl-errors``),
which also writes a sentinel into ``#gl-status`` after laying out its figures; ``--dump-dom`` reads both.
A negative control proves the detector: a page with a deliberate error must come back as ``error``.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from gammalens.report import write_report
from tests.run_fixtures import write_run

pytestmark = pytest.mark.usefixtures("isolated_atlas")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; "
                                    ".ci/run installs it)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def page_status(tmp_path: Path, page: Path) -> tuple[str, int, str]:
    """(status, figures, recorded errors) of a page after load, read from its DOM."""
    dom = chromium(tmp_path, "--virtual-time-budget=3000", "--dump-dom", page.as_uri()).stdout
    status = re.search(r'id="gl-status"[^>]*data-status="(\w+)"', dom) or re.search(
        r'data-status="(\w+)"[^>]*id="gl-status"', dom)
    figures = re.search(r'data-figures="(\d+)"', dom)
    errors = re.search(r'<pre id="gl-errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert status and figures and errors, f"the page did not run its script; DOM starts: {dom[:300]!r}"
    return status.group(1), int(figures.group(1)), errors.group(1)


def decode_png(data: bytes) -> np.ndarray:
    """8-bit RGB/RGBA PNG → (height, width, channels) array, with the stdlib zlib and numpy only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    ch = 3 if color == 2 else 4
    stride = width * ch
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 2:                                   # Up
            cur = (line + prev) & 255
        elif kind == 1:                                   # Sub: a running sum per channel
            cur = np.cumsum(line.reshape(width, ch), axis=0).reshape(-1) & 255
        else:                                             # Average, Paeth: sequential along the row
            cur_l, up = line.tolist(), [0] * ch + prev.tolist()
            for x in range(stride):
                a = cur_l[x - ch] if x >= ch else 0
                b = up[x + ch]
                if kind == 3:
                    p = (a + b) >> 1
                else:
                    c = up[x]
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    p = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                cur_l[x] = (cur_l[x] + p) & 255
            cur = np.array(cur_l, dtype=np.int64)
        out[y] = cur
        prev = cur
    return out.reshape(height, width, ch)


@needs_chromium
def test_report_renders_in_chromium_without_errors(tmp_path: Path) -> None:
    runs = [write_run(tmp_path / "runs", n_layers=3, n_heads=6, context=128),
            write_run(tmp_path / "runs", model_id="EleutherAI/pythia-70m", corpus="random", rope_theta=None)]
    page = write_report(runs, tmp_path / "report.html")
    status, figures, errors = page_status(tmp_path, page)
    assert (status, errors.strip()) == ("ok", "")
    assert figures == page.read_text().count('class="plot"') + page.read_text().count('class="heatmap"') > 10

    shot = tmp_path / "shot.png"
    result = chromium(tmp_path, "--window-size=1200,1800", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    img = decode_png(shot.read_bytes())[..., :3].astype(np.float64)          # (H, W, 3)
    assert img.shape[:2] == (1800, 1200)
    gray = img.mean(axis=2)
    background = np.array([0xFA, 0xFA, 0xF8])
    drawn = np.abs(img - background).sum(axis=2) > 30
    coloured = (img.max(axis=2) - img.min(axis=2)) > 60
    assert gray.std() > 20, "the screenshot is (nearly) uniform"
    assert drawn.mean() > 0.02, f"only {drawn.mean():.1%} of the screenshot differs from the page background"
    assert coloured.mean() > 0.005, "no coloured pixels: the figures did not render"


@needs_chromium
def test_the_error_detector_catches_errors(tmp_path: Path) -> None:
    page = write_report([write_run(tmp_path / "runs")], tmp_path / "report.html")
    broken = tmp_path / "broken.html"
    html = page.read_text().replace("</main>", "</main><script>undefinedFunction();</script>"
                                              '<img src="https://example.invalid/x.png">', 1)
    broken.write_text(html)
    status, _, errors = page_status(tmp_path, broken)
    assert status == "error"
    assert "undefinedFunction" in errors and "blocked load" in errors
