"""The ``t5`` family (issue 20, ATTEMPT's T5-base adapters): T5 as a scorer of label strings.

Checked here: the label scores equal transformers' ``T5ForConditionalGeneration(labels=...)`` log-probabilities on the
same weights (packed labels, padding, a batch), and :func:`lm_loss` its ``labels=`` loss; greedy generation equals
transformers' ``generate`` and parses back; the methods at identity initialisation leave the scores bit for bit;
ATTEMPT's adapters sit after the self-attention and feed-forward outputs of encoder and decoder (none on
cross-attention), BitFit's added biases where Compacter puts them, and a token inserted at the encoder's index 0 with
GIST's gist logits, all against transformers' model with the same modules hooked by hand; exact counts on T5-base
(meta device): 222,903,552, ATTEMPT's 1,855,104; the tokenizer on ATTEMPT's input strings; folders and checkpoints.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("transformers", reason="the t5 family needs transformers (pip install 'vpeft[text]')")
pytest.importorskip("tokenizers", reason="the t5 family needs tokenizers (pip install 'vpeft[text]')")

import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from vpeft import METHODS, apply_method, create_backbone  # noqa: E402
from vpeft.config import RunConfig, run_identity  # noqa: E402
from vpeft.data.glue import attempt_input, label_strings, parse_generation  # noqa: E402
from vpeft.errors import CheckpointError, ConfigError  # noqa: E402
from vpeft.families.t5 import COMMON, CONFIGS, _builtin_tokenizer, builtin_vocab, lm_loss  # noqa: E402
from vpeft.methods._common import NewGELU  # noqa: E402
from vpeft.methods.base import count_params, head_param_names, methods_for  # noqa: E402
from vpeft.objectives.gist import GISTConfig, GISTObjective  # noqa: E402

TINY = "t5:tiny"
PAIRS = [("the movie was good.", "a great film!"), ("bad", "no"), ("what a long boring story it was", "i think so")]
TEXTS = [attempt_input("rte", p) for p in PAIRS]
PIECE = {p: i for i, p in enumerate(builtin_vocab())}


def _scramble(module, seed=0):
    """Every tensor N(0, 0.3^2) (norm weights 1 + that): far from an init that could hide a misplaced op."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if "layer_norm" in name else 0.0))


def _tiny(method=None, seed=0, labels=("0", "1")):
    torch.manual_seed(seed)
    bb = create_backbone(TINY, num_classes=len(labels))
    _scramble(bb.model, seed)
    bb.model.set_labels(list(labels))
    if method is not None:
        apply_method(bb, method)
    return bb.eval()


def _ids(bb, texts=TEXTS, length=24):
    return bb.model.tokenizer()(texts)[:, :length]  # padded rows: the shortest has 13 tokens


def _reference(bb):
    """transformers' own T5ForConditionalGeneration on the backbone's weights."""
    ref = transformers.T5ForConditionalGeneration(bb.model.config).eval()
    ref.load_state_dict(bb.model.state_dict(), strict=True)
    return ref


def _ref_scores(bb, ref, ids=None, memory=None, mask=None):
    """Each label's summed log-probability by transformers' ``labels=`` forward, one label at a time."""
    tok, strings = bb.model.tokenizer(), bb.model.head.strings
    b = len(ids) if ids is not None else len(memory)
    out = torch.zeros(b, len(strings))
    for c, s in enumerate(strings):
        y = torch.tensor([tok.label_ids(s)] * b)
        if memory is None:
            logits = ref(input_ids=ids, attention_mask=(ids != 0).long(), labels=y).logits
        else:
            logits = ref(encoder_outputs=(memory,), attention_mask=mask.long(), labels=y).logits
        out[:, c] = logits.log_softmax(-1).gather(2, y[..., None]).squeeze(-1).sum(1)
    return out


# ---- scores, loss, generation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels", [("0", "1"), ("0.0", "0.2", "3.4", "5.0", "yes no")])
def test_scores_are_transformers_log_probabilities_of_each_label(labels):
    bb = _tiny(labels=labels)
    ids = _ids(bb)
    assert len(set((ids != 0).sum(1).tolist())) == 3  # three lengths, padded
    with torch.no_grad():
        got = bb(ids)
        want = _ref_scores(bb, _reference(bb), ids)
    assert got.shape == (3, len(labels))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    lengths = [len(bb.model.tokenizer().label_ids(s)) for s in labels]
    assert bb.model.label_lengths.tolist() == lengths  # "3.4" is 3 pieces and </s>


