"""The logic over the database without PostgreSQL: embed_table, the tuning registry and load_dataset's
writing, each against a fake Database (tests/fakedb.py). The same paths run for real in test_embed.py,
test_tune.py and test_load_dataset.py."""

import hashlib
import inspect
import json
import re

import pytest
from fakedb import FakeDatabase

from pgml_plpy import datasets_loader as dl
from pgml_plpy import db, embed_table, errors
from pgml_plpy.datasets_loader import sqltypes, writing
from pgml_plpy.db import SqlError
from pgml_plpy.server import PlpyDatabase
from pgml_plpy.settings import Settings
from pgml_plpy.tuning import data, signing
from pgml_plpy.tuning.registry import deployments, runs, serving
from pgml_plpy.tuning.registry import files as stored


def public(cls) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, callable) if not name.startswith("_")}


def test_the_fake_and_the_plpy_database_are_the_interface():
    assert public(PlpyDatabase) == public(db.Database) == public(FakeDatabase) - {"on", "ran"}


# ------------------------------------------------------------------ embed_table


def table_db(relkind="r", columns=None):
    """A fake database holding public."Docs" (oid 7) with the given columns (name -> (format_type, typname,
    typcategory))."""
    columns = {"body": ("text", "text", "S")} if columns is None else columns
    fake = FakeDatabase()
    fake.on("FROM pg_catalog.pg_class c", [{"name": 'public."Docs"', "relkind": relkind}])
    fake.on("FROM pg_catalog.pg_attribute a", lambda params: [
        {"attname": n, "type": t, "typname": tn, "typcategory": cat}
        for n, (t, tn, cat) in columns.items() if n in params[1]])
    return fake


@pytest.fixture
def encode(monkeypatch):
    """embed_table's encoder replaced: each text becomes the literal '{<len>}' in the column's brackets."""
    seen = {}

    def encoder(transformer, kwargs, settings, brackets):
        seen["brackets"] = brackets
        return lambda texts: [brackets[0] + str(len(t)) + brackets[1] for t in texts]

    monkeypatch.setattr(embed_table, "encoder", encoder)
    return seen


def run(fake, text="body", embedding="Emb", batch_size=2):
    embed_table.run(fake, 7, text, embedding, "some/model", None, batch_size, Settings())


