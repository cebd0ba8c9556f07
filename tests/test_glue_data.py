"""The GLUE reader (official TSV quirks, JSONL), ATTEMPT's re-split and ATTEMPT's text-to-text strings (issue 20)."""

import collections

import numpy as np
import pytest
from conftest import SHARED_DATA

from vpeft.data.glue import (
    ATTEMPT_LARGE,
    ATTEMPT_SMALL,
    GLUE_TASKS,
    TextExample,
    attempt_input,
    attempt_target,
    glue_task,
    label_strings,
    load_task,
    parse_generation,
    read_glue,
    read_jsonl,
    read_tsv,
    shuffled_indices,
    split_glue,
    stsb_target,
)
from vpeft.errors import ConfigError, DataError

GLUE = SHARED_DATA / "glue"
RTE_HEAD = "index\tsentence1\tsentence2\tlabel\n"


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


# ------------------------------------------------------------------------------------------------------------ reader


def test_a_lone_quote_stays_in_its_field(tmp_path):
    """Quoting is off: a field that opens a quote it never closes does not swallow the next tab or line (Python's
    default csv dialect would join the two rows below into one field)."""
    f = write(
        tmp_path / "dev.tsv",
        RTE_HEAD + '0\t"He left\tShe said " hi\tentailment\n1\tA "quoted" word.\t""\tnot_entailment\n',
    )
    got = read_tsv(f, "rte")
    assert got.labelled and got.skipped == ()
    assert got.examples == [
        TextExample(('"He left', 'She said " hi'), 0, 0, 2),
        TextExample(('A "quoted" word.', '""'), 1, 1, 3),
    ]


def test_cola_train_has_no_header_and_its_test_has_one(tmp_path):
    train = write(
        tmp_path / "train.tsv",
        "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
        'gj04\t0\t*\tThey drank the pub "dry.\n',
    )
    got = read_tsv(train, "cola")
    assert [(e.texts, e.label, e.index, e.line) for e in got.examples] == [
        (("Our friends won't buy this analysis, let alone the next one we propose.",), 1, 0, 1),
        (('They drank the pub "dry.',), 0, 1, 2),
    ]
    test = read_tsv(write(tmp_path / "test.tsv", "index\tsentence\n0\tBill whistled past the house.\n"), "CoLA")
    assert not test.labelled and test.examples == [TextExample(("Bill whistled past the house.",), None, 0, 2)]


def test_a_short_row_is_skipped_and_counted_as_the_official_loaders_do(tmp_path):
    """Hugging Face's glue script (and transformers' QqpProcessor) drop a row missing a column they read; its
    ``idx`` still counts it, so the next example's index is 2. ``strict`` fails naming the file and line."""
    f = write(
        tmp_path / "train.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "0\t1\t2\tHow do I cook rice?\tWhat is the way to cook rice?\t1\n"
        "1\t3\t4\tWhy is the sky blue\n"
        "2\t5\t6\tWhat is 2+2?\tHow much is 2 plus 2?\t0\n",
    )
    got = read_tsv(f, "qqp")
    assert got.skipped == (3,)
    assert [(e.index, e.line, e.label) for e in got.examples] == [(0, 2, 1), (2, 4, 0)]
    with pytest.raises(DataError, match=r"train\.tsv:3: 4 tab-separated fields, expected 6"):
        read_tsv(f, "qqp", strict=True)


def test_an_empty_label_is_skipped_and_a_long_row_fails(tmp_path):
    f = write(tmp_path / "train.tsv", RTE_HEAD + "0\ta\tb\t\n1\tc\td\tentailment\n")
    got = read_tsv(f, "rte")
    assert got.skipped == (2,) and [e.index for e in got.examples] == [1]
    with pytest.raises(DataError, match=r"train\.tsv:2: the label is empty"):
        read_tsv(f, "rte", strict=True)
    long = write(tmp_path / "dev.tsv", RTE_HEAD + "0\ta\tb\tentailment\n1\tc\td\te\tentailment\n")
    with pytest.raises(DataError, match=r"dev\.tsv:3: 5 tab-separated fields, expected 4 \(a stray tab\?\)"):
        read_tsv(long, "rte")