def test_lm_loss_is_transformers_labels_loss():
    """ATTEMPT's loss (transformers' ``labels=`` loss: mean over the batch's target tokens, </s> included, padded
    targets -100) from the scores and the label lengths."""
    labels = label_strings("stsb", "t5")
    bb = _tiny(labels=labels)
    ids, y = _ids(bb), torch.tensor([0, 17, 25])
    tok = bb.model.tokenizer()
    targets = [tok.label_ids(labels[i]) for i in y]
    n = max(map(len, targets))
    padded = torch.tensor([t + [-100] * (n - len(t)) for t in targets])
    with torch.no_grad():
        want = _reference(bb)(input_ids=ids, attention_mask=(ids != 0).long(), labels=padded).loss
        got = lm_loss(bb(ids), y, bb.model.label_lengths)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert len(labels) == 26 and bb.model.label_lengths.tolist() == [4] * 26


def test_greedy_generation_equals_transformers_generate():
    bb = _tiny()
    ids = _ids(bb)
    with torch.no_grad():
        want = _reference(bb).generate(
            input_ids=ids, attention_mask=(ids != 0).long(), max_new_tokens=6, do_sample=False, num_beams=1
        )
    got = bb.model.generate_ids(ids, max_new_tokens=6)
    assert torch.equal(got, want[:, 1:])
    tok = bb.model.tokenizer()
    assert bb.model.generate(ids, max_new_tokens=6) == [tok.decode(r) for r in want[:, 1:].tolist()]


@pytest.mark.parametrize("task, text, want", [("stsb", "3.4", 3.4), ("rte", "1", 1), ("rte", "yes", -1)])
def test_generations_are_strings_that_parse_back(task, text, want):
    """The LM head forced to spell ``text``: generation stops at </s> and the string parses as ATTEMPT's."""
    bb = _tiny()
    seq = bb.model.tokenizer().label_ids(text)

    def force(module, args, y):
        step = min(y.shape[1], len(seq)) - 1
        y = y.clone()
        y[:, -1] = -1e4
        y[:, -1, seq[step]] = 1e4
        return y

    bb.model.lm_head.register_forward_hook(force)
    out = bb.model.generate(_ids(bb), max_new_tokens=8)
    assert out == [text] * 3
    assert parse_generation(task, out[0]) == want


# ---- methods -------------------------------------------------------------------------------------------------------
IDENTITY = [
    "full",
    "bitfit",
    "lora:targets=[q,v]",
    "lora:targets=[q,k,v,proj,fc1,fc2]",
    "adapter:init=zero_up",
    "adapter:init=zero_up,position=sublayers",
    "adapter:init=zero_up,position=sublayers,dim=24,act=gelu_new,train_norms=true",
    "adapter:init=zero_up,position=mlp",
    "adaptformer:init=zero_up",
    "adapter_ps:init=zero_up",
    "ssf",
]


@pytest.mark.parametrize("method", IDENTITY)
def test_methods_at_identity_initialisation_keep_the_scores(method):
    plain, tuned = _tiny(), _tiny(method)
    if method == "ssf":  # SSF starts near, not at, the identity: make it exact
        with torch.no_grad():
            for name, p in tuned.extras["ssf"].named_parameters():
                p.fill_(1.0 if name.endswith("scale") else 0.0)
    ids = _ids(plain)
    with torch.no_grad():
        assert torch.equal(tuned(ids), plain(ids))


#: The methods that do not apply to T5, and why.
REFUSED = {
    "linear": "trains only the head, and a t5 model has none of its own",
    "vpt_deep": "its decoder blocks read the label tokens",
    "dtl_plus": "its tokens are a text sequence, not a grid of image patches",
}


@pytest.mark.parametrize("name", methods_for("t5"))
def test_every_method_trains_or_refuses_in_one_line(name):
    cls = METHODS.get(name)
    cfg = cls.from_dict(dict(cls.test_overrides))
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=2)
    ids = _ids(bb)
    if name in REFUSED:
        with pytest.raises(ConfigError, match=f"method {name!r} .*{REFUSED[name]}"):
            apply_method(bb, cfg)
        return
    apply_method(bb, cfg)
    assert head_param_names(bb) == set() and count_params(bb) == cfg.extra_trainable_count(bb) > 0
    lm_loss(bb(ids), torch.tensor([0, 1, 1]), bb.model.label_lengths).backward()
    assert all(p.grad is not None for p in bb.parameters() if p.requires_grad)


