"""The docs run: every ``gspo`` command in a fenced bash block of README.md and docs/ parses with the CLI's own
parser and its keys resolve (a renamed key or flag breaks the build), and every relative link points at a file."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gspo.cli import _parser
from gspo.config import load_config
from gspo.evaluate import parse_eval_args

ROOT = Path(__file__).resolve().parents[1]
DOC_PAGES = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [ROOT / "README.md", *DOC_PAGES, ROOT / "benchmarks" / "README.md",
         ROOT / "recipe" / "gspo" / "README_dynamic_sampling.md"]
_FENCE = re.compile(r"^```bash\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _commands(page: Path) -> list[tuple[str, str]]:
    """(where, command) for each ``gspo ...`` line of the page's bash blocks, continuation lines joined."""
    found = []
    for block in _FENCE.finditer(page.read_text()):
        first_line = page.read_text()[:block.start()].count("\n") + 2
        text = block.group(1).replace("\\\n", " ")
        for offset, line in enumerate(text.splitlines()):
            for part in re.split(r"&&|;", _strip_comment(line)):
                command = _ENV_PREFIX.sub("", part.strip())  # MASTER_ADDR=node0 NODE_RANK=0 gspo train ...
                if command == "gspo" or command.startswith("gspo "):
                    found.append((f"{page.relative_to(ROOT)}:{first_line + offset}", command))
    return found


_ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+")


def _strip_comment(line: str) -> str:
    """The line up to a shell comment (`` #`` outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _argv(command: str) -> list[str]:
    """shell words after ``gspo``, without usage placeholders such as ``[key=value ...]``, ``[--config FILE]`` or
    ``...``."""
    words, argv, in_placeholder = shlex.split(command)[1:], [], False
    for word in words:
        if word.startswith("["):  # a value list is key=[a,b]: it never starts a word
            in_placeholder = True
        if not in_placeholder and word != "...":
            argv.append(word)
        if in_placeholder and word.endswith("]"):
            in_placeholder = False
    return argv


COMMANDS = [item for page in PAGES for item in _commands(page)]


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 10, [where for where, _ in COMMANDS]


@pytest.mark.parametrize("where, command", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_command_parses_and_its_keys_resolve(where, command, monkeypatch):
    monkeypatch.chdir(ROOT)  # --config paths are written relative to the repository root
    argv = _argv(command)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `{command}` does not parse (exit {exc.code})")
    if args.command in ("train", "validate"):
        load_config(args.config, args.overrides)  # unknown keys and bad values raise ConfigError naming the key
    elif args.command == "eval":
        parse_eval_args(args.overrides)


def _links() -> list[tuple[str, str]]:
    links = []
    for page in PAGES:
        for lineno, line in enumerate(page.read_text().splitlines(), start=1):
            for match in _LINK.finditer(line):
                target = match.group(1) or match.group(2)
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    links.append((f"{page.relative_to(ROOT)}:{lineno}", target))
    return links


def _anchors(page: Path) -> set[str]:
    """The heading anchors of a Markdown page as GitHub makes them (lower case, punctuation dropped, spaces to
    hyphens, a repeated heading gets -1, -2, ...); headings inside fenced code blocks do not count."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, number = slug, 0
        while anchor in anchors:
            number += 1
            anchor = f"{slug}-{number}"
        anchors.add(anchor)
    return anchors


def test_anchors_are_githubs():
    page = ROOT / "benchmarks" / "README.md"
    assert "gspo-vs-trls-grpotrainer-gspo-seconds-per-step" in _anchors(page)  # "gspo vs TRL's GRPOTrainer (GSPO): ..."
    assert "the-hf-engines-seeded-sampler" in _anchors(page)


@pytest.mark.parametrize("where, target", _links(), ids=[where for where, _ in _links()])
def test_relative_link_resolves(where, target):
    page = ROOT / where.rsplit(":", 1)[0]
    path, _, anchor = target.partition("#")
    linked = page.parent / path if path else page
    assert linked.exists(), f"{where}: {target} does not exist"
    if anchor and linked.suffix == ".md":
        assert anchor in _anchors(linked), f"{where}: {target}: {linked.name} has no heading with anchor #{anchor}"


@pytest.mark.parametrize("page", PAGES[1:], ids=[str(page.relative_to(ROOT)) for page in PAGES[1:]])
def test_every_page_says_what_it_is_for(page):
    lines = page.read_text().splitlines()
    assert lines[0].startswith("# ") and not lines[1] and lines[2].strip(), (
        f"{page.relative_to(ROOT)}: open with '# title', a blank line, then one line saying what the page is for")


@pytest.mark.parametrize("page", DOC_PAGES, ids=[page.name for page in DOC_PAGES])
def test_the_readme_links_every_docs_page(page):
    assert f"(docs/{page.name}" in (ROOT / "README.md").read_text(), f"README.md does not link docs/{page.name}"


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300, "README.md: move long material to docs/"


def test_readme_training_step_is_the_code():
    """The README quotes the step as it reads: every statement of its python blocks is in the trainer's code."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## What a training step does"):]
    section = section[:section.index("\n## ")]
    code = (ROOT / "gspo" / "trainer" / "trainer.py").read_text() + (
        ROOT / "gspo" / "trainer" / "dynamic_sampling.py").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    statements = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    statements = [statement for statement in statements if statement]
    assert len(statements) >= 5
    missing = [statement for statement in statements if statement not in code]
    assert not missing, f"README.md's training step quotes code that is not in gspo/trainer: {missing}"


_MAKING_OF = re.compile(r"(?<!new_)\bsessions?\b|\bagents?\b|\bissue \d|\blent\b"  # not start_new_session=True
                        r"|target\s*<=|meets_target|(?-i:\bTARGET_[A-Z])", flags=re.IGNORECASE)


def test_docs_and_code_speak_of_the_product():
    """No word about how the project is worked on, and no internal targets, in docs, benchmarks or the package."""
    files = [*PAGES, *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "gspo").rglob("*.py"),
             *(ROOT / "recipe").rglob("*.md"), *(ROOT / "recipe").rglob("*.py")]
    hits = [f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}" for path in files
            for lineno, line in enumerate(path.read_text().splitlines(), start=1) if _MAKING_OF.search(line)]
    assert not hits, "\n".join(hits)


def _code_map() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Layout\n\n```\n")
    return text[start:text.index("```\n", start + 20)]


def test_readme_code_map_names_every_module_and_only_modules_that_exist():
    code_map = _code_map()
    package = ROOT / "gspo"
    entries = [p for p in package.iterdir() if p.name not in ("__init__.py", "__pycache__")]
    entries += [p for p in (package / "trainer").glob("*.py") if p.name != "__init__.py"]
    missing = [str(p.relative_to(ROOT)) for p in entries if p.name not in code_map]
    assert not missing, f"README.md's code map does not name {missing}"
    for path in re.findall(r"\b(gspo/[\w/]+(?:\.py)?)", code_map):
        assert (ROOT / path).exists(), f"README.md's code map names {path}, which does not exist"
