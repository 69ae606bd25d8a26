"""pgml_plpy: Hugging Face models inside PostgreSQL through plpython3u.

Importing the package is cheap on purpose: torch and transformers are imported
only when a function first needs them, so that `pgml.version()` and the first
call of a new connection do not pay for what they do not use.
"""

__version__ = "0.2.0"