def _hook(module, fn):
    return module.register_forward_hook(lambda m, args, y: fn(y))


def test_attempts_adapters_sit_after_self_attention_and_feed_forward_in_encoder_and_decoder():
    """``adapter:position=sublayers``: ``h + A(h)`` on SelfAttention.o's and DenseReluDense's outputs (before dropout
    and the residual add) in every encoder and decoder block, nothing on cross-attention: transformers' model with
    the same adapters hooked there by hand gives the same scores."""
    bb = _tiny("adapter:position=sublayers,dim=4,act=gelu_new")
    adapters = bb.extras["adapter"]
    assert len(adapters) == 2 * (2 + 2)
    with torch.no_grad():
        for a in adapters:
            a.up.weight.normal_(0, 0.5)
    ids = _ids(bb)
    ref = _reference(bb)
    blocks = [*ref.encoder.block, *ref.decoder.block]
    for i, block in enumerate(blocks):
        _hook(block.layer[0].SelfAttention.o, lambda y, a=adapters[2 * i]: y + a(y))
        _hook(block.layer[-1].DenseReluDense, lambda y, a=adapters[2 * i + 1]: y + a(y))
    with torch.no_grad():
        got, want, plain = bb(ids), _ref_scores(bb, ref, ids), _ref_scores(_tiny(), _reference(_tiny()), ids)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapters change the scores
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_bitfit_adds_compacters_zero_biases_to_every_layer_and_the_lm_head():
    bb = _tiny("bitfit")
    biases = bb.extras["bitfit"]
    d, ff, vocab = 32, 128, 256
    # per encoder block q, k, v, o, wi, wo and 2 norms; per decoder block also cross-attention's 4 and a third norm
    enc, dec = 4 * d + ff + d + 2 * d, 8 * d + ff + d + 3 * d
    assert count_params(bb) == 2 * enc + 2 * dec + 2 * d + vocab == 2_048
    assert "lm_head" in biases and all(b.abs().sum() == 0 for b in biases.values())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for b in biases.values():
            b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    ref = _reference(bb)
    ref_names = dict(ref.named_modules())
    for key, b in biases.items():  # the same biases on transformers' modules of the same names
        module = next(m for n, m in ref_names.items() if n.replace(".", "_") == key)
        _hook(module, lambda y, b=b: y + b)
    ids = _ids(bb)
    with torch.no_grad():
        torch.testing.assert_close(bb(ids), _ref_scores(bb, ref, ids), rtol=1e-5, atol=1e-5)


