"""The system packages gridwatch needs beside its Python packages: checked, and installed as root.

What is needed, and by whom:

- ``venv``: Python's ``venv`` module (Debian ships it apart, as ``python3.X-venv``), before the
  virtualenv is made;
- ``postgis``: the PostgreSQL server and PostGIS for it, which run the embedded cluster (none
  when ``GRIDWATCH_DATABASE_URL`` names an existing server);
- ``browser``: Chromium, the library Playwright's driver needs and a CJK font, for the browser
  tests and the page benchmarks;
- ``fonts``: the CJK font the map labels are drawn from (the demo runs without it, unlabelled);
- ``report``: the TrueType CJK font the shift report PDF embeds (reportlab reads TrueType
  outlines only, not the CFF outlines of Noto CJK), for ``gridwatch report`` and the demo;
- ``pdf``: poppler's ``pdftoppm``, ``pdffonts`` and ``pdftotext``, which the tests read the
  shift report with.

As root on a Debian/Ubuntu machine the missing packages are installed with apt-get; as a
normal user one line names them and the command that installs them. The PostgreSQL major
version comes from ``pg_config --version`` ("PostgreSQL 15.18 ..."), which every server
installation ships.

This module uses the standard library only: the Makefile runs it with the system Python
before the virtualenv exists (``python3 -I gridwatch/system.py venv browser``).
"""
from __future__ import annotations

import ctypes.util
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Need", "SetupError", "ensure", "ensure_postgres", "find_pg_bindir", "pg_major", "pg_sharedir",
    "postgres_server", "postgis", "chromium", "playwright_runtime", "cjk_font", "gdal_tools", "venv_module", "CHROMIUM", "NEEDS",
    "report_font", "report_font_file", "pdf_tools", "REPORT_FONT_QUERY",
]

# The browser the tests and page benchmarks drive: Debian's, unless GRIDWATCH_CHROMIUM names another.
CHROMIUM = Path(os.environ.get("GRIDWATCH_CHROMIUM") or "/usr/bin/chromium")
CJK_FONT_QUERY = "Noto Sans CJK SC"
# The shift report's font: a CJK font with TrueType outlines, which reportlab embeds.
REPORT_FONT_QUERY = "WenQuanYi Zen Hei"


class SetupError(RuntimeError):
    """A system package is missing and cannot be installed from here; the message says how."""


@dataclass(frozen=True)
class Need:
    """One system package: what it gives, and how to tell that it is there.

    ``also`` are the packages that own the files checked, when another one than ``package``
    (the one a person installs): apt-get installs them together, so that a package whose
    files are gone is put back whole.
    """

    what: str
    package: str
    present: Callable[[], bool]
    also: tuple[str, ...] = ()