@pytest.mark.parametrize("relkind, columns, error, fragment", [
    ("v", None, errors.WrongObjectType, 'public."Docs" is not a table'),
    ("r", {}, errors.UndefinedColumn, 'column body of public."Docs" does not exist'),
    ("r", {"body": ("integer", "int4", "N")}, errors.DatatypeMismatch, "is integer, not text"),
    ("r", {"body": ("text", "text", "S"), "Emb": ("jsonb", "jsonb", "U")}, errors.DatatypeMismatch,
     "is jsonb, not real[] or vector"),
])
def test_embed_table_checks_the_table_first(encode, relkind, columns, error, fragment):
    fake = table_db(relkind, columns)
    with pytest.raises(error, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        run(fake)
    assert fake.pinned and not fake.commits and "brackets" not in encode


def test_embed_table_adds_the_column_and_commits_each_batch(encode):
    fake = table_db()
    batches = [[{"ctid": "(0,1)", "body": "a"}, {"ctid": "(0,2)", "body": "bb"}], [{"ctid": "(0,3)", "body": "ccc"}]]
    fake.on("AS todo", [{"todo": 3, "nulls": 1}])
    fake.on("ORDER BY ctid LIMIT $2", lambda params: batches.pop(0) if batches else [])
    run(fake)
    assert fake.ran('ALTER TABLE public."Docs" ADD COLUMN "Emb" real[]') == [[]]
    assert encode["brackets"] == "{}"
    # resumes after the last row of each batch; each batch's vectors written by ctid, then committed
    assert fake.ran("ORDER BY ctid LIMIT $2") == [["(0,0)", 2], ["(0,2)", 2], ["(0,3)", 2]]
    assert fake.ran('UPDATE public."Docs" AS t SET "Emb" = u.e::real[]') == [
        [["(0,1)", "(0,2)"], ["{1}", "{2}"]], [["(0,3)"], ["{3}"]]]
    assert fake.commits == ["pgml.embed_table commits after each batch"] * 2
    assert fake.notices[0] == 'pgml.embed_table: 3 rows of public."Docs" to embed with some/model, 1 with NULL ' \
                              'body skipped'
    assert fake.notices[-1].startswith("pgml.embed_table: done, 3 rows embedded")


def test_embed_table_writes_pgvector_columns_in_their_own_form(encode):
    fake = table_db(columns={"body": ("text", "text", "S"), "Emb": ("vector(3)", "vector", "U")})
    fake.on("AS todo", [{"todo": 0, "nulls": 0}])
    run(fake)
    assert encode["brackets"] == "[]" and not fake.ran("ALTER TABLE")
    assert not fake.commits


@pytest.mark.parametrize("batch_size", [0, -1, None])
def test_embed_table_batch_size(encode, batch_size):
    with pytest.raises(errors.InvalidParameter, match="batch_size"):
        run(table_db(), batch_size=batch_size)


# ------------------------------------------------------------------ the tuning registry

def models_(*pairs):
    return [{"id": i, "algorithm": "transformers", "metrics": {"f1": f1}} for i, f1 in pairs]


def test_deployment_strategies_choose():
    ms = models_((1, 0.7), (2, 0.9), (3, 0.8))
    task = "text-classification"
    assert deployments.choose("most_recent", task, ms, None, None)["id"] == 3
    assert deployments.choose("best_score", task, ms, None, None)["id"] == 2
    assert deployments.choose("new_score", task, ms, {"id": 1, "metrics": {"f1": 0.7}}, None)["id"] == 3
    assert deployments.choose("new_score", task, ms, {"id": 2, "metrics": {"f1": 0.9}}, None) is None
    assert deployments.choose("new_score", task, ms, {"id": 3, "metrics": {"f1": 0.8}}, None) is None
    assert deployments.choose("rollback", task, ms, {"id": 3}, 1)["id"] == 1
    assert deployments.choose("best_score", task, [], None, None) is None
    with pytest.raises(errors.InvalidParameter, match="unknown strategy"):
        deployments.choose("worst_score", task, ms, None, None)


def registry_db(models=((1, 0.7), (2, 0.9)), deployed=None, earlier=None):
    fake = FakeDatabase()
    fake.on("FROM pgml.projects WHERE name = $1",
            lambda params: [{"id": 5, "name": params[0], "task": "text-classification"}] if params[0] == "p" else [])
    fake.on("FROM pgml.models WHERE project_id = $1 AND status = 'successful'",
            [{"id": i, "algorithm": "transformers", "metrics": f'{{"f1": {f1}}}'} for i, f1 in models])
    fake.on("ORDER BY d.id DESC LIMIT 1", [{"id": deployed, "metrics": "{}"}] if deployed else [])
    fake.on("d.model_id <> $2", [{"model_id": earlier}] if earlier else [])
    fake.on("pgml._registry_deploy", lambda params: [{"project": "p", "algorithm": "transformers"}])
    return fake


def test_deploy_by_strategy_locks_then_deploys_the_chosen_model():
    fake = registry_db()
    assert deployments.deploy_strategy(fake, "p", "best_score", None) == [("p", "best_score", "transformers")]
    assert fake.ran("pgml._registry_lock") == [[5]]
    assert fake.ran("pgml._registry_deploy") == [[2, "best_score"]]
    statements = [sql for sql, _ in fake.statements]
    assert statements.index(next(s for s in statements if "_registry_lock" in s)) < statements.index(
        next(s for s in statements if "status = 'successful'" in s))


def test_deploy_by_strategy_says_what_it_did_not_do():
    fake = registry_db(models=())
    assert deployments.deploy_strategy(fake, "p", "most_recent", None) == []
    assert fake.notices == ["pgml.deploy: no model of project p fits strategy most_recent"] and not fake.ran(
        "_registry_deploy")
    fake = registry_db(deployed=2)
    deployments.deploy_strategy(fake, "p", "best_score", None)
    assert fake.notices == ["pgml.deploy: model 2 is already deployed"]


@pytest.mark.parametrize("project, strategy, error, fragment", [
    ("q", "best_score", errors.UndefinedObject, "there is no project q"),
    ("p", "rollback", errors.ObjectNotInPrerequisiteState, "no deployed model to roll back"),
    ("p", "specific", errors.InvalidParameter, "call pgml.deploy(model_id)"),
    (None, "best_score", errors.InvalidParameter, "must not be NULL"),
])
def test_deploy_by_strategy_errors(project, strategy, error, fragment):
    fake = registry_db()
    with pytest.raises(error, match=re.escape(fragment)):
        deployments.deploy_strategy(fake, project, strategy, None)
    assert not fake.ran("_registry_deploy")


def test_rollback_goes_to_the_deployment_before():
    fake = registry_db(models=((1, 0.7), (2, 0.9)), deployed=2, earlier=1)
    assert deployments.deploy_strategy(fake, "p", "rollback", None) == [("p", "rollback", "transformers")]
    assert fake.ran("pgml._registry_deploy") == [[1, "rollback"]]
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="no earlier deployment"):
        deployments.deploy_strategy(registry_db(deployed=2), "p", "rollback", None)