def test_a_token_joins_the_encoder_at_index_0_and_gists_logits_read_it():
    """A token inserted after the embedding lookup (GIST's place on T5, prompt tuning's) with the mask grown: the
    encoder equals transformers' on the embeddings with the token prepended; GIST's own ``logits`` give the scores
    of the whole memory and, as gist logits, the scores with the token's final state as the only memory."""
    bb = _tiny()
    token = nn.Parameter(torch.randn(1, 1, 32))
    bb.register_token_hook(lambda x: torch.cat([token.expand(len(x), -1, -1), x], 1), 1, owner="gist")
    assert bb.token_slots["gist"] == slice(0, 1) and bb.num_prefix_tokens == 1 and not bb.has_class_token
    ids = _ids(bb)
    ref = _reference(bb)
    with torch.no_grad():
        z_c, z_g = GISTObjective(GISTConfig(), bb.token_slots["gist"]).logits(bb, ids)
        embeds = torch.cat([token.expand(3, -1, -1), ref.shared(ids)], 1)
        mask = torch.cat([torch.ones(3, 1, dtype=torch.bool), ids != 0], 1)
        states = ref.encoder(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        got = bb.forward_features(ids)
        n = got.shape[1]  # the token, then the longest text: columns of padding in every row are left out
        assert n == 1 + int((ids != 0).sum(1).max()) < 1 + ids.shape[1] and not mask[:, n:].any()
        torch.testing.assert_close(got, states[:, :n], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(z_c, _ref_scores(bb, ref, memory=states, mask=mask), rtol=1e-5, atol=1e-5)
        gist_only = _ref_scores(bb, ref, memory=states[:, :1], mask=torch.ones(3, 1, dtype=torch.bool))
        torch.testing.assert_close(z_g, gist_only, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(z_g, z_c, atol=1e-3)


def test_prompt_tuning_inserts_prompts_before_the_text():
    bb = _tiny("vpt_shallow:length=3")
    assert bb.token_slots["vpt_shallow"] == slice(0, 3) and count_params(bb) == 3 * 32
    ids = _ids(bb)
    n = int((ids != 0).sum(1).max())  # the longest text: columns of padding in every row are left out
    assert bb.forward_features(ids).shape == (3, 3 + n, 32)
    assert bb.model._mask[:, :3].all() and torch.equal(bb.model._mask[:, 3:], ids[:, :n] != 0)


def test_a_training_step_of_attempts_adapters_reaches_the_adapters_and_norms_only():
    bb = _tiny("adapter:position=sublayers,dim=4,act=gelu_new,init=default,train_norms=true").train()
    before = {n: p.detach().clone() for n, p in bb.named_parameters()}
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in bb.parameters() if p.requires_grad], lr=1e-2)
    ids = _ids(bb)
    for _ in range(2):
        opt.zero_grad()
        lm_loss(bb(ids), torch.tensor([0, 1, 0]), bb.model.label_lengths).backward()
        opt.step()
    changed = {n for n, p in bb.named_parameters() if not torch.equal(p, before[n])}
    norms = {n for n in before if n.startswith("model.") and "layer_norm" in n}
    assert changed == trainable and len(norms) == 2 * 2 + 1 + 2 * 3 + 1
    assert {n for n in changed if n.startswith("model.")} == norms
    assert {n for n in changed if not n.startswith("model.")} == {n for n in before if n.startswith("extras.adapter")}


def test_gelu_new_is_transformers_gelu_new():
    x = torch.randn(1000) * 4
    assert torch.equal(NewGELU()(x), transformers.activations.ACT2FN["gelu_new"](x))


def test_train_norms_leaves_run_ids_unchanged():
    resolved = RunConfig.from_dict({"method": "adapter"}).to_dict()
    assert resolved["method"]["train_norms"] is False and "train_norms" not in run_identity(resolved)["method"]
    on = run_identity(RunConfig.from_dict({"method": "adapter:train_norms=true"}).to_dict())["method"]
    assert on["train_norms"] is True


# ---- counts --------------------------------------------------------------------------------------------------------
D, L, FF, V = 768, 12, 3072, 32128  # T5-base: width, blocks per stack, feed-forward, vocabulary
ADAPTER_24 = 2 * D * 24 + 24 + D  # 37,656: down 768->24 and up 24->768 with biases
NORMS = (2 * L + 1 + 3 * L + 1) * D  # 62 RMS norms: 47,616


@pytest.mark.parametrize(
    "method, extra",
    [
        ("full", 222_903_552),
        ("adapter:position=sublayers,dim=24,act=gelu_new,init=default,train_norms=true", 48 * ADAPTER_24 + NORMS),
        ("adapter:position=sublayers,dim=24", 48 * ADAPTER_24),  # 1,807,488
        ("lora", 2 * L * 2 * (8 * D + D * 8)),  # rank 8 on self-attention q, v: 589,824
        # Compacter's: q, k, v, o (and cross-attention's), wi, wo, the norms; final norms, LM head: 282,496
        ("bitfit", L * (4 * D + FF + D + 2 * D) + L * (8 * D + FF + D + 3 * D) + 2 * D + V),
        ("vpt_shallow:length=100", 100 * D),  # prompt tuning, 100 tokens (Lester et al.)
    ],
)
def test_counts_on_t5_base(method, extra):
    with torch.device("meta"):
        bb = create_backbone("t5:base", num_classes=2)
        apply_method(bb, method)
    assert count_params(bb) == bb.method.extra_trainable_count(bb) == extra
    if method.startswith("adapter:position=sublayers,dim=24,act"):
        assert extra == 1_855_104 and NORMS == 47_616 and ADAPTER_24 == 37_656
    if method == "bitfit":
        assert extra == 282_496
    if method == "full":
        total = sum(p.numel() for p in bb.model.parameters())
        assert total == extra and bb.model.lm_head.weight is bb.model.shared.weight  # tied


# ---- the tokenizer -------------------------------------------------------------------------------------------------
def test_the_tokenizer_on_attempts_input_strings():
    bb = create_backbone(TINY, num_classes=2)
    tok = bb.model.tokenizer()
    text = attempt_input("rte", ("The movie was GOOD.", "A film!"))
    assert text == "sentence1: The movie was GOOD. sentence2: A film!"
    pieces = ["▁sentence1", ":", "▁the", "▁movie", "▁was", "▁good", ".", "▁sentence2", ":", "▁a", "▁film", "!"]
    ids = tok([text])
    assert ids.dtype == torch.int64 and ids.shape == (1, 64)
    assert ids[0, :13].tolist() == [PIECE[p] for p in pieces] + [1] and ids[0, 13:].eq(0).all()
    assert torch.equal(tok([(text,)]), ids)
    assert tok.label_ids("3.4") == [PIECE["▁3"], PIECE["."], PIECE["4"], 1] and tok.label_ids("0") == [PIECE["▁0"], 1]
    assert tok.decode(tok.label_ids("3.4") + [0, 0]) == "3.4" and tok.decode(ids[0].tolist()) == text.lower()
    assert tok(["zqx"])[0, :4].tolist() == [PIECE["▁z"], PIECE["q"], PIECE["x"], 1]
    cut = bb.model.text_encoder(5)([text])
    assert cut[0].tolist() == [PIECE[p] for p in pieces[:4]] + [1]  # cut, </s> kept
    with pytest.raises(ValueError, match=r"T5 reads one string per example.*attempt_input"):
        tok([("a", "b")])
    with pytest.raises(ConfigError, match=r"t5:tiny: max_length 1 must be an integer of at least 2"):
        bb.model.text_encoder(1)


# ---- folders and checkpoints ---------------------------------------------------------------------------------------
@pytest.fixture
def t5_folder(tmp_path):
    """A Hugging Face T5 folder as save_pretrained writes it (tied tensors stored once) with a tokenizer.json."""
    torch.manual_seed(1)
    ref = transformers.T5ForConditionalGeneration(transformers.T5Config(**COMMON, **CONFIGS["tiny"]))
    folder = tmp_path / "t5-tiny"
    ref.save_pretrained(folder)
    _builtin_tokenizer().save(str(folder / "tokenizer.json"))
    return folder, ref


def test_a_folder_loads_as_transformers_saved_it(t5_folder):
    folder, ref = t5_folder
    bb = create_backbone(f"t5:{folder}:max_length=32", num_classes=2)
    assert bb.model.max_length == 32 and bb.model.tokenizer_folder == folder.resolve()
    want = ref.state_dict()
    got = bb.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_checkpoints_that_do_not_match_name_the_tensor(t5_folder, tmp_path):
    folder, ref = t5_folder
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    missing = dict(sd)
    missing.pop("encoder.block.0.layer.0.SelfAttention.q.weight")
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing: encoder\.block\.0\.layer\.0\.SelfAttention\.q\.weight"):
        create_backbone(TINY, num_classes=2, checkpoint=tmp_path / "missing.safetensors")
    untied = dict(sd)
    untied["lm_head.weight"] = sd["lm_head.weight"] + 1
    save_file(untied, str(tmp_path / "untied.safetensors"))
    with pytest.raises(CheckpointError, match=r"differs from .* and the model ties them"):
        create_backbone(TINY, num_classes=2, checkpoint=tmp_path / "untied.safetensors")
    only = {k: v for k, v in sd.items() if "embed_tokens" not in k and k != "lm_head.weight"}  # one tied name
    save_file(only, str(tmp_path / "one.safetensors"))
    bb = create_backbone(TINY, num_classes=2, checkpoint=tmp_path / "one.safetensors")
    assert torch.equal(bb.model.lm_head.weight, sd["shared.weight"])


def test_missing_files_and_bad_options_fail_in_one_line(t5_folder, tmp_path):
    folder, _ = t5_folder
    with pytest.raises(ConfigError, match=r"t5 backbone '/nosuch': no such folder, and not a named configuration"):
        create_backbone("t5:/nosuch", num_classes=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"t5 folder .*empty has no config\.json"):
        create_backbone(f"t5:{tmp_path / 'empty'}", num_classes=2)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=r"has no tokenizer: tokenizer\.json or spiece\.model"):
        create_backbone(f"t5:{folder}", num_classes=2)
    with pytest.raises(ConfigError, match=r"t5 backbone 'tiny': unknown option 'depth'"):
        create_backbone("t5:tiny:depth=2", num_classes=2)
    with pytest.raises(ConfigError, match=r"the t5 family downloads nothing"):
        create_backbone(TINY, num_classes=2, pretrained=True)
    bb = create_backbone("t5:tiny:dropout_rate=0", num_classes=3)
    assert bb.model.config.dropout_rate == 0 and bb.model.head.strings == ["0", "1", "2"]
    with pytest.raises(ConfigError, match=r"2 label strings for a t5 head of 3 classes"):
        bb.model.set_labels(["0", "1"])
    with pytest.raises(ValueError, match=r"a t5 model takes token ids"):
        bb(torch.zeros(2, 4))
    with pytest.raises(ConfigError, match=r"has no class token; use pool 'avg'"):
        create_backbone(TINY, num_classes=2, pool="token")
    assert F.softmax(bb(_ids(bb)), -1).shape == (3, 3)