def test_mrpc_bom_crlf_and_an_unlabelled_test_file(tmp_path):
    head = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
    f = write(tmp_path / "train.tsv", "\ufeff" + head + '1\t702876\t702977\tAmrozi accused " his brother .\tB .\r\n')
    got = read_tsv(f, "mrpc")
    assert got.examples == [TextExample(('Amrozi accused " his brother .', "B ."), 1, 0, 2)]
    test = write(tmp_path / "test.tsv", "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1089874\t1089925\tA\tB\n")
    got = read_tsv(test, "mrpc")
    assert not got.labelled and got.examples[0].label is None and got.examples[0].texts == ("A", "B")


def test_labels_are_hugging_face_class_indices(tmp_path):
    mnli = write(
        tmp_path / "dev_matched.tsv",
        "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
        "0\t1\t2\tgov\tP0\tH0\tneutral\tneutral\n1\t1\t3\tgov\tP1\tH1\tcontradiction\tcontradiction\n"
        "2\t1\t4\tgov\tP2\tH2\tentailment\tentailment\n",
    )
    assert [e.label for e in read_tsv(mnli, "mnli").examples] == [1, 2, 0]
    wnli = write(tmp_path / "w.tsv", RTE_HEAD + "0\ta\tb\t1\n1\tc\td\t0\n")
    assert [e.label for e in read_tsv(wnli, "wnli").examples] == [1, 0]
    stsb = write(
        tmp_path / "s.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-news\tf\t2012\t1\tnone\tnone\tA plane takes off.\tAn air plane is taking off.\t5.000\n",
    )
    assert read_tsv(stsb, "sts-b").examples[0] == TextExample(
        ("A plane takes off.", "An air plane is taking off."), 5.0, 0, 2
    )


@pytest.mark.parametrize(
    ("text", "task", "message"),
    [
        (RTE_HEAD + "0\ta\tb\tmaybe\n", "rte", r"x\.tsv:2: rte label 'maybe' is not one of entailment, not_entailment"),
        (RTE_HEAD + "0\ta\tb\t2\n", "wnli", r"x\.tsv:2: wnli label '2' is not one of"),
        ("index\tsentence1\tlabel\n0\ta\t1\n", "rte", r"x\.tsv:1: the header lacks the rte column\(s\) sentence2"),
        ("", "rte", r"x\.tsv: the file is empty"),
    ],
)
def test_bad_files_fail_naming_file_and_line(tmp_path, text, task, message):
    with pytest.raises(DataError, match=message):
        read_tsv(write(tmp_path / "x.tsv", text), task)


def test_bytes_that_are_not_utf8_fail_naming_the_line(tmp_path):
    f = write(tmp_path / "x.tsv", RTE_HEAD.encode() + b"0\ta\tb\tentailment\n1\tcaf\xe9\tb\tentailment\n")
    with pytest.raises(DataError, match=r"x\.tsv:3: not UTF-8 text \(byte 0xe9\)"):
        read_tsv(f, "rte")


def test_unknown_task_names_the_nine():
    assert glue_task("SST-2").name == "sst2" and glue_task("STS-B").name == "stsb" and len(GLUE_TASKS) == 9
    with pytest.raises(ConfigError, match="unknown GLUE task 'sst5': expected one of cola, sst2, mrpc"):
        glue_task("sst5")


def test_jsonl_takes_tsv_hugging_face_or_generic_names(tmp_path):
    f = write(
        tmp_path / "train.jsonl",
        '{"#1 String": "A", "#2 String": "B", "Quality": 1}\n\n'
        '{"sentence1": "C", "sentence2": "D", "label": "0"}\n'
        '{"sentence1": "E", "sentence2": "F", "label": "equivalent"}\n',
    )
    got = read_glue(f, "mrpc")
    assert got.labelled and [(e.texts, e.label, e.index, e.line) for e in got.examples] == [
        (("A", "B"), 1, 0, 1),
        (("C", "D"), 0, 1, 3),
        (("E", "F"), 1, 2, 4),
    ]
    mnli = read_jsonl(write(tmp_path / "m.jsonl", '{"premise": "P", "hypothesis": "H", "label": "neutral"}\n'), "mnli")
    assert mnli.examples[0].texts == ("P", "H") and mnli.examples[0].label == 1
    own = read_jsonl(write(tmp_path / "own.jsonl", '{"sentence": "good", "label": 2.5}\n'))
    assert own.task is None and own.examples == [TextExample(("good",), 2.5, 0, 1)]
    unlabelled = read_jsonl(write(tmp_path / "t.jsonl", '{"sentence1": "a", "sentence2": "b"}\n'))
    assert not unlabelled.labelled and unlabelled.examples[0].texts == ("a", "b")


