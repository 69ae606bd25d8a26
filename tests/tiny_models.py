"""Tiny, deterministic, locally trained Hugging Face models for the pgml_plpy tests.

No machine here reaches the Hugging Face Hub, so the tests build their own models:
2 layers, hidden size 64, vocabularies of a few hundred tokens, trained for a few hundred
steps on small built-in corpora so that generation emits real words and classifiers give
the expected labels.

Every model folder loads with ``Auto*.from_pretrained(folder)`` under transformers 5.x AND
4.x: the tokenizers are written as raw files (vocab.json + merges.txt, vocab.txt,
spiece.model, vocab.json + sentencepiece.bpe.model, tokenizer_config.json), never through
transformers 5's ``save_pretrained`` of a tokenizer (which 4.x cannot read).

Usage::

    from tests.tiny_models import build_all
    paths = build_all("/tmp/pgml-models")      # {"gpt2-chat": Path(...), ...}

    python tests/tiny_models.py DIR [NAME ...]

A folder ``DIR/<name>`` holding a stamp file (``.tiny_models_stamp``) with the hash of this
file's source (plus the torch / transformers / tokenizers / sentencepiece versions) is reused
as is; anything else there is rebuilt. Builds go to a temporary folder that is renamed into
place, under a lock file, so concurrent test processes are safe. Everything is made readable
by other OS users (dirs 755, files 644): PostgreSQL runs as another user.
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import contextlib
import hashlib
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

STAMP_FILE = ".tiny_models_stamp"
MODEL_NAMES = (
    "gpt2-chat",
    "gpt2-plain",
    "bert-mlm",
    "bert-sentiment",
    "bert-ner",
    "bert-qa",
    "bert-nli",
    "t5-tiny",
    "m2m-tiny",
    "bert-reranker",
)

# --------------------------------------------------------------------------------------
# Built-in data
# --------------------------------------------------------------------------------------

ENGLISH_CORPUS = [
    "The cat sat on the mat.",
    "The dog ran in the park.",
    "The sun is bright and warm today.",
    "I like to read books in the morning.",
    "She drinks a cup of tea every day.",
    "We went to the market to buy fresh fruit.",
    "The children played in the garden after school.",
    "My friend lives in a small house near the river.",
    "The weather is cold and rainy in the winter.",
    "He writes code for a living and loves his work.",
    "Birds sing in the trees when the sun comes up.",
    "The train leaves the station at eight in the morning.",
    "Water is important for all living things.",
    "The moon shines in the sky at night.",
    "A good book is a friend for life.",
    "The little girl has a red ball.",
    "The old man walks his dog every evening.",
    "We eat bread and cheese for lunch.",
    "The city is busy and full of people.",
    "The students learn about the history of the world.",
    "Music makes people happy.",
    "The teacher reads a story to the class.",
    "It is a beautiful day to go outside.",
    "The farmer grows apples and potatoes.",
    "The computer is on the table.",
    "Please close the door when you leave.",
    "The river flows to the sea.",
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "London is a big city in England.",
    "The car is fast and the road is long.",
    "I am happy because the weather is nice.",
    "The flowers in the garden are yellow and blue.",
    "The baby sleeps in the small bed.",
    "My mother makes the best soup in the world.",
    "The store opens at nine and closes at five.",
    "We play football in the park on Sunday.",
    "The mountain is high and covered with snow.",
    "Dogs and cats are good friends.",
    "The library has many old books.",
    "A cup of coffee in the morning is nice.",
    "The doctor helps people who are sick.",
    "The plane flies over the clouds.",
    "The fish swims in the blue water.",
    "The kitchen smells of fresh bread.",
    "Machine learning models learn from data.",
    "The database stores tables of rows and columns.",
    "Postgres is a powerful open source database.",
]

CHAT_DIALOGUES = [
    [("user", "Hello!"), ("assistant", "Hello! How can I help you today?")],
    [("user", "Hi, how are you?"), ("assistant", "I am fine, thank you. How are you?")],
    [("user", "What is your name?"), ("assistant", "My name is Tiny. I am a small language model.")],
    [("user", "What color is the sky?"), ("assistant", "The sky is blue.")],
    [("user", "Tell me about cats."), ("assistant", "Cats are small animals. They like to sleep and play.")],
    [("user", "Tell me about dogs."), ("assistant", "Dogs are good friends. They like to run in the park.")],
    [
        ("system", "You are a helpful assistant."),
        ("user", "What is the capital of France?"),
        ("assistant", "The capital of France is Paris."),
    ],
    [
        ("system", "You are a helpful assistant."),
        ("user", "What is the capital of Germany?"),
        ("assistant", "The capital of Germany is Berlin."),
    ],
    [("system", "You are a friendly bot."), ("user", "Hello!"), ("assistant", "Hello friend! It is a beautiful day.")],
    [("user", "What is Postgres?"), ("assistant", "Postgres is a powerful open source database.")],
    [("user", "Can you help me?"), ("assistant", "Yes, I can help you. What do you need?")],
    [("user", "Thank you!"), ("assistant", "You are welcome!")],
]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{%- if message['role'] == 'assistant' %}{{- eos_token }}{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"
)

NAMES = ["Omar", "Sarah", "John", "Maria", "Ahmed", "Lucy", "David", "Emma", "Yuki", "Carlos", "Anna", "Peter"]
FULL_NAMES = ["John Smith", "Maria Garcia", "Anna Berg", "David Lee", "Sarah Connor", "Omar Khan"]
CITIES = ["Paris", "London", "Berlin", "Tokyo", "Cairo", "Madrid", "Rome", "Lagos", "Boston", "Seoul"]
MULTI_CITIES = ["New York City", "San Francisco", "Los Angeles", "Buenos Aires", "Hong Kong"]
JOBS = ["teacher", "doctor", "pilot", "farmer", "painter", "nurse", "chef", "engineer"]
COLORS = ["red", "blue", "green", "yellow", "black", "white"]
THINGS = ["car", "house", "ball", "door", "hat", "bike"]
PETS = ["cat", "dog", "bird", "fish"]
PET_NAMES = ["Max", "Bella", "Luna", "Rocky", "Coco", "Milo"]

POS_PHRASES = [
    "I love it", "I like it", "I really love it", "I enjoy it", "it is great", "it is wonderful",
    "it is amazing", "it is excellent", "it is very good", "this is the best", "what a great day",
    "I am so happy", "this movie is fantastic", "the food is delicious", "the service was excellent",
    "I love this book", "my new phone is great", "I like the music", "the weather is lovely",
    "we had a wonderful time", "it works perfectly", "I recommend it",
]
NEG_PHRASES = [
    "I hate it", "I dislike it", "I really hate it", "I can not stand it", "it is terrible",
    "it is awful", "it is horrible", "it is very bad", "this is the worst", "what a bad day",
    "I am so sad", "this movie is boring", "the food is disgusting", "the service was awful",
    "I hate this book", "my new phone is broken", "I dislike the music", "the weather is horrible",
    "we had a terrible time", "it does not work", "I do not recommend it",
]

TOPIC_SENTENCES = {
    "sports": ["The team won the football match.", "She runs ten miles every day.", "He plays tennis on Sunday.",
               "The players scored three goals."],
    "politics": ["The president gave a speech.", "The election is next week.", "The government passed a new law.",
                 "Voters chose a new mayor."],
    "technology": ["The new computer is very fast.", "The app runs on my phone.", "The database stores the data.",
                   "Engineers wrote new software."],
    "food": ["We ate pizza and pasta.", "The soup is hot and tasty.", "She baked a chocolate cake.",
             "The bread is fresh from the oven."],
    "weather": ["It is raining today.", "The sun is shining and it is warm.", "Snow fell all night.",
                "A strong wind blew from the sea."],
}

# (English, French, German)
T5_NOUNS = [
    ("the cat", "le chat", "die Katze"),
    ("the dog", "le chien", "der Hund"),
    ("the house", "la maison", "das Haus"),
    ("the book", "le livre", "das Buch"),
    ("the car", "la voiture", "das Auto"),
    ("the tree", "l'arbre", "der Baum"),
    ("the child", "l'enfant", "das Kind"),
    ("the city", "la ville", "die Stadt"),
    ("the bread", "le pain", "das Brot"),
    ("the water", "l'eau", "das Wasser"),
    ("the sun", "le soleil", "die Sonne"),
    ("the apple", "la pomme", "der Apfel"),
    ("the table", "la table", "der Tisch"),
    ("the flower", "la fleur", "die Blume"),
    ("the bird", "l'oiseau", "der Vogel"),
    ("the man", "l'homme", "der Mann"),
    ("the woman", "la femme", "die Frau"),
    ("the school", "l'école", "die Schule"),
]
T5_ADJECTIVES = [
    ("big", "grand", "groß"),
    ("small", "petit", "klein"),
    ("red", "rouge", "rot"),
    ("old", "vieux", "alt"),
    ("new", "nouveau", "neu"),
    ("beautiful", "beau", "schön"),
]
T5_PHRASES = [
    ("hello", "bonjour", "hallo"),
    ("thank you", "merci", "danke"),
    ("good morning", "bonjour", "guten Morgen"),
    ("good night", "bonne nuit", "gute Nacht"),
    ("yes", "oui", "ja"),
    ("no", "non", "nein"),
    ("please", "s'il vous plaît", "bitte"),
    ("I love you", "je t'aime", "ich liebe dich"),
    ("how are you?", "comment allez-vous ?", "wie geht es dir?"),
    ("see you tomorrow", "à demain", "bis morgen"),
]

T5_TASK_PARAMS = {
    "summarization": {
        "early_stopping": True,
        "length_penalty": 2.0,
        "max_length": 20,
        "min_length": 3,
        "no_repeat_ngram_size": 3,
        "num_beams": 2,
        "prefix": "summarize: ",
    },
    "translation_en_to_de": {
        "early_stopping": True,
        "max_length": 20,
        "num_beams": 2,
        "prefix": "translate English to German: ",
    },
    "translation_en_to_fr": {
        "early_stopping": True,
        "max_length": 20,
        "num_beams": 2,
        "prefix": "translate English to French: ",
    },
}

# Training recipe per model: steps, batch size, learning rate, init (None: the model's default).
# init is initializer_range (GPT-2, BERT), initializer_factor (T5) or init_std (M2M100). Inits larger
# than the default 0.02 cut the steps needed several-fold for these tiny models; for bert-nli it is
# what makes training work at all: with 0.02 the model sits for ~1000 steps predicting the majority
# class (all zero-shot scores ~equal) before it learns premise/hypothesis interactions.
TRAINING = {
    "gpt2-chat": dict(steps=250, batch=16, lr=3e-3, init=0.1),
    "bert-mlm": dict(steps=400, batch=16, lr=3e-3, init=0.1),
    "bert-sentiment": dict(steps=100, batch=16, lr=1e-3, init=None),
    "bert-ner": dict(steps=250, batch=16, lr=3e-3, init=None),
    "bert-qa": dict(steps=300, batch=32, lr=3e-3, init=0.1),
    "bert-nli": dict(steps=350, batch=32, lr=1e-3, init=0.2),
    "t5-tiny": dict(steps=400, batch=16, lr=5e-3, init=None),
    "m2m-tiny": dict(steps=250, batch=16, lr=5e-3, init=0.1),
    "bert-reranker": dict(steps=350, batch=32, lr=1e-3, init=0.2),
}


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def source_hash() -> str:
    """Hash of this file's source and of the library versions that shape the built bytes."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    for mod in ("torch", "transformers", "tokenizers", "sentencepiece", "safetensors"):
        try:
            from importlib.metadata import version

            h.update(f"{mod}={version(mod)}\n".encode())
        except Exception:  # pragma: no cover - missing optional package
            h.update(f"{mod}=?\n".encode())
    return h.hexdigest()


