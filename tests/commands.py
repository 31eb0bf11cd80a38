"""Running the project's commands in tests: main() in this process, and proof that a folder is unchanged."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load(path: Path, name: str):
    """A module from a file path (pipelines/*.py and tests/data/datasets.py are not packages)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def script(name: str):
    """The module of pipelines/prepare_<name>.py."""
    return load(REPO / "pipelines" / f"prepare_{name}.py", f"prepare_{name}_script")


datasets = load(REPO / "tests" / "data" / "datasets.py", "prepare_test_datasets")


def run_main(main, argv: list, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `main(argv)`; argparse's usage errors give their SystemExit code."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path → bytes), hidden ones included."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def assert_refused(status: int, err: str, *offenders: str) -> None:
    """Exit status 2, one message without a traceback, naming every offender."""
    assert status == 2, err
    assert "Traceback" not in err and err.strip(), err
    for offender in offenders:
        assert offender in err, (offender, err)


def assert_refused_leaving_intact(main, argv: list, out: Path, capsys, offenders: list[str]) -> None:
    """`main(argv)` refuses (exit status 2, no traceback, every offender named) and leaves `out` as it was."""
    before = snapshot(out)
    status, _, err = run_main(main, argv, capsys)
    assert_refused(status, err, *offenders)
    assert snapshot(out) == before


def with_paths(options: list[str], folder: Path) -> list[str]:
    """Options with each `{name}` made the path `folder/name`."""
    return [str(folder / option[1:-1]) if option.startswith("{") else option for option in options]
