"""pgml.tune: fine-tuning Hugging Face models on a table, a model registry in the database.

Modules, one concern each:

- params.py     the hyperparams JSON: training_args, dataset_args, loader options, task extras
- data.py       the relation: regclass, column checks, a server-side cursor, NULLs skipped, the split
- metrics.py    the metrics per task, from offline packages (scikit-learn, seqeval, rouge-score, sacrebleu)
- tasks/        per task: columns, type checks, tokenization, the model class, evaluation
- training.py   TrainingArguments, the Trainer and its progress callback, LoRA through peft, saving
- registry/     pgml.projects / snapshots / models / deployments / files / logs: runs, files, serving a
                deployed model for pgml.transform, deploying
- signing.py    the MAC of a tuned model's files, keyed with the server's key
- run.py        one tune in five stages, as a function (one transaction) or as a procedure (commits as it goes)
"""