def _chmod_tree(path: Path) -> None:
    os.chmod(path, 0o755)
    for dirpath, dirnames, filenames in os.walk(path):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _torch_state(seed: int):
    """Seed torch/python RNGs and run single-threaded; restore the caller's state afterwards."""
    import torch

    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    py_state = random.getstate()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
        random.setstate(py_state)


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' warnings and progress bars during a build; restore them afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _train(model, make_batch: Callable[[int], dict], steps: int, lr: float, warmup: int = 20) -> float:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1.0 - s / steps)
    )
    model.train()
    loss_val = float("nan")
    for step in range(steps):
        batch = make_batch(step)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_val = float(loss.detach())
    model.eval()
    return loss_val


def _sampler(n: int, batch_size: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)

    def sample(_step: int) -> list[int]:
        return torch.randint(0, n, (batch_size,), generator=gen).tolist()

    return sample


def _pad(seqs: list[list[int]], value: int):
    import torch

    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def _save_model(model, folder: Path) -> None:
    model.save_pretrained(str(folder), safe_serialization=True)


# --------------------------------------------------------------------------------------
# GPT-2 (byte-level BPE + chat template)
# --------------------------------------------------------------------------------------

GPT2_SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>"]


def _render_chat(dialogue: list[tuple[str, str]]) -> str:
    out = []
    for role, content in dialogue:
        out.append(f"<|{role}|>\n{content}")
        if role == "assistant":
            out.append("<|endoftext|>")
        out.append("\n")
    return "".join(out)


