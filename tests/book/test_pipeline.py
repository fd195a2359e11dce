"""The pipeline's pieces (vlmflow.book) on trivial notebooks: parameter injection, one process per notebook, failure
naming the notebook, secret refusal and leak detection, heading demotion, the internal-link checker, the CLIs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from vlmflow import book
from vlmflow.cli import main

from .conftest import make_notebook

ECHO_PARAMS = 'model = "toy"\ndevice = "cpu"\ndtype = None\nseed = 0\nresults_dir = "results/echo"\nn = 1\n'
ECHO_BODY = ("import json, os, pathlib\n"
             "out = pathlib.Path(results_dir); out.mkdir(parents=True, exist_ok=True)\n"
             "(out / 'seen.json').write_text(json.dumps({'model': model, 'device': device, 'dtype': dtype, "
             "'seed': seed, 'n': n, 'pid': os.getpid(), 'cwd': os.getcwd()}))\n"
             "print('ran', model, n)")


def tiny_root(tmp_path: Path, body: str = ECHO_BODY, name: str = "echo") -> Path:
    """A minimal book root with one registered notebook."""
    make_notebook(tmp_path / "notebooks" / f"{name}.ipynb", ECHO_PARAMS, body)
    (tmp_path / "notebooks" / "figures.toml").write_text(
        f'[{name}]\ntitle = "Echo"\nnotebook = "notebooks/{name}.ipynb"\npage = "book/figures/{name}.ipynb"\n'
        'defaults = { model = "toy", n = 5 }\ntest = { n = 2 }\n')
    (tmp_path / "_config.yml").write_text("title: t\n")
    (tmp_path / "_toc.yml").write_text(f"format: jb-book\nroot: book/index\nchapters:\n  - file: book/figures/{name}\n")
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "index.md").write_text("# Index\n")
    return tmp_path


def test_parse_param():
    assert book.parse_param("n_images=20") == ("n_images", 20)
    assert book.parse_param("alpha=0.5") == ("alpha", 0.5)
    assert book.parse_param("layers=[1, 2]") == ("layers", [1, 2])
    assert book.parse_param("dtype=none") == ("dtype", None)
    assert book.parse_param("flag=true") == ("flag", True)
    assert book.parse_param("model=llava-hf/llava-1.5-7b-hf") == ("model", "llava-hf/llava-1.5-7b-hf")
    assert book.parse_param('q="a=b"') == ("q", "a=b")
    with pytest.raises(book.BookError, match="NAME=VALUE"):
        book.parse_param("novalue")
    with pytest.raises(book.BookError, match="not a Python identifier"):
        book.parse_param("1x=2")


def test_params_for_one_figure_apply_to_it_alone(tmp_path):
    """`--param FIGURE.NAME=VALUE` (the video chapter's clip model next to another model for the rest of the book)
    reaches that figure only, after the parameters for every figure; a figure or a name it lacks is refused."""
    assert book.parse_params(["n=3", "clip.model=org/x.y", "model=llava-hf/llava-1.5-7b-hf"]) == (
        {"n": 3, "model": "llava-hf/llava-1.5-7b-hf"}, {"clip": {"model": "org/x.y"}})
    root = tiny_root(tmp_path)
    make_notebook(root / "notebooks" / "clip.ipynb", ECHO_PARAMS, ECHO_BODY)
    with open(root / "notebooks" / "figures.toml", "a") as toml:
        toml.write('[clip]\ntitle = "Clip"\nnotebook = "notebooks/clip.ipynb"\npage = "book/figures/clip.ipynb"\n'
                   'defaults = { model = "toy:clips" }\n')
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/index\nchapters:\n  - file: book/figures/echo\n"
                                   "  - file: book/figures/clip\n")
    assert main(["book", "build", "--root", str(root), "--no-html", "--param", "n=3",
                 "--param", "clip.model=org/clip-model"]) == 0
    seen = {name: json.loads((root / "results" / name / "seen.json").read_text()) for name in ("echo", "clip")}
    assert (seen["echo"]["model"], seen["echo"]["n"]) == ("toy", 3)
    assert (seen["clip"]["model"], seen["clip"]["n"]) == ("org/clip-model", 3)
    with pytest.raises(book.RegistryError, match="'video'.*no such figure"):
        book.build(root, html=False, figure_overrides={"video": {"model": "x"}}, progress=False)
    with pytest.raises(book.RegistryError, match="figure clip: unknown parameter 'n_clip'"):
        book.build(root, html=False, figure_overrides={"clip": {"n_clip": 2}}, progress=False)


@pytest.mark.parametrize("name", ["api_key", "OPENAI_API_KEY", "hf_token", "judgeSecret", "password", "apiKey",
                                  "auth"])
def test_secret_like_parameter_names_are_refused(name):
    with pytest.raises(book.SecretParameterError, match=name):
        book.check_parameters({name: "x"}, env={})


@pytest.mark.parametrize("name", ["max_new_tokens", "n_tokens", "keep_top", "monkey", "keyframes"])
def test_names_without_a_secret_word_pass(name):
    book.check_parameters({name: 1}, env={})


def test_a_secret_value_under_any_name_is_refused():
    env = {"OPENAI_API_KEY": "sk-abcdefgh12345678"}
    with pytest.raises(book.SecretParameterError, match=r"\$OPENAI_API_KEY"):
        book.check_parameters({"judge_endpoint": "https://x/?k=sk-abcdefgh12345678"}, env=env)
    book.check_parameters({"judge_endpoint": "https://x/"}, env=env)


def test_demote_headings_skips_code_fences():
    text = "# Card\n\n## Data\n```bash\n# a comment\n```\n#not-a-heading\n"
    assert book.demote_headings(text) == "## Card\n\n### Data\n```bash\n# a comment\n```\n#not-a-heading\n"


def test_check_links_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#here">ok</a><a href="sub/page.html#gone">bad anchor</a>'
        '<a href="missing.html">bad file</a><img src="img.png"><a href="https://example.org/x">external</a>'
        '<a href="#top">self</a><span id="top"></span><script src="_static/x.js"></script>')
    (tmp_path / "sub" / "page.html").write_text('<h1 id="here">x</h1><a href="../index.html">up</a>')
    (tmp_path / "img.png").write_bytes(b"png")
    broken = book.check_links(tmp_path)
    assert sorted(broken) == sorted([
        "index.html: a.href -> sub/page.html#gone (no anchor #gone)",
        "index.html: a.href -> missing.html (no such file)",
        "index.html: script.src -> _static/x.js (no such file)",
    ])


def test_run_notebook_injects_parameters_in_its_own_process(tmp_path):
    root = tiny_root(tmp_path)
    spec = book.load_registry(root)["echo"]
    params = spec.parameters(test=True, overrides={"dtype": "float16"})
    assert params == {"model": "toy", "n": 2, "dtype": "float16", "results_dir": "results/echo"}
    res = book.run_notebook(root / spec.notebook, tmp_path / "out" / "echo.ipynb", params, cwd=root,
                            log=tmp_path / "logs" / "echo.log")
    seen = json.loads((root / "results" / "echo" / "seen.json").read_text())
    assert seen["model"] == "toy" and seen["n"] == 2 and seen["dtype"] == "float16" and seen["seed"] == 0
    assert seen["pid"] != os.getpid() and Path(seen["cwd"]) == root.resolve()
    executed = nbformat.read(res.output, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'n = 2' in injected[0].source
    assert "ran toy 2" in res.log.read_text()


def test_a_failing_notebook_is_named_and_the_cli_exits_nonzero(tmp_path, capsys):
    root = tiny_root(tmp_path, body="raise RuntimeError('deliberate failure 42')", name="broken")
    with pytest.raises(book.NotebookFailedError, match=r"(?s)notebook broken .*In \[3\].*deliberate failure 42"):
        book.run_figures(list(book.load_registry(root).values()), root=root, progress=False)
    assert main(["book", "build", "--root", str(root), "--no-html"]) != 0
    assert "notebook broken" in capsys.readouterr().err


def test_notebooks_run_two_at_a_time_come_back_in_registry_order(tmp_path):
    """``jobs=2``: every notebook runs, each in its own process, and the runs return in the registry's order; a
    failure is raised naming its notebook; a job count below one is refused."""
    root = tiny_root(tmp_path)
    registry = (root / "notebooks" / "figures.toml").read_text()
    for name in ("second", "third"):
        make_notebook(root / "notebooks" / f"{name}.ipynb", ECHO_PARAMS.replace("results/echo", f"results/{name}"),
                      ECHO_BODY)
        registry += (f'[{name}]\ntitle = "{name}"\nnotebook = "notebooks/{name}.ipynb"\n'
                     f'page = "book/figures/{name}.ipynb"\ndefaults = {{ model = "toy", n = 5 }}\n')
    (root / "notebooks" / "figures.toml").write_text(registry)
    specs = list(book.load_registry(root).values())
    runs = book.run_figures(specs, root=root, progress=False, jobs=2)
    assert [r.name for r in runs] == ["echo", "second", "third"]
    pids = {json.loads((root / "results" / n / "seen.json").read_text())["pid"] for n in ("echo", "second", "third")}
    assert len(pids) == 3 and os.getpid() not in pids
    assert set(json.loads((root / "_build" / "logs" / "times.json").read_text())) == {"echo", "second", "third"}
    make_notebook(root / "notebooks" / "second.ipynb", ECHO_PARAMS, "raise RuntimeError('deliberate failure 7')")
    with pytest.raises(book.NotebookFailedError, match=r"(?s)notebook second .*deliberate failure 7"):
        book.run_figures(specs, root=root, progress=False, jobs=2)
    with pytest.raises(book.BookError, match="jobs must be a whole number >= 1, got 0"):
        book.run_figures(specs, root=root, progress=False, jobs=0)


def test_a_notebook_that_prints_a_key_is_caught_and_deleted(tmp_path, secret_env):
    root = tiny_root(tmp_path, body="import os; print(os.environ['OPENAI_API_KEY'])", name="leaky")
    out = tmp_path / "out" / "leaky.ipynb"
    with pytest.raises(book.SecretLeakError, match=r"leaky.*\$OPENAI_API_KEY"):
        book.run_notebook(root / "notebooks" / "leaky.ipynb", out, {"n": 1}, cwd=root, log=tmp_path / "l.log")
    assert not out.exists()


def test_figure_cli_reruns_into_its_own_folder(tmp_path, capsys, monkeypatch):
    root = tiny_root(tmp_path)
    out = tmp_path / "myrun"
    # the echo notebook loads no model: let its made-up model and device through the CLI's pre-checks
    monkeypatch.setattr("vlmflow.model.check_device", lambda device: None)
    monkeypatch.setattr("vlmflow.model.model_source", lambda name: name)
    code = main(["figure", "echo", "--root", str(root), "--model", "some-org/some-model", "--device", "cuda",
                 "--param", "n=7", "--out", str(out)])
    assert code == 0
    seen = json.loads((out / "seen.json").read_text())  # results_dir is the output folder
    assert (seen["model"], seen["device"], seen["n"]) == ("some-org/some-model", "cuda", 7)
    assert (out / "echo.ipynb").is_file() and (out / "echo.log").is_file()
    assert main(["figure", "echo", "--root", str(root), "--param", "api_key=abc"]) == 2
    assert "looks like a secret" in capsys.readouterr().err


def test_model_fingerprint_follows_the_weights(tmp_path):
    from vlmflow.store import weights_fingerprint

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    weights = folder / "model.safetensors"
    weights.write_bytes(bytes(3 << 20))  # 3 MiB: head and tail are read, the middle is not
    first = weights_fingerprint(str(folder))
    assert first == weights_fingerprint(str(folder)) and first.startswith("sha256:")
    (folder / "notes.txt").write_text("irrelevant")
    assert weights_fingerprint(str(folder)) == first
    data = bytearray(weights.read_bytes())
    data[-5] = 1  # a retrained model: its last MiB differs
    weights.write_bytes(bytes(data))
    second = weights_fingerprint(str(folder))
    assert second != first
    (folder / "config.json").write_text('{"a": 2}')
    assert weights_fingerprint(str(folder)) not in (first, second)
    assert weights_fingerprint("llava-hf/llava-1.5-7b-hf") == "hub:llava-hf/llava-1.5-7b-hf"


def test_the_model_card_is_staged_one_level_down(tmp_path):
    card = tmp_path / "data" / "toy_model" / "MODEL_CARD.md"
    card.parent.mkdir(parents=True)
    card.write_text("# Toy model card\n\n## Training\n`vlmflow toy train --seed 0`\n")
    out = book.stage_model_card(tmp_path)
    assert out == tmp_path / "_build" / "generated" / "toy_model_card.md"
    assert out.read_text() == "## Toy model card\n\n### Training\n`vlmflow toy train --seed 0`\n"


def test_executed_notebooks_show_no_progress_bars_while_the_terminal_keeps_them(tmp_path, monkeypatch):
    """The library's bars (vlmflow.progress) draw in a terminal but never reach an executed book page."""
    body = ("import sys\nfrom tqdm.auto import tqdm\nfrom vlmflow.progress import bar_disabled\n"
            "for _ in tqdm(range(3), desc='work', disable=bar_disabled(True)): pass\nprint('done')")
    root = tiny_root(tmp_path, body=body, name="bars")
    spec = book.load_registry(root)["bars"]
    res = book.run_notebook(root / spec.notebook, tmp_path / "out" / "bars.ipynb", spec.parameters(), cwd=root,
                            log=tmp_path / "logs" / "bars.log")
    outputs = [o for c in nbformat.read(res.output, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    assert [o.get("text") for o in outputs if o.get("name") == "stdout"] == ["done\n"]
    assert not [o for o in outputs if o.get("name") == "stderr"], "a progress bar reached the executed notebook"
    import io

    from tqdm import tqdm

    from vlmflow.progress import bar_disabled

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    terminal = io.StringIO()
    for _ in tqdm(range(3), desc="work", file=terminal, disable=bar_disabled(True)):
        pass
    assert "work: 100%" in terminal.getvalue()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert bar_disabled(True) and bar_disabled(False)
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not bar_disabled(True) and bar_disabled(False)


def test_a_figure_that_waits_for_a_model_reruns_but_stays_out_of_the_book(tmp_path):
    """`waits_for`: the figure is registered (rerun, listed with why), the book build skips it, naming it in
    `--only` is refused with the reason, and _toc.yml may not list it."""
    root = tiny_root(tmp_path)
    make_notebook(root / "notebooks" / "later.ipynb", ECHO_PARAMS, ECHO_BODY)
    with (root / "notebooks" / "figures.toml").open("a") as fh:
        fh.write('\n[later]\ntitle = "Later"\nnotebook = "notebooks/later.ipynb"\npage = "book/figures/later.ipynb"\n'
                 'waits_for = "the toy X, not shipped yet"\n')
    specs = book.load_registry(root)
    assert specs["echo"].in_book and not specs["later"].in_book
    report = book.build(root, test=True, html=False, progress=False)
    assert [r.name for r in report.runs] == ["echo"]
    with pytest.raises(book.RegistryError, match=r"later \(waits for the toy X, not shipped yet\)"):
        book.build(root, only=["later"], test=True, html=False, progress=False)
    run = book.run_figures([specs["later"]], root=root, test=True, progress=False)  # what `vlmflow figure` runs
    assert json.loads((root / "results" / "later" / "seen.json").read_text())["n"] == 1 and run[0].name == "later"
    toc = root / "_toc.yml"
    toc.write_text(toc.read_text() + "  - file: book/figures/later\n")
    with pytest.raises(book.RegistryError, match="not in the book yet: later"):
        book.check_toc(root, book.load_registry(root))
