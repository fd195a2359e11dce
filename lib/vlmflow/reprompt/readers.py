"""Image re-prompting's describe-to-text baselines: an exact reader of toy descriptions (the upper bound of any
reader) and a text LLM answering from the description (``vlmflow.reprompt``)."""
from __future__ import annotations

import re

# ---------------------------------------------------------------------------------------------------------------
# 4. describe-to-LLM baselines

_NUM = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen")


def exact_reader_answer(description: str, question: str) -> str | None:
    """Answer a toy question from a description alone, exactly (``grammar.parse``): existence, counts, colour.
    None when the description cannot answer it (positions are not in descriptions) or the question is unknown."""
    from vlmflow.toy.grammar import parse
    from vlmflow.toy.questions import plural
    from vlmflow.toy.scenes import SHAPES

    objs = parse(description)
    q = " ".join(question.lower().split())
    m = re.fullmatch(r"is there an? (\w+) (\w+) \?", q)
    if m:
        color, shape = m.groups()
        return "yes" if any(o.color == color and o.shape == shape for o in objs) else "no"
    if q == "how many objects ?":
        return _NUM[min(len(objs), len(_NUM) - 1)]
    m = re.fullmatch(r"how many (\w+) \?", q)
    if m:
        shape = next((s for s in SHAPES if plural(s) == m.group(1)), None)
        if shape is not None:
            return _NUM[min(sum(o.shape == shape for o in objs), len(_NUM) - 1)]
    m = re.fullmatch(r"what color is the (\w+) \?", q)
    if m:
        return next((o.color for o in objs if o.shape == m.group(1) and o.color), None)
    return None


class DescriptionLLM:
    """A text LLM answering from the description, through the LLM judge's OpenAI-compatible client (any endpoint:
    OpenAI, vLLM, Ollama; ``base_url`` / $OPENAI_BASE_URL, key in $OPENAI_API_KEY). Temperature 0."""

    PROMPT = ("Here is a description of an image:\n{description}\n\nAnswer the question about the image using only "
              "the description. Reply with a single word or number.\nQuestion: {question}")

    def __init__(self, model: str = "gpt-4o-2024-08-06", base_url: str | None = None):
        from vlmflow.judge.llm import LLMJudge

        self._judge = LLMJudge(model=model, base_url=base_url, cache_dir=False)
        self.model = model

    def __call__(self, description: str, question: str) -> str:
        client = self._judge.client  # a property of the judge: built on first use, key checked there
        resp = client.chat.completions.create(model=self.model, temperature=0, max_tokens=8, messages=[
            {"role": "user", "content": self.PROMPT.format(description=description, question=question)}])
        return (resp.choices[0].message.content or "").strip()