def _added_tokens_decoder(specials: list[tuple[int, str]]) -> dict:
    return {
        str(i): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, tok in specials
    }


def _build_gpt2(folder: Path, chat_template: bool = True) -> None:
    hp = TRAINING["gpt2-chat"]
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    chats = [_render_chat(d) for d in CHAT_DIALOGUES]
    texts = ENGLISH_CORPUS + chats

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        texts * 2, vocab_size=700, min_frequency=2, special_tokens=GPT2_SPECIALS, show_progress=False
    )
    bpe.save_model(str(folder))  # vocab.json + merges.txt
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    for i, tok in enumerate(GPT2_SPECIALS):
        assert vocab[tok] == i, (tok, vocab[tok])
    # Re-write vocab.json sorted by id (stable, readable bytes).
    _write_json(folder / "vocab.json", dict(sorted(vocab.items(), key=lambda kv: kv[1])))
    eos_id = 0

    tok_config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "add_bos_token": False,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 128,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "added_tokens_decoder": _added_tokens_decoder(list(enumerate(GPT2_SPECIALS))),
    }
    if chat_template:
        tok_config["chat_template"] = CHAT_TEMPLATE
    _write_json(folder / "tokenizer_config.json", tok_config)
    _write_json(
        folder / "special_tokens_map.json",
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
         "pad_token": "<|endoftext|>"},
    )

    # Encode with the raw `tokenizers` object: special tokens are atomic, no BOS is added.
    encoded = []
    for t in texts:
        ids = bpe.encode(t).ids
        if not t.endswith("<|endoftext|>"):
            ids = ids + [eos_id]
        encoded.append(ids[:128])

    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_inner=128,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        **({} if hp["init"] is None else {"initializer_range": hp["init"]}),
    )
    model = GPT2LMHeadModel(config)
    sample = _sampler(len(encoded), hp["batch"], seed=1)

    def make_batch(step):
        seqs = [encoded[i] for i in sample(step)]
        ids = _pad(seqs, eos_id)
        labels = _pad(seqs, -100)
        mask = (labels != -100).long()
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    _train(model, make_batch, steps=hp["steps"], lr=hp["lr"])
    model.generation_config.pad_token_id = eos_id
    _save_model(model, folder)