@pytest.mark.parametrize(
    ("text", "task", "message"),
    [
        ('{"sentence1": "a", "sentence2": "b", "label": 1}\n{"sentence1": "c", "sentence2": "d"}\n', "rte",
         r"x\.jsonl:2: no label, unlike the file's first example"),
        ('{"sentence1": "a", "label": 1}\n', "rte", r"x\.jsonl:1: needs a text field sentence2"),
        ('{"sentence1": "a", "sentence2": "b", "label": 1}\n[1]\n', "rte", r"x\.jsonl:2: expected a JSON object"),
        ('{"sentence1": "a", "sentence2": "b", "label": 1\n', "rte", r"x\.jsonl:1: not a JSON object"),
        ('{"sentence1": "a", "label": "pos"}\n', None, r"x\.jsonl:1: label 'pos' is a string"),
        ('{"sentence1": "a", "sentence2": "b", "label": 0.5}\n', "rte", r"x\.jsonl:1: rte label 0\.5 is not a class"),
    ],
)  # fmt: skip
def test_bad_jsonl_fails_naming_file_and_line(tmp_path, text, task, message):
    with pytest.raises(DataError, match=message):
        read_jsonl(write(tmp_path / "x.jsonl", text), task)


def test_load_task_finds_the_task_folder_or_the_files_themselves(tmp_path):
    write(tmp_path / "RTE" / "train.tsv", RTE_HEAD + "0\ta\tb\tentailment\n")
    write(tmp_path / "RTE" / "dev.jsonl", '{"sentence1": "c", "sentence2": "d", "label": "not_entailment"}\n')
    files = load_task(tmp_path, "rte")
    assert sorted(files) == ["dev", "train"] and files["dev"].examples[0].label == 1
    assert sorted(load_task(tmp_path / "RTE", "rte")) == ["dev", "train"]
    with pytest.raises(DataError, match=r"no mrpc files under .*: expected .*MRPC/train\.tsv"):
        load_task(tmp_path, "mrpc")


# ---------------------------------------------------------------------------------------------------------- re-split


def rows(n, offset=0):
    return [TextExample((f"s{offset + i}",), i % 2, i, i + 2) for i in range(n)]


def test_shuffled_indices_are_torch_randperm_seeded_42():
    """ATTEMPT's permutation: torch's CPU randperm from a generator seeded 42. Pinned: the value other projects pin
    too; if torch ever changes it, the re-split no longer matches ATTEMPT's."""
    assert shuffled_indices(10) == [2, 6, 1, 8, 4, 5, 0, 9, 3, 7]
    assert shuffled_indices(10, seed=42) == shuffled_indices(10) != shuffled_indices(10, seed=0)


def test_small_tasks_halve_the_permuted_dev_set():
    train, dev = rows(6), rows(10, offset=100)
    got = split_glue({"train": train, "dev": dev}, "rte")
    assert got["train"] == train  # the train file whole, in file order
    assert [e.index for e in got["val"]] == [2, 6, 1, 8, 4]  # the first len(dev) // 2 of [2, 6, 1, 8, 4, 5, 0, 9, 3, 7]
    assert [e.index for e in got["test"]] == [5, 0, 9, 3, 7]
    odd = split_glue({"train": train, "dev": rows(7)}, "stsb", seed=3)
    assert (len(odd["val"]), len(odd["test"])) == (3, 4)
    assert sorted(e.index for e in odd["val"] + odd["test"]) == list(range(7))
    assert split_glue({"train": train, "dev": dev}, "rte") == got  # deterministic
    assert split_glue({"train": train, "dev": dev}, "rte", seed=1)["val"] != got["val"]


def test_large_tasks_hold_out_1000_training_examples():
    train, dev = rows(1010), rows(5, offset=5000)
    got = split_glue({"train": train, "dev": dev}, "sst2")
    perm = shuffled_indices(1010)
    assert [e.index for e in got["val"]] == perm[:1000] and [e.index for e in got["train"]] == perm[1000:]
    assert not {e.index for e in got["val"]} & {e.index for e in got["train"]}
    assert got["test"] == dev  # GLUE's dev set whole, in file order
    with pytest.raises(DataError, match="qnli: the train file has 1000 rows; ATTEMPT's re-split holds out 1000"):
        split_glue({"train": rows(1000), "dev": dev}, "qnli")