def test_files_are_stored_in_parts_with_their_checksums(tmp_path, monkeypatch):
    monkeypatch.setattr(stored, "PART_SIZE", 4)
    (tmp_path / "model.safetensors").write_bytes(b"abcdefghij")
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "four.txt").write_bytes(b"abcd")
    fake = FakeDatabase()
    written = stored.store_files(fake, 9, str(tmp_path), ["model.safetensors", "empty.json", "four.txt"])
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    assert written == [["empty.json", [sha(b"")], 0], ["four.txt", [sha(b"abcd")], 4],
                       ["model.safetensors", [sha(b"abcd"), sha(b"efgh"), sha(b"ij")], 10]]
    assert [p[1:4] for p in fake.ran("pgml._registry_file")] == [
        ["empty.json", 0, sha(b"")], ["four.txt", 0, sha(b"abcd")], ["model.safetensors", 0, sha(b"abcd")],
        ["model.safetensors", 1, sha(b"efgh")], ["model.safetensors", 2, sha(b"ij")]]
    with pytest.raises(errors.DataCorrupted, match="pickle"):
        stored.store_files(fake, 9, str(tmp_path), ["pytorch_model.bin"])


def files_db(parts: dict[str, list[bytes]]):
    """A fake pgml.files holding model 9's files as parts."""
    fake = FakeDatabase()
    fake.on("FROM pgml.files WHERE model_id = $1 AND path = $2", lambda params: [
        {"part": i, "sha256": hashlib.sha256(data).hexdigest(), "data": data}
        for i, data in enumerate(parts[params[1]])])
    manifest = [[path, [hashlib.sha256(d).hexdigest() for d in ds], sum(map(len, ds))]
                for path, ds in sorted(parts.items())]
    return fake, manifest


def test_restore_checks_every_part_and_reuses_a_valid_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(stored, "PART_SIZE", 3)
    settings = Settings(models_cache=str(tmp_path))
    fake, manifest = files_db({"config.json": [b"{}"], "model.safetensors": [b"abc", b"def"]})
    folder = stored.restore(fake, 9, manifest, settings)
    assert (folder / "model.safetensors").read_bytes() == b"abcdef" and (folder / "config.json").read_bytes() == b"{}"
    assert all(c.closed for c in fake.cursors)
    again = FakeDatabase()
    assert stored.restore(again, 9, manifest, settings) == folder and not again.statements
    (folder / "model.safetensors").write_bytes(b"abcdeX")  # a damaged copy is restored again
    assert (stored.restore(fake, 9, manifest, settings) / "model.safetensors").read_bytes() == b"abcdef"


def test_restore_refuses_a_damaged_part(tmp_path):
    fake, manifest = files_db({"model.safetensors": [b"abc"]})
    manifest[0][1] = [hashlib.sha256(b"abc").hexdigest()]
    fake.on("FROM pgml.files WHERE model_id = $1 AND path = $2",
            [{"part": 0, "sha256": hashlib.sha256(b"abc").hexdigest(), "data": b"abX"}])
    with pytest.raises(errors.DataCorrupted, match="part 0 of model.safetensors does not match its SHA-256"):
        stored.restore(fake, 9, manifest, Settings(models_cache=str(tmp_path)))
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left