def _build_gpt2_plain(folder: Path, built: dict[str, Path]) -> None:
    src = built["gpt2-chat"]
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name != STAMP_FILE:
            shutil.copyfile(f, folder / f.name)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.pop("chat_template", None)
    _write_json(cfg_path, cfg)


# --------------------------------------------------------------------------------------
# BERT family (shared WordPiece vocab)
# --------------------------------------------------------------------------------------

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _qa_facts(rng: random.Random, name: str):
    """One fact about `name`: (sentence, question, answer)."""
    kind = rng.randrange(4)
    if kind == 0:
        city = rng.choice(CITIES + MULTI_CITIES)
        return f"{name} lives in {city}.", f"Where does {name} live?", city
    if kind == 1:
        job = rng.choice(JOBS)
        return f"{name} works as a {job}.", f"What is the job of {name}?", job
    if kind == 2:
        age = rng.randrange(5, 90)
        return f"{name} is {age} years old.", f"How old is {name}?", str(age)
    pet, pet_name = rng.choice(PETS), rng.choice(PET_NAMES)
    return f"{name} has a {pet} named {pet_name}.", f"What is the name of the {pet} of {name}?", pet_name


def _qa_examples(n: int, seed: int) -> list[tuple[str, str, str | None, int | None]]:
    """(question, context, answer, answer char start); answer None for unanswerable questions."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        names = rng.sample(NAMES, rng.randrange(2, 5))
        facts = [_qa_facts(rng, nm) for nm in names]
        if rng.random() < 0.3:
            color, thing = rng.choice(COLORS), rng.choice(THINGS)
            facts.append((f"The {thing} is {color}.", f"What color is the {thing}?", color))
        rng.shuffle(facts)
        context = " ".join(f[0] for f in facts)
        if rng.random() < 0.1:
            absent = rng.choice([nm for nm in NAMES if nm not in names])
            out.append((f"Where does {absent} live?", context, None, None))
            continue
        k = rng.randrange(len(facts))
        sent, q, a = facts[k]
        start = len(" ".join(f[0] for f in facts[:k])) + (1 if k else 0) + sent.rindex(a)
        assert context[start : start + len(a)] == a
        out.append((q, context, a, start))
    return out


def _ner_examples(n: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    templates = [
        "I am {PER} and I live in {LOC} .",
        "My name is {PER} and I am from {LOC} .",
        "{PER} went to {LOC} last week .",
        "{PER} lives in {LOC} .",
        "Yesterday {PER} met {PER} in {LOC} .",
        "{LOC} is a big city .",
        "{PER} likes to read books .",
        "We flew from {LOC} to {LOC} .",
        "The weather in {LOC} is nice .",
        "I talked to {PER} about the weather .",
    ]
    out = []
    for _ in range(n):
        words: list[tuple[str, str]] = []
        for w in rng.choice(templates).split():
            if w in ("{PER}", "{LOC}"):
                ent = w[1:-1]
                if ent == "PER":
                    value = rng.choice(NAMES + FULL_NAMES)
                else:
                    value = rng.choice(CITIES + MULTI_CITIES)
                for j, part in enumerate(value.split()):
                    words.append((part, ("B-" if j == 0 else "I-") + ent))
            else:
                words.append((w, "O"))
        out.append(words)
    return out


def _sentiment_examples() -> list[tuple[str, int]]:
    out = []
    for p in POS_PHRASES:
        out += [(p, 1), (p.capitalize() + ".", 1), (p.capitalize() + "!", 1)]
    for p in NEG_PHRASES:
        out += [(p, 0), (p.capitalize() + ".", 0), (p.capitalize() + "!", 0)]
    return out


def _nli_examples() -> list[tuple[str, str, int]]:
    """(premise, hypothesis, label) with 0 contradiction, 1 neutral, 2 entailment."""
    out = []
    topics = sorted(TOPIC_SENTENCES)
    for topic, sents in TOPIC_SENTENCES.items():
        for s in sents:
            for other in topics:
                if other == topic:  # balance: as many entailments as contradictions
                    out += [(s, f"This example is {other}.", 2)] * (len(topics) - 1)
                    out += [(s, f"This text is about {other}.", 2)] * (len(topics) - 1)
                else:
                    out.append((s, f"This example is {other}.", 0))
                    out.append((s, f"This text is about {other}.", 0))
    for s in POS_PHRASES:
        out.append((s, "This example is positive.", 2))
        out.append((s, "This example is negative.", 0))
    for s in NEG_PHRASES:
        out.append((s, "This example is negative.", 2))
        out.append((s, "This example is positive.", 0))
    rng = random.Random(7)
    for _ in range(60):
        name, city, city2 = rng.choice(NAMES), *rng.sample(CITIES, 2)
        job = rng.choice(JOBS)
        out.append((f"{name} lives in {city}.", f"{name} lives in {city}.", 2))
        out.append((f"{name} lives in {city}.", f"{name} lives in {city2}.", 0))
        out.append((f"{name} lives in {city}.", f"{name} works as a {job}.", 1))
    return out


def _bert_texts() -> list[str]:
    texts = list(ENGLISH_CORPUS)
    texts += [f"{q} {c}" for q, c, _, _ in _qa_examples(200, seed=11)]
    texts += [" ".join(w for w, _ in ex) for ex in _ner_examples(100, seed=12)]
    texts += [t for t, _ in _sentiment_examples()]
    texts += [f"{p} {h}" for p, h, _ in _nli_examples()]
    for s in TOPIC_SENTENCES.values():
        texts += s
    return texts


def _wordpiece_vocab(texts: list[str], vocab_size: int) -> list[str]:
    """Deterministic WordPiece vocabulary learnt with BPE-style merges (as `tokenizers`' WordPiece
    trainer does), with ties broken by the pair's text. `tokenizers`' own trainer is not used because
    its output varies from run to run (hash-map order), which would break byte-identical builds."""
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter = Counter()
    for t in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    words = [[w[0]] + ["##" + c for c in w[1:]] for w in sorted(counts)]
    freqs = [counts[w] for w in sorted(counts)]
    vocab = list(BERT_SPECIALS)
    seen = set(vocab)
    for sym in sorted({s for w in words for s in w}, key=lambda s: (s.startswith("##"), s)):
        vocab.append(sym)
        seen.add(sym)
    while len(vocab) < vocab_size:
        pairs: Counter = Counter()
        for w, f in zip(words, freqs):
            for a, b in zip(w, w[1:]):
                pairs[a, b] += f
        if not pairs:
            break
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merged = a + b[2:]
        for k, w in enumerate(words):
            if len(w) < 2:
                continue
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
        if merged not in seen:
            vocab.append(merged)
            seen.add(merged)
    return vocab


def _bert_vocab(cache: dict) -> list[str]:
    if "bert_vocab" not in cache:
        cache["bert_vocab"] = _wordpiece_vocab(_bert_texts(), vocab_size=1000)
    return cache["bert_vocab"]


def _bert_tokenizer_files(folder: Path, cache: dict):
    """Write vocab.txt + tokenizer_config.json and return a transformers tokenizer for training."""
    from transformers import AutoTokenizer

    tokens = _bert_vocab(cache)
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "model_max_length": 128,
            "clean_up_tokenization_spaces": True,
        },
    )
    _write_json(
        folder / "special_tokens_map.json",
        {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
         "mask_token": "[MASK]"},
    )
    return AutoTokenizer.from_pretrained(str(folder))


def _bert_config(vocab_size: int, init: float | None, **kw):
    from transformers import BertConfig

    if init is not None:
        kw["initializer_range"] = init
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
        **kw,
    )


def _build_bert_mlm(folder: Path, cache: dict) -> None:
    hp = TRAINING["bert-mlm"]
    import torch
    from transformers import BertForMaskedLM

    tok = _bert_tokenizer_files(folder, cache)
    texts = ENGLISH_CORPUS + [t for t, _ in _sentiment_examples()][::3]
    for s in TOPIC_SENTENCES.values():
        texts += s
    enc = [tok(t)["input_ids"] for t in texts]
    model = BertForMaskedLM(_bert_config(len(tok), hp["init"]))
    sample = _sampler(len(enc), hp["batch"], seed=2)
    gen = torch.Generator().manual_seed(3)
    mask_id, pad_id = tok.mask_token_id, tok.pad_token_id

    def make_batch(step):
        seqs = [enc[i] for i in sample(step)]
        ids = _pad(seqs, pad_id)
        attn = (ids != pad_id).long()
        special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id) | (ids == pad_id)
        prob = torch.rand(ids.shape, generator=gen)
        masked = (prob < 0.2) & ~special
        labels = torch.where(masked, ids, torch.full_like(ids, -100))
        inputs = torch.where(masked & (prob < 0.17), torch.full_like(ids, mask_id), ids)
        return {"input_ids": inputs, "attention_mask": attn, "labels": labels}

    _train(model, make_batch, steps=hp["steps"], lr=hp["lr"])
    _save_model(model, folder)


def _build_bert_sentiment(folder: Path, cache: dict) -> None:
    hp = TRAINING["bert-sentiment"]
    import torch
    from transformers import BertForSequenceClassification

    tok = _bert_tokenizer_files(folder, cache)
    data = _sentiment_examples()
    enc = [tok(t)["input_ids"] for t, _ in data]
    labels = [y for _, y in data]
    id2label = {0: "NEGATIVE", 1: "POSITIVE"}
    model = BertForSequenceClassification(
        _bert_config(len(tok), hp["init"], id2label=id2label, label2id={v: k for k, v in id2label.items()})
    )
    sample = _sampler(len(enc), hp["batch"], seed=4)

    def make_batch(step):
        idx = sample(step)
        ids = _pad([enc[i] for i in idx], 0)
        return {"input_ids": ids, "attention_mask": (ids != 0).long(),
                "labels": torch.tensor([labels[i] for i in idx])}

    _train(model, make_batch, steps=hp["steps"], lr=hp["lr"])
    _save_model(model, folder)


def _build_bert_reranker(folder: Path, cache: dict) -> None:
    """A cross-encoder (one relevance logit) for pgml.rank: a topic name against topic sentences."""
    hp = TRAINING["bert-reranker"]
    import torch
    from transformers import BertForSequenceClassification

    tok = _bert_tokenizer_files(folder, cache)
    topics = list(TOPIC_SENTENCES)
    data = [(topic, sentence, float(topic == other))
            for topic in topics for other, sentences in TOPIC_SENTENCES.items() for sentence in sentences
            for _ in range(len(topics) - 1 if topic == other else 1)]  # as many relevant pairs as not
    enc = [tok(q, d) for q, d, _ in data]
    model = BertForSequenceClassification(_bert_config(len(tok), hp["init"], num_labels=1,
                                                       problem_type="multi_label_classification"))
    sample = _sampler(len(enc), hp["batch"], seed=5)

    def make_batch(step):
        idx = sample(step)
        ids = _pad([enc[i]["input_ids"] for i in idx], 0)
        tt = _pad([enc[i]["token_type_ids"] for i in idx], 0)
        return {"input_ids": ids, "token_type_ids": tt, "attention_mask": (ids != 0).long(),
                "labels": torch.tensor([[data[i][2]] for i in idx])}

    _train(model, make_batch, steps=hp["steps"], lr=hp["lr"])
    _save_model(model, folder)


NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _build_bert_ner(folder: Path, cache: dict) -> None:
    hp = TRAINING["bert-ner"]
    from transformers import BertForTokenClassification

    tok = _bert_tokenizer_files(folder, cache)
    label2id = {l: i for i, l in enumerate(NER_LABELS)}
    data = _ner_examples(300, seed=5)
    enc, labs = [], []
    for ex in data:
        words = [w for w, _ in ex]
        e = tok(words, is_split_into_words=True)
        prev = None
        lab = []
        for wid in e.word_ids():
            if wid is None:
                lab.append(-100)
            else:
                tag = ex[wid][1]
                if wid == prev and tag.startswith("B-"):
                    tag = "I-" + tag[2:]
                lab.append(label2id[tag])
            prev = wid
        enc.append(e["input_ids"])
        labs.append(lab)
    model = BertForTokenClassification(
        _bert_config(len(tok), hp["init"], id2label=dict(enumerate(NER_LABELS)), label2id=label2id)
    )
    sample = _sampler(len(enc), hp["batch"], seed=6)

    def make_batch(step):
        idx = sample(step)
        ids = _pad([enc[i] for i in idx], 0)
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": _pad([labs[i] for i in idx], -100)}

    _train(model, make_batch, steps=hp["steps"], lr=hp["lr"])
    _save_model(model, folder)


def _build_bert_qa(folder: Path, cache: dict) -> None:
    hp = TRAINING["bert-qa"]
    import torch
    from transformers import BertForQuestionAnswering

    tok = _bert_tokenizer_files(folder, cache)
    data = _qa_examples(1500, seed=8)
    enc, starts, ends = [], [], []
    for q, c, a, a_pos in data:
        e = tok(q, c, return_offsets_mapping=True, truncation="only_second", max_length=128)
        if a is None:
            s = t = 0
        else:
            a_end = a_pos + len(a)
            seq_ids = e.sequence_ids()
            s = t = None
            for i, (off, sid) in enumerate(zip(e["offset_mapping"], seq_ids)):
                if sid != 1:
                    continue
                if s is None and off[0] <= a_pos < off[1]:
                    s = i
                if off[0] < a_end <= off[1]:
                    t = i
            assert s is not None and t is not None, (q, c, a)
        enc.append((e["input_ids"], e["token_type_ids"]))
        starts.append(s)
        ends.append(t)
    model = BertForQuestionAnswering(_bert_config(len(tok), hp["init"]))
    sample = _sampler(len(enc), hp["batch"], seed=9)

    def make_batch(step):
        idx = sample(step)
        ids = _pad([enc[i][0] for i in idx], 0)
        tt = _pad([enc[i][1] for i in idx], 0)
        return {"input_ids": ids, "token_type_ids": tt, "attention_mask": (ids != 0).long(),
                "start_positions": torch.tensor([starts[i] for i in idx]),
                "end_positions": torch.tensor([ends[i] for i in idx])}

    _train(model, make_batch, steps=hp["steps"], lr=hp["lr"])
    _save_model(model, folder)


def _build_bert_nli(folder: Path, cache: dict) -> None:
    hp = TRAINING["bert-nli"]
    import torch
    from transformers import BertForSequenceClassification

    tok = _bert_tokenizer_files(folder, cache)
    data = _nli_examples()
    enc = [tok(p, h) for p, h, _ in data]
    labels = [y for _, _, y in data]
    id2label = {0: "contradiction", 1: "neutral", 2: "entailment"}
    model = BertForSequenceClassification(
        _bert_config(len(tok), hp["init"], id2label=id2label, label2id={v: k for k, v in id2label.items()})
    )
    sample = _sampler(len(enc), hp["batch"], seed=10)

    def make_batch(step):
        idx = sample(step)
        ids = _pad([enc[i]["input_ids"] for i in idx], 0)
        tt = _pad([enc[i]["token_type_ids"] for i in idx], 0)
        return {"input_ids": ids, "token_type_ids": tt, "attention_mask": (ids != 0).long(),
                "labels": torch.tensor([labels[i] for i in idx])}

    _train(model, make_batch, steps=hp["steps"], lr=hp["lr"])
    _save_model(model, folder)


# --------------------------------------------------------------------------------------
# T5 (sentencepiece unigram, task prefixes)
# --------------------------------------------------------------------------------------


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _de_acc(n: str) -> str:
    return "den " + n[4:] if n.startswith("der ") else n


def _translation_triples() -> list[tuple[str, str, str]]:
    out = list(T5_PHRASES)
    for en, fr, de in T5_NOUNS:
        out.append((en, fr, de))
        out.append((f"I see {en}.", f"Je vois {fr}.", f"Ich sehe {_de_acc(de)}."))
        for aen, afr, ade in T5_ADJECTIVES:
            out.append((f"{_cap(en)} is {aen}.", f"{_cap(fr)} est {afr}.", f"{_cap(de)} ist {ade}."))
    return out


def _t5_pairs() -> list[tuple[str, str]]:
    fr_prefix = T5_TASK_PARAMS["translation_en_to_fr"]["prefix"]
    de_prefix = T5_TASK_PARAMS["translation_en_to_de"]["prefix"]
    sum_prefix = T5_TASK_PARAMS["summarization"]["prefix"]
    pairs = []
    for en, fr, de in _translation_triples():
        pairs.append((fr_prefix + en, fr))
        pairs.append((de_prefix + en, de))
    rng = random.Random(13)
    for _ in range(100):
        a, b = rng.sample(ENGLISH_CORPUS, 2)
        pairs.append((sum_prefix + f"{a} {b}", a))
    return pairs


# Added to every sentencepiece training set so that all printable ASCII characters have a piece
# (otherwise e.g. a capital letter that the corpus lacks becomes <unk>).
SPM_ALPHABET_LINE = "".join(chr(c) for c in range(33, 127)) + " ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789"


def _train_spm(texts: list[str], model_file: Path, **kw) -> None:
    """Train a sentencepiece model into `model_file`. The model goes through `model_writer` rather than
    `model_prefix`: the prefix (a path holding the temporary build folder) would be stored in the model."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts) + [SPM_ALPHABET_LINE]),
        model_writer=buf,
        num_threads=1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        **kw,
    )
    model_file.write_bytes(buf.getvalue())


