"""The planner page's server side: each planner's draft of a township, and what the map is sent.

A draft starts from the latest saved version of a township, one per account and township.
It is kept in the database after every edit (the faces an edit made first), so unsaved work
survives a restart and a reload; its undo and redo history lives in this process. Edits go through :func:`gridwatch.geo.plan.apply`, which refuses
one that breaks a hard rule; saving and publishing go through :mod:`gridwatch.etl.plan` as
the signed-in account.
"""
from __future__ import annotations

import base64
import io
import itertools
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import networkx as nx
import pandas as pd
import sqlalchemy as sa

from gridwatch.dashboard._context import WallContext
from gridwatch.errors import InputError
from gridwatch.etl.plan import build_faces, draft_state, rules_of, save_draft, store_faces
from gridwatch.etl.plan import drop_draft as forget_draft
from gridwatch.etl.plan_import import import_drafts
from gridwatch.geo import plan as edits
from gridwatch.geo.plan import Plan, grid_geometries
from gridwatch.geo.plan_rules import MEASURES, Problem, Rules, check_plan, diff, grid_table, score
from gridwatch.layers.plan import draft_of, head_version, township_plan, townships, version_grids
from gridwatch.layers.plan_export import export_version

__all__ = ["Draft", "Job", "account_id", "draft_for", "draft_grids", "keep_draft", "forget", "drop_draft", "start_proposal", "job_of", "state_of", "faces_geojson", "score_rows", "selected_summary",
           "township_choices", "import_upload", "export_file", "PALETTE", "COLOUR_BY"]

HISTORY = 50
#: Categorical colours for grids: neighbours never share one (greedy colouring of the grid graph).
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#edc948", "#76b7b2", "#ff9da7", "#9c755f", "#bab0ac",
           "#86bcb6")
#: What the map can colour grids by.
COLOUR_BY = ("grid", "problems", "changes", *MEASURES, "compactness")
_OK, _WARN, _BAD, _NONE = "#59a14f", "#f28e2b", "#e15759", "#bab0ac"


@dataclass
class Draft:
    """One planner's unsaved plan of a township, with the version it started from and its history."""

    township: str
    base_version: int
    plan: Plan
    rules: Rules
    undo: list[Plan] = field(default_factory=list)
    redo: list[Plan] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    face_set: int = 0
    message: str | None = None
    problems: list[Problem] = field(default_factory=list)
    base_score: dict = field(default_factory=dict)
    base_hard: frozenset = frozenset()  # the hard problems the version it started from already had

    _base: gpd.GeoDataFrame | None = None

    def base_grids(self, engine: sa.Engine) -> gpd.GeoDataFrame:
        """The grids of the township in the version the draft started from (read once)."""
        if self._base is None:
            self._base = version_grids(engine, self.base_version, township=self.township)
        return self._base

    _table: tuple[Plan, pd.DataFrame] | None = None

    def table(self) -> pd.DataFrame:
        """The grids' figures of the plan in hand (:func:`grid_table`), computed once per plan."""
        if self._table is None or self._table[0] is not self.plan:
            self._table = (self.plan, grid_table(self.plan))
        return self._table[1]

    @property
    def bounds(self) -> list[float]:
        """West, south, east, north of the draft's faces."""
        return [float(v) for v in self.plan.faces.total_bounds]

    def new_hard(self) -> list[Problem]:
        """Hard problems the draft has and the version it started from had not (an import can bring some)."""
        return [p for p in self.problems if p.hard and (p.kind, p.codes) not in self.base_hard]

    def check(self, plan: Plan) -> list[Problem]:
        return check_plan(plan, self.rules)

    def run(self, edit, *, describe: str = "") -> None:
        """Apply an edit (a function of the plan); refused edits leave the draft and say why."""
        outcome = edits.apply(self.plan, edit, check=self.check, before=self.problems)
        self.problems = outcome.problems
        if outcome.refused:
            self.message = f"refused: {outcome.refused}"
            return
        if not outcome.changed:
            self.message = describe and f"{describe}: nothing changed"
            return
        if outcome.plan.blocks is not self.plan.blocks:
            self.face_set += 1
        self.undo = [*self.undo, self.plan][-HISTORY:]
        self.redo = []
        self.plan = outcome.plan
        self.selected = [c for c in self.selected if c in self.plan.grids.index] or outcome.changed[:1]
        self.message = None

    def step(self, back: bool) -> None:
        """Undo (``back``) or redo one edit."""
        source, target = (self.undo, self.redo) if back else (self.redo, self.undo)
        if not source:
            self.message = "nothing to undo" if back else "nothing to redo"
            return
        target.append(self.plan)
        if source[-1].blocks is not self.plan.blocks:
            self.face_set += 1
        self.plan = source.pop()
        self.problems = self.check(self.plan)
        self.selected = [c for c in self.selected if c in self.plan.grids.index]
        self.message = None


