"""Tasks served by a transformers pipeline that exists in both 4.x and 5.x.

fill-mask, text-classification, token-classification and zero-shot-classification
pass straight through; text-generation adds chat (JSONB messages through the chat
template) and OpenAI-style arguments on top of the pipeline.
"""

from __future__ import annotations

from ..errors import InvalidParameter
from ..streaming import stream_generation
from .base import Task, take


class PipelineTask(Task):
    """A task that transformers' own Pipeline runs: it splits the args by stage (_sanitize_parameters) and
    runs preprocess -> _forward (under inference mode) -> postprocess, the shape ModelTask copies."""

    pipeline_task = ""

    def __init__(self, task, model, tokenizer, device):
        super().__init__(task, model, tokenizer, device)
        import transformers

        placement = {} if device is None else {"device": device}
        self.pipe = transformers.pipeline(self.pipeline_task, model=model, tokenizer=tokenizer, **placement)

    def run(self, items, args):
        return self.pipe(items, **args)


class FillMaskTask(PipelineTask):
    auto_class = "AutoModelForMaskedLM"
    pipeline_task = "fill-mask"


class TextClassificationTask(PipelineTask):
    auto_class = "AutoModelForSequenceClassification"
    pipeline_task = "text-classification"

    def prepare(self, items):
        """Texts, or {"text", "text_pair"} objects (JSONB inputs) for pair classification."""
        for i, item in enumerate(items, start=1):
            pair = isinstance(item, dict) and set(item) == {"text", "text_pair"} and all(
                isinstance(v, str) for v in item.values())
            if not pair and not isinstance(item, str):
                raise InvalidParameter(f'text-classification takes text or {{"text", "text_pair"}} inputs, but '
                                       f"inputs[{i}] is {type(item).__name__}",
                                       hint='Example: ARRAY[\'{"text": "A man eats.", "text_pair": "Someone eats."}\''
                                            '::JSONB]')
        return items


class TokenClassificationTask(PipelineTask):
    auto_class = "AutoModelForTokenClassification"
    pipeline_task = "token-classification"


class ZeroShotClassificationTask(PipelineTask):
    auto_class = "AutoModelForSequenceClassification"
    pipeline_task = "zero-shot-classification"

    def run(self, items, args):
        labels = args.get("candidate_labels")
        if not labels or not (isinstance(labels, str) or all(isinstance(x, str) and x for x in labels)):
            raise InvalidParameter("zero-shot-classification needs args.candidate_labels: a list of labels",
                                   hint='Example: \'{"candidate_labels": ["sports", "politics"]}\'')
        return super().run(items, args)


def is_message(item) -> bool:
    return isinstance(item, dict) and "role" in item


def check_messages(items: list) -> list:
    for i, m in enumerate(items, start=1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InvalidParameter(f'inputs[{i}] is not a chat message {{"role": ..., "content": ...}} with '
                                   "string role and content",
                                   hint='Example: ARRAY[\'{"role": "user", "content": "Hello"}\'::JSONB]')
    return items


def openai_args(args: dict, tokenizer) -> tuple[dict, list[str]]:
    """Map OpenAI-style arguments (max_tokens, n, stop, temperature, top_p) onto generate()'s.

    Returns the generate arguments and the stop strings to cut from the replies
    (OpenAI leaves the stop sequence out of the text; generate() keeps it).
    """
    args = dict(args)
    for openai_name, hf_name in (("max_tokens", "max_new_tokens"), ("n", "num_return_sequences")):
        if openai_name in args:
            if hf_name in args:
                raise InvalidParameter(f"give either {openai_name} or {hf_name}, not both")
            args[hf_name] = args.pop(openai_name)
    stops = args.pop("stop", None)
    if stops is None:
        stops = []
    elif isinstance(stops, str):
        stops = [stops]
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise InvalidParameter("stop must be a non-empty string or a list of them")
    if stops:
        args["stop_strings"] = list(args.get("stop_strings") or []) + stops
    if args.get("stop_strings"):
        args.setdefault("tokenizer", tokenizer)
    if "do_sample" not in args:
        if args.get("temperature") == 0:
            del args["temperature"]
            args["do_sample"] = False
        elif "temperature" in args or "top_p" in args:
            args["do_sample"] = True
    return args, stops


def cut_at_stop(text: str, stops: list[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


class TextGenerationTask(PipelineTask):
    """Prompts -> [[{"generated_text"}]]; chat messages -> ["reply", ...]."""

    auto_class = "AutoModelForCausalLM"
    pipeline_task = "text-generation"

    @staticmethod
    def json_text(task):
        return task == "conversational"  # TEXT elements holding {"role", "content"} messages

    def prepare(self, items):
        if self.task == "conversational" or any(is_message(item) for item in items):
            return [check_messages(items)]
        return super().prepare(items)

    def run(self, items, args):
        args, stops = openai_args(args, self.tokenizer)
        if isinstance(items[0], list):
            prompt, args = self.chat_prompt(items[0], args)
            records = self.pipe(prompt, return_full_text=False, **args)
            return [cut_at_stop(r["generated_text"], stops) for r in records]
        outputs = self.pipe(items, **args)
        if stops:
            for prompt, records in zip(items, outputs):
                for record in records:
                    text = record["generated_text"]
                    head = len(prompt) if text.startswith(prompt) else 0
                    record["generated_text"] = text[:head] + cut_at_stop(text[head:], stops)
        return outputs

    def stream(self, items, args):
        """The continuation of one prompt, or the reply to one chat, as text pieces while they come."""
        args, stops = openai_args(args, self.tokenizer)
        if isinstance(items[0], list):
            prompt, args = self.chat_prompt(items[0], args)
        elif len(items) == 1:
            prompt = items[0]
        else:
            raise InvalidParameter("transform_stream takes one prompt", hint="Stream each prompt in its own call.")
        if args.get("num_return_sequences", 1) != 1:
            raise InvalidParameter("transform_stream generates one sequence (n / num_return_sequences 1)")
        return stream_generation(lambda **kw: self.pipe(prompt, return_full_text=False, **args, **kw),
                                 self.tokenizer, stops)

    def chat_prompt(self, messages, args):
        """The conversation through the chat template (args.chat_template or the tokenizer's), and the
        remaining args for the pipeline (the template already holds the special tokens)."""
        template = take(args, ["chat_template"]).get("chat_template")
        if template is None and not getattr(self.tokenizer, "chat_template", None):
            raise InvalidParameter(f"model {self.model.name_or_path} has no chat template",
                                   hint="Use a chat (instruct) model, or pass a Jinja template as "
                                        "args.chat_template.")
        if template is not None and not isinstance(template, str):
            raise InvalidParameter("chat_template must be a string (a Jinja template)")
        prefill = messages[-1]["role"] == "assistant"
        extra = {"continue_final_message": True} if prefill else {}
        prompt = self.tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                    add_generation_prompt=not prefill, **extra)
        return prompt, {**args, "add_special_tokens": False}
