"""Writes the small sentiment sample that ships with bertpress (train.tsv, dev.tsv).

Written by us from the word lists below (not copied from any dataset), so that
`bertpress quickstart` still runs end to end on a machine with no data at all. It is far too
small and regular to show real accuracy: the report says when it was used.
Re-generate with: python bertpress/sample_data/generate.py
"""

import random
from pathlib import Path

SUBJECTS = ["the film", "this movie", "the plot", "the acting", "the soundtrack", "the ending",
            "the cast", "the script", "the direction", "the story", "the dialogue", "the pacing",
            "the camera work", "the lead performance", "this sequel", "the premise"]
POSITIVE = ["wonderful", "moving", "clever", "delightful", "gripping", "beautiful", "charming",
            "funny", "heartfelt", "brilliant", "engaging", "thoughtful", "refreshing", "superb"]
NEGATIVE = ["dull", "tedious", "clumsy", "lifeless", "predictable", "boring", "messy",
            "forgettable", "shallow", "awkward", "painful", "bland", "confusing", "tiresome"]
INTENS = ["", "truly ", "remarkably ", "rather ", "utterly ", "surprisingly ", "quite "]
TEMPLATES = [
    "{s} is {i}{a} .",
    "{s} feels {i}{a} from start to finish .",
    "i found {s} {i}{a} .",
    "honestly , {s} was {i}{a} .",
    "{s} is {i}{a} , and it shows .",
    "what a {a} experience ; {s} never lets up .",
]
NEGATED = ["{s} is not {a} at all .", "{s} is never {a} ."]


def sentences(n: int, rng: random.Random) -> list[tuple[str, int]]:
    out = []
    while len(out) < n:
        label = rng.randint(0, 1)
        s = rng.choice(SUBJECTS)
        if rng.random() < 0.15:  # negation flips the adjective's polarity
            a = rng.choice(NEGATIVE if label else POSITIVE)
            text = rng.choice(NEGATED).format(s=s, a=a)
        else:
            a = rng.choice(POSITIVE if label else NEGATIVE)
            text = rng.choice(TEMPLATES).format(s=s, a=a, i=rng.choice(INTENS))
        out.append((text, label))
    return out


def main() -> None:
    here = Path(__file__).parent
    rng = random.Random(20261121)
    for split, n in (("train", 600), ("dev", 200)):
        rows = ["sentence\tlabel"] + [f"{t}\t{lab}" for t, lab in sentences(n, rng)]
        (here / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