def test_gist_on_t5_uses_attempts_loss_for_the_class_term():
    """vpeft's GIST for T5: the gist token first in the encoder input; with cls_loss=lm the class term is ATTEMPT's
    loss (lm_loss of the label scores), the gist term CE on the gist scores, the interaction both KLs at T, by hand."""
    import torch.nn.functional as F

    from vpeft import apply_method, create_backbone
    from vpeft.objectives.gist import GISTConfig

    torch.manual_seed(0)
    bb = create_backbone("t5:tiny", num_classes=2)
    apply_method(bb, "adapter:position=sublayers,dim=4")
    cfg = GISTConfig(cls_loss="lm", dropout=0.0, temperature=2.0)
    obj = cfg.attach(bb)
    from vpeft.registry import TASKS

    for task in ("text2text", "text2text_regress"):  # STS-B as strings is classification: no regression definition
        assert [d.split(" is ")[0] for d in obj.definitions(TASKS.build(task))] == ["GIST on T5"]
    bb.eval(), obj.eval()
    ids = bb.model.text_encoder(16)(["sentence1: a b sentence2: c", "sentence1: d sentence2: e f"])
    y = torch.tensor([1, 0])
    with torch.no_grad():
        out = obj(bb, ids, y)
        zc, zg = obj.logits(bb, ids)
        lc, lg = F.log_softmax(zc / 2, -1), F.log_softmax(zg / 2, -1)
        kl = lambda p, q: (p.exp() * (p - q)).sum(-1).mean()  # noqa: E731
        want = lm_loss(zc, y, bb.model.label_lengths) + 0.5 * F.cross_entropy(zg, y) + 0.75 * (kl(lc, lg) + kl(lg, lc))
    assert bb.token_slots["gist"] == slice(0, 1)
    torch.testing.assert_close(out["loss"], want)
    with pytest.raises(ConfigError, match=r"cls_loss=lm scores label strings: it needs a t5 backbone"):
        GISTConfig(cls_loss="lm").attach(create_backbone("hf_text:tiny_bert", num_classes=2))


