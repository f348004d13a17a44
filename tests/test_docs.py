"""Every Python snippet of the documentation runs: docs/**/*.md and README.md.

Each ```python fenced block is executed, in page order, in one namespace per page (so a
block can use what an earlier block of the same page defined), with the working folder
a fresh temporary folder per page and ``JAXSEQ_DATA_DIR`` pointing at the real MNIST
files (the ``mnist_dir`` fixture). The comment line just before a block can change that:

* ``<!-- skip-test: reason -->``: not run (for commands that need real, long training);
* ``<!-- test: subprocess -->``: run alone in a fresh Python process (for code that must
  come before JAX starts, such as ``jaxseq.app.runtime.set_cpu_devices``).

Pages the docs tests may not edit (README.md) get their sizes shrunk by the explicit
substitutions in ``SUBSTITUTIONS``; each must still match, so a changed snippet is
noticed. Bash blocks are not run, but the flags they pass to ``experiments/*.py`` must
exist in that script's ``--help``, and the extras they install must exist in
pyproject.toml.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

PAGES = sorted((REPO_ROOT / "docs").rglob("*.md")) + [REPO_ROOT / "README.md"]

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!--\s*(skip-test|test):?\s*(?P<arg>.*?)\s*-->\s*$")

#: Per page: (text in the page, replacement) applied before its blocks are extracted, to
#: give snippets of pages this test does not own tiny sizes. Every one must match.
SUBSTITUTIONS: dict[str, list[tuple[str, str]]] = {
    "README.md": [
        ("mnist.load_splits(seed=0)", "mnist.load_splits(seed=0, train_subset=256)"),
        ('cell="gru", features=128', 'cell="gru", features=16'),
        ("epochs=10, batch_size=64", "epochs=1, batch_size=64, progress=False"),
    ],
}


@dataclasses.dataclass(frozen=True)
class Block:
    page: Path
    index: int  # among the page's python blocks
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None  # "skip-test" or "subprocess"
    reason: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


def page_text(page: Path) -> str:
    text = page.read_text()
    for old, new in SUBSTITUTIONS.get(page.name if page.parent == REPO_ROOT else "", []):
        assert old in text, f"{page.name}: the snippet substitution {old!r} no longer matches"
        text = text.replace(old, new)
    return text


def blocks(page: Path) -> list[Block]:
    text = page_text(page)
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        kind, reason = None, ""
        if marker:
            kind = "skip-test" if marker.group(1) == "skip-test" else marker.group("arg")
            reason = marker.group("arg")
            assert kind in ("skip-test", "subprocess"), f"{page}:{line}: unknown marker {before!r}"
        lang = match.group("lang").lower()
        body = match.group("body")
        indent = match.group("indent")
        if indent:
            body = "\n".join(line[len(indent):] for line in body.split("\n"))
        found.append(Block(page, 0, line, lang, body, kind, reason))
    python = [b for b in found if b.lang in ("python", "py", "python3")]
    return [dataclasses.replace(b, index=i) for i, b in enumerate(python)] + [
        b for b in found if b.lang not in ("python", "py", "python3")]


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("python", "py", "python3")]
BASH_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("bash", "sh", "shell", "console")]


def test_snippets_found():
    """The extraction sees the pages' snippets (guards against a broken fence regex)."""
    pages = {b.page.name for b in PYTHON_BLOCKS}
    assert {"index.md", "guide.md", "README.md"} <= pages
    for page in PAGES:  # every fence was parsed: opening and closing fences pair up
        text = page.read_text()
        fences = re.findall(r"^[ \t]*```", text, re.MULTILINE)
        parsed = sum(1 for b in ALL_BLOCKS if b.page == page)
        assert len(fences) == 2 * parsed, f"{page}: {len(fences)} fences, {parsed} blocks parsed"


@dataclasses.dataclass
class PageRun:
    """The namespace and working folder shared by the blocks of one page."""

    folder: Path
    namespace: dict
    done: int = 0  # blocks run so far
    failed: str | None = None


_RUNS: dict[Path, PageRun] = {}


@pytest.fixture
def docs_env(monkeypatch, request):
    """MNIST from the shared folder; plots without a display; quiet progress bars."""
    monkeypatch.setenv("JAXSEQ_DATA_DIR", str(request.getfixturevalue("mnist_dir")))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def run_block(block: Block, run: PageRun, monkeypatch) -> None:
    monkeypatch.chdir(run.folder)
    code = compile(block.code, f"{block.id} (python block {block.index})", "exec")
    exec(code, run.namespace)  # noqa: S102 - running the documentation is the test


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.id)
def test_python_snippet(block: Block, docs_env, monkeypatch, tmp_path_factory):
    if block.marker == "skip-test":
        pytest.skip(f"marked skip-test: {block.reason}")
    if block.marker == "subprocess":
        folder = tmp_path_factory.mktemp("subprocess")
        result = subprocess.run([sys.executable, "-c", block.code], cwd=folder,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (
            f"{block.id} failed in a fresh process:\n{result.stdout}\n{result.stderr}")
        return
    if block.page not in _RUNS:
        # A real module, so that classes defined in a snippet (dataclasses, Flax modules)
        # find their module in sys.modules.
        module = types.ModuleType(f"docs_snippets_{block.page.stem}")
        sys.modules[module.__name__] = module
        _RUNS[block.page] = PageRun(tmp_path_factory.mktemp(block.page.stem), module.__dict__)
    run = _RUNS[block.page]
    page_blocks = [b for b in PYTHON_BLOCKS if b.page == block.page]
    while run.done < block.index:  # earlier blocks not run yet (a test selected with -k)
        previous = page_blocks[run.done]
        run.done += 1
        if previous.marker is None and run.failed is None:
            try:
                run_block(previous, run, monkeypatch)
            except BaseException:
                run.failed = previous.id
                raise
    if run.failed is not None:
        pytest.fail(f"an earlier block of this page failed ({run.failed})")
    run.done = block.index + 1
    try:
        run_block(block, run, monkeypatch)
    except BaseException:
        run.failed = block.id
        raise


def _script_flags(script: Path) -> set[str]:
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                               text=True, timeout=120, cwd=REPO_ROOT, check=True).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))