_DRAFTS: dict[tuple[str, str, str], Draft] = {}
_REVISIONS = itertools.count(1)  # every state sent is a new one
_LOCK = threading.Lock()


def account_id(account: str) -> int:
    """The account number of a principal id ``account:N``."""
    kind, _, number = account.partition(":")
    if kind != "account" or not number.isdigit():
        raise PermissionError("only a signed-in account can plan")
    return int(number)


def draft_for(ctx: WallContext, account: str, township: str, *, reload: bool = False) -> Draft:
    """The account's draft of a township: the one in hand (unless ``reload``), else the one kept in the
    database, else one started from the latest saved version. The faces are cut first when the grid
    layer has none yet."""
    key = (str(ctx.engine.url), account, township)
    with _LOCK:
        draft = _DRAFTS.get(key)
    if draft is not None and not reload:
        return draft
    rules = rules_of(ctx.settings)
    kept = draft_of(ctx.engine, account_id(account), township)
    if kept is None:
        build_faces(ctx.engine, settings=ctx.settings)  # the townships not cut into faces yet
        version = head_version(ctx.engine)
        plan = base = township_plan(ctx.engine, version, township)
    else:
        version, plan = kept
        base = township_plan(ctx.engine, version, township)
    problems = check_plan(plan, rules)
    stood = problems if base is plan else check_plan(base, rules)
    draft = Draft(township, version, plan, rules, problems=problems, base_score=score(base, stood, rules),
                  base_hard=frozenset((p.kind, p.codes) for p in stood if p.hard),
                  face_set=(draft.face_set + 1) if draft else 0)
    with _LOCK:
        _DRAFTS[key] = draft
    return draft


def keep_draft(ctx: WallContext, account: str, draft: Draft) -> None:
    """Store the draft (and the faces its edits made) so it outlives this process."""
    draft.plan = store_faces(ctx.engine, draft.plan)
    save_draft(ctx.engine, account_id(account), draft.township, draft.base_version, draft_state(draft.plan))


def forget(ctx: WallContext, account: str, township: str) -> None:
    """Let go of the draft in hand (the next request reads the one kept in the database)."""
    with _LOCK:
        _DRAFTS.pop((str(ctx.engine.url), account, township), None)


def draft_grids(draft: Draft) -> gpd.GeoDataFrame:
    """The draft's grids as polygons with their households and population (for comparing)."""
    shapes = grid_geometries(draft.plan)
    table = draft.table().reindex(shapes.index)
    return gpd.GeoDataFrame({"code": shapes.index, "households": table["households"].round().to_numpy(),
                             "population": table["population"].round().to_numpy()},
                            geometry=shapes.values, crs=shapes.crs)


def drop_draft(ctx: WallContext, account: str, township: str) -> None:
    """Forget a draft (after it was saved or discarded), here and in the database."""
    forget(ctx, account, township)
    forget_draft(ctx.engine, account_id(account), township)


@dataclass
class Job:
    """A rebalancing proposal being made for a draft, in a thread of this process."""

    township: str
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: float = 0.0
    result: Plan | None = None
    summary: str = ""
    done: bool = False


