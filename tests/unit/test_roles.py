"""Token roles: the LLaVA-1.5 prompt layout, image-span size, left padding, groups and role errors."""
import pytest
import torch

from tests.oracles import random_image as _image
from tests.tiny import build
from vlmflow.errors import NoImageTokensError, UnknownRoleError
from vlmflow.roles import GROUPS, ROLES, TokenRoles, resolve, roles_from_segments

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")


@pytest.fixture(scope="module")
def tiny():
    return build("llava")


def _runs(names):
    """Collapse a role sequence to its runs: ['bos', 'system', 'system'] -> ['bos', 'system']."""
    out = []
    for n in names:
        if not out or out[-1] != n:
            out.append(n)
    return out


def test_llava_prompt_is_the_papers_llava_v1_template(tiny):
    from vlmflow.adapters import adapter_for

    adapter = adapter_for(*tiny)
    assert adapter.prompt("describe the image") == f"{SYSTEM} USER: <image>\ndescribe the image ASSISTANT:"


def test_llava_layout_and_image_span_equals_model_token_count(tiny):
    from vlmflow.adapters import adapter_for

    model, processor = tiny
    adapter = adapter_for(model, processor)
    inputs, roles = adapter.prepare([_image(0)], ["describe the image"])
    names = roles.names(0)
    assert _runs(names) == ["bos", "system", "user", "image", "query", "assistant"]
    vc = model.config.vision_config
    assert roles.count("image") == (vc.image_size // vc.patch_size) ** 2  # CLS dropped ("default" strategy)
    # every image position holds the image token and nothing else does
    ids = inputs["input_ids"][0]
    assert torch.equal(ids == model.config.image_token_id, roles.mask("image")[0])
    # the words of each role decode back to the segment text
    tok = processor.tokenizer
    assert tok.decode(ids[roles.mask("query")[0]]) == "describe the image"
    assert tok.decode(ids[roles.mask("assistant")[0]]).replace(" ", "") == "ASSISTANT:"
    assert tok.decode(ids[roles.mask("user")[0]]).replace(" ", "") == "USER:"
    assert roles.positions("bos").tolist() == [0] and int(ids[0]) == tok.bos_token_id


def test_left_padded_batch_roles_match_single_rows(tiny):
    from vlmflow.adapters import adapter_for

    adapter = adapter_for(*tiny)
    qs = ["describe the image", "how many objects are there in this picture ?"]
    inputs, roles = adapter.prepare([_image(0), _image(1)], qs)
    assert roles.count("pad", 0) > 0 and roles.count("pad", 1) == 0
    for b, q in enumerate(qs):
        _, single = adapter.prepare([_image(b)], [q])
        n_pad = roles.count("pad", b)
        assert torch.equal(roles.ids[b, n_pad:], single.ids[0])
        assert torch.equal(roles.mask("pad")[b], inputs["attention_mask"][b] == 0)


def test_sentencepiece_style_tokenizer_layout():
    """A Llama-like tokenizer (Metaspace pre-tokenizer: tokens start with the space before them, BPE merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    q = "describe the image"
    text = f"{SYSTEM} USER: <image>\n{q} ASSISTANT:"
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<image>"])
    tk.train_from_iterator([text.replace("<image>", "")] * 4, trainer)
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    image_id = tk.token_to_id("<image>")
    segments = [("system", SYSTEM), ("user", " USER: "), ("image", "<image>"), ("query", "\n" + q),
                ("assistant", " ASSISTANT:")]
    n_img = 9
    expanded = tok(text.replace("<image>", "<image>" * n_img))
    ids = torch.tensor([expanded["input_ids"]])
    roles = roles_from_segments(tok, [segments], ids, torch.ones_like(ids), image_id)
    assert _runs(roles.names(0)) == ["bos", "system", "user", "image", "query", "assistant"]
    assert roles.count("image") == n_img
    assert tok.decode(ids[0][roles.mask("query")[0]]).strip() == q


def test_groups_resolve_to_the_papers_sets():
    assert resolve("text") == {"bos", "system", "user", "query", "assistant"}
    assert resolve("prompt") == resolve("text") | {"image"}
    assert resolve("all") == set(ROLES) - {"pad"}
    assert resolve(["image", "template"]) == {"image", "system", "user", "assistant"}
    assert set(GROUPS) >= {"text", "prompt", "template", "all"}


def test_mask_extends_with_generated_positions():
    ids = torch.tensor([[0, 1, 2, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    roles = TokenRoles(ids, 6)
    m = roles.mask("generated", length=9)
    assert m.shape == (2, 9) and m[:, 6:].all() and not m[:, :6].any()
    assert roles.mask("text", 4).tolist() == [[False, True, True, False], [True, True, True, False]]
    assert roles.count("image", 1) == 1


def test_unknown_role_names_the_culprit():
    with pytest.raises(UnknownRoleError, match="'imgae'") as err:
        resolve(["image", "imgae"])
    assert "query" in str(err.value) and "text" in str(err.value)  # lists the valid names


def test_prompt_without_image_tokens_raises(tiny):
    _, processor = tiny
    tok = processor.tokenizer
    segments = [("system", SYSTEM), ("user", " USER: "), ("query", "describe the image")]
    enc = tok("".join(t for _, t in segments), return_tensors="pt")
    with pytest.raises(NoImageTokensError, match="row 0"):
        roles_from_segments(tok, [segments], enc["input_ids"], enc["attention_mask"], 4)