def test_bash_snippets_use_existing_flags_and_extras():
    """Flags given to experiments/*.py in bash blocks exist; `.[extra]` installs exist."""
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    table = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([\w-]+)\s*=", table, re.MULTILINE))
    flags_cache: dict[str, set[str]] = {}
    problems = []
    for block in BASH_BLOCKS:
        for line in block.code.splitlines():
            command = line.split("#", 1)[0]
            for extra in re.findall(r'\.\[([\w,-]+)\]', command):
                problems += [f"{block.id}: unknown extra {name!r}"
                             for name in extra.split(",") if name not in extras]
            script = re.search(r"python\s+(experiments/\w+\.py)", command)
            if not script:
                continue
            if script.group(1) not in flags_cache:
                flags_cache[script.group(1)] = _script_flags(REPO_ROOT / script.group(1))
            for flag in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", command):
                if flag not in flags_cache[script.group(1)]:
                    problems.append(f"{block.id}: {script.group(1)} has no flag {flag}")
    assert not problems, "\n".join(problems)
    assert flags_cache, "no bash block runs an experiment script"


def _parser_flags(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"}


def test_the_command_line_page_names_every_flag_and_the_resume_rule_of_the_code():
    """docs/cli.md's flag lists and its --resume rule follow the parsers (they lagged once)."""
    from jaxseq.app import adder as adder_flags
    from jaxseq.app import mnist as mnist_flags

    page = (REPO_ROOT / "docs" / "cli.md").read_text()
    named = set(re.findall(r"`(--[a-z][a-z0-9-]*)", page))
    for module in (mnist_flags, adder_flags):
        missing = _parser_flags(module.build_parser()) - named
        assert not missing, f"{module.__name__}: flags docs/cli.md does not name: {missing}"
    rule = re.search(r"`--resume RUN_DIR` continues.*?every other flag is an error", page,
                     re.DOTALL)
    assert rule, "docs/cli.md's --resume rule is gone"
    allowed = set(re.findall(r"`(--[a-z][a-z0-9-]*)`", rule.group(0))) - {"--resume"}
    expected = {"--" + dest.replace("_", "-")
                for dest in mnist_flags.RESUME_FLAGS | adder_flags.RESUME_FLAGS}
    assert allowed == expected


# --- The documentation site works offline: nothing is loaded from another host ----------

#: Elements whose URL the browser loads by itself (not links the reader may follow).
_LOADED = re.compile(r"<(?:script|link|img|iframe|source|audio|video)\b[^>]*?"
                     r"\b(?:src|href)\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)", re.IGNORECASE)
_CSS_URL = re.compile(r"(?:@import\s+|url\()\s*[\"']?((?:https?:)?//[^\"')\s]+)", re.IGNORECASE)


def test_mkdocs_config_needs_no_network():
    """Material with system fonts, Pygments highlighting at build time, no CDN assets."""
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    theme = config["theme"]
    assert theme["name"] == "material"
    assert theme["font"] is False  # else Google Fonts are fetched by every page
    assert "highlightjs" not in theme  # the mkdocs theme's CDN highlight.js
    extensions = {}
    for entry in config["markdown_extensions"]:
        extensions.update(entry if isinstance(entry, dict) else {entry: {}})
    assert extensions["pymdownx.highlight"].get("use_pygments", True) is True
    assert "pymdownx.superfences" in extensions
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in config["plugins"]]
    assert "search" in plugins
    for key in ("extra_javascript", "extra_css"):
        for url in config.get(key, []):
            url = url if isinstance(url, str) else url["path"]
            assert not re.match(r"(https?:)?//", url), f"{key} loads {url} from the network"


def test_built_site_loads_nothing_from_other_hosts(tmp_path):
    """Build the site (strict) and look for scripts, styles, fonts or images from a URL."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 5
    external = []
    for path in pages:
        text = path.read_text(encoding="utf-8")
        external += [f"{path.relative_to(site)}: {url}" for url in _LOADED.findall(text)]
        external += [f"{path.relative_to(site)}: {url}" for url in _CSS_URL.findall(text)]
    for path in site.rglob("*.css"):
        external += [f"{path.relative_to(site)}: {url}"
                     for url in _CSS_URL.findall(path.read_text(encoding="utf-8"))]
    assert not external, "\n".join(external)
    guide = (site / "guide.html").read_text(encoding="utf-8")
    assert '<span class="kn">import</span>' in guide  # highlighted by Pygments at build time
    assert (site / "search" / "search_index.json").is_file()


def test_the_readme_is_read_in_two_minutes():
    """The README keeps what a newcomer needs first; the reference lives on the docs site."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 100
    for needed in ('pip install -e ".[dev,torch]"', "python -m pytest -n auto",
                   "python experiments/mnist.py --cell gru", "JAXSEQ_DATA_DIR",
                   "from jaxseq.train import", "docs/cli.md", "docs/guide.md"):
        assert needed in readme, needed
