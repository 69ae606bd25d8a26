"""The model registry in the database, and serving a deployed model by its project's name.

Tables (sql/schema/tune.sql): pgml.projects (a name and its task), pgml.snapshots (what a tune read),
pgml.models (one tune each: status, base model, hyperparams, metrics, progress, timings),
pgml.deployments (the latest row per project is the deployed model), pgml.files (a model's files as
BYTEA parts with a SHA-256 per part) and pgml.logs (the training logs).

Roles read these tables; nobody but their owner (the installing superuser) writes them. pgml.tune
writes them through the SECURITY DEFINER functions pgml._registry_* (sql/functions/tune.sql), which
check what they touch: a run's rows only from the backend running it, deployments only of successful
models with files.

- runs.py         projects, snapshots and the runs of pgml.tune: registered, progress, finished or failed
- files.py        a model's files into pgml.files, and back into a local folder (checked part by part)
- serving.py      a project's deployed model for pgml.transform, once its MAC (signing.py) shows that the
                  server's own tuning wrote it
- deployments.py  pgml.deploy: by model, or by strategy

Every function takes the database (db.Database) first.
"""