def _build_t5(folder: Path) -> None:
    hp = TRAINING["t5-tiny"]
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    pairs = _t5_pairs()
    texts = [s for p in pairs for s in p] + ENGLISH_CORPUS
    _train_spm(
        texts, folder / "spiece.model", vocab_size=500, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
    )
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "T5Tokenizer",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "extra_ids": 100,
            "model_max_length": 128,
            "legacy": True,
            "clean_up_tokenization_spaces": False,
        },
    )
    tok = AutoTokenizer.from_pretrained(str(folder))
    src = [tok(s)["input_ids"][:128] for s, _ in pairs]
    tgt = [tok(t)["input_ids"][:64] for _, t in pairs]
    config = T5Config(
        vocab_size=len(tok),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=64,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        task_specific_params=T5_TASK_PARAMS,
        **({} if hp["init"] is None else {"initializer_factor": hp["init"]}),
    )
    model = T5ForConditionalGeneration(config)
    sample = _sampler(len(src), hp["batch"], seed=14)

    def make_batch(step):
        idx = sample(step)
        ids = _pad([src[i] for i in idx], 0)
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": _pad([tgt[i] for i in idx], -100)}

    _train(model, make_batch, steps=hp["steps"], lr=hp["lr"])
    _save_model(model, folder)


# --------------------------------------------------------------------------------------
# M2M100 (sentencepiece BPE + vocab.json, language codes, forced BOS)
# --------------------------------------------------------------------------------------