def test_lm_predicts_by_scoring_or_by_generation(monkeypatch):
    """objective lm:prediction=generation reads each greedy generation as its label string's class; a string that is
    no label is a class of its own (never right); scoring returns the scores themselves."""
    from vpeft import apply_method, create_backbone
    from vpeft.objectives.lm import LMConfig

    bb = create_backbone("t5:tiny", num_classes=2)
    apply_method(bb, "full")
    bb.eval()
    ids = bb.model.text_encoder(16)(["sentence1: a sentence2: b", "sentence1: c sentence2: d", "x"])
    scoring = LMConfig().attach(bb)
    with torch.no_grad():
        torch.testing.assert_close(scoring.predict(bb, ids), bb(ids))
    monkeypatch.setattr(type(bb.model), "generate", lambda self, x, max_new_tokens=8: ["1", " 0 ", "maybe"])
    got = LMConfig(prediction="generation").attach(bb).predict(bb, ids)
    assert got.argmax(-1).tolist() == [1, 0, 2] and got.shape == (3, 3)


def test_stsb_as_text_classes_by_hand_and_scored_by_the_strings_number(monkeypatch):
    """text2text_regress: a score's class is its label string's (ATTEMPT: 0.1 steps, 51 strings; T5: 0.2, 26), the
    metric reads the predicted string's number against the examples' own scores; free generation's extra column
    (no label string) reads -1.0, as ATTEMPT's string_to_float."""
    from vpeft.registry import TASKS
    from vpeft.tasks.regress import pearson

    for rounding, n in (("attempt", 51), ("t5", 26)):
        cfg = TASKS.build(f"text2text_regress:rounding={rounding}")
        task = cfg.build()
        assert cfg.outputs == n and task.strings[0] == "0.0" and task.strings[-1] == "5.0"
        scores = torch.tensor([3.44, 2.25, 0.85, 5.0])
        batch = task.prepare({"image": torch.zeros(4, 3, dtype=torch.long), "label": scores}, train=True)
        # 3.44 -> 3.4; 2.25 -> 2.2 (ties to even); 0.85 is 0.8500000238 in float32 -> 0.9 at 0.1, 0.8 at 0.2
        want = ["3.4", "2.2", "0.9", "5.0"] if rounding == "attempt" else ["3.4", "2.2", "0.8", "5.0"]
        assert [task.strings[i] for i in batch["label"].tolist()] == want and torch.equal(batch["score"], scores)
    metric = task.metric()  # t5 rounding: class i spells 0.2 i
    outputs = torch.full((4, 27), -5.0)
    for row, col in enumerate([17, 10, 26, 25]):  # "3.4", "2.0", no label string, "5.0"
        outputs[row, col] = 0.0
    metric.update(outputs, batch)
    got = metric.compute()
    pred = [3.4, 2.0, -1.0, 5.0]
    assert got["pearson"] == pytest.approx(pearson(pred, [3.44, 2.25, 0.85, 5.0]), abs=1e-6)
    assert got["mae"] == pytest.approx((0.04 + 0.25 + 1.85 + 0.0) / 4, abs=1e-6)
    assert task.predict(outputs).tolist() == pytest.approx(pred)
    with pytest.raises(ConfigError, match="rounding"):
        TASKS.build("text2text_regress:rounding=half")


