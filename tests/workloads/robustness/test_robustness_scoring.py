"""Specification of the robustness workload's data, parsing and scoring (the paper's rules)."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from workloads.robustness.metrics import (
    attack_success_rate, classification_scores, macro_f1, meteor, sentence_bleu, sentence_gleu,
    tokenize_zh, translation_scores)
from workloads.robustness.paper_tables import ADVERSARIAL_ASR, CHATGPT_RECOMPUTED, OOD_F1, PAPER_TABLES
from workloads.robustness.parsing import UNPARSED, parse_answer
from workloads.robustness.stored import STORED_FILES, stored_answers
from workloads.robustness.tasks import TASKS, get_task, load_anli, tasks_in_table


def chatgpt_row(column: str = "label") -> dict[str, float]:
    """The ChatGPT row from the stored answers: paper column -> ASR or macro-F1."""
    row = {}
    for name in STORED_FILES:
        task = get_task(name)
        examples = task.load()
        answers = stored_answers(task, examples, column)
        pred = [parse_answer(answers[e.id], task, "chat") for e in examples]
        scores = classification_scores(pred, [e.label for e in examples], task.metric)
        row[task.column] = scores[task.metric]
    return row


def test_stored_chatgpt_row_regenerates_the_seeds_recomputed_figures():
    row = chatgpt_row("label")
    assert {k: round(v, 1) for k, v in row.items()} == CHATGPT_RECOMPUTED
    assert CHATGPT_RECOMPUTED == {"SST-2": 39.9, "QQP": 17.9, "MNLI": 29.8, "QNLI": 34.5,
                                  "RTE": 25.9, "Flipkart": 61.2}


def test_raw_chatgpt_answers_through_main_py_rules_give_the_readme_rte_and_qnli():
    row = {k: round(v, 1) for k, v in chatgpt_row("pred_label").items()}
    assert row == {"SST-2": 39.9, "QQP": 17.9, "MNLI": 31.4, "QNLI": 34.5, "RTE": 24.7,
                   "Flipkart": 61.2}
    assert row["RTE"] == ADVERSARIAL_ASR.value("ChatGPT", "RTE")
    assert abs(row["Flipkart"] - OOD_F1.value("ChatGPT", "Flipkart")) < 1.0


@pytest.mark.parametrize("name,rows", [
    ("advglue_sst2", 148), ("advglue_qqp", 78), ("advglue_mnli", 121), ("advglue_qnli", 148),
    ("advglue_rte", 81), ("anli", 1200), ("flipkart", 331), ("ddxplus", 100), ("advglue_t", 31)])
def test_every_task_loads_its_documented_row_count(name, rows):
    task = get_task(name)
    examples = task.load()
    assert len(examples) == rows == task.expected_rows
    assert len({e.id for e in examples}) == rows
    assert [e.index for e in examples] == list(range(rows))
    if task.kind == "classification":
        assert {e.label for e in examples} <= set(range(task.num_classes))


def test_label_distributions_match_the_paper_subsets():
    flipkart = Counter(e.label for e in get_task("flipkart").load())
    assert flipkart == {1: 240, 0: 84, 2: 7}                # positive / negative / neutral
    assert len({e.label for e in get_task("ddxplus").load()}) == 37
    assert get_task("ddxplus").num_classes == 50            # 49 pathologies + "cannot decide"
    assert Counter(e.label for e in get_task("anli").load()) == {0: 402, 1: 402, 2: 396}


def test_inputs_are_built_as_the_papers_dataload():
    qqp = get_task("advglue_qqp")
    raw = json.loads(qqp.default_path.read_text())["qqp"][0]
    assert qqp.load()[0].text == raw["question1"] + " " + raw["question2"]
    line = json.loads(get_task("anli").default_path.read_text().splitlines()[0])
    first = get_task("anli").load()[0]
    assert first.text == line["context"] + " " + line["hypothesis"] and first.id == line["uid"]
    assert get_task("advglue_sst2").render("x") == get_task("advglue_sst2").prompts[-1] + "x"
    assert get_task("advglue_rte").render("x", "generative").endswith("x Answer: ")
    assert get_task("advglue_t").render("x", "completion") == (
        'Translate the following sentence from Engilish to Chinese. "x"')


def test_anli_quota_split_is_first_300_lines_and_the_rest():
    path = get_task("anli").default_path
    head, tail = load_anli(path, "first300"), load_anli(path, "rest900")
    assert (len(head), len(tail)) == (300, 900)
    assert head + tail == load_anli(path)


@pytest.mark.parametrize("answer,task,expected", [
    ("positive", "advglue_sst2", 1), ("negative.", "advglue_sst2", 0),
    ("neutral", "advglue_sst2", 2),                          # parsed, and wrong on a 2-class set
    ("  Neutral. ", "flipkart", 2),
    ('the classification would be "positive".', "advglue_sst2", 1),
    ("it is difficult to determine the sentiment", "advglue_sst2", UNPARSED),
    ("the answer is positive", "advglue_sst2", UNPARSED),     # no rule covers it
    ("entailment", "advglue_rte", 0), ("not_entailment.", "advglue_rte", 1),
    ("The two sentences are not_entailment.", "advglue_rte", 1),
    ("not entailment.", "advglue_rte", 0),                    # "entailment." rule fires first
    ("the question and sentence do not entail each other.", "advglue_qnli", 1),
    ("not_equivalent", "advglue_qqp", 0), ("the two questions are equivalent.", "advglue_qqp", 1),
    ("the two sentences are a contradiction.", "advglue_mnli", 2),
    ("not_entailment", "advglue_mnli", 0),                    # main.py's "x_y" -> "y" quirk
    ("contradiction", "anli", 2), ("viral pharyngitis.", "ddxplus", 7),
    ("I cannot answer that.", "advglue_qnli", UNPARSED), ("", "advglue_rte", UNPARSED),
])
def test_chat_answers_parse_by_main_py_stat_rules(answer, task, expected):
    assert parse_answer(answer, get_task(task), "chat") == expected


def test_generative_answers_take_the_first_candidate_label_found():
    rte = get_task("advglue_rte")
    assert parse_answer("Answer: Entailment", rte, "generative") == 0
    assert parse_answer("not_entailment", rte, "generative") == 0   # the paper's label-order quirk
    assert parse_answer("no idea", rte, "generative") == UNPARSED

def test_completion_answers_are_underscored_then_keep_the_last_word():
    qqp = get_task("advglue_qqp")
    assert parse_answer("The sentence is positive", get_task("advglue_sst2"), "completion") == 1
    assert parse_answer(" not_equivalent\n", qqp, "completion") == 0
    assert parse_answer("The two questions are not equivalent.", qqp, "chat") == 0
    assert parse_answer("The two questions are not equivalent.", qqp, "completion") == 1  # quirk


def test_unparsed_predictions_count_as_wrong():
    gold = [0, 1, 1, 0]
    assert attack_success_rate([0, 1, UNPARSED, UNPARSED], gold) == 50.0
    assert classification_scores([0, UNPARSED, 1, 0], gold, "asr")["unparsed"] == 1
    # UNPARSED is a miss of class 1, not a class of its own: F1(0)=1, F1(1)=2/3
    assert macro_f1([0, UNPARSED, 1, 0], gold) == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_bleu_of_identical_strings_is_100_and_of_unrelated_strings_about_0():
    ref = "这部电影抓住了一种奇妙的懒惰，把才华都浪费了。"
    same = translation_scores([ref], [ref], tokenizer="char")
    assert same["bleu"] == pytest.approx(100.0) and same["gleu"] == pytest.approx(100.0)
    assert same["meteor"] > 99.0                       # METEOR keeps a tiny one-chunk penalty
    unrelated = translation_scores(["今天天气晴朗适合出门散步"], [ref], tokenizer="char")
    assert unrelated["bleu"] < 1e-6 and unrelated["gleu"] < 10 and unrelated["meteor"] < 10


def test_bleu_gleu_meteor_equal_nltk_on_its_documented_examples():
    hyp = "It is a guide to action which ensures that the military always obeys the commands of the party".split()
    ref_a = "It is a guide to action that ensures that the military will forever heed Party commands".split()
    ref_b = ("It is the guiding principle which guarantees the military forces always being under "
             "the command of the Party").split()
    ref_c = "It is the practical guide for the army always to heed the directions of the party".split()
    assert sentence_bleu([ref_a, ref_b, ref_c], hyp) == pytest.approx(0.5045666840058485, abs=1e-12)
    assert sentence_gleu([ref_a], hyp) == pytest.approx(0.4393939393939394, abs=1e-12)
    assert meteor([ref_a], hyp) == pytest.approx(0.6944444444444445, abs=1e-12)  # nltk 3.10.4


def test_chinese_is_segmented_per_character_without_jieba():
    assert tokenize_zh("把 Robert 的才华", method="char") == ["把", "Robert", "的", "才", "华"]


def test_user_given_advglue_and_anli_files_load_from_any_path(tmp_path):
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps({"rte": [{"idx": 7, "label": 1, "sentence1": "A b.", "sentence2": "C."}]}))
    [example] = get_task("advglue_rte").load(dev)
    assert (example.id, example.text, example.label) == ("7", "A b. C.", 1)
    anli = tmp_path / "test.jsonl"
    anli.write_text(json.dumps({"uid": "u1", "context": "P.", "hypothesis": "H.", "label": "c"}) + "\n")
    [example] = get_task("anli").load(anli)
    assert (example.id, example.text, example.label) == ("u1", "P. H.", 2)


def test_a_missing_data_file_raises_an_error_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "dev.json"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        get_task("advglue_sst2").load(missing)
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        get_task("anli").load(tmp_path / "test.jsonl")
    with pytest.raises(KeyError, match="advglue_sst2"):
        get_task("sst2")


def test_stored_answers_refuse_a_dataset_with_other_inputs(tmp_path):
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps({"sst2": [{"idx": 0, "label": 1, "sentence": "not the paper's"}]}))
    task = get_task("advglue_sst2")
    with pytest.raises(ValueError, match="no stored ChatGPT answer"):
        stored_answers(task, task.load(dev))


def test_every_classification_task_has_a_column_in_its_paper_table():
    for task in TASKS.values():
        table = PAPER_TABLES[task.table]
        if task.kind == "classification":
            assert task.column in table.columns
    assert [t.column for t in tasks_in_table("adversarial")] == list(ADVERSARIAL_ASR.columns)
    assert ADVERSARIAL_ASR.records()[-1] == {"model": "ChatGPT", "SST-2": 39.9, "QQP": 18.0,
                                             "MNLI": 32.2, "QNLI": 34.5, "RTE": 24.7, "ANLI": 55.3}
