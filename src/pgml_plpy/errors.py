"""Errors that reach SQL as one readable line, a SQLSTATE and, where useful, a hint.

Everything raised towards PostgreSQL goes through `to_pgml_error`, so a caller never
sees a bare Python traceback as the only explanation.
"""

from __future__ import annotations

import errno
import re


class PgmlError(Exception):
    """An error with the SQLSTATE PostgreSQL should report."""

    sqlstate = "38000"  # external_routine_exception

    def __init__(self, message: str, *, hint: str | None = None, detail: str | None = None,
                 sqlstate: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail
        if sqlstate:
            self.sqlstate = sqlstate


# One class per condition, named as psycopg names PostgreSQL's (psycopg.errors): raise these, never a
# bare SQLSTATE string.


class DataException(PgmlError):
    sqlstate = "22000"  # data_exception: vectors of different dimensions, or not one-dimensional


class InvalidParameter(PgmlError):
    sqlstate = "22023"  # invalid_parameter_value


class InvalidSetting(InvalidParameter):
    """A pgml.settings row with an unknown name or a value of the wrong shape."""


class NullValue(PgmlError):
    sqlstate = "22004"  # null_value_not_allowed


class InvalidJson(PgmlError):
    sqlstate = "22P02"  # invalid_text_representation


class UndefinedFile(PgmlError):
    sqlstate = "58P01"  # undefined_file: a file, folder or cached dataset the server does not have


class ModelNotFound(UndefinedFile):
    """A model folder, hub id or stored model that is not there."""


class IoError(PgmlError):
    sqlstate = "58030"  # io_error: a folder the server's OS user cannot write


class NotSupported(PgmlError):
    sqlstate = "0A000"  # feature_not_supported


class PermissionDenied(PgmlError):
    sqlstate = "42501"  # insufficient_privilege


class InvalidAuthorizationSpecification(PgmlError):
    sqlstate = "28000"  # invalid_authorization_specification: a runtime refused the route's credentials


class UndefinedColumn(PgmlError):
    sqlstate = "42703"  # undefined_column


class UndefinedObject(PgmlError):
    sqlstate = "42704"  # undefined_object: no such model or project


class WrongObjectType(PgmlError):
    sqlstate = "42809"  # wrong_object_type: not a table (or view)


class DuplicateColumn(PgmlError):
    sqlstate = "42701"  # duplicate_column: a vectorizer's key named like a column the embeddings table has


class DuplicateObject(PgmlError):
    sqlstate = "42710"  # duplicate_object: a vectorizer of that name exists


class DatatypeMismatch(PgmlError):
    sqlstate = "42804"  # datatype_mismatch: a column of the wrong type


class DuplicateTable(PgmlError):
    sqlstate = "42P07"  # duplicate_table


class ObjectNotInPrerequisiteState(PgmlError):
    sqlstate = "55000"  # object_not_in_prerequisite_state


class InstallError(ObjectNotInPrerequisiteState):
    """The venv, the SQL functions or the roles are not what this release needs."""


class InvalidTransactionTermination(PgmlError):
    sqlstate = "2D000"  # invalid_transaction_termination: a procedure that commits, called in a transaction block


class LimitExceeded(PgmlError):
    sqlstate = "54000"  # program_limit_exceeded


class DiskFull(PgmlError):
    sqlstate = "53100"  # disk_full


class OutOfMemory(PgmlError):
    sqlstate = "53200"  # out_of_memory


class DataCorrupted(PgmlError):
    sqlstate = "XX001"  # data_corrupted: stored model files that fail their checks


class Cancelled(PgmlError):
    """The caller went away or cancelled: the work stops (a runtime's request whose client disconnected)."""

    sqlstate = "57014"  # query_canceled


_MAX_MESSAGE = 400


def one_line(text: str) -> str:
    """Collapse whitespace so that a library's multi-line message fits one line."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text


def to_pgml_error(exc: BaseException, doing: str) -> PgmlError:
    """Translate an exception raised by a library while `doing` something into a PgmlError.

    ValueError / TypeError / KeyError from a model call almost always mean arguments the
    model or tokenizer rejected, so they are reported as invalid parameters.
    """
    if isinstance(exc, PgmlError):
        return exc
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        # PostgreSQL's own error met inside the work (plpy.SPIError: a cancel, a timeout, a
        # failed query): it keeps its SQLSTATE, message, detail and hint (SPIError carries
        # them in spidata: sqlstate, detail, hint, ...).
        spidata = getattr(exc, "spidata", None) or ()
        detail = spidata[1] if len(spidata) > 2 else getattr(exc, "detail", None)
        hint = spidata[2] if len(spidata) > 2 else getattr(exc, "hint", None)
        return PgmlError(one_line(str(exc)), sqlstate=sqlstate, detail=detail, hint=hint)
    full = str(exc) or type(exc).__name__
    detail = full if len(full) > _MAX_MESSAGE or "\n" in full.strip() else None
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{doing}: disk full: {one_line(full)}", detail=detail,
                        hint="Free space on the database server's disk; SELECT * FROM pgml.validate() shows "
                             "the folders pgml uses.")
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return IoError(f"{doing}: {one_line(full)}", detail=detail,
                       hint="The server's OS user must be able to write there; SELECT * FROM pgml.validate() "
                            "checks the folders pgml uses.")
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return OutOfMemory(f"{doing}: out of memory: {one_line(full)}",
                           hint="Use a smaller model, a smaller batch_size, or fewer inputs per call.",
                           detail=detail)
    if isinstance(exc, (ValueError, TypeError, KeyError)):
        return InvalidParameter(f"{doing}: {one_line(full)}", detail=detail)
    return PgmlError(f"{doing}: {type(exc).__name__}: {one_line(full)}", detail=detail)
