"""The documentation: a short README, a site that builds strictly (broken links, missing pages and
bad includes fail it), reference pages generated from the code, snippets included from tested
files, every `parity` command shown one the parser accepts, figures that regenerate bit for bit."""

import html
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from parity import docgen

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (make test installs it)")
    pytest.importorskip("material", reason="the docs extra is not installed (make test installs it)")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], cwd=config.parent, capture_output=True, text=True,
                          timeout=300, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})


def _text(page: Path) -> str:
    """A built page's text, tags stripped and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_the_site_builds_strictly_with_the_generated_pages_and_the_included_snippets(tmp_path):
    done = _mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].split(" - ", 1)[1].strip().startswith("Documentation built in")
    site = tmp_path / "site"
    # every page of docs/ is in the site, under the navigation
    for page in DOCS:
        built = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.is_file(), page.name
    # the CLI page is what `parity check --help` prints
    cli = _text(site / "cli" / "index.html")
    for line in docgen.command_help("check").splitlines():
        assert line.strip() in cli, line
    # the tolerances page holds every value of the file with its reason
    tolerances = _text(site / "tolerances" / "index.html")
    assert "1e-10 is the bar the project set for gradients" in tolerances
    # the walk-through's code is the example port's, included at build time
    own = _text(site / "own-port" / "index.html")
    assert "mapped = map_weights(weights, weight_mapping(cfg), shapes, unused=UNUSED).check()" in own
    assert "--8<--" not in own
    # the API reference documents the adapters and the plugin's fixtures from their docstrings
    api = _text(site / "api" / "index.html")
    assert "torch_backend" in api and "parity_check" in api and "the user's inference entry point" in api
    for figure in (ROOT / "docs" / "figures").glob("*.png"):
        assert (site / "figures" / figure.name).is_file()


def _copy_for_build(tmp_path: Path) -> Path:
    """What the site is built from, copied: the config, docs/, the hook and the included sources."""
    for part in ("docs", "scripts", "tests/real_port"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    return tmp_path / "mkdocs.yml"


@pytest.mark.full
@pytest.mark.parametrize("breakage, said", [
    ("[a page that is not there](missing.md)", "missing.md"),
    ('```python\n--8<-- "tests/real_port/ptyport_parity.py:no_such_section"\n```', "no_such_section"),
    ('```python\n--8<-- "tests/real_port/no_such_file.py"\n```', "no_such_file.py"),
    ("<!-- generated: no-such-reference -->", "no-such-reference"),
])
def test_a_broken_link_or_include_fails_the_strict_build(tmp_path, breakage, said):
    config = _copy_for_build(tmp_path)
    page = tmp_path / "docs" / "cases.md"
    page.write_text(page.read_text() + "\n" + breakage + "\n")
    done = _mkdocs(config, tmp_path / "site")
    assert done.returncode != 0 and said in done.stdout + done.stderr, done.stderr[-2000:]


def test_the_walk_through_includes_the_tested_example_and_copies_nothing():
    """Every code block of "Checking your own port" is an include of the example port's adapter
    or its user tests, whose sections exist."""
    page = (ROOT / "docs" / "own-port.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 7
    for block in blocks:
        for line in block.strip().splitlines():
            include = re.fullmatch(r'--8<-- "([^":]+)(?::(\w+))?"', line)
            assert include, f"copied, not included: {line!r}"
            source = (ROOT / include.group(1)).read_text()
            if include.group(2):
                assert f"# --8<-- [start:{include.group(2)}]" in source


def test_the_readme_example_is_the_tested_example_port():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    source = (ROOT / "tests" / "adapter_example" / "myport.py").read_text()
    for line in block.strip().splitlines():
        assert line in source, f"README line not in tests/adapter_example/myport.py: {line!r}"


def _shown_commands() -> list[tuple[str, str]]:
    """(file, command) for every `parity ...` command line shown in the README and docs/."""
    found = []
    for doc in [ROOT / "README.md", *DOCS]:
        text = doc.read_text()
        lines = re.findall(r"`((?:\.venv/bin/)?parity (?:[a-z-]+)[^`]*)`", text)
        for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
            lines += [ln for ln in block.splitlines() if re.match(r"(\$ )?(\.venv/bin/)?parity [a-z]", ln)]
        for line in lines:
            command = line.split("#", 1)[0].split("&&")[0].strip().removeprefix("$ ").removeprefix(".venv/bin/")
            found.append((doc.name, command))
    return found


def test_every_parity_command_shown_in_the_docs_is_one_the_parser_accepts():
    from parity.cli import build_parser

    commands = _shown_commands()
    assert len(commands) > 20
    parser = build_parser()
    for doc, command in commands:
        argv = shlex.split(command)[1:]
        if argv[0] not in docgen.subcommands(parser):
            continue  # prose like "parity checks": not a command line
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{doc}: `{command}` is not a valid command line (exit {exc.code})")


def test_generated_sections_are_filled_in_and_an_unknown_one_is_an_error():
    out = docgen.generate("a\n<!-- generated: cases -->\nb")
    assert "gs2-big" in out and "<!--" not in out
    with pytest.raises(ValueError, match="no generated section 'nope'"):
        docgen.generate("<!-- generated: nope -->")
    plugin = docgen.plugin_reference()
    assert "| `--parity-ref` | `tensorflow` |" in plugin and "`@pytest.mark.parity_first`" in plugin


@pytest.mark.full
@pytest.mark.processes
def test_the_docs_figures_regenerate_bit_for_bit(tmp_path):
    """`make docs-figures` for one scenario (the checkpoint figure, the seed scenario) into a
    temporary folder: byte for byte the committed figure."""
    pytest.importorskip("tensorflow")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_figures.py"), "--out", str(tmp_path),
                           "--only", "checkpoint.png"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert (tmp_path / "checkpoint.png").read_bytes() == (ROOT / "docs" / "figures" / "checkpoint.png").read_bytes()


def test_the_noise_figure_is_drawn_from_the_shipped_calibration_bit_for_bit(tmp_path):
    """docs/figures/noise.png: the tolerance file's measured noise and bounds, as `make docs-figures` draws them."""
    from parity.calibrate.figure import draw_noise

    assert draw_noise(tmp_path / "noise.png").read_bytes() == (ROOT / "docs" / "figures" / "noise.png").read_bytes()
