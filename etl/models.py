"""Run the SQL models under `sql/` in DuckDB and publish them to `marts/<model>/`.

Each model is one `sql/<name>.sql` file with a single select; models refer to each other and to
`tracks`, `fx_rates` and `goals` by name. The dependency graph is read from the SQL with sqlglot
(its table references, less the CTEs), never listed by hand. A refresh builds every model in one
in-memory DuckDB, writes the marts aside and swaps them in, then rebuilds `warehouse.duckdb`,
all under the warehouse writer lock.
"""

from __future__ import annotations

import graphlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import build_scope

from etl.catalog import bounded, damaged_file_advice, parquet_source, quote_identifier, quote_literal, rebuild_catalog, writer_lock
from etl.write import swap_in

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
MARTS = "marts"
# The received days the marts were last built from, each with its `tracks` files: the model
# checks compare the marts with those days only, as they were (a day published or run again
# since has other files, and waits for the next refresh).
MODELLED_DAYS = ".modelled_days.json"
# DuckDB's Parquet writer holds a row group (122,880 rows by default) in memory: with hundreds of
# context columns, stg_tracks over 94k rows ran out of MEMORY_LIMIT. Row groups end at this size.
ROW_GROUP_BYTES = "32MB"
SOURCES = ("tracks",)
SEEDS = {
    "fx_rates": {"currency": "VARCHAR", "date": "DATE", "rate_to_usd": "DECIMAL(20, 14)"},
    "goals": {"name": "VARCHAR", "default_value_cents": "BIGINT"},
}


# What each seed's rows must hold beyond their types: a bad row is named in one line rather than
# skewing the models in silence (a second rate for one day was used or not at random, an empty
# rate gave NULL revenue_usd, a lower-case code matched no order).
SEED_RULES = {
    "fx_rates": (
        ("currency is null or date is null or rate_to_usd is null", "has an empty cell"),
        ("rate_to_usd <= 0", "has a rate that is not above 0"),
        ("currency <> upper(currency)", "has a currency code not in upper case"),
        ("count(*) over (partition by currency, date) > 1", "gives a second rate for one currency and date"),
    ),
    "goals": (
        ("name is null or goal_key(name) = '' or default_value_cents is null", "has an empty cell"),
        ("default_value_cents < 0", "has a negative default value"),
        ("count(*) over (partition by goal_key(name)) > 1", "repeats a goal name (ignoring case and spaces)"),
    ),
}
# What a goal's name and an event's text are compared by (`fct_conversions`, and the seed rules
# above, which must agree with it): lower case, without surrounding white space. That is every
# Unicode White_Space character: DuckDB's `\s` alone misses no-break spaces, `\v` and NEL.
GOAL_KEY_MACRO = r"""create macro goal_key(name) as
    lower(regexp_replace(name, '^[\s\v\x{85}\pZ]+|[\s\v\x{85}\pZ]+$', '', 'g'))"""


class ModelError(Exception):
    """A model that cannot run; the message names the model and what to fix."""


@dataclass(frozen=True)
class Model:
    name: str
    sql: str
    depends_on: frozenset[str]
    columns_used: frozenset[str]


def parse_model(path: Path) -> Model:
    sql = path.read_text()
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as error:
        raise ModelError(f"{path.name} is not valid DuckDB SQL: {str(error).splitlines()[0]}") from None
    tables = {
        source.name
        for scope in build_scope(tree).traverse()
        for _, source in scope.selected_sources.values()
        if isinstance(source, exp.Table)
    }
    columns = {column.name for column in tree.find_all(exp.Column)}
    return Model(path.stem, sql, frozenset(tables), frozenset(columns))


def model_names(sql_dir: Path = SQL_DIR) -> list[str]:
    return sorted(path.stem for path in sql_dir.glob("*.sql"))


