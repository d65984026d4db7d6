"""The paper's prompt set and label maps, copied verbatim from `chatgpt-robust/config.py`.

Source: github.com/microsoft/robustlearn (MIT), folder `chatgpt-robust/`: `PROMPT_SET`, `LABEL_SET`
and `LABEL_TO_ID` at commit 0925ced (the commit whose result files we ship); the DDXPlus prompt was
rewritten later (HEAD 31580cd) and both wordings are kept. Keys are the paper's task names
(`sst2`, `qqp`, `mnli`, `qnli`, `rte`, `anli`, `flipkart`, `ddxplus`, `translation_en_to_zh`).
The typos ("Engilish", "larygospasm", "Are the following paragraph") are the authors' and stay.
"""
from __future__ import annotations

# config.py LABEL_SET['ddxplus']: the 49 DDXPlus pathologies (lower-cased) + "cannot decide"; the
# list index is the class id (LABEL_TO_ID['ddxplus']).
DDXPLUS_LABELS: tuple[str, ...] = (
    "spontaneous pneumothorax", "cluster headache", "boerhaave", "spontaneous rib fracture", "gerd",
    "hiv (initial infection)", "anemia", "viral pharyngitis", "inguinal hernia", "myasthenia gravis",
    "whooping cough", "anaphylaxis", "epiglottitis", "guillain-barré syndrome", "acute laryngitis",
    "croup", "psvt", "atrial fibrillation", "bronchiectasis", "allergic sinusitis", "chagas",
    "scombroid food poisoning", "myocarditis", "larygospasm", "acute dystonic reactions",
    "localized edema", "sle", "tuberculosis", "unstable angina", "stable angina", "ebola",
    "acute otitis media", "panic attack", "bronchospasm / acute asthma exacerbation", "bronchitis",
    "acute copd exacerbation / infection", "pulmonary embolism", "urti", "influenza", "pneumonia",
    "acute rhinosinusitis", "chronic rhinosinusitis", "bronchiolitis", "pulmonary neoplasm",
    "possible nstemi / stemi", "sarcoidosis", "pancreatic neoplasm", "acute pulmonary edema",
    "pericarditis", "cannot decide",
)

# Candidate labels in the authors' order: the zero-shot pipeline's candidates and the order in which
# `inference.py:process_label` looks for a label inside a generated answer.
LABEL_SET: dict[str, tuple[str, ...]] = {
    "sst2": ("positive", "negative"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "anli": ("entailment", "neutral", "contradiction"),
    "qqp": ("equivalent", "not_equivalent"),
    "qnli": ("entailment", "not_entailment"),
    "mnli-mm": ("entailment", "neutral", "contradiction"),
    "rte": ("entailment", "not_entailment"),
    "ddxplus": DDXPLUS_LABELS,
    "flipkart": ("positive", "negative", "neutral"),
}

# Answer word -> class id. sst2 keeps "neutral" (id 2): an AdvGLUE SST-2 answer "neutral" is a
# parsed but wrong class, and the Flipkart ChatGPT run used task "sst2" with this map.
LABEL_TO_ID: dict[str, dict[str, int]] = {
    "sst2": {"negative": 0, "positive": 1, "neutral": 2},
    "mnli": {"entailment": 0, "neutral": 1, "contradiction": 2},
    "qqp": {"equivalent": 1, "not_equivalent": 0},
    "qnli": {"entailment": 0, "not_entailment": 1},
    "flipkart": {"negative": 0, "positive": 1, "neutral": 2},
    "rte": {"entailment": 0, "not_entailment": 1},
    "ddxplus": {name: i for i, name in enumerate(DDXPLUS_LABELS)},
    "anli": {"entailment": 0, "neutral": 1, "contradiction": 2},
}
LABEL_TO_ID["mnli-mm"] = LABEL_TO_ID["mnli"]  # commented out in config.py; same classes as mnli

_NLI3 = ('Are the following two sentences entailment, neutral or contradiction? Answer me with '
         '"entailment", "neutral" or "contradiction". ')
_DDX_INTRO = "Imagine you are an intern doctor. Based on the previous dialogue, what is the diagnosis? "

# main.py sends PROMPT_SET[task][-1] + content: the LAST prompt of each list is the one used.
PROMPT_SET: dict[str, tuple[str, ...]] = {
    "sst2": (
        'Is the following sentence positive or negative? Answer me with "positive" or "negative", '
        'just one word. ',
        'Please classify the following sentence into either positive or negative. Answer me with '
        '"positive" or "negative", just one word. ',
    ),
    "qqp": ('Are the following two questions equivalent or not? Answer me with "equivalent" or '
            '"not_equivalent". ',),
    "mnli": (_NLI3,),
    "mnli-mm": (_NLI3,),
    "anli": ('Are the following paragraph entailment, neutral or contradiction? Answer me with '
             '"entailment", "neutral" or "contradiction". The answer should be a single word. '
             'The answer is: ',),
    "qnli": ('Are the following question and sentence entailment or not_entailment? Answer me with '
             '"entailment" or "not_entailment". ',),
    "rte": ('Are the following two sentences entailment or not_entailment? Answer me with '
            '"entailment" or "not_entailment". ',),
    "flipkart": ('Is the following sentence positive, neutral, or negative? Answer me with '
                 '"positive", "neutral", or "negative", just one word. ',),
    "ddxplus": (
        # 0925ced wording (a Python list literal of all 50 labels) ...
        _DDX_INTRO + f"Select one answer among the following lists: {list(DDXPLUS_LABELS)}. "
        "The answer should be a single word. The answer is: ",
        # ... and the HEAD wording (the 49 diseases, comma-separated), which SEEDS records as the prompt.
        _DDX_INTRO + "Select one answer among the diseases: " + ", ".join(DDXPLUS_LABELS[:-1])
        + ". The answer should be one disease. The answer is:",
    ),
    "translation_en_to_zh": ("Translate the following sentence from Engilish to Chinese. ",),
}