def test_mnli_validates_on_mismatched_and_tests_on_matched():
    train, matched, mismatched = rows(4), rows(3, offset=10), rows(2, offset=20)
    got = split_glue({"train": train, "dev_matched": matched, "dev_mismatched": mismatched}, "mnli")
    assert got == {"train": train, "val": mismatched, "test": matched}


def test_sample_limits_follow_attempts_subsample():
    train, dev = rows(8), rows(10, offset=100)
    got = split_glue({"train": train, "dev": dev}, "mrpc", max_train=3, max_val=2, max_test=10)
    assert [e.index for e in got["train"]] == shuffled_indices(8)[:3]  # a whole split: a fresh permutation of it
    assert [e.index for e in got["val"]] == [2, 6] and [e.index for e in got["test"]] == [5, 0, 9, 3, 7]
    large = split_glue({"train": rows(1004), "dev": dev}, "qqp", max_train=2, max_test=4)
    assert [e.index for e in large["train"]] == shuffled_indices(1004)[1000:1002]
    assert [e.index for e in large["test"]] == [2, 6, 1, 8]


def test_glue_rule_trains_on_train_and_tests_on_dev():
    train, dev = rows(5), rows(3, offset=9)
    assert split_glue({"train": train, "dev": dev}, "rte", rule="glue") == {"train": train, "test": dev}
    mnli = split_glue({"train": train, "dev_matched": dev, "dev_mismatched": rows(2)}, "mnli", rule="glue")
    assert mnli["test"] == dev and len(mnli["test_mismatched"]) == 2 and "val" not in mnli
    with pytest.raises(ConfigError, match="split rule glue has no validation split"):
        split_glue({"train": train, "dev": dev}, "rte", rule="glue", max_val=1)
    with pytest.raises(ConfigError, match="unknown GLUE split rule 'random': expected one of attempt, glue"):
        split_glue({"train": train, "dev": dev}, "rte", rule="random")


def test_the_split_needs_labelled_files(tmp_path):
    write(tmp_path / "train.tsv", RTE_HEAD + "0\ta\tb\tentailment\n")
    write(tmp_path / "dev.tsv", "index\tsentence1\tsentence2\n0\tc\td\n")
    with pytest.raises(DataError, match=r"dev\.tsv: has no labels; the dev file of rte must be labelled"):
        split_glue(load_task(tmp_path, "rte"), "rte")
    with pytest.raises(DataError, match=r"rte: the split rule needs its dev file \(found: train\)"):
        split_glue({"train": rows(3)}, "rte")


# -------------------------------------------------------------------------------------------------------- formatting


def test_attempt_inputs():
    assert (
        attempt_input("rte", ["A man sings.", "A man is singing."])
        == "sentence1: A man sings. sentence2: A man is singing."
    )
    assert attempt_input("rte", ["a", "b"], add_prefix=True) == "rte sentence1: a sentence2: b"
    assert attempt_input("mnli", ["p", "h"]) == "premise: p hypothesis: h"
    assert attempt_input("qqp", ["q1", "q2"]) == "question1: q1 question2: q2"
    assert attempt_input("qnli", ["q", "s"]) == "question: q sentence: s"
    assert attempt_input("SST-2", [" great film "]) == "sentence:  great film "  # not stripped, as ATTEMPT
    assert attempt_input("cola", ["x"], add_prefix=True) == "cola sentence: x"
    with pytest.raises(ValueError, match="mrpc takes 2 text"):
        attempt_input("mrpc", ["only one"])


def test_attempt_targets_and_label_strings():
    assert [attempt_target("mnli", k) for k in (0, 1, 2)] == ["0", "1", "2"]
    assert label_strings("rte") == ("0", "1") and label_strings("mnli") == ("0", "1", "2")
    with pytest.raises(ValueError, match="rte label 2 is not a class index below 2"):
        attempt_target("rte", 2)
    # ATTEMPT's np.round((label * 5) / 5, decimals=1) rounds to 0.1; T5's round(label * 5) / 5 to 0.2, ties to even
    # (exact halves tie to even; 0.85 is 0.8500000238 as Hugging Face's float32 label, so ATTEMPT's string is 0.9)
    cases = {3.8: ("3.8", "3.8"), 2.5: ("2.5", "2.4"), 3.5: ("3.5", "3.6"), 0.5: ("0.5", "0.4"), 0.0: ("0.0", "0.0"),
             5.0: ("5.0", "5.0"), 1.6667: ("1.7", "1.6"), 0.85: ("0.9", "0.8")}  # fmt: skip
    for score, (ours, t5) in cases.items():
        assert (stsb_target(score), stsb_target(score, "t5"), attempt_target("stsb", score)) == (ours, t5, ours)
    attempt_labels_list = [str(np.round(v, decimals=1)) for v in np.arange(0, 5.2, 0.2)]  # ATTEMPT's STSB.labels_list
    assert list(label_strings("stsb", "t5")) == attempt_labels_list and len(attempt_labels_list) == 26
    fine = label_strings("stsb")
    assert len(fine) == 51 and fine[:3] == ("0.0", "0.1", "0.2") and fine[-1] == "5.0"
    assert all(stsb_target(s / 100) in fine for s in range(0, 501)) and all(
        stsb_target(s / 100, "t5") in attempt_labels_list for s in range(0, 501)
    )
    with pytest.raises(ConfigError, match="unknown STS-B rounding 'half'"):
        stsb_target(1.0, "half")