def load_models(sql_dir: Path = SQL_DIR) -> dict[str, Model]:
    if not any(sql_dir.glob("*.sql")):
        # `pip install .` copies etl/ and dagster_project/ but not sql/: say so, rather than
        # let Dagster fail later on an asset key no model defined.
        raise ModelError(
            f"no SQL models (*.sql) in {sql_dir}: trackhouse reads them from its checkout, so install it "
            "editable there (`make install`, or `pip install -e .`)"
        )
    return {name: parse_model(sql_dir / f"{name}.sql") for name in model_names(sql_dir)}


def build_order(models: dict[str, Model]) -> list[str]:
    """Models in dependency order; an unknown table or a cycle is a one-line ModelError."""
    known = set(models) | set(SOURCES) | set(SEEDS)
    for model in models.values():
        unknown = model.depends_on - known
        if unknown:
            raise ModelError(f"{model.name}.sql reads {', '.join(sorted(unknown))}: not a model, source or seed")
    sorter = graphlib.TopologicalSorter({m.name: m.depends_on & set(models) for m in models.values()})
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as error:
        raise ModelError(f"models depend on each other in a cycle: {' → '.join(error.args[1])}") from None


def damaged_or(error: duckdb.Error, warehouse: Path, what: str) -> Exception:
    """A model run's DuckDB error as one line, saying what rewrites the warehouse file it could not
    read (a day's rerun): the error itself only named the file. Any other error is the model's."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    advice = damaged_file_advice(warehouse, error)
    return ModelError(f"{what} failed: {first_line}" + (f": {advice}" if advice else ""))


def create_sources(connection: duckdb.DuckDBPyConnection, warehouse: Path, seeds_dir: Path, models: dict[str, Model]) -> None:
    """`tracks` over the Parquet (with any `context_…` column a model uses and no day has yet, as
    NULL) and the seeds as typed tables."""
    source = parquet_source(warehouse / "tracks")
    if source is None:
        raise ModelError(f"no tracks under {warehouse}: load some days first with `etl run`")
    try:
        present = {row[0] for row in connection.execute(f"describe select * from {source}").fetchall()}
    except duckdb.InterruptException:
        raise
    except duckdb.Error as error:
        raise damaged_or(error, warehouse, "reading tracks") from None
    used = set().union(*(m.columns_used for m in models.values()))
    missing = sorted(c for c in used if c.startswith("context_") and c not in present)
    extra = "".join(f", NULL::VARCHAR as {quote_identifier(c)}" for c in missing)
    connection.execute(f"create view tracks as select *{extra} from {source}")
    for seed, columns in SEEDS.items():
        path = seeds_dir / f"{seed}.csv"
        if not path.exists():
            raise ModelError(f"seed {path} is missing: add it with a header row {','.join(columns)}")
        expected = ", ".join(f"{n} {t}" for n, t in columns.items())
        try:
            connection.execute(f"create table {seed} as select * from {read_seed(path, columns)}")
        except duckdb.Error as error:
            detail = " ".join(line.strip() for line in str(error).splitlines()[:3] if line.strip())
            raise ModelError(f"seed {path}: {detail} (columns must read as {expected}: fix that row)") from None
        # DuckDB rounds a decimal with more places than its column in silence (a rate of
        # 0.000061728395 in DECIMAL(18, 10) lost 5 cents on a billion IDR): refuse it instead.
        text = read_seed(path, dict.fromkeys(columns, "VARCHAR"))
        checks = [
            (text, f"cast({quote_identifier(n)} as DECIMAL(38, 30)) <> cast({quote_identifier(n)} as {kind})", f"has more decimals in {n} than {kind} keeps")
            for n, kind in columns.items() if kind.startswith("DECIMAL")
        ] + [(seed, condition, problem) for condition, problem in SEED_RULES.get(seed, ())]
        for source, condition, problem in checks:
            broken = connection.execute(
                f"select * exclude (broken) from (select *, {condition} as broken from {source}) where broken limit 1"
            ).fetchone()
            if broken:
                row = ",".join(as_written(value) for value in broken)
                raise ModelError(f"seed {path}: the row {row} {problem}: fix or remove it, then run `etl models`")


def as_written(value: Any) -> str:
    """A seed cell as a CSV would hold it: `1.2`, not DECIMAL's `1.20000000000000`."""
    if value is None:
        return ""
    return f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)


