"""``tenure report``: the HTML page checked in a real headless Chromium (Debian ``chromium``).

The page of the demo's runs is rendered by the browser; the tests take a screenshot and
assert on the DOM the browser built (verdict, the denial, the approval and its approver, the
revocation with who and why). An injection test puts HTML in a principal and a revocation
reason and checks the browser made no element of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from tenure import Context, LeaseRevoked, Runtime, agent
from tenure.cli import app
from tenure.evidence._ledger_io import LedgerConfig
from tenure.lineage._report import MAX_TIMELINE_ROWS, render_report
from tenure.policies import PolicySet
from tests.support.demo_runs import DemoRuns
from tests.support.run_builder import RunBuilder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (`make test` installs it: apt-get install chromium)",
)


def _browser(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1800",
            f"--user-data-dir={page.parent / '.chromium'}",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


class _Dom(HTMLParser):
    """The DOM Chromium serialised: every element with its attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        text: list[str] = []
        self.elements.append((tag, {k: v or "" for k, v in attrs}, text))
        if tag not in ("meta", "br", "img", "input", "link"):
            self._open.append(text)

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag not in ("meta", "br", "img", "input", "link"):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for text in self._open:
            text.append(data)

    def find(self, tag: str | None = None, **attrs: str) -> list[tuple[dict[str, str], str]]:
        return [
            (a, " ".join("".join(t).split()))
            for (name, a, t) in self.elements
            if (tag is None or name == tag) and all(a.get(k) == v for k, v in attrs.items())
        ]

    def by_class(self, cls: str) -> list[str]:
        return [
            " ".join("".join(t).split())
            for (_, a, t) in self.elements
            if cls in a.get("class", "").split()
        ]


def _rendered(page: Path) -> _Dom:
    dom = _Dom()
    dom.feed(_browser(page, "--dump-dom").stdout)
    return dom