def test_read_part_for_the_shared_runtime(tmp_path):
    """One part as the shared runtime asks for it: checked, or one clear error; the runtime's folder is
    built from the parts it holds and checked like a restored one."""
    fake, manifest = files_db({"model.safetensors": [b"abc"]})
    fake.on("AND part = $3", lambda params: [{"sha256": hashlib.sha256(b"abc").hexdigest(), "data": b"abc"}]
            if params[2] == 0 else [])
    assert stored.read_part(fake, 9, "model.safetensors", 0) == b"abc"
    with pytest.raises(errors.ModelNotFound, match="has no part 1 of model.safetensors"):
        stored.read_part(fake, 9, "model.safetensors", 1)
    fake.on("AND part = $3", [{"sha256": hashlib.sha256(b"abc").hexdigest(), "data": b"abX"}])
    with pytest.raises(errors.DataCorrupted, match="part 0 of model.safetensors does not match"):
        stored.read_part(fake, 9, "model.safetensors", 0)
    folder = stored.materialize(manifest, tmp_path, lambda path, fh: fh.write(b"abc"))
    assert stored.restored(manifest, tmp_path) == folder and (folder / "model.safetensors").read_bytes() == b"abc"
    (tmp_path / "other").mkdir()
    with pytest.raises(errors.IoError, match="did not restore intact"):
        stored.materialize(manifest, tmp_path / "other", lambda path, fh: fh.write(b"abX"))
    assert list((tmp_path / "other").iterdir()) == []  # nothing half-written is left


def test_serving_a_project(tmp_path, monkeypatch):
    key = b"k" * 32
    monkeypatch.setattr(signing, "load_key", lambda: key)
    fake, manifest = files_db({"model.safetensors": [b"weights"]})
    row = {"name": "p", "task": "text-classification", "model_id": 9, "base_model": "base", "lora": False,
           "hyperparams": "{}", "files_mac": None}
    fake.on("FROM pgml.projects p LEFT JOIN LATERAL", lambda params: [row] if params[0] == "p" else [])
    fake.on("array_agg(sha256 ORDER BY part)", [{"path": p, "parts": ps, "size": n} for p, ps, n in manifest])
    settings = Settings(models_cache=str(tmp_path))
    assert serving.deployed(fake, "not-a-project", settings) is None
    assert serving.deployed(fake, "p", settings).key == "p@9"
    with pytest.raises(errors.InstallError, match="model 9 is not signed"):
        serving.deployed(fake, "p", settings).folder()
    row["files_mac"] = "0" * 64
    with pytest.raises(errors.DataCorrupted, match="MAC does not match"):
        serving.deployed(fake, "p", settings).folder()
    row["files_mac"] = signing.sign(key, 9, "base", False, None, manifest)
    folder = serving.deployed(fake, "p", settings).folder()
    assert open(folder + "/model.safetensors", "rb").read() == b"weights"
    row["model_id"] = None
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="project p has no deployed model"):
        serving.deployed(fake, "p", settings)


def test_a_materialized_snapshot_is_made_through_create_table():
    fake = FakeDatabase()
    fake.on("pgml._registry_snapshot", [{"id": 4}])
    fake.on("pgml._create_table", lambda params: [{"name": "pgml." + params[0]}])
    rel = data.Relation(7, 'public."My data"', "r", {
        "body": data.Column("body", "text", "text", "S", None, None, None),
        "label": data.Column("label", "integer", "int4", "N", None, None, None)})
    assert runs.create_snapshot(fake, rel, "label", 0.25, "random", {"text": "body"}, {"rows": float("nan")},
                                True) == (4, "pgml.snapshot_4")
    snapshot = fake.ran("pgml._registry_snapshot")[0]
    assert snapshot[:5] == ['public."My data"', ["label"], 0.25, "random", True]
    assert json.loads(snapshot[6]) == {"rows": None}  # NaN, which JSONB cannot hold, as null
    assert fake.ran("pgml._create_table") == [["snapshot_4", ["body", "label"], ["text", "integer"]]]
    assert fake.ran('INSERT INTO pgml.snapshot_4 SELECT * FROM public."My data"') == [[]]
    assert fake.ran("COMMENT ON TABLE pgml.snapshot_4 IS 'pgml.tune: snapshot 4 of public.\"My data\"'") == [[]]