_JOBS: dict[tuple[str, str, str], Job] = {}


def start_proposal(ctx: WallContext, account: str, draft: Draft) -> Job:
    """Start proposing a rebalanced plan of the draft (one job per account and township)."""
    from gridwatch.geo.rebalance import rebalance_plan  # gerrychain: loaded when first asked for

    key = (str(ctx.engine.url), account, draft.township)
    with _LOCK:
        running = _JOBS.get(key)
        if running is not None and not running.done:
            return running
        job = _JOBS[key] = Job(draft.township)
    plan, rules = draft.plan, draft.rules

    def run() -> None:
        def progress(fraction: float) -> None:
            job.progress = fraction

        try:
            proposed, proposal, notes = rebalance_plan(plan, tolerance=rules.balance_tolerance,
                                                min_compactness=rules.min_compactness,
                                                time_limit_s=ctx.settings.plan_proposal_s, progress=progress,
                                                cancel=job.cancel.is_set)
        except ValueError as refusal:
            job.summary = f"no proposal: {refusal}"
        else:
            if proposal.cancelled:
                job.summary = "cancelled: the plan is as it was"
            else:
                job.result = proposed
                job.summary = (f"proposal {'meets' if proposal.met else 'does not meet'} the balance, contiguity and "
                               f"compactness rules after {proposal.steps} steps in {proposal.seconds:.1f} s: "
                               "it is now the draft (undo discards it)" + "".join(f"; {n}" for n in notes[:3]))
        finally:
            job.progress, job.done = 1.0, True

    threading.Thread(target=run, name=f"plan-proposal-{draft.township}", daemon=True).start()
    return job


def job_of(ctx: WallContext, account: str, township: str) -> Job | None:
    """The account's proposal job for a township, if any."""
    with _LOCK:
        return _JOBS.get((str(ctx.engine.url), account, township))


def township_choices(ctx: WallContext) -> list[dict]:
    """Townships with grids, for the picker."""
    frame = townships(ctx.engine)
    return [{"label": f"{r.code} {r.name}", "value": r.code} for r in frame.itertuples()]


def _grid_colours(plan: Plan) -> dict[str, str]:
    """A palette colour per grid, different from every neighbour's."""
    i, j, _ = plan.blocks.edges
    a, b = plan.grid[i], plan.grid[j]
    differ = pd.notna(a) & pd.notna(b) & (a != b)
    graph = nx.Graph()
    graph.add_nodes_from(plan.grids.index)
    graph.add_edges_from(zip(a[differ], b[differ]))
    colouring = nx.coloring.greedy_color(graph, strategy="largest_first")
    return {str(code): PALETTE[k % len(PALETTE)] for code, k in colouring.items()}


def _measure_fill(table: pd.DataFrame, by: str, problems: list[Problem], rules: Rules,
                  changed: Callable[[], pd.DataFrame]) -> dict[str, str] | None:
    """Grid colours for a measure: within the band green, out of it orange; problems: hard red, soft
    orange; changes: new or changed since the version the draft started from orange, the rest green."""
    if by == "grid":
        return None
    if by == "changes":
        moved = set(changed().index)
        return {code: (_WARN if code in moved else _OK) for code in table.index}
    if by == "problems":
        worst: dict[str, str] = {}
        for p in problems:
            for code in p.codes:
                worst[code] = _BAD if p.hard or worst.get(code) == _BAD else _WARN
        return {code: worst.get(code, _OK) for code in table.index}
    if by == "compactness":
        return {c: (_OK if v >= rules.min_compactness else _WARN) for c, v in table["compactness"].items()}
    mean = table.groupby("township")[by].transform("mean")
    ratio = table[by] / mean.where(mean > 0)
    off = (ratio - 1).abs() > rules.balance_tolerance
    return {c: (_NONE if pd.isna(r) else _WARN if o else _OK) for c, r, o in zip(table.index, ratio, off)}