M2M_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
# transformers' FAIRSEQ_LANGUAGE_CODES["m2m100"]: the language token of code i gets id len(vocab.json) + i.
M2M100_LANGUAGE_CODES = (
    "af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga gd gl gu ha he hi hr ht "
    "hu hy id ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt lv mg mk ml mn mr ms my ne nl no ns oc or pa pl "
    "ps pt ro ru sd si sk sl so sq sr ss su sv sw ta th tl tn tr uk ur uz vi wo xh yi yo zh zu"
).split()


def _build_m2m(folder: Path) -> None:
    hp = TRAINING["m2m-tiny"]
    import sentencepiece as spm
    from transformers import AutoTokenizer, M2M100Config, M2M100ForConditionalGeneration

    triples = _translation_triples()
    texts = [s for t in triples for s in t] + ENGLISH_CORPUS
    _train_spm(
        texts, folder / "sentencepiece.bpe.model", vocab_size=400, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
    )
    sp = spm.SentencePieceProcessor(model_file=str(folder / "sentencepiece.bpe.model"))
    vocab = {t: i for i, t in enumerate(M2M_SPECIALS)}
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i):
            continue
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    _write_json(folder / "vocab.json", vocab)
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "M2M100Tokenizer",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "sep_token": "</s>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "src_lang": "en",
            "tgt_lang": "fr",
            "language_codes": "m2m100",
            "num_madeup_words": 8,
            # As in facebook/m2m100_418M: without this list the language tokens are not special
            # tokens (M2M100Tokenizer's own check never adds them) and decoding keeps "__fr__".
            "additional_special_tokens": [f"__{code}__" for code in M2M100_LANGUAGE_CODES],
            "model_max_length": 128,
            "clean_up_tokenization_spaces": False,
        },
    )
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert list(tok.lang_code_to_id) == M2M100_LANGUAGE_CODES
    langs = {"en": 0, "fr": 1, "de": 2}
    pairs = []
    for tr in triples:
        for s in langs:
            for t in langs:
                if s != t:
                    pairs.append((s, tr[langs[s]], t, tr[langs[t]]))
    src, tgt = [], []
    for s, s_text, t, t_text in pairs:
        tok.src_lang, tok.tgt_lang = s, t
        enc = tok(s_text, text_target=t_text)
        src.append(enc["input_ids"])
        tgt.append(enc["labels"])
    pad_id = tok.pad_token_id
    vocab_size = len(tok.encoder) + len(tok.lang_token_to_id) + tok.num_madeup_words
    config = M2M100Config(
        vocab_size=vocab_size,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=128,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        scale_embedding=True,
        pad_token_id=pad_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_eos_token_id=tok.eos_token_id,
        **({} if hp["init"] is None else {"init_std": hp["init"]}),
    )
    model = M2M100ForConditionalGeneration(config)
    sample = _sampler(len(src), hp["batch"], seed=15)

    def make_batch(step):
        idx = sample(step)
        ids = _pad([src[i] for i in idx], pad_id)
        return {"input_ids": ids, "attention_mask": (ids != pad_id).long(),
                "labels": _pad([tgt[i] for i in idx], -100)}

    _train(model, make_batch, steps=hp["steps"], lr=hp["lr"])
    _save_model(model, folder)


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def _builders() -> dict[str, Callable[[Path, dict, dict], None]]:
    return {
        "gpt2-chat": lambda f, c, b: _build_gpt2(f, chat_template=True),
        "gpt2-plain": lambda f, c, b: _build_gpt2_plain(f, b),
        "bert-mlm": lambda f, c, b: _build_bert_mlm(f, c),
        "bert-sentiment": lambda f, c, b: _build_bert_sentiment(f, c),
        "bert-ner": lambda f, c, b: _build_bert_ner(f, c),
        "bert-qa": lambda f, c, b: _build_bert_qa(f, c),
        "bert-nli": lambda f, c, b: _build_bert_nli(f, c),
        "t5-tiny": lambda f, c, b: _build_t5(f),
        "m2m-tiny": lambda f, c, b: _build_m2m(f),
        "bert-reranker": lambda f, c, b: _build_bert_reranker(f, c),
    }