# ------------------------------------------------------------------ load_dataset's writing


def privileges_db(**have):
    fake = FakeDatabase()
    fake.on("pg_read_server_files", [{"superuser": False, "read_files": False, "write_files": False, "role": "ann",
                                      **have}])
    return fake


def test_server_files_need_the_servers_file_roles():
    with pytest.raises(errors.PermissionDenied, match="pg_read_server_files may load files"):
        writing.check_privileges(privileges_db(), dl.plan("/srv/x.csv"))
    with pytest.raises(errors.PermissionDenied, match="pg_write_server_files may choose a cache_dir"):
        writing.check_privileges(privileges_db(), dl.plan("acme/x", kwargs={"cache_dir": "/tmp/c"}))
    writing.check_privileges(privileges_db(read_files=True), dl.plan("/srv/x.csv"))
    writing.check_privileges(privileges_db(), dl.plan("acme/x"))


def dataset():
    import datasets

    return datasets.Dataset.from_dict(
        {"text": ["a", "b", None], "label": [0, 1, 1]},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["neg", "pos"])}))


def test_a_table_load_dataset_did_not_make_is_left_alone():
    fake = FakeDatabase().on("obj_description(c.oid, 'pg_class')", [{"kind": "r", "comment": "mine"}])
    part = dataset()
    with pytest.raises(errors.DuplicateTable, match="not made by pgml.load_dataset"):
        writing.write(fake, dl.plan("acme/x"), "acme/x", [part], sqltypes.columns_of([part]))
    assert not fake.ran("DROP TABLE") and not fake.ran("_create_table")


def test_a_table_that_cannot_be_replaced_keeps_the_servers_reason():
    fake = FakeDatabase().on("obj_description(c.oid, 'pg_class')", [{"kind": "r", "comment": "pgml.load_dataset: x"}])

    def refuse(params):
        raise SqlError("cannot drop table pgml.x because other objects depend on it", "2BP01",
                       "view v depends on table pgml.x")

    fake.on("DROP TABLE", refuse)
    part = dataset()
    with pytest.raises(errors.PgmlError) as info:
        writing.write(fake, dl.plan("acme/x"), "acme/x", [part], sqltypes.columns_of([part]))
    assert info.value.sqlstate == "2BP01" and info.value.message == (
        "pgml.acme/x cannot be replaced: view v depends on table pgml.x")
    assert info.value.hint.startswith("Drop what depends on it first")


def test_rows_go_in_as_one_array_per_column():
    fake = FakeDatabase().on("pgml._create_table", lambda params: [{"name": "pgml." + params[0]}])
    part = dataset()
    p = dl.plan("acme/x", limit=2, kwargs={"table_name": "Reviews"})
    assert writing.write(fake, p, "acme/x", [part], sqltypes.columns_of([part])) == 2
    assert fake.ran("pgml._create_table") == [["Reviews", ["text", "label"], ["text", "integer"]]]
    assert fake.ran("""COMMENT ON TABLE pgml."Reviews" IS 'pgml.load_dataset: acme/x, limit 2'""") == [[]]
    assert fake.ran("""COMMENT ON COLUMN pgml."Reviews".label IS '{"class_label": ["neg", "pos"]}'""") == [[]]
    assert fake.ran('INSERT INTO pgml."Reviews" (text, label) SELECT * FROM unnest($1, $2)') == [
        [["a", "b"], [0, 1]]]


def test_load_dataset_from_a_file(tmp_path):
    csv = tmp_path / "people.csv"
    csv.write_text("name,age\nann,3\nbob,\n")
    fake = privileges_db(superuser=True).on("pgml._create_table", lambda params: [{"name": "pgml." + params[0]}])
    assert dl.load_dataset(fake, str(csv), None, None, None, settings=Settings()) == [("pgml.people", 2)]
    assert fake.ran("pgml._create_table") == [["people", ["name", "age"], ["text", "double precision"]]]
    assert fake.ran("INSERT INTO pgml.people") == [[["ann", "bob"], [3.0, None]]]
