"""The HTML page writer: escaped text, embedded or linked images, flags summarised at the top."""

from __future__ import annotations

import base64

from PIL import Image

from coordexp.report.page import Level, Page


def test_page_escapes_embeds_and_summarises_flags(tmp_path):
    page = Page("Report <1>", subtitle="a & b")
    sec = page.section("Curves", intro="x < y")
    sec.table(["key", "value"], [["loss/<ce>", 0.123456789], ["\u5c3c\u65af", None]])
    sec.image(Image.new("RGB", (4, 4), (255, 0, 0)), caption="red")
    sec.flag(Level.BAD, "p90 at the cap")
    page.section("Other").flag(Level.WARN, "truncation high")
    html = page.write(tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Report &lt;1&gt;" in html and "a &amp; b" in html and "x &lt; y" in html and "loss/&lt;ce&gt;" in html
    assert "0.1235" in html and "\u5c3c\u65af" in html
    data = html.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(data)[:4] == b"\x89PNG"
    summary = html.split("<h2>Flags</h2>")[1].split("</section>")[0]
    assert "[Curves] p90 at the cap" in summary and "[Other] truncation high" in summary
    assert html.index("<h2>Flags</h2>") < html.index("<h2>Curves</h2>")


def test_linked_image_is_relative_to_the_page(tmp_path):
    png = tmp_path / "plots" / "a.png"
    png.parent.mkdir()
    Image.new("RGB", (2, 2)).save(png)
    page = Page("t")
    page.section("s").image(png, caption="a", embed=False, relative_to=tmp_path)
    assert 'src="plots/a.png"' in page.render()