def find_pg_bindir() -> Path:
    """The folder with ``initdb``, ``pg_ctl`` and ``postgres``.

    Looked for on PATH, in the active conda environment, then in Debian's
    ``/usr/lib/postgresql/<major>/bin`` (newest first).
    """
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    if os.environ.get("CONDA_PREFIX"):
        candidates.append(Path(os.environ["CONDA_PREFIX"]) / "bin")
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                    key=lambda p: int(re.sub(r"\D", "", Path(p).parent.name) or 0), reverse=True)
    candidates += [Path(p) for p in debian]
    for bindir in candidates:
        if all((bindir / exe).exists() for exe in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise SetupError(
        "the PostgreSQL server (initdb, pg_ctl, postgres) was not found on PATH, in the conda env or "
        "in /usr/lib/postgresql/*/bin: install it (sudo apt-get install postgresql), or set "
        "GRIDWATCH_DATABASE_URL to an existing PostGIS server"
    )


def _pg_config(bindir: Path, flag: str) -> str:
    pg_config = bindir / "pg_config"
    result = subprocess.run([str(pg_config), flag], capture_output=True, text=True) if pg_config.exists() else None
    if result is None or result.returncode != 0:
        raise SetupError(f"{pg_config} {flag} did not answer; it tells the PostgreSQL version and where its "
                         "extensions live: install the PostgreSQL client package of that server")
    return result.stdout.strip()


def pg_major(bindir: Path) -> int:
    """The major version of the PostgreSQL in ``bindir``, from ``pg_config --version``."""
    version = _pg_config(bindir, "--version")
    found = re.match(r"PostgreSQL (\d+)", version)
    if found is None:
        raise SetupError(f"{bindir / 'pg_config'} --version printed {version!r}, not 'PostgreSQL <major>...'")
    return int(found.group(1))


def pg_sharedir(bindir: Path) -> Path:
    """Where the PostgreSQL in ``bindir`` looks for extensions (``<sharedir>/extension``)."""
    return Path(_pg_config(bindir, "--sharedir"))


def postgis(bindir: Path) -> Need:
    """PostGIS for the PostgreSQL in ``bindir``."""
    control = pg_sharedir(bindir) / "extension" / "postgis.control"
    package = f"postgresql-{pg_major(bindir)}-postgis-3"
    return Need(f"PostGIS for PostgreSQL {pg_major(bindir)} ({control})", package, control.exists,
                also=(f"{package}-scripts",))


def chromium() -> Need:
    """Chromium (:data:`CHROMIUM`), which the browser tests and page benchmarks drive (no browser download)."""
    return Need(f"Chromium ({CHROMIUM})", "chromium", CHROMIUM.exists)


def playwright_runtime() -> Need:
    """libatomic, which the Node.js that drives Playwright needs (Debian's Chromium does not pull it in)."""
    return Need("the library libatomic.so.1", "libatomic1", lambda: ctypes.util.find_library("atomic") is not None)


def cjk_font() -> Need:
    """A CJK font, found with fontconfig's fc-match: map labels and the browser's Chinese text are drawn from it."""
    def present() -> bool:
        if shutil.which("fc-match") is None:
            return False
        found = subprocess.run(["fc-match", "-f", "%{family}", CJK_FONT_QUERY], capture_output=True, text=True)
        return CJK_FONT_QUERY in found.stdout
    return Need(f"the font {CJK_FONT_QUERY!r}", "fonts-noto-cjk", present, also=("fontconfig",))


def report_font_file() -> Path | None:
    """The file of :data:`REPORT_FONT_QUERY` as fontconfig finds it (None without it or fontconfig)."""
    if shutil.which("fc-match") is None:
        return None
    found = subprocess.run(["fc-match", "-f", "%{family}\t%{file}", REPORT_FONT_QUERY], capture_output=True, text=True)
    family, _, file = found.stdout.partition("\t")
    return Path(file) if REPORT_FONT_QUERY in family and file else None


def report_font() -> Need:
    """The TrueType CJK font the shift report embeds (:func:`report_font_file`)."""
    return Need(f"the font {REPORT_FONT_QUERY!r}", "fonts-wqy-zenhei", lambda: report_font_file() is not None,
                also=("fontconfig",))


def pdf_tools() -> Need:
    """poppler's command-line tools: the tests render the shift report with ``pdftoppm``."""
    return Need("poppler's pdftoppm", "poppler-utils", lambda: shutil.which("pdftoppm") is not None)


def gdal_tools() -> Need:
    """GDAL's command-line tools: the tests check that ``ogrinfo`` reads every grid export."""
    return Need("GDAL's ogrinfo", "gdal-bin", lambda: shutil.which("ogrinfo") is not None)


def venv_module() -> Need:
    """Python's venv module with ensurepip, which makes the virtualenv."""
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Need(f"Python {minor}'s venv module", f"python{minor}-venv",
                lambda: importlib.util.find_spec("ensurepip") is not None)


def postgres_server() -> Need:
    """The PostgreSQL server's programs (:func:`find_pg_bindir`)."""
    def present() -> bool:
        try:
            find_pg_bindir()
        except SetupError:
            return False
        return True
    return Need("the PostgreSQL server (initdb, pg_ctl, postgres)", "postgresql", present)


def ensure_postgres() -> Path:
    """The bin folder of a PostgreSQL server that has PostGIS; as root, both are installed when missing."""
    ensure([postgres_server()])
    bindir = find_pg_bindir()
    ensure([postgis(bindir)])
    return bindir


def _postgis_unless_external() -> None:
    if not os.environ.get("GRIDWATCH_DATABASE_URL"):  # an existing server has PostGIS of its own
        ensure_postgres()


# What ``system.py NAME`` makes sure of.
NEEDS: dict[str, Callable[[], object]] = {
    "venv": lambda: ensure([venv_module()]),
    "postgis": _postgis_unless_external,
    "browser": lambda: ensure([chromium(), playwright_runtime(), cjk_font()]),
    "fonts": lambda: ensure([cjk_font()]),
    "gis": lambda: ensure([gdal_tools()]),
    "report": lambda: ensure([report_font()]),
    "pdf": lambda: ensure([pdf_tools()]),
}


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], capture_output=True, text=True, env=env)


def _install(packages: list[str]) -> None:
    """apt-get install ``packages``; the package lists are refreshed first when the install fails."""
    print(f"gridwatch: installing {' '.join(packages)} with apt-get ...", flush=True)
    # --reinstall: a package whose files are gone is unpacked again (a missing one is installed)
    install = ("install", "-y", "-q", "--no-install-recommends", "--reinstall", *packages)
    if _apt_get(*install).returncode == 0:
        return
    _apt_get("update", "-q")
    result = _apt_get(*install)
    if result.returncode != 0:
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("E:")] or result.stderr.splitlines() or [""]
        raise SetupError(f"apt-get could not install {' '.join(packages)} ({errors[-1].strip()}): "
                         "install them by hand")


def _present(need: Need) -> bool:
    """Whether the need is met; a path that cannot be looked at counts as missing."""
    try:
        return need.present()
    except OSError:
        return False


def ensure(needs: Sequence[Need]) -> list[str]:
    """Make sure every need is present; return the packages installed (as root with apt-get).

    A normal user (or a machine without apt-get) gets :class:`SetupError` naming every
    missing package and the command that installs them.
    """
    missing = [n for n in needs if not _present(n)]
    if not missing:
        return []
    packages = sorted({n.package for n in missing})
    apt = shutil.which("apt-get") is not None
    if os.geteuid() == 0 and apt:
        _install(sorted({p for n in missing for p in (n.package, *n.also)}))
        still = [n for n in missing if not _present(n)]
        if still:
            raise SetupError(f"{', '.join(packages)} installed, but {', '.join(n.what for n in still)} is still "
                             "missing: this program is not the one the package installs")
        return packages
    how = f"sudo apt-get install {' '.join(packages)}" if apt else f"install {' '.join(packages)} (Debian names)"
    raise SetupError(f"missing {', '.join(n.what for n in missing)}: run `{how}`")


def main(argv: Sequence[str]) -> int:
    """``python3 -I gridwatch/system.py NEED...``: ensure the named needs; one line and 1 when it fails."""
    unknown = sorted(set(argv) - set(NEEDS))
    if not argv or unknown:
        print(f"gridwatch: usage: system.py NEED... with NEED in {sorted(NEEDS)}"
              + (f" (not {unknown})" if unknown else ""), file=sys.stderr)
        return 2
    try:
        for name in argv:
            NEEDS[name]()
    except SetupError as exc:
        print(f"gridwatch: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
