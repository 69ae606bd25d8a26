"""Writes sql/functions/*.sql from the table of the SQL API (src/pgml_plpy/sqlapi.py).

    .venv/bin/python scripts/gen_sql.py          # write the files
    .venv/bin/python scripts/gen_sql.py --check  # exit 1 when a committed file differs

The files are committed, so installing stays `psql -f sql/install.sql` (sql/install.sql includes
sql/functions/all.sql); tests/test_sqlapi.py fails when they are out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from pgml_plpy.sqlapi import AREAS, RETIRED, Routine, params  # noqa: E402

FUNCTIONS = REPO / "sql" / "functions"
COMMAND = ".venv/bin/python scripts/gen_sql.py"
HEADER = f"-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run {COMMAND}\n"
WIDTH = 110


def _comment(text: str) -> str:
    return "".join(f"-- {line}".rstrip() + "\n" for line in text.splitlines())


def _head(r: Routine) -> str:
    start = f"CREATE OR REPLACE {r.kind} pgml.{r.name}("
    if len(start) + len(r.signature) + 1 <= WIDTH:
        return f"{start}{r.signature})"
    lines = []
    for p in params(r.signature):
        text = " ".join(x for x in (p.mode if p.mode != "IN" else "", p.name, p.type) if x)
        lines.append(text + (f" DEFAULT {p.default}" if p.default is not None else ""))
    pad = " " * len(start)
    out, line = [], start
    for i, text in enumerate(lines):
        piece = text + ("," if i < len(lines) - 1 else ")")
        if line.strip() and len(line) + len(piece) + 1 > WIDTH and line != start:
            out.append(line.rstrip())
            line = pad
        line += piece + " "
    out.append(line.rstrip())
    return "\n".join(out)


def routine(r: Routine) -> str:
    attrs = [f"LANGUAGE {r.language}"]
    if r.returns is not None:
        attrs.append(r.volatility)
        if r.strict:
            attrs.append("STRICT")
    if r.security_definer:
        attrs.append("SECURITY DEFINER")
    if r.returns is not None:
        attrs.append(f"PARALLEL {r.parallel}")
        if r.cost is not None:
            attrs.append(f"COST {r.cost}")
        if r.rows is not None:
            attrs.append(f"ROWS {r.rows}")
    lines = [_head(r)]
    if r.returns is not None:
        lines.append(f"RETURNS {r.returns}")
    lines.append(" ".join(attrs))
    for name, value, *why in r.set:
        lines.append(f"SET {name} = {value}" + (f"  -- {why[0]}" if why else ""))
    code = r.code()
    if r.language == "internal":
        lines.append(f"AS '{code}';")  # the C function's symbol
    else:
        assert "$$" not in code, f"{r.name}: its body holds $$"
        lines.append(f"AS $$\n{code}\n$$;")
    summary = r.summary.replace("'", "''")
    lines.append(f"COMMENT ON {r.kind} {r.identity} IS '{summary}';")
    lines.append(f"REVOKE ALL ON {r.kind} {r.identity} FROM PUBLIC, pgml_user, pgml_admin;")
    if r.grant != "superuser":
        lines.append(f"GRANT EXECUTE ON {r.kind} {r.identity} TO {r.grant};")
    return _comment(r.notes) + "\n".join(lines) + "\n"


def render() -> dict[str, str]:
    """file name under sql/functions -> its text."""
    files = {}
    for area in AREAS:
        files[f"{area.name}.sql"] = HEADER + _comment(area.header) + "".join(
            "\n" + routine(r) for r in area.routines)
    files["all.sql"] = (HEADER + "-- Every function and procedure of schema pgml, with its grants.\n"
                        + "".join(f"\\ir {area.name}.sql\n" for area in AREAS)
                        + "\n-- Routines of earlier releases that this one has not.\n"
                        + "".join(f"DROP ROUTINE IF EXISTS {identity};\n" for identity in RETIRED))
    return files


def stale() -> list[str]:
    """The files under sql/functions that differ from the table (or should not be there)."""
    want = render()
    have = {p.name for p in FUNCTIONS.glob("*.sql")}
    return sorted(name for name in want.keys() | have
                  if name not in have or name not in want or (FUNCTIONS / name).read_text() != want[name])


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        names = stale()
        if names:
            print(f"sql/functions out of date ({', '.join(names)}): run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    FUNCTIONS.mkdir(parents=True, exist_ok=True)
    want = render()
    for path in FUNCTIONS.glob("*.sql"):
        if path.name not in want:
            path.unlink()
    for name, text in want.items():
        (FUNCTIONS / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