def state_of(draft: Draft, engine: sa.Engine, *, colour_by: str = "grid") -> dict:
    """What the planner map and panels are sent (see the page's contract in ``assets/plan.js``)."""
    plan = draft.plan
    colours = _grid_colours(plan)
    table = draft.table()
    ids = plan.faces["face_id"].to_numpy()
    assigned = pd.notna(plan.grid)
    return {
        "rev": next(_REVISIONS),
        "township": draft.township,
        "bounds": draft.bounds,
        "faces_url": f"/plan/faces.geojson?township={draft.township}&set={draft.face_set}",
        "assign": {str(int(f)): str(g) for f, g in zip(ids[assigned], plan.grid[assigned])},
        "grids": [{"code": code, "colour": colours.get(code, _NONE), "locked": bool(row.locked),
                   "label": code} for code, row in plan.grids.iterrows()],
        "selected": list(draft.selected),
        "fill": _measure_fill(table, colour_by, draft.problems, draft.rules,
                              lambda: diff(draft.base_grids(engine), draft_grids(draft))),
        "problems": [{"kind": p.kind, "hard": p.hard, "codes": list(p.codes), "detail": p.detail,
                      "faces": [int(f) for f in p.faces]} for p in draft.problems],
        "message": draft.message,
        "undo": len(draft.undo), "redo": len(draft.redo),
    }


def faces_geojson(draft: Draft) -> str:
    """The draft's faces as GeoJSON: id = face id, property ``source``."""
    faces = draft.plan.faces[["face_id", "source", "geometry"]].set_index("face_id")
    return faces.to_json(drop_id=False)


def score_rows(draft: Draft) -> pd.DataFrame:
    """The draft's score beside the version it started from."""
    now = score(draft.plan, draft.problems, draft.rules, table=draft.table())
    keys = ["grids", "hard", "soft", *[f"{m}_max_dev" for m in MEASURES], *[f"{m}_cv" for m in MEASURES],
            "compactness_mean", "compactness_min"]
    return pd.DataFrame({"measure": keys, "base": [draft.base_score.get(k) for k in keys],
                         "draft": [now.get(k) for k in keys]})


def selected_summary(draft: Draft) -> pd.DataFrame:
    """The selected grids' figures."""
    table = draft.table()
    return table.loc[[c for c in draft.selected if c in table.index],
                     ["faces", "area_m2", *MEASURES, "workers", "compactness", "police_area", "locked"]]


def import_upload(ctx: WallContext, account: str, contents: str, filename: str) -> str:
    """Read an uploaded grid file (a ``dcc.Upload`` data URL) into the account's drafts; what it made."""
    suffix = Path(filename).suffix.lower()
    if suffix not in (".gpkg", ".geojson", ".json"):
        raise InputError(f"{filename}: upload a GeoPackage or GeoJSON (a Shapefile goes by `gridwatch grids import`)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(base64.b64decode(contents.split(",", 1)[-1]))
        report = import_drafts(ctx.engine, path, account_id=account_id(account))
    for township in report.townships:
        forget(ctx, account, township)
    return (f"{filename}: drafts of {', '.join(report.townships) or 'no township'} ({report.grids} grids)"
            + (f"; {report.faces_unclaimed} face(s) in no polygon" if report.faces_unclaimed else "")
            + (f"; skipped {len(report.rejected)} feature(s)" if report.rejected else ""))


def export_file(ctx: WallContext, version: int, *, fmt: str, crs: str, township: str) -> tuple[bytes, str]:
    """A version's grids of a township as a file's bytes and name (a Shapefile zipped with its parts)."""
    with tempfile.TemporaryDirectory() as folder:
        name = f"grids-{township}-v{version}"
        path = Path(folder) / f"{name}.{fmt}"
        export_version(ctx.engine, version, path, fmt=fmt, crs=crs, township=township)
        if fmt != "shp":
            return path.read_bytes(), path.name
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as bundle:
            for part in sorted(Path(folder).glob(f"{name}.*")):
                bundle.write(part, part.name)
        return archive.getvalue(), f"{name}.zip"
