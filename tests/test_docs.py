"""The docs say what the code does.

- Every `--flag` that README.md, docs/*.md or a comment of benchmarks/*.yaml names is accepted by
  the parser of the command it is used with: `ctxenc SUBCOMMAND` (ctxenc.cli.build_parser), or a
  benchmarks/*.py script (its add_argument calls); other programs' flags (torchrun, pytest) are
  skipped. A flag in prose belongs to the subcommand written just before it (`bench --download`),
  in a suite's comments to `ctxenc bench`, elsewhere to any ctxenc subcommand or script.
- README.md fits in 250 lines, its links resolve, and it links every page of docs/.
- The bad-input table of docs/reliability.md has one row per case of tests/test_bad_input.py, and
  each row's message holds the phrase that test asserts.

`python -m tests.test_docs` prints the bad-input table from the messages the cases really print,
to paste into docs/reliability.md.
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from ctxenc.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
# Programs whose flags are their own: skipped, except a benchmarks/*.py script they run.
FOREIGN = {"torchrun", "python", "python3", "pytest", "make", "pip", "bash", "sh", "git", "apt-get", "sudo", "nohup",
           "srun", "sbatch", "squeue", "scancel", "timeout", "pdflatex", "touch", "rm", "ls", "cp", "mv", "du", "nvidia-smi"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
SCRIPT = re.compile(r"(?:^|/)(benchmarks/[\w-]+\.py)$")
ENDS = {"#", "|", ";", "&&", "||", "&", ">", "2>&1"}  # tokens that end a shell command
BAD_INPUT_MARK = "<!-- bad-input table"


def doc_paths() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def suite_paths() -> list[Path]:
    return sorted((ROOT / "benchmarks").glob("*.yaml"))


# ---------------------------------------------------------------------------------------------
# Which flags each command accepts


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


@functools.cache
def ctxenc_flags() -> tuple[set[str], dict[str, set[str]]]:
    """(top-level flags, {subcommand: its flags}) of `ctxenc`, read from its real parser."""
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return option_strings(parser), {name: option_strings(p) for name, p in subs.choices.items()}


def script_flags(path: Path) -> set[str]:
    """The flags a benchmarks/*.py script accepts, read from its `add_argument` calls."""
    flags = {"-h", "--help"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return flags


# ---------------------------------------------------------------------------------------------
# Where the docs name flags


@dataclass(frozen=True)
class Use:
    """One `--flag` as a file uses it. owner: ("ctxenc", SUB) with SUB None before the subcommand
    and "*" for the placeholder COMMAND; ("script", "benchmarks/x.py"); ("foreign", program); None in prose."""

    where: str  # file:line
    flag: str
    owner: tuple[str, str | None] | None


def segments(path: Path) -> list[tuple[int, str]]:
    """(line number, text) pieces of a file in which one command line can stand: lines of code
    blocks and indented code (joined across trailing backslashes), and in prose each inline code
    span and each run of text between spans; in a suite file, its comments."""
    lines = path.read_text().splitlines()
    if path.suffix == ".yaml":
        lines = [line.split("#", 1)[1] if "#" in line else "" for line in lines]
    pieces, in_code, pending, start = [], False, "", 0
    for number, line in enumerate(lines, 1):
        if path.suffix == ".md" and line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if path.suffix == ".md" and not in_code and not line.startswith("    "):
            pieces += [(number, part.strip("`")) for part in re.split(r"(`[^`]*`)", line) if part.strip("`").strip()]
            continue
        start = start if pending else number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        pieces.append((start, pending + line))
        pending = ""
    return pieces


def clean(token: str) -> str:
    return token.strip("`'\"()[]{},.:;")


def uses(path: Path, subcommands: set[str], root: Path = ROOT) -> list[Use]:
    """Every `--flag` in `path`, with the command it belongs to."""
    return uses_in(segments(path), str(path.relative_to(root)), subcommands)


def uses_in(pieces: list[tuple[int, str]], name: str, subcommands: set[str]) -> list[Use]:
    """Every `--flag` in (line number, text) pieces of the file `name`, with the command it belongs to."""
    found = []
    for number, text in pieces:
        tokens = text.split()
        owner, previous, command_position = None, "", True
        for i, raw in enumerate(tokens):
            token, following = clean(raw), clean(tokens[i + 1]) if i + 1 < len(tokens) else ""
            if raw in ENDS or raw.startswith("#"):
                owner, command_position = None, True
                continue
            if re.search(r"(^|/)ctxenc$", token) and (following.startswith("-") or following in subcommands | {"COMMAND"}):
                owner = ("ctxenc", None)
            elif owner == ("ctxenc", None) and token in subcommands | {"COMMAND"}:
                owner = ("ctxenc", "*" if token == "COMMAND" else token)
            elif SCRIPT.search(token) and (owner is None or owner[0] == "foreign"):
                owner = ("script", SCRIPT.search(token).group(1))
            elif command_position and token.rsplit("/", 1)[-1] in FOREIGN:
                owner = ("foreign", token.rsplit("/", 1)[-1])
            for flag in FLAG.findall(raw):
                here = owner if owner is not None or previous not in subcommands else ("ctxenc", previous)
                found.append(Use(f"{name}:{number}", flag, here))
            # an environment assignment (OMP_NUM_THREADS=1) keeps the next word in command position
            command_position = bool(re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", raw))
            previous = token
    return found


def refused(path: Path, root: Path = ROOT) -> list[str]:
    """'file:line: why' for each flag of `path` that the command it is used with does not accept.
    A suite's comments speak of `ctxenc bench`; elsewhere a flag in prose belongs to no one command."""
    found = uses(path, set(ctxenc_flags()[1]), root)
    return judge(found, ("ctxenc", "bench") if path.suffix == ".yaml" else None, root)


def judge(found: list[Use], prose_owner: tuple[str, str] | None, root: Path = ROOT) -> list[str]:
    """'file:line: why' for each use whose command does not accept its flag (prose: `prose_owner`'s)."""
    top, subs = ctxenc_flags()
    scripts = {f"benchmarks/{p.name}": script_flags(p) for p in (root / "benchmarks").glob("*.py")}
    # A flag of torchrun named in prose is fine once a torchrun line of the same file used it.
    anywhere = top | set().union(*subs.values(), *scripts.values(), {u.flag for u in found if u.owner and u.owner[0] == "foreign"})
    failures = []
    for use in found:
        owner = use.owner or prose_owner
        if owner is None:
            ok, by = use.flag in anywhere, "any ctxenc subcommand or benchmarks script"
        elif owner[0] == "foreign":
            continue
        elif owner[0] == "script":
            ok, by = use.flag in scripts.get(owner[1], set()), owner[1]
        elif owner[1] is None:
            ok, by = use.flag in top, "ctxenc before a subcommand"
        elif owner[1] == "*":
            ok, by = any(use.flag in flags for flags in subs.values()), "any ctxenc subcommand"
        else:
            ok, by = use.flag in subs[owner[1]], f"ctxenc {owner[1]}"
        if not ok:
            failures.append(f"{use.where}: {use.flag} is not accepted by {by}")
    return failures


@pytest.mark.parametrize("path", doc_paths() + suite_paths(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_flag_the_docs_name_is_accepted_where_it_is_used(path):
    assert refused(path) == []


def test_every_flag_a_subcommands_help_names_is_accepted_by_it():
    """`ctxenc SUB --help` (description, options, epilog): a flag in its prose is SUB's own."""
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    failures = []
    for name, sub in subs.items():
        pieces = list(enumerate(sub.format_help().splitlines(), 1))
        failures += judge(uses_in(pieces, f"ctxenc {name} --help", set(subs)), ("ctxenc", name))
    assert failures == []


def test_the_flag_check_tells_commands_prose_and_other_programs_apart(tmp_path):
    """A flag its subcommand lacks fails, where another subcommand has it too; torchrun's flags are
    skipped; a benchmarks script's are checked against its own argparse."""
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "masks.py").write_text("import argparse\np = argparse.ArgumentParser()\np.add_argument('--batch', type=int)\n")
    doc = tmp_path / "x.md"
    doc.write_text("\n".join([
        "Run `ctxenc report DIR --no-such-flag` and `ctxenc pretrain --steps 20 --out runs/ce`.",
        "```bash",
        "OMP_NUM_THREADS=1 ctxenc bench s.yaml --limit 8 \\",
        "    --max-steps 3      # --seed in a comment is prose",
        "torchrun --standalone --nproc_per_node=2 -m ctxenc pretrain --pretext autoencoder --out o",
        "python benchmarks/masks.py --batch 64 --no-such-option",
        "```",
        "In prose, `bench --resume` and --launcher.",
        "A suite: `--no-such-thing`.",
    ]))
    found = {(u.flag, u.owner) for u in uses(doc, set(ctxenc_flags()[1]), tmp_path)}
    assert ("--nproc_per_node", ("foreign", "torchrun")) in found
    assert ("--pretext", ("ctxenc", "pretrain")) in found and ("--seed", None) in found
    failures = "\n".join(refused(doc, tmp_path))
    assert "x.md:1: --no-such-flag is not accepted by ctxenc report" in failures
    assert "x.md:3: --max-steps is not accepted by ctxenc bench" in failures  # the continuation line is the bench's
    assert "x.md:6: --no-such-option is not accepted by benchmarks/masks.py" in failures
    assert "x.md:8: --resume is not accepted by ctxenc bench" in failures
    assert "x.md:9: --no-such-thing is not accepted by any" in failures
    assert failures.count("\n") == 4, failures  # and nothing else: --steps, --nproc_per_node, --batch, --launcher pass


# ---------------------------------------------------------------------------------------------
# README: short, with working links


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    headings = re.findall(r"^#+\s+(.*?)\s*$", re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower().replace("`", "")).replace(" ", "-") for h in headings}


def links(markdown: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", markdown)


def test_readme_fits_in_250_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference material to docs/."


@pytest.mark.parametrize("path", doc_paths(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(path):
    broken = []
    for target in links(path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # https: and the like
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved.read_text()):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == []


def test_readme_links_every_docs_page():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links((ROOT / "README.md").read_text())}
    assert [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked] == []


# ---------------------------------------------------------------------------------------------
# The bad-input table against tests/test_bad_input.py


def bad_input_table() -> dict[str, str]:
    """{bad input: message} from the table after BAD_INPUT_MARK in docs/reliability.md."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    assert BAD_INPUT_MARK in text, f"docs/reliability.md has no '{BAD_INPUT_MARK}' marker before its table"
    rows = {}
    for line in text.split(BAD_INPUT_MARK, 1)[1].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells[0].startswith("---") or cells[0].startswith("bad input"):
            continue
        rows[cells[0]] = cells[1]
    return rows


def test_the_bad_input_table_is_what_the_cases_print(tmp_path):
    """Every case of tests/test_bad_input.py has its row, and the row's message is the one the case
    prints today; the other rows name the test that checks them, and their fixed text is the code's."""
    table = bad_input_table()
    printed = bad_input_messages(tmp_path)
    assert sorted(set(printed) - set(table)) == [], "cases of tests/test_bad_input.py without a row"
    wrong = [f"{name}:\n  doc:  {_plain(table[name])}\n  code: {message}" for name, message in printed.items()
             if _plain(table[name]) != message]
    assert wrong == [], "rows whose message is not what the case prints (python -m tests.test_docs prints them)"
    messages = code_messages()
    for name in set(table) - set(printed):
        test = re.search(r"tests/(test_\w+)\.py::(test_\w+)", name)
        assert test, f"row {name!r} is neither a case of tests/test_bad_input.py nor names its test (tests/FILE.py::TEST)"
        source = (ROOT / "tests" / f"{test.group(1)}.py").read_text()
        assert f"def {test.group(2)}(" in source, f"row {name!r}: no such test"
        message = _plain(table[name]).replace("…", "X")
        assert any(m.fullmatch(message) for m in messages), f"row {name!r}: no message of the code reads {message!r}"


def bad_input_messages(tmp: Path) -> dict[str, str]:
    """{case: the message it prints} for every case of tests/test_bad_input.py, run as that test
    runs it (a fresh data folder each, one checkpoint for all), its folder shortened to '…'."""
    import contextlib
    import io

    from ctxenc.cli import main
    from tests.conftest import make_fashion_mnist
    from tests.test_bad_input import CASES

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        root = make_fashion_mnist(tmp / "fmnist")
        assert main(["pretrain", "--pretext", "autoencoder", "--data-root", str(root), "--steps", "2", "--batch-size", "32",
                     "--out", str(tmp / "ok"), "--no-progress"]) == 0
    ckpt = tmp / "ok" / "checkpoint.pt"
    messages = {}
    for i, (name, (make, _)) in enumerate(CASES.items()):
        t = tmp / f"case{i}"
        args = make(make_fashion_mnist(t / "fmnist"), t, ckpt)
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(args)
        assert code == 2, f"{name}: exit {code}"
        message = err.getvalue().strip().removeprefix("ctxenc: error: ")
        messages[name.replace("|", "\\|")] = message.replace(str(t), "…").replace(str(tmp), "…")
    return messages


def code_messages() -> list[re.Pattern]:
    """Every string of ctxenc's code with fixed text of 20 characters or more, as a pattern: an
    f-string's {fields} match anything ('ctxenc: warning: ' may come first: `warn` adds it)."""
    patterns = []
    for path in (ROOT / "ctxenc").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".*" for v in node.values]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                parts = [re.escape(node.value)]
            else:
                continue
            if sum(len(p) for p in parts if p != ".*") >= 20:
                patterns.append(re.compile("(ctxenc: warning: )?" + "".join(parts), re.S))
    return patterns


def _plain(markdown: str) -> str:
    return markdown.replace("`", "").replace("**", "")


def print_bad_input_table() -> None:
    """The rows of docs/reliability.md's bad-input table for the cases of tests/test_bad_input.py."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CTXENC_CACHE"] = str(Path(tmp) / "cache")
        for name, message in bad_input_messages(Path(tmp)).items():
            print(f"| {name} | {message.replace('|', chr(92) + '|')} |")


if __name__ == "__main__":
    print_bad_input_table()
