"""Reference answers for multiple-choice prompts whose data set records none.

RouterBench keeps every model's answer and its 0/1 score but not the correct option letter, and
an endpoint can only be graded against a reference. The letter is recovered from the recorded
answers and scores; see docs/ONBOARDING.md for the rule and how many ARC prompts it resolves.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from uniroute.data.dataset import RoutingDataset
from uniroute.data.representative import RepresentativePrompt
from uniroute.data.routerbench import responses_by_prompt
from uniroute.onboarding.graders import MultipleChoiceGrader, grader_for, parse_options

#: How each reference was obtained, in the order the rules are tried. ``no-recorded-answers``:
#: the data set records no model answers at all (MMLU-Pro logs keep only scores), so there was
#: nothing to derive from; such prompts keep no reference and onboarding skips them.
RULES = (
    "kept",
    "correct-models-agree",
    "only-letter-no-wrong-model-chose",
    "unresolved",
    "no-recorded-answers",
)


@dataclass
class ReferenceStats:
    """How many references were kept, derived by each rule, or left unresolved (per task)."""

    by_rule: Counter = field(default_factory=Counter)
    by_task: dict[str, Counter] = field(default_factory=dict)
    #: Prompts whose recorded answers left the letter open (rule ``unresolved``).
    unresolved_prompt_ids: list[str] = field(default_factory=list)

    def count(self, task: str, rule: str) -> None:
        """Record one prompt of ``task`` resolved by ``rule``."""
        self.by_rule[rule] += 1
        self.by_task.setdefault(task, Counter())[rule] += 1

    def to_dict(self) -> dict:
        """A JSON-serialisable summary."""
        out = asdict(self)
        out["by_rule"] = dict(self.by_rule)
        out["by_task"] = {task: dict(counts) for task, counts in self.by_task.items()}
        return out


def derive_choice_reference(
    prompt: RepresentativePrompt,
    answers: dict[str, str | None],
    scores: dict[str, float],
    grader: MultipleChoiceGrader | None = None,
) -> tuple[str | None, str]:
    """The correct letter of one multiple-choice prompt from models' answers and 0/1 scores.

    1. The letter given by every model with score 1 (they must all name the same letter).
    2. Otherwise (they disagree, or none scored 1) the one letter no score-0 model chose, among
       the letters of the score-1 models if any, else among the prompt's options.
    3. Otherwise None. Returns (letter or None, the rule that decided).
    """
    grader = grader or MultipleChoiceGrader()
    right: set[str] = set()
    wrong: set[str] = set()
    for model, answer in answers.items():
        score = scores.get(model, np.nan)
        if answer is None or not np.isfinite(score):
            continue
        letter = grader.extract(answer, prompt)
        if letter is None:
            continue
        if score >= 1.0:
            right.add(letter)
        elif score <= 0.0:
            wrong.add(letter)
    if len(right) == 1:
        return right.pop(), "correct-models-agree"
    pool = right or set(parse_options(prompt.text))
    candidates = pool - wrong
    if len(candidates) == 1:
        return candidates.pop(), "only-letter-no-wrong-model-chose"
    return None, "unresolved"


def attach_references(dataset: RoutingDataset) -> RoutingDataset:
    """A copy of ``dataset`` whose multiple-choice prompts carry a derived reference letter.

    Existing references are kept. Only prompts graded by a MultipleChoiceGrader (``grader_for``
    their task) and lacking a reference are derived, from ``dataset.meta["responses"]`` (the
    RouterBench loader's recorded answers). Without recorded answers those prompts keep no
    reference (rule ``no-recorded-answers``). Counts per rule and task are stored in
    ``meta["reference_stats"]`` (see ``ReferenceStats.to_dict``).
    """
    n = dataset.n_prompts
    references = (
        np.full(n, None, dtype=object) if dataset.references is None else dataset.references.copy()
    )
    stats = ReferenceStats()
    graders = {task: grader_for(task) for task in {str(t) for t in dataset.tasks}}
    choice_graders = {
        task: grader for task, grader in graders.items() if isinstance(grader, MultipleChoiceGrader)
    }
    choice_rows = [i for i in range(n) if str(dataset.tasks[i]) in choice_graders]
    needs = {i for i in choice_rows if not _present(references[i])}
    responses = responses_by_prompt(dataset) if needs and dataset.meta.get("responses") else {}
    for i in choice_rows:
        task = str(dataset.tasks[i])
        if i not in needs:
            stats.count(task, "kept")
            continue
        if not responses:
            references[i] = None
            stats.count(task, "no-recorded-answers")
            continue
        prompt_id = str(dataset.prompt_ids[i])
        prompt = RepresentativePrompt(prompt_id, str(dataset.prompts[i]), task)
        answers = {model: by_prompt.get(prompt_id) for model, by_prompt in responses.items()}
        scores = {m: float(dataset.scores[i, j]) for j, m in enumerate(dataset.models)}
        letter, rule = derive_choice_reference(prompt, answers, scores, choice_graders[task])
        references[i] = letter
        stats.count(task, rule)
        if letter is None:
            stats.unresolved_prompt_ids.append(prompt_id)
    out = dataset.subset()
    out.references = references
    out.meta["reference_stats"] = stats.to_dict()
    return out


def _present(reference: object) -> bool:
    if reference is None:
        return False
    if isinstance(reference, float) and np.isnan(reference):
        return False
    return bool(str(reference).strip())
