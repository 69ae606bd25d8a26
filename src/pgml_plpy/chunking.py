"""pgml.chunk: split a document into chunks with LangChain's text splitters.

PostgresML's pgml.chunk built LangChain splitters by name with the kwargs as their
constructor arguments and returned `split_text(text)`; this does the same with
`langchain-text-splitters` (the splitters without the rest of LangChain), so a
document gives the same chunks as it did there. The kwargs are checked first, so a
typo or a wrong type is one clear error rather than a TypeError from a constructor.
"""

from __future__ import annotations

import json
import logging

from .errors import InvalidParameter, NotSupported, NullValue, one_line
from .inputs import json_kind, parse_args

# kwargs every splitter accepts (langchain_text_splitters.TextSplitter.__init__),
# except length_function, which is a Python callable and cannot come from JSON.
_COMMON = ("chunk_size", "chunk_overlap", "keep_separator", "strip_whitespace", "add_start_index")

# name -> (class in langchain_text_splitters, kwargs it takes besides _COMMON, extra package it needs)
SPLITTERS = {
    "recursive_character": ("RecursiveCharacterTextSplitter", ("separators", "is_separator_regex"), None),
    "character": ("CharacterTextSplitter", ("separator", "is_separator_regex"), None),
    "markdown": ("MarkdownTextSplitter", (), None),
    "python": ("PythonCodeTextSplitter", (), None),
    "latex": ("LatexTextSplitter", (), None),
    # these two need a package pgml_plpy does not install, and downloaded data
    "nltk": ("NLTKTextSplitter", ("separator", "language", "use_span_tokenize"), "nltk"),
    "spacy": ("SpacyTextSplitter", ("separator", "pipeline", "max_length"), "spacy"),
}

_NEEDS_HINT = {
    "nltk": ("Install nltk into the venv and, as the database server's OS user, run "
             "python -m nltk.downloader punkt_tab (the server never downloads it); "
             "or use the recursive_character splitter."),
    "spacy": ("Install spacy into the venv (and the pipeline package, e.g. en_core_web_sm), or pass "
              '{"pipeline": "sentencizer"}, which needs no model; or use the recursive_character splitter.'),
}



def _int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(f"{name} must be an integer, not {json_kind(value)} {json.dumps(value)}",
                               hint=f'Example: {{"{name}": {max(minimum, 1) * 500}}}')
    if value < minimum:
        raise InvalidParameter(f"{name} must be at least {minimum}, not {value}")
    return value


def _bool(name, value):
    if not isinstance(value, bool):
        raise InvalidParameter(f"{name} must be true or false, not {json_kind(value)} {json.dumps(value)}")
    return value


def _str(name, value, *, empty_ok=True):
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string, not {json_kind(value)} {json.dumps(value)}")
    if not empty_ok and not value:
        raise InvalidParameter(f"{name} must not be empty")
    return value


def _check_value(name: str, value):
    if name in ("chunk_size", "max_length"):
        return _int(name, value, 1)
    if name == "chunk_overlap":
        return _int(name, value, 0)
    if name in ("strip_whitespace", "add_start_index", "is_separator_regex", "use_span_tokenize"):
        return _bool(name, value)
    if name == "keep_separator":
        if isinstance(value, bool) or value in ("start", "end"):
            return value
        raise InvalidParameter(f'keep_separator must be true, false, "start" or "end", not {json.dumps(value)}')
    if name == "separators":
        if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
            raise InvalidParameter(f"separators must be a non-empty array of strings, not {json.dumps(value)}",
                                   hint='Example: {"separators": ["\\n\\n", "\\n", " ", ""]}')
        return value
    if name == "separator":
        return _str(name, value)
    return _str(name, value, empty_ok=False)  # language, pipeline


def parse_kwargs(splitter: str, kwargs) -> dict:
    """The kwargs JSON (text or dict) as checked constructor arguments for `splitter`."""
    kwargs = parse_args(kwargs, "kwargs", '{"chunk_size": 1000, "chunk_overlap": 200}')
    allowed = _COMMON + SPLITTERS[splitter][1]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        hint = f"The {splitter} splitter takes: {', '.join(allowed)}."
        if "length_function" in unknown:
            hint += " length_function is a Python callable and cannot be given from SQL."
        raise InvalidParameter(f"unknown kwarg{'s' if len(unknown) > 1 else ''} for the {splitter} splitter: "
                               f"{', '.join(unknown)}", hint=hint)
    checked = {name: _check_value(name, value) for name, value in kwargs.items()}
    size = checked.get("chunk_size", 4000)
    overlap = checked.get("chunk_overlap", 200)
    if overlap > size:  # LangChain's own check (TextSplitter.__init__): an overlap equal to the size is fine
        default = "" if "chunk_overlap" in checked else " (its default)"
        raise InvalidParameter(f"chunk_overlap {overlap}{default} must not be larger than chunk_size {size}",
                               hint='Pass both, e.g. {"chunk_size": 500, "chunk_overlap": 50}; the defaults are '
                                    '4000 and 200 characters.')
    return checked


def _quiet() -> None:
    # "Created a chunk of size N, which is longer than the specified M" is a logging
    # warning: inside a backend it would land in the server log on every call.
    logging.getLogger("langchain_text_splitters").setLevel(logging.ERROR)


def make_splitter(splitter: str, kwargs: dict):
    import langchain_text_splitters

    _quiet()
    class_name, _, package = SPLITTERS[splitter]
    cls = getattr(langchain_text_splitters, class_name)
    try:
        return cls(**kwargs)
    except ImportError:
        raise NotSupported(f"the {splitter} splitter needs the {package} package, which is not installed in the "
                           "database server's venv", hint=_NEEDS_HINT.get(splitter)) from None
    except OSError as exc:  # spacy.load of a pipeline package that is not installed
        raise _missing_data(splitter, exc) from None


def _missing_data(splitter: str, exc: Exception) -> NotSupported:
    return NotSupported(f"the {splitter} splitter needs data that is not on the database server: {one_line(exc)}",
                        hint=_NEEDS_HINT.get(splitter))


def chunk(splitter, text, kwargs=None) -> list[tuple[int, str]]:
    """(chunk_index, chunk) rows, chunk_index from 1, in document order."""
    if splitter is None:
        raise NullValue("splitter must not be NULL", hint=f"Splitters: {', '.join(SPLITTERS)}.")
    name = splitter.strip().lower()
    if name not in SPLITTERS:
        raise InvalidParameter(f"unknown splitter {splitter!r}", hint=f"Splitters: {', '.join(SPLITTERS)}.")
    if text is None:
        raise NullValue("text must not be NULL", hint="Filter NULL documents out, e.g. WHERE body IS NOT NULL.")
    options = parse_kwargs(name, kwargs)
    if not text:
        return []
    instance = make_splitter(name, options)
    try:
        pieces = instance.split_text(text)
    except LookupError as exc:  # nltk without its punkt_tab data (it never downloads it by itself)
        raise _missing_data(name, exc) from None
    return [(index, piece) for index, piece in enumerate(pieces, start=1)]
