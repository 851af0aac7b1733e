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
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_FENCE = re.compile(r"^```bash\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _commands(page: Path) -> list[tuple[str, str]]:
    """(where, command) for each ``gspo ...`` line of the page's bash blocks, continuation lines joined."""
    found = []
    for block in _FENCE.finditer(page.read_text()):
        first_line = page.read_text()[:block.start()].count("\n") + 2
        text = block.group(1).replace("\\\n", " ")
        for offset, line in enumerate(text.splitlines()):
            command = _strip_comment(line).strip()
            if command.startswith("gspo "):
                found.append((f"{page.relative_to(ROOT)}:{first_line + offset}", command))
    return found


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
    """shell words after ``gspo``, without usage placeholders such as ``[key=value ...]`` or ``[--config FILE]``."""
    words, argv, in_placeholder = shlex.split(command)[1:], [], False
    for word in words:
        if word.startswith("["):  # a value list is key=[a,b]: it never starts a word
            in_placeholder = True
        if not in_placeholder:
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
                if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):
                    links.append((f"{page.relative_to(ROOT)}:{lineno}", target))
    return links


@pytest.mark.parametrize("where, target", _links(), ids=[where for where, _ in _links()])
def test_relative_link_resolves(where, target):
    page = ROOT / where.rsplit(":", 1)[0]
    assert (page.parent / target.split("#", 1)[0]).exists(), f"{where}: {target} does not exist"


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
