"""What `auto` with `exit_quorum` = 3 (unanimity) would have scored, read off a `--reuse-panel`
eval folder that ran `fuse` and `solo` on a three-member panel, without running it:

    python3 measurements/unanimous_exit.py measurements/gsm8k-lift-qwen2.5-coder-1.5b

A question whose three kept answers share one final answer (read as `vote` reads them: a port of
`final_answer` in crates/fusion/src/strategy/vote.rs) exits with that answer, graded as `solo`'s
(the first member's answer, which agrees with the other two); any other question gets `fuse`'s
answer on the same panel, as `auto` runs `fuse` there. Tokens: the whole panel for an exit (from
the kept answers), `fuse`'s for the rest. Where a real run exists (`eval ... --system
"unanimous=fusion:local?strategy=auto&exit_quorum=3"`), it is the measurement; this is the check.
"""

import collections
import json
import re
import sys

MARKERS = ["final answer:", "answer:", "answer is", "####"]
MAX_WORDS = 4
PANEL = 3


def last_number(text):
    cleaned = text.replace(",", "").replace("$", "")
    numbers = [t.strip(".") for t in re.split(r"[^0-9.\-]", cleaned)]
    numbers = [t for t in numbers if any(c.isdigit() for c in t)]
    if not numbers:
        return None
    number = numbers[-1].lstrip("-")
    negative = "-" + number in cleaned
    whole, _, fraction = number.partition(".")
    if fraction and set(fraction) == {"0"}:
        number = whole
    return "-" + number if negative else number


def option_letter(text):
    first = (text.split() or [""])[0]
    core = first.lstrip("(").rstrip(").:")
    marked = len(first) > len(core) or first == text
    return core if len(core) == 1 and "A" <= core <= "J" and marked else None


def closed_form(text):
    text = text.strip().rstrip(".!")
    letter = option_letter(text)
    if letter:
        return letter
    words = []
    for word in text.split():
        word = "".join(c for c in word if c.isalnum() or c in ".-").strip(".").lower()
        if word and word not in ("the", "a", "an"):
            words.append(word)
    if not words or len(words) > MAX_WORDS:
        return None
    if any(c.isdigit() for word in words for c in word):
        return last_number(text)
    return " ".join(words)


def final_answer(text):
    lower = text.lower()
    stated = [lower.rfind(m) + len(m) for m in MARKERS if m in lower]
    if stated:
        return closed_form(text[max(stated):].split("\n")[0])
    return closed_form(text.strip()) or last_number(text)


def panel_tokens(folder, run):
    """Each question's three members' tokens: question i's slot s samples with seed
    seed * 1_000_003 + 16 i + s at the run's temperature."""
    base = run["settings"]["seed"] * 1_000_003
    tokens = collections.Counter()
    for line in open(f"{folder}/panel.jsonl"):
        kept = json.loads(line)
        key = json.loads(kept["key"])
        if key.get("temperature") != run["settings"]["temperature"]:
            continue
        index, slot = divmod(key["seed"] - base, 16)
        if slot < PANEL:
            tokens[index] += kept["answer"]["usage"]["total_tokens"]
    return tokens


def main(folder):
    run = json.load(open(f"{folder}/run.json"))
    panel = panel_tokens(folder, run)
    records = collections.defaultdict(dict)
    for line in open(f"{folder}/qa.jsonl"):
        record = json.loads(line)
        records[record["id"]][record["system"]] = record
    n = exits = right = fuse_right = tokens = fuse_tokens = 0
    for question, systems in records.items():
        if "fuse" not in systems or "solo" not in systems:
            continue
        fuse, solo = systems["fuse"], systems["solo"]
        n += 1
        fuse_right += fuse["correct"]
        fuse_tokens += fuse["usage"]["total_tokens"]
        answers = {final_answer(m) if m else None for m in fuse["members"]}
        if len(fuse["members"]) == PANEL and len(answers) == 1 and None not in answers:
            exits += 1
            right += solo["correct"]
            tokens += panel[int(question.rsplit("-", 1)[1])]
        else:
            right += fuse["correct"]
            tokens += fuse["usage"]["total_tokens"]
    print(
        f"{folder}: {n} questions, unanimous exits {exits} ({100 * exits / n:.1f} %), "
        f"accuracy {100 * right / n:.1f} % (fuse {100 * fuse_right / n:.1f} %), "
        f"tokens {tokens / 1000:.0f} k = {100 * tokens / fuse_tokens:.0f} % of fuse's"
    )


if __name__ == "__main__":
    main(sys.argv[1])