def _report(run: Path, key: Path, out: Path) -> Path:
    result = CliRunner().invoke(app, ["report", str(run), "--key", str(key), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


@needs_chromium
def test_report_of_the_demo_runs_renders_in_chromium_with_verdict_denial_approval_revocation(
    demo_runs: DemoRuns, tmp_path: Path
) -> None:
    research = _report(demo_runs.research, demo_runs.public_key, tmp_path / "research.html")
    revoked = _report(demo_runs.revoked, demo_runs.public_key, tmp_path / "revoked.html")
    shot = tmp_path / "research.png"
    _browser(research, f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

    dom = _rendered(research)
    ((header, text),) = dom.find("header", id="verdict")
    assert header["data-verdict"] == "verified" and text.startswith("VERIFIED — run run_")
    assert dom.find("code", id="key-id")[0][1] == header_key(demo_runs)
    assert dom.find("dd", id="principal")[0][1] == "alice"
    denials = [t for a, t in dom.find("tr", **{"data-effect": "deny"})]
    assert len(denials) == 1 and "shell_exec" in denials[0] and "no-shell-or-delete" in denials[0]
    approvals = dom.find("tr", **{"data-decision": "granted"})
    assert len(approvals) == 1 and "pay_invoice" in approvals[0][1]
    assert dom.by_class("approver") == ["finance-lead"]
    granted = next(
        json.loads(line)
        for line in (demo_runs.research / "ledger.jsonl").read_text().splitlines()
        if '"kind":"approval.granted"' in line
    )
    assert granted["approver_key"]  # the approver's key id, shown as recorded
    assert dom.by_class("approver-key") == [granted["approver_key"]]
    assert dom.find("div", **{"data-kind": "tool", "data-status": "denied"})

    dom = _rendered(revoked)
    assert dom.find("header", id="verdict")[0][0]["data-verdict"] == "verified"
    assert dom.by_class("by") == ["revoke"]
    assert dom.by_class("reason") == ["operator: research budget for today is spent"]
    assert "LeaseRevoked" in dom.find("p", id="stop-reason")[0][1]
    assert not dom.find("script")


def header_key(demo_runs: DemoRuns) -> str:
    from tenure.crypto import key_id_of, load_public_key

    return key_id_of(load_public_key(demo_runs.public_key))


HOSTILE_PRINCIPAL = '<img src=x onerror="document.title=1"><script>document.title="pwned"</script>'
HOSTILE_REASON = '</td></tr></table><h1 id="injected">owned</h1><style>*{display:none}</style>'


@needs_chromium
async def test_html_in_a_principal_and_a_reason_is_shown_as_text_never_markup(
    allow_all: PolicySet, evidence: Path, tmp_path: Path, key: object
) -> None:
    started = anyio.Event()

    @agent(scopes={"work"})
    async def waiter(ctx: Context) -> None:
        started.set()
        await anyio.sleep(30)

    async with Runtime(policies=allow_all, evidence_dir=evidence) as rt:
        handle = await rt.start(waiter, principal=HOSTILE_PRINCIPAL, scopes={"work"}, ttl=30)
        await started.wait()
        rt.revoke(handle.run_id, reason=HOSTILE_REASON)
        with pytest.raises(LeaseRevoked):
            await handle.result()
    page = tmp_path / "hostile.html"
    page.write_text(render_report(handle.evidence_path), encoding="utf-8")
    dom = _rendered(page)
    assert not dom.find("script") and not dom.find("img") and not dom.find(id="injected")
    assert len(dom.find("style")) == 1  # the page's own stylesheet only
    assert dom.find("dd", id="principal")[0][1] == " ".join(HOSTILE_PRINCIPAL.split())
    assert dom.by_class("reason") == [" ".join(HOSTILE_REASON.split())]
    assert dom.find("title")[0][1].startswith("Tenure run run_")


def test_large_runs_collapse_repeated_calls_and_stay_small(tmp_path: Path) -> None:
    """20,000 identical tool calls: one timeline row ``search ×20,000``, a small file."""
    b = RunBuilder(tmp_path, config=LedgerConfig(checkpoint_every=5000, checkpoint_interval=0))
    b.issue("L0")
    for _ in range(20_000):
        b.step()
    b.end()
    html = render_report(b.run_dir)
    assert html.count('class="tl-row"') == 1 and "×20,000" in html
    assert len(html) < 50_000


def test_timeline_rows_are_bounded_and_the_rest_counted(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path, config=LedgerConfig(checkpoint_every=5000, checkpoint_interval=0))
    b.issue("L0")
    for n in range(MAX_TIMELINE_ROWS + 500):  # alternating targets: nothing collapses
        target = "a" if n % 2 else "b"
        d = b.decision(f"s{n}", "L0", target=target)
        b.step_start(f"s{n}", "L0", d, target=target)
        b.step_end(f"s{n}")
    b.end()
    html = render_report(b.run_dir)
    assert html.count('class="tl-row"') == MAX_TIMELINE_ROWS
    assert "500 more timeline rows not shown." in html


def test_report_of_a_missing_or_unreadable_run_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no such run directory" in result.stderr
    run = tmp_path / "run_x"
    run.mkdir()
    (run / "ledger.jsonl").write_bytes(b"{not json}\n{}\n")
    result = CliRunner().invoke(app, ["report", str(run), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert f"{run / 'ledger.jsonl'}:1" in result.stderr


async def test_usage_is_shown_per_model_against_the_budgets(evidence: Path) -> None:
    """Model calls recorded with their model, provider and token split: one row per model,
    most expensive first, beside the run's totals (HTML in a model name stays text)."""
    policy = PolicySet.from_text(
        'version = 1\ndefault = "deny"\n[[rules]]\nid = "all"\neffect = "allow"\n'
        "[budgets]\nmax_tokens = 10000\nmax_cost = 5.0\n"
    )

    @agent
    async def writer(ctx: Context) -> None:
        ctx.record_usage(
            model="gpt-4.1", provider="openai", input_tokens=100, output_tokens=20, cost=0.5
        )
        ctx.record_usage(
            model="gpt-4.1", provider="openai", input_tokens=50, output_tokens=5, cost=0.25
        )
        ctx.record_usage(model="<b>local</b>", provider="ollama", input_tokens=7, output_tokens=3)

    async with Runtime(policies=policy, evidence_dir=evidence) as rt:
        handle = await rt.start(writer, principal="alice")
        await handle.result()
    html = render_report(handle.evidence_path)
    rows = html.split('<table id="usage-by-model">', 1)[1].split("</table>", 1)[0]
    cells = [
        [c.split(">", 1)[1] for c in row.split("</td>")[:-1]]
        for row in rows.split('<tr class="model-row">')[1:]
    ]
    assert cells == [
        ["gpt-4.1", "openai", "2", "150", "25", "175", "0.750000"],
        ["&lt;b&gt;local&lt;/b&gt;", "ollama", "1", "7", "3", "10", "0.000000"],
    ]
    assert "<b>local</b>" not in html