def read_seed(path: Path, columns: dict[str, str]) -> str:
    types = "{" + ", ".join(f"{quote_literal(n)}: {quote_literal(t)}" for n, t in columns.items()) + "}"
    return f"read_csv({quote_literal(str(path))}, header = true, columns = {types})"


def bounded_connection(spill_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that spills to disk past MEMORY_LIMIT, so a refresh's memory does not
    grow with the warehouse."""
    connection = duckdb.connect(config={**bounded(spill_dir), "preserve_insertion_order": False})
    connection.execute("set enable_progress_bar = false")
    connection.execute(GOAL_KEY_MACRO)
    return connection


def refresh_models(warehouse: Path, sql_dir: Path = SQL_DIR, seeds_dir: Path | None = None) -> dict[str, int]:
    """Rebuild every model from all partitions; return rows per model. Readers keep the old marts
    until each new one is swapped in whole.

    Each model streams straight to Parquet (COPY), then is read back as a view by the models that
    depend on it: nothing is held in memory as a table.
    """
    models = load_models(sql_dir)
    order = build_order(models)
    run_token = uuid.uuid4().hex[:12]  # in file names too: see PartitionWriter.write
    staging = warehouse / MARTS / f".staging-{run_token}"
    rows: dict[str, int] = {}
    with writer_lock(warehouse):
        # Refreshes hold the writer lock, so any other staging folder is a killed refresh's.
        for debris in (warehouse / MARTS).glob(".staging-*"):
            shutil.rmtree(debris, ignore_errors=True)
        staging.mkdir(parents=True)
        connection = bounded_connection(staging / ".spill")
        try:
            create_sources(connection, warehouse, seeds_dir or sql_dir / "seeds", models)
            (staging / MODELLED_DAYS).write_text(json.dumps(tracks_parts(warehouse)))
            for name in order:
                (staging / name).mkdir()
                target = quote_literal(str(staging / name / f"{name}-{run_token}.parquet"))
                try:
                    connection.execute(f"copy ({models[name].sql}) to {target} (format parquet, compression zstd, row_group_size_bytes '{ROW_GROUP_BYTES}')")
                except duckdb.InterruptException:
                    raise  # Ctrl-C, not a model to fix
                except duckdb.Error as error:
                    raise damaged_or(error, warehouse, f"{name}.sql") from None
                connection.execute(f"create view {quote_identifier(name)} as select * from read_parquet({target})")
                rows[name] = connection.execute(f"select count(*) from {quote_identifier(name)}").fetchone()[0]
            for name in order:
                swap_in(staging / name, warehouse / MARTS / name)
            os.replace(staging / MODELLED_DAYS, warehouse / MODELLED_DAYS)
        finally:
            connection.close()
            shutil.rmtree(staging, ignore_errors=True)
        rebuild_catalog(warehouse)
    return rows


def tracks_parts(warehouse: Path) -> dict[str, list[str]]:
    """Each received day's `tracks` files (named after the run that wrote them)."""
    return {
        folder.name.partition("=")[2]: sorted(part.name for part in folder.glob("*.parquet"))
        for folder in sorted((warehouse / "tracks").glob("received_date=*"))
    }


def modelled_days(warehouse: Path) -> tuple[list[str], list[str]] | None:
    """The received days the last refresh read: those still as it read them, and those run again
    since; None before the first refresh."""
    path = warehouse / MODELLED_DAYS
    if not path.exists():
        return None
    current, read = tracks_parts(warehouse), json.loads(path.read_text())
    return [day for day in read if current.get(day) == read[day]], [day for day in read if current.get(day) != read[day]]