def test_stsb_as_text_trains_on_a_t5_and_refuses_an_encoder(tmp_path, capsys):
    from vpeft.data.synth_text import generate_glue
    from vpeft.engine.trainer import train

    generate_glue(tmp_path / "glue", seed=0)
    base = {
        "method": "lora",
        "task": "text2text_regress",
        "data": {"root": str(tmp_path / "glue" / "STS-B")},
        "train": {"epochs": 1, "batch_size": 32, "device": "cpu"},
    }
    r = train(RunConfig.from_dict({**base, "backbone": {"spec": "t5:tiny"}}), tmp_path / "r", progress=False)
    assert r["num_outputs"] == 51 and r["primary_metric"] == "pearson" and set(r["metrics"]) >= {"pearson", "mae"}
    assert str(r["objective"]).startswith("lm")
    from vpeft.cli import main

    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "r"), "--json"]) == 0  # rebuilt from the run: the same scores
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(r["metrics"])
    with pytest.raises(ConfigError, match="STS-B.s label strings with a decoder: it needs a t5 backbone"):
        train(RunConfig.from_dict({**base, "backbone": {"spec": "hf_text:tiny_bert"}}), tmp_path / "e", progress=False)


def test_measure_on_the_meta_device_keeps_t5s_tied_embeddings():
    """Moving a model to ``meta`` makes a parameter per holder of a tied one; vpeft measure re-ties them, so T5-base's
    word embedding, encoder and decoder embeddings and LM head count once (222,903,552, as on the CPU)."""
    from vpeft.measure import measure

    r = measure("t5:base:max_length=64", "full", device="meta", batch_size=2, num_classes=2)
    assert r["trainable"] == r["total"] == 222_903_552
    a = measure("t5:base:max_length=64", "adapter:position=sublayers,dim=24,act=gelu_new,init=default,train_norms=true",
                device="meta", batch_size=2, num_classes=2)  # fmt: skip
    assert a["trainable"] == 1_855_104 and a["total"] == 222_903_552 + 48 * 37_656