def test_generations_are_read_as_attempt_scores_them():
    assert parse_generation("rte", " 1 ") == 1 and parse_generation("rte", "2") == -1
    assert parse_generation("mnli", "2") == 2 and parse_generation("sst2", "positive") == -1
    assert parse_generation("stsb", "3.4") == 3.4 and parse_generation("stsb", "similar") == -1.0


def test_attempt_groups():
    assert set(ATTEMPT_SMALL) == {"cola", "wnli", "rte", "mrpc", "stsb"}
    assert set(ATTEMPT_LARGE) == {"qqp", "qnli", "sst2"}


# --------------------------------------------------------------------------------------------------------- real data

#: Rows per file (header excluded), from ../shared/data/PROVENANCE.md.
COUNTS = {
    "sst2": {"train": 67349, "dev": 872, "test": 1821},
    "mrpc": {"train": 3668, "dev": 408, "test": 1725},
    "stsb": {"train": 5749, "dev": 1500, "test": 1379},
    "qnli": {"dev": 5463, "test": 5463},
    "rte": {"train": 2490, "dev": 277, "test": 3000},
    "wnli": {"train": 635, "dev": 71, "test": 146},
}


@pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue is not beside this checkout")
def test_the_real_glue_files():
    labels = {}
    for task, counts in COUNTS.items():
        files = load_task(GLUE, task)
        assert {stem: len(f.examples) for stem, f in files.items()} == counts, task
        assert all(f.skipped == () for f in files.values()) and not files["test"].labelled
        assert all(f.labelled for stem, f in files.items() if stem != "test")
        assert all(len(e.texts) == len(GLUE_TASKS[task].columns) for f in files.values() for e in f.examples)
        labels[task] = {s: collections.Counter(e.label for e in f.examples) for s, f in files.items() if f.labelled}
        if "train" in files:
            got = split_glue(files, task)
            n_dev, small = counts["dev"], task in ATTEMPT_SMALL
            assert len(got["val"]) == (n_dev // 2 if small else 1000)
            assert len(got["test"]) == (n_dev - n_dev // 2 if small else n_dev)
            assert len(got["train"]) == counts["train"] - (0 if small else 1000)
    # PROVENANCE's label counts, as Hugging Face's class indices
    assert labels["sst2"]["train"] == {1: 37569, 0: 29780} and labels["sst2"]["dev"] == {1: 444, 0: 428}
    assert labels["mrpc"]["train"] == {1: 2474, 0: 1194} and labels["mrpc"]["dev"] == {1: 279, 0: 129}
    assert labels["rte"]["train"] == {0: 1249, 1: 1241} and labels["rte"]["dev"] == {0: 146, 1: 131}
    assert labels["qnli"]["dev"] == {0: 2702, 1: 2761} and labels["wnli"]["train"] == {0: 323, 1: 312}
    # quotes are kept as they are; MRPC's BOM does not reach its first label
    mrpc = load_task(GLUE, "mrpc")
    assert sum('"' in t for e in mrpc["train"].examples for t in e.texts) > 700
    # the STS-B targets off the 0.2 grid, as stsb_target's docstring says
    stsb = load_task(GLUE, "stsb")
    grid = set(label_strings("stsb", "t5"))
    off = {s: sum(stsb_target(e.label) not in grid for e in stsb[s].examples) for s in ("train", "dev")}
    assert off == {"train": 303, "dev": 74}
    assert all(0 <= e.label <= 5 for e in stsb["train"].examples)