_DEPENDS = {"gpt2-plain": ["gpt2-chat"]}
_SEEDS = {name: 1000 + i for i, name in enumerate(MODEL_NAMES)}


def _is_current(folder: Path, stamp: str) -> bool:
    try:
        return (folder / STAMP_FILE).read_text().strip() == stamp
    except OSError:
        return False


def build_all(root: str | Path, names: list[str] | None = None, verbose: bool = False) -> dict[str, Path]:
    """Build (or reuse) the tiny models under `root`; returns {name: folder}."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # a root owned by someone else keeps its mode
        os.chmod(root, 0o755)
    wanted = list(MODEL_NAMES if names is None else names)
    for n in wanted:
        if n not in MODEL_NAMES:
            raise ValueError(f"unknown tiny model {n!r}; known: {', '.join(MODEL_NAMES)}")
    order = []
    for n in MODEL_NAMES:  # dependency order
        if n in wanted or any(n in _DEPENDS.get(w, []) for w in wanted):
            order.append(n)

    stamp = source_hash()
    built: dict[str, Path] = {}
    if all(_is_current(root / n, stamp) for n in order):
        return {n: root / n for n in wanted}

    builders = _builders()
    cache: dict = {}
    with _file_lock(root / ".tiny_models.lock"):
        for name in order:
            folder = root / name
            if _is_current(folder, stamp):
                built[name] = folder
                continue
            t0 = time.perf_counter()
            tmp = root / f".{name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                with _torch_state(_SEEDS[name]), _quiet_transformers():
                    builders[name](tmp, cache, built)
                (tmp / STAMP_FILE).write_text(stamp + "\n")
                _chmod_tree(tmp)
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            built[name] = folder
            if verbose:
                print(f"built {name} in {time.perf_counter() - t0:.1f}s -> {folder}", file=sys.stderr)
    return {n: root / n for n in wanted}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    t0 = time.perf_counter()
    paths = build_all(argv[0], names=argv[1:] or None, verbose=True)
    for name, path in paths.items():
        print(f"{name}\t{path}")
    print(f"total {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
