"""The tutor's synthetic chat corpus: seeded conversations, their expected replies, the split.

Owns: the skills tiny-tutor learns (greetings and names, arithmetic from 0 to 12, repeat,
reverse and uppercase, answers about the chat format, folded system prompts, multi-turn
references, a polite refusal; from version 8 casual greetings, thanks and goodbyes, "What is
<bos>?" and sums written with symbols), the reply each prompt must get, the held-out split of names,
words, number pairs and phrasings that training never sees, and how a reply is graded.
Does not own: tokens or rendering (`vocab`, `chat_format`), training or evaluation runs.

Every reply is a function of its prompt, so grading is an exact comparison (for arithmetic, of
the final sentence: the worked steps before it are the model's own scratch work). Arithmetic is
taught as counted steps ("7+1=8, 7+2=9, ...") so that a held-out pair needs no memorised fact:
its steps are a prefix of a trained chain, and only where to stop is new.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# 1: the first stage of training. 2: adds MORE_PHRASINGS and the counted "Answer briefly." sums.
# 3: adds V3_PHRASINGS, names and words of English shapes (consonant clusters), and first
# messages of free form for "What did I say first?", so that recall is copying, not a template.
# 4: more free first messages, with "I'm" and openers followed by a comma, and V4_PHRASINGS.
# 5: V5_PHRASINGS: questions that start like the format questions ("Why ...?") or like
# "What is my name?" ("Who ...?") but are refused, and more questions for the name.
# 6: V6_PHRASINGS: questions for the name that ask who the user is, in the first person.
# 7: V7_PHRASINGS: "who I am" questions for the name; the name is the one given last; a
# third of the first messages to recall are sums again.
# 8: four new skills for a first message as people type it: greetings in lower case or without
# punctuation, thanks and goodbyes, "What is <bos>?" with and without angle brackets, and sums
# written with symbols ("3+4", "5*6"). They are drawn for the held-out set after the version 2
# skills, so those skills' prompts stay the same.
CORPUS_VERSION = 8
# The held-out set is always drawn as corpus version 2 drew it: every version is measured on the
# same prompts (the later versions add only trained phrasings, never held-out ones).
EVAL_VERSION = 2

OPS = {"plus": ("+", lambda a, b: a + b), "minus": ("-", lambda a, b: a - b),
       "times": ("×", lambda a, b: a * b)}  # fmt: skip
NUMBERS = range(13)

STYLES = ("plain", "upper", "brief", "pirate", "ok")
# The first phrasing of each style is the one lessons and tests use; all are trained.
SYSTEM_PROMPTS = {
    "upper": ["Answer in uppercase.", "Reply in capital letters.", "Use only capital letters."],
    "brief": ["Answer briefly.", "Be brief.", "Keep your answers short."],
    "pirate": ["Talk like a pirate.", "You are a pirate.", "Answer like a pirate would."],
    "ok": ["Start your reply with OK.", "Begin every answer with OK."],
}

REFUSAL = "I am a tiny demo model and can't answer that."
OUT_OF_RANGE = "I can only do arithmetic with numbers from 0 to 12."
FAQ = {
    "start": (["What does start_of_turn do?", "What is the start_of_turn token?",
               "Explain start_of_turn.", "What is start_of_turn for?"],
              "start_of_turn opens a turn. The role follows it on the same line: user or model."),
    "end": (["What does end_of_turn do?", "What is the end_of_turn token?",
             "Explain end_of_turn.", "What is end_of_turn for?"],
            "end_of_turn closes a turn. When I write it, my reply is over and the app stops."),
    "bos": (["What does bos do?", "What is the bos token?", "Explain bos.", "What is bos for?"],
            "bos marks the beginning of the text. It comes once, before the first turn."),
    "model": (["Why is the role called model?", "What is the model role?",
               "Explain the model role.", "Why not assistant?"],
              "Gemma calls its own turns model, not assistant. Every reply of mine is a model "
              "turn."),
    "prompt": (["What is the generation prompt?", "Explain the generation prompt.",
                "Why does the prompt end with model?", "What is the generation prompt for?"],
               "The generation prompt is start_of_turn, model and a newline at the end of the "
               "prompt. It tells me that it is my turn."),
    "system": (["Is there a system role?", "Why is there no system role?",
                "Where does the system prompt go?", "Can I use a system prompt?"],
               "Gemma-2 has no system role. A system prompt is folded into the first user turn, "
               "before the user's text."),
    "self": (["Who are you?", "What are you?", "Tell me about yourself.", "What is your name?"],
             "I am tiny-tutor, a tiny Gemma-2 trained on the chat format. I know very little "
             "else."),
    "skills": (["What can you do?", "How can you help?", "What do you know?", "Help!"],
               "I can greet you, do small sums from 0 to 12, repeat, reverse or uppercase words, "
               "and explain the chat format."),
}  # fmt: skip
GREETINGS_NAMED = ["Hello, I am {}.", "Hi! My name is {}.", "Hello! I'm {}.", "Hi, I am {}.",
                   "Good morning, I am {}.", "My name is {}.", "Hi there, I'm {}.",
                   "Hey, I am {}.", "Hello there, my name is {}."]  # fmt: skip
GREETINGS = ["Hello!", "Hi!", "Hello there.", "Good morning!", "Hey!", "Hi there!",
             "Good evening!", "Hello."]  # fmt: skip
FOLLOW_UPS = ["And {op} {n}?", "Now {op} {n}?", "What about {op} {n}?", "Then {op} {n}?"]
ASK_FIRST = ["What did I say first?", "What was my first message?"]
ASK_NAME = ["What is my name?", "Do you remember my name?", "Who am I?"]
UNKNOWN = ["What is the capital of {place}?", "Write a {form} about {topic}.",
           "Who won the {event} in {year}?", "How do I {verb} a {thing}?",
           "Translate {word} into {language}.", "Tell me a joke about {topic}.",
           "What is the weather in {place}?", "Explain {topic} to me.",
           "Why is the {thing} {colour}?", "Can you recommend a {form}?"]  # fmt: skip
FILLERS = {
    "place": ["France", "Peru", "Kenya", "Oslo", "Lima", "Japan", "Cairo", "Quebec", "Chile",
              "Berlin", "Nepal", "Boston", "Ghana", "Madrid", "Tonga", "Sydney"],
    "form": ["poem", "story", "song", "letter", "essay", "book", "film", "recipe", "haiku"],
    "topic": ["the sea", "cats", "love", "physics", "history", "the moon", "money", "rain",
              "music", "trees", "robots", "winter", "coffee", "dragons", "chess", "bread"],
    "event": ["world cup", "election", "race", "final", "prize", "match", "cup"],
    "year": ["1998", "2004", "2010", "2016", "2021", "1970", "1985"],
    "verb": ["fix", "paint", "clean", "build", "sell", "bake", "find", "open", "train"],
    "thing": ["bike", "sky", "door", "cake", "house", "car", "phone", "garden", "river"],
    "word": ["hello", "cat", "bread", "friend", "water", "night", "book", "tree"],
    "language": ["French", "German", "Spanish", "Italian", "Dutch", "Greek", "Polish"],
    "colour": ["blue", "green", "red", "dark", "grey", "yellow"],
}  # fmt: skip
# Held out of training: these phrasings, and a share of names, words, pairs and fillers.
HELD_OUT_PHRASINGS = {
    "Hi there, I'm {}.", "Hello there, my name is {}.", "Hi there!", "Good evening!",
    "Then {op} {n}?", "What was my first message?", "Who am I?",
    "What is start_of_turn for?", "What is end_of_turn for?", "What is bos for?",
    "Why not assistant?", "What is the generation prompt for?", "Can I use a system prompt?",
    "What is your name?", "Help!", "Tell me a joke about {topic}.", "Why is the {thing} {colour}?",
}  # fmt: skip

# Paraphrases that version 2 adds to training (none is held out): a model this small meets an
# unseen phrasing by its key words, so it needs many phrasings around each of them.
MORE_PHRASINGS = {
    "greet_named": ["I am {}.", "Hello, my name is {}.", "Hi, I'm {}.", "Good day, I am {}.",
                    "Hello! My name is {}.", "Hey there, I am {}.", "Hi there, my name is {}."],
    "greet": ["Hi.", "Hey there!", "Good day!", "Hello, tutor!", "Hi, tutor."],
    "ask_first": ["What was the first thing I said?", "Tell me my first message.",
                  "Repeat my first message.", "What did I write first?",
                  "Which message did I send first?", "What was my first question?"],
    "ask_name": ["Tell me my name.", "What did I say my name was?", "Do you know my name?",
                 "Remember my name?", "What am I called?", "Say my name."],
    "start": ["Tell me about start_of_turn.", "Why is there a start_of_turn?"],
    "end": ["Tell me about end_of_turn.", "Why is there an end_of_turn?"],
    "bos": ["Tell me about bos.", "Why is there a bos token?"],
    "model": ["Why is it model and not assistant?", "Why model, not assistant?"],
    "prompt": ["Tell me about the generation prompt.", "Why add a generation prompt?"],
    "system": ["Does Gemma have a system role?", "Can I use a system role?",
               "How do I give a system prompt?"],
    "self": ["Who is this?", "Introduce yourself."],
    "skills": ["What are your skills?", "What can I ask you?", "Help me.", "Help"],
}  # fmt: skip

# Version 3's further paraphrases (none is held out, and none is a held-out phrasing with a word
# added or changed: `_is_held_out` rejects any generated text that matches one).
V3_PHRASINGS = {
    "greet_named": ["Call me {}.", "This is {}.", "{} here.", "Hello, this is {}.",
                    "Hi, call me {}.", "Good morning! I'm {}.", "Hey! My name is {}.",
                    "Hello. I am {}.", "Hi! I am {}.", "Greetings, I am {}.", "Yo, I'm {}.",
                    "Good day! My name is {}.", "Hey, my name is {}."],
    "greet": ["Greetings!", "Hello, friend.", "Hey.", "Good afternoon!", "Hi, friend!", "Yo!"],
    "ask_first": ["What did I say at the start?", "What did I tell you first?",
                  "Quote my first message.", "What was the first thing I wrote?",
                  "Read me my first message.", "What did I open with?", "How did I start?",
                  "Show me my first message.", "What was my opening line?",
                  "What did I say in my first message?", "Can you repeat my first message?",
                  "What did I send first?", "What were my first words?",
                  "Say my first message again."],
    "ask_name": ["What's my name?", "Can you tell me my name?", "What name did I give you?",
                 "Do you recall my name?", "What do you call me?", "Who is talking to you?",
                 "Who are you talking to?", "Who did I say I was?", "Who is asking?",
                 "Which name did I give?", "What should you call me?", "Who is speaking?",
                 "Who wrote to you?", "Whose name did I give?", "Remind me of my name."],
    "start": ["What does start_of_turn mean?", "What is the purpose of start_of_turn?"],
    "end": ["What does end_of_turn mean?", "What is the purpose of end_of_turn?"],
    "bos": ["What does bos mean?", "What is the purpose of bos?"],
    "model": ["What is the role called?", "Why does Gemma say model?",
              "Is the role named assistant?"],
    "prompt": ["What does the generation prompt mean?",
               "What is the purpose of the generation prompt?"],
    "system": ["Is a system role supported?", "Where do system instructions go?"],
    "self": ["What are you called?", "Do you have a name?", "Who made you?"],
    "skills": ["Can you help me?", "I need help.", "Please help me.", "What can you help with?"],
}  # fmt: skip

V4_PHRASINGS = {
    "ask_name": ["Who is chatting with you?", "Who said hello to you?", "Who is writing?",
                 "Who is at the keyboard?", "Who introduced themselves?"],
    "ask_first": ["What did I say before anything else?", "Give me my first message."],
}  # fmt: skip

V5_PHRASINGS = {
    "unknown": ["Why do people like {topic}?", "Why does it rain in {place}?",
                "Who invented the {thing}?", "Who wrote the best {form}?",
                "Why is {place} famous?", "Who lives in {place}?", "Why do I need a {thing}?"],
    "ask_name": ["Who is the person talking to you?", "Who are you chatting with?",
                 "Who did you just greet?", "Who is this user?", "Who is typing?"],
}  # fmt: skip

V6_PHRASINGS = {
    "ask_name": ["Who did I tell you I was?", "Who did I introduce myself as?",
                 "Who do you think is talking?", "Who is it that is writing to you?",
                 "Do you know who is talking?", "Who is the one asking?",
                 "Who greeted you?"],
}  # fmt: skip

# Chosen after "Who am I?" (held out) was refused: the name asked for as "who I am".
V7_PHRASINGS = {
    "ask_name": ["Do you know who I am?", "Tell me who I am.", "Can you tell me who I am?",
                 "Who do you think I am?", "Say who I am.", "Remind me who I am.",
                 "Who did I say I am?"],
}  # fmt: skip

# Version 8's skills. Each list's held-out forms are in HELD_OUT_PHRASINGS and never trained;
# the casual greetings held out are lower-case, unpunctuated forms of the greetings held out
# since version 1, so no trained phrasing is a held-out one with its case or a mark changed.
CASUAL_GREETINGS = ["hi", "hello", "hey", "Hi", "Hello", "hi!", "hello!", "hey!", "hi.",
                    "hello.", "hello there", "hey there", "good morning", "Good morning",
                    "good afternoon", "good day", "hello tutor", "hi tutor", "hiya", "Hiya!",
                    "howdy", "yo", "greetings", "HI", "HELLO", "Hello?", "hi?", "hii",
                    "hi there", "good evening", "Hey"]  # fmt: skip
CASUAL_GREETINGS_NAMED = ["hi i am {}", "hello, i am {}", "i am {}", "i'm {}", "Hi, I am {}",
                          "Hello I'm {}", "my name is {}", "hey i'm {}", "hello my name is {}",
                          "Hi I am {}", "hi, my name is {}", "im {}", "hello, i'm {}",
                          "hey, my name is {}", "Hello, I am {}", "hi there, i'm {}",
                          "hello there, my name is {}"]  # fmt: skip
THANKS = ["Thanks!", "Thanks.", "Thanks", "thanks", "thanks!", "Thank you!", "Thank you.",
          "thank you", "Thank you", "Thanks a lot!", "thanks a lot", "Thank you very much!",
          "Thanks, tutor!", "Great, thanks!", "ok thanks", "Cool, thank you.", "thx", "ty",
          "Much appreciated!", "Many thanks!", "thank you so much"]  # fmt: skip
GOODBYES = ["Bye!", "Bye.", "bye", "Bye", "Goodbye!", "Goodbye.", "goodbye", "Bye bye!",
            "bye bye", "See you!", "see you", "See you later!", "see you later", "Good night!",
            "good night", "Farewell!", "I have to go.", "gotta go", "Later!", "cya",
            "Thanks, bye!", "ok bye", "Bye for now!", "see ya"]  # fmt: skip
WELCOME = "You're welcome! What else can I help with?"
GOODBYE = "Goodbye! It was nice to chat. Come back any time."
# "What is <bos>?": the topic's token written as the control token itself (which the tokenizer
# reads as that token) or as its bare name; the answer is the format question's.
TOKEN_QUESTIONS = ["What is {}?", "What is {}", "what is {}?", "What does {} mean?",
                   "What does {} do?", "What is the {} token?", "Explain {}.", "Tell me about {}.",
                   "What's {}?", "What is {} used for?", "{}?", "What is this: {}?",
                   "What is {} for?", "Can you explain {}?"]  # fmt: skip
TOKEN_NAMES = {"start": "start_of_turn", "end": "end_of_turn", "bos": "bos"}
# Sums written as symbols; "*" and "×" are times. {a}, {sign} and {b} fill in the sum.
SYMBOL_SIGNS = {"+": "plus", "-": "minus", "*": "times", "×": "times"}
SYMBOL_SUMS = ["What is {a}{sign}{b}?", "What is {a} {sign} {b}?", "{a}{sign}{b}", "{a}{sign}{b}?",
               "{a} {sign} {b}", "{a}{sign}{b}=", "Compute {a}{sign}{b}.",
               "Calculate {a} {sign} {b}.", "what is {a}{sign}{b}", "Solve {a}{sign}{b}.",
               "What is {a}{sign}{b}", "What's {a}{sign}{b}?", "How much is {a}{sign}{b}?",
               "{a}{sign}{b}=?"]  # fmt: skip
HELD_OUT_PHRASINGS |= {
    "hi there", "good evening", "Hey", "hi there, i'm {}", "hello there, my name is {}",
    "Many thanks!", "thank you so much", "Bye for now!", "see ya",
    "What is {} for?", "Can you explain {}?", "How much is {a}{sign}{b}?", "{a}{sign}{b}=?",
}  # fmt: skip

# The paraphrases each corpus version adds to training, keyed by a phrasing list's name.
ADDED_PHRASINGS = {2: MORE_PHRASINGS, 3: V3_PHRASINGS, 4: V4_PHRASINGS, 5: V5_PHRASINGS,
                   6: V6_PHRASINGS, 7: V7_PHRASINGS}  # fmt: skip

_CONSONANTS = "bcdfghjklmnprstvwz"
# English-shaped syllables for version 3's names and words: onsets and codas with clusters.
_ONSETS = ["", "b", "bl", "br", "c", "ch", "cl", "cr", "d", "dr", "f", "fl", "fr", "g", "gl",
           "gr", "h", "j", "k", "l", "m", "n", "p", "pl", "pr", "qu", "r", "s", "sc", "sh", "sk",
           "sl", "sm", "sn", "sp", "st", "str", "sw", "t", "th", "tr", "tw", "v", "w", "wh",
           "y", "z"]  # fmt: skip
_NUCLEI = ["a", "e", "i", "o", "u", "y", "ai", "ay", "ea", "ee", "ie", "oa", "oo", "ou", "ow"]
_CODAS = ["", "", "b", "ck", "ct", "d", "ft", "g", "k", "l", "ld", "lf", "lk", "ll", "lm", "lp",
          "lt", "m", "mp", "n", "nch", "nd", "ng", "nk", "nt", "p", "r", "rd", "rk", "rm", "rn",
          "rst", "rt", "s", "sh", "sk", "sp", "ss", "st", "t", "tch", "th", "x", "ze"]  # fmt: skip
# Short words a free first message mixes in, so that recall copies them as they were written
# (none that would make it an introduction, which has a reply of its own).
_FUNCTION_WORDS = ["I", "my", "is", "the", "a", "you", "and", "we", "it's", "to", "of", "in",
                   "me", "your", "this", "that", "not", "with", "so", "too", "don't", "you're",
                   "can't", "that's"]  # fmt: skip
_OPENERS = ["Hello", "Hi", "Hey", "Hello there", "Hi there", "Hey there", "Well", "So", "Oh",
            "Good day", "Good morning", "Okay", "Listen", "Look"]  # fmt: skip
_VOWELS = "aeiou"
REAL_NAMES = ["Anna", "Ben", "Carla", "David", "Elif", "Farid", "Grace", "Hugo", "Ines",
              "Jonas", "Kenji", "Lena", "Maria", "Noah", "Olga", "Pablo", "Quinn", "Rosa",
              "Sami", "Tara", "Umar", "Vera", "Wei", "Xavier", "Yara", "Zoe", "Alice", "Bruno",
              "Chloe", "Diego", "Emma", "Felix", "Gina", "Hana", "Ivan", "Julia", "Karim",
              "Lucas", "Mia", "Nina", "Omar", "Priya", "Raj", "Sofia", "Tom", "Ursula",
              "Victor", "Wanda", "Yusuf", "Zara", "Amir", "Bella", "Chen", "Dara", "Eva",
              "Frank", "Hiro", "Iris", "Jack", "Kofi", "Leo", "Mei", "Nils", "Oscar",
              "Pia"]  # fmt: skip


def _pseudo_words(rng: random.Random, count: int, syllables: tuple[int, int]) -> list[str]:
    words: set[str] = set()
    while len(words) < count:
        n = rng.randint(*syllables)
        words.add("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(n)))
    return sorted(words)


def _shaped_words(rng: random.Random, count: int, syllables: tuple[int, int]) -> list[str]:
    words: set[str] = set()
    while len(words) < count:
        n = rng.randint(*syllables)
        word = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS)
                       for _ in range(n))  # fmt: skip
        if 2 <= len(word) <= 9:
            words.add(word)
    return sorted(words)


def _held_out_pattern(phrasing: str) -> re.Pattern:
    def placeholder(match):
        return r"[\w' ]+" if match[1] == "topic" else r"[\w']+"

    return re.compile(re.sub(r"\\\{(\w*)\\\}", placeholder, re.escape(phrasing)) + "$")


_HELD_OUT_PATTERNS = None


def _is_held_out(text: str) -> bool:
    """Does `text` have the form of a held-out phrasing (any words in its placeholders)?"""
    global _HELD_OUT_PATTERNS
    if _HELD_OUT_PATTERNS is None:
        _HELD_OUT_PATTERNS = [_held_out_pattern(p) for p in sorted(HELD_OUT_PHRASINGS)]
    return any(pattern.match(text) for pattern in _HELD_OUT_PATTERNS)


def _split(items: list, rng: random.Random, share: float) -> tuple[list, list]:
    items = list(items)
    rng.shuffle(items)
    cut = max(1, int(len(items) * share))
    return sorted(items[cut:]), sorted(items[:cut])


@dataclass(frozen=True)
class Pools:
    """The content of one side of the split (train or held-out)."""

    names: list[str]
    words: list[str]
    pairs: dict[str, list[tuple[int, int]]]
    fillers: dict[str, list[str]]
    held_out: bool
    # Version 3's English-shaped names and words (the held-out side keeps its share unused).
    shaped_names: list[str] = field(default_factory=list)
    shaped_words: list[str] = field(default_factory=list)


def make_pools(seed: int = 0) -> tuple[Pools, Pools]:
    """(train, held-out) pools; the same for a seed on every machine."""
    rng = random.Random(f"tutor-split-{seed}")
    names = REAL_NAMES + [w.capitalize() for w in _pseudo_words(rng, 600, (1, 3))]
    train_names, test_names = _split(names, rng, 0.1)
    train_words, test_words = _split(_pseudo_words(rng, 1500, (1, 3)), rng, 0.1)
    train_pairs, test_pairs = {}, {}
    for op in OPS:
        # A held-out pair (a, b) keeps its longer chain (a, 12) in training, so its steps exist.
        candidates = [(a, b) for a in NUMBERS for b in range(1, 12)]
        rng.shuffle(candidates)
        test_pairs[op] = sorted(candidates[:16])
        train_pairs[op] = [(a, b) for a in NUMBERS for b in NUMBERS if (a, b) not in test_pairs[op]]
    train_fill, test_fill = {}, {}
    for key, values in FILLERS.items():
        train_fill[key], test_fill[key] = _split(values, rng, 0.25)
    # Version 3's pools come from a stream of their own, so versions 1 and 2 draw as before;
    # anything the held-out side already has is left out of training.
    shaped = random.Random(f"tutor-split-shaped-{seed}")
    taken = set(test_names) | set(test_words)
    names = [w.capitalize() for w in _shaped_words(shaped, 800, (1, 2))]
    names = [n for n in names if n not in taken and n.lower() not in taken]
    train_shaped_names, test_shaped_names = _split(names, shaped, 0.1)
    words = [w for w in _shaped_words(shaped, 1500, (1, 2)) if w not in taken]
    words = [w for w in words if w.capitalize() not in taken]
    train_shaped_words, test_shaped_words = _split(words, shaped, 0.1)
    return (
        Pools(train_names, train_words, train_pairs, train_fill, held_out=False,
              shaped_names=train_shaped_names, shaped_words=train_shaped_words),
        Pools(test_names, test_words, test_pairs, test_fill, held_out=True,
              shaped_names=test_shaped_names, shaped_words=test_shaped_words),
    )  # fmt: skip


@dataclass(frozen=True)
class Reply:
    """A reply in every style, and what grading compares (the tail for worked arithmetic)."""

    text: dict[str, str]
    tail: dict[str, str]


def _reply(plain: str, brief: str | None = None, pirate: str | None = None,
           tail: str | None = None, pirate_tail: str | None = None,
           brief_tail: str | None = None) -> Reply:  # fmt: skip
    text = {"plain": plain, "upper": plain.upper(), "brief": brief or plain,
            "pirate": pirate or f"Arr! {plain}", "ok": f"OK. {plain}"}  # fmt: skip
    tails = dict(text)
    if tail is not None:
        tails.update(plain=tail, upper=tail.upper(), ok=tail, pirate=pirate_tail or tail)
    if brief_tail is not None:
        tails["brief"] = brief_tail
    return Reply(text, tails)


def arithmetic(a: int, op: str, b: int, version: int = CORPUS_VERSION) -> Reply:
    """The counted-steps answer to "What is A op B?". From version 2, "Answer briefly." keeps
    the steps and ends with the bare number: a model this small cannot add in its head."""
    sign, fn = OPS[op]
    final = f"{a} {op} {b} is {fn(a, b)}."
    pirate_final = f"{a} {op} {b} be {fn(a, b)}, matey!"
    if b == 0:
        return _reply(final, f"{fn(a, b)}.", f"Arr! {pirate_final}", final, pirate_final)
    steps = ", ".join(f"{a}{sign}{k}={fn(a, k)}" for k in range(1, b + 1))
    # Version 1 asked for the bare number, which a model this small cannot compute unworked.
    brief, brief_tail = (
        (f"{steps}. Answer: {fn(a, b)}.", f"Answer: {fn(a, b)}.")
        if version >= 2
        else (f"{fn(a, b)}.", None)
    )
    return _reply(
        f"{steps}. So {final}",
        brief=brief,
        pirate=f"Arr! {steps}. So {pirate_final}",
        tail=f"So {final}",
        pirate_tail=f"So {pirate_final}",
        brief_tail=brief_tail,
    )


@dataclass
class Example:
    """One conversation: messages (with an optional leading system message) ending in a reply."""

    skill: str
    messages: list[dict[str, str]]
    reply: str
    tail: str
    separator: str = "\n\n"
    style: str = "plain"
    meta: dict = field(default_factory=dict)

    def grade(self, generated: str) -> bool:
        """Is `generated` (the model's reply, without <end_of_turn>) correct?"""
        generated = generated.strip()
        if self.tail == self.reply:
            return generated == self.reply
        return generated.endswith(self.tail)


class _Maker:
    """Draws conversations from one side of the split."""

    def __init__(self, pools: Pools, rng: random.Random, version: int = CORPUS_VERSION) -> None:
        self.pools, self.rng, self.version = pools, rng, version

    def phrasing(self, options: list[str], more: str = "") -> str:
        if more:
            for version, phrasings in ADDED_PHRASINGS.items():
                if self.version >= version:
                    options = options + phrasings.get(more, [])
        held = [p for p in options if p in HELD_OUT_PHRASINGS]
        kept = [p for p in options if p not in HELD_OUT_PHRASINGS]
        # Held-out prompts use a held-out phrasing half of the time, where one exists.
        if self.pools.held_out and held and self.rng.random() < 0.5:
            return self.rng.choice(held)
        return self.rng.choice(kept)

    def name(self) -> str:
        if self.version >= 3 and self.rng.random() < 0.4:
            return self.rng.choice(self.pools.shaped_names)
        return self.rng.choice(self.pools.names)

    def words(self, count: int) -> list[str]:
        if self.version >= 3 and self.rng.random() < 0.4:
            return self.rng.sample(self.pools.shaped_words, count)
        return self.rng.sample(self.pools.words, count)

    def free(self) -> tuple[str, Reply, dict]:
        """Version 3: a first message of no template (an opener, then any words), only ever
        recalled, so that recall is learned as copying what was written."""
        # Version 4: "I'm" too (never before a name: that is an introduction), longer, and
        # more openers, most of them followed by a comma.
        v4 = self.version >= 4
        function_words = [*_FUNCTION_WORDS, "I'm", "I'm", "we're"] if v4 else _FUNCTION_WORDS
        while True:
            pool = self.pools.words + self.pools.shaped_words + self.pools.shaped_names
            words = [
                self.rng.choice(function_words) if self.rng.random() < 0.35
                else self.rng.choice(pool)
                for _ in range(self.rng.randint(1, 6 if v4 else 5))
            ]  # fmt: skip
            text = " ".join(words)
            if self.rng.random() < (0.7 if v4 else 0.5):
                marks = [", ", ", ", ", ", "! ", ". "] if v4 else [", ", "! ", ". "]
                text = f"{self.rng.choice(_OPENERS)}{self.rng.choice(marks)}{text}"
            text = text[0].upper() + text[1:] + self.rng.choice([".", "!", "?", ""])
            if re.search(r"I'm [A-Z]", text) or _is_held_out(text):
                continue
            return text, _reply(REFUSAL), {}

    def greet(self) -> tuple[str, Reply, dict]:
        return self._greeting(0.75, (GREETINGS_NAMED, "greet_named"), (GREETINGS, "greet"))

    def _greeting(self, named_share: float, named: tuple, plain: tuple) -> tuple[str, Reply, dict]:
        """A greeting from the `named` phrasings (`phrasing`'s arguments) with a name, in
        `named_share` of the draws, else from the `plain` ones; both skills' replies."""
        if self.rng.random() < named_share:
            name = self.name()
            text = self.phrasing(*named).format(name)
            reply = _reply(
                f"Hello {name}! Nice to meet you. How can I help?",
                brief=f"Hello {name}!",
                pirate=f"Ahoy {name}! Arr, how can I help ye?",
            )
            return text, reply, {"name": name}
        reply = _reply("Hello! I am tiny-tutor, a tiny demo model. How can I help?",
                       brief="Hello!", pirate="Ahoy matey! Arr, how can I help ye?")  # fmt: skip
        return self.phrasing(*plain), reply, {}

    def arith(self, op: str | None = None) -> tuple[str, Reply, dict]:
        op = op or self.rng.choice(list(OPS))
        a, b = self.rng.choice(self.pools.pairs[op])
        return (
            f"What is {a} {op} {b}?",
            arithmetic(a, op, b, self.version),
            {"op": op, "a": a, "b": b, "result": OPS[op][1](a, b)},
        )

    def copy(self, kind: str | None = None) -> tuple[str, Reply, dict]:
        kind = kind or self.rng.choice(["Repeat", "Reverse", "Uppercase"])
        words = self.words(self.rng.randint(2, 4))
        out = {"Repeat": words, "Reverse": words[::-1], "Uppercase": [w.upper() for w in words]}
        return f"{kind}: {' '.join(words)}", _reply(" ".join(out[kind])), {"kind": kind.lower()}

    def faq(self) -> tuple[str, Reply, dict]:
        topic = self.rng.choice(sorted(FAQ))
        questions, answer = FAQ[topic]
        first = answer.split(". ")[0].rstrip(".") + "."
        return self.phrasing(questions, topic), _reply(answer, brief=first), {"topic": topic}

    def unknown(self) -> tuple[str, Reply, dict]:
        if self.rng.random() < 0.2:
            op = self.rng.choice(list(OPS))
            a, b = self.rng.randint(13, 99), self.rng.randint(0, 99)
            a, b = (a, b) if self.rng.random() < 0.5 else (b, a)
            text = f"What is {a} {op} {b}?"
            return text, _reply(OUT_OF_RANGE, pirate=f"Arr! {OUT_OF_RANGE}"), {}
        template = self.phrasing(UNKNOWN, "unknown")
        fill = {k: self.rng.choice(v) for k, v in self.pools.fillers.items()}
        pirate = "Arr, I be a tiny demo model and can't answer that."
        return template.format(**fill), _reply(REFUSAL, "I can't answer that.", pirate), {}

    def casual_greet(self) -> tuple[str, Reply, dict]:
        """Version 8: a greeting as typed in a hurry, lower case or without punctuation."""
        return self._greeting(0.5, (CASUAL_GREETINGS_NAMED,), (CASUAL_GREETINGS,))

    def thanks(self) -> tuple[str, Reply, dict]:
        """Version 8: thanks or a goodbye."""
        if self.rng.random() < 0.5:
            return self.phrasing(THANKS), _reply(WELCOME), {"kind": "thanks"}
        return self.phrasing(GOODBYES), _reply(GOODBYE), {"kind": "goodbye"}

    def token_question(self) -> tuple[str, Reply, dict]:
        """Version 8: "What is <bos>?", the token written as itself half of the time."""
        topic = self.rng.choice(sorted(TOKEN_NAMES))
        bracketed = self.rng.random() < 0.5
        token = f"<{TOKEN_NAMES[topic]}>" if bracketed else TOKEN_NAMES[topic]
        answer = FAQ[topic][1]
        first = answer.split(". ")[0].rstrip(".") + "."
        text = self.phrasing(TOKEN_QUESTIONS).format(token)
        return text, _reply(answer, brief=first), {"topic": topic, "bracketed": bracketed}

    def symbol_sum(self) -> tuple[str, Reply, dict]:
        """Version 8: "What is 3+4?", answered as "What is 3 plus 4?" is; out of range too."""
        sign = self.rng.choice(list(SYMBOL_SIGNS))
        op = SYMBOL_SIGNS[sign]
        template = self.phrasing(SYMBOL_SUMS)
        if self.rng.random() < 0.15:
            a, b = self.rng.randint(13, 99), self.rng.randint(0, 99)
            a, b = (a, b) if self.rng.random() < 0.5 else (b, a)
            text = template.format(a=a, sign=sign, b=b)
            return text, _reply(OUT_OF_RANGE, pirate=f"Arr! {OUT_OF_RANGE}"), {}
        a, b = self.rng.choice(self.pools.pairs[op])
        meta = {"op": op, "a": a, "b": b, "result": OPS[op][1](a, b)}
        return template.format(a=a, sign=sign, b=b), arithmetic(a, op, b, self.version), meta

    def single(self) -> tuple[str, Reply, dict]:
        kinds = [self.greet, self.arith, self.arith, self.copy, self.faq, self.unknown]
        return self.rng.choice(kinds)()


def _styled(reply: Reply, style: str) -> tuple[str, str]:
    return reply.text[style], reply.tail[style]


def _single_example(maker: _Maker, skill: str, draw: Callable) -> Example:
    text, reply, meta = draw()
    return Example(skill, [{"role": "user", "content": text}], reply.text["plain"],
                   reply.tail["plain"], meta=meta)  # fmt: skip


def _after_history_example(maker: _Maker, skill: str, draw: Callable) -> Example:
    """Version 8's skills come as a first message, or half of the time after one exchange
    (thanks after an answer, a sum after a greeting)."""
    if maker.rng.random() < 0.5:
        return _single_example(maker, skill, draw)
    messages, _ = _history(maker, maker.single(), 1)
    text, reply, meta = draw()
    messages.append({"role": "user", "content": text})
    return Example(skill, messages, reply.text["plain"], reply.tail["plain"], meta=meta)


def _system_example(maker: _Maker, style: str) -> Example:
    rng = maker.rng
    phrasing = (
        SYSTEM_PROMPTS[style][0] if maker.pools.held_out else rng.choice(SYSTEM_PROMPTS[style])
    )
    text, reply, meta = maker.single()
    out, tail = _styled(reply, style)
    separator = "\n\n" if maker.pools.held_out or rng.random() < 0.75 else "\n"
    messages = [{"role": "system", "content": phrasing}, {"role": "user", "content": text}]
    return Example(f"system-{style}", messages, out, tail, separator, style, meta)


def _follow_up_example(maker: _Maker) -> Example:
    """A sum, then "And times N?" on its result: the result is kept within 0 to 12."""
    rng = maker.rng
    while True:
        first_text, first_reply, meta = maker.arith()
        op = rng.choice(list(OPS))
        allowed = [b for (a, b) in maker.pools.pairs[op] if a == meta["result"]]
        if allowed:
            break
    n = rng.choice(allowed)
    follow = maker.phrasing(FOLLOW_UPS).format(op=op, n=n)
    reply = arithmetic(meta["result"], op, n, maker.version)
    messages = [{"role": "user", "content": first_text},
                {"role": "assistant", "content": first_reply.text["plain"]},
                {"role": "user", "content": follow}]  # fmt: skip
    return Example("multi-arithmetic", messages, reply.text["plain"], reply.tail["plain"])


def _history(
    maker: _Maker, first: tuple[str, Reply, dict], turns: int
) -> tuple[list[dict[str, str]], list[dict]]:
    """`turns` exchanges that open with `first`, and the meta of each user turn."""
    messages = [{"role": "user", "content": first[0]},
                {"role": "assistant", "content": first[1].text["plain"]}]  # fmt: skip
    metas = [first[2]]
    for _ in range(turns - 1):
        text, reply, meta = maker.single()
        messages += [{"role": "user", "content": text},
                     {"role": "assistant", "content": reply.text["plain"]}]  # fmt: skip
        metas.append(meta)
    return messages, metas


def _recall_example(maker: _Maker) -> Example:
    firsts = [maker.greet, maker.arith, maker.copy]
    if maker.version >= 3:
        firsts += [maker.greet, maker.faq, maker.unknown, maker.free, maker.free, maker.free]
    if maker.version >= 4:
        firsts += [maker.free, maker.free, maker.free]
    if maker.version >= 7:
        # Back to about a third of sums, as in version 2: the digits of a first "What is A plus
        # B?" are the hardest to copy past the worked steps of its reply.
        firsts += [maker.arith] * 5
    first = maker.rng.choice(firsts)()
    messages, _ = _history(maker, first, maker.rng.randint(1, 2))
    messages.append({"role": "user", "content": maker.phrasing(ASK_FIRST, "ask_first")})
    reply = f"You said: {first[0]}"
    return Example("multi-first", messages, reply, reply)


def _name_example(maker: _Maker) -> Example:
    rng = maker.rng
    if rng.random() < 0.8:
        first = maker.greet()
        while "name" not in first[2]:
            first = maker.greet()
    else:
        first = rng.choice([maker.arith, maker.copy, maker.faq])()
    messages, metas = _history(maker, first, rng.randint(1, 2))
    # The name the user gave last: a later introduction renames them.
    names = [meta["name"] for meta in metas if "name" in meta]
    reply = f"Your name is {names[-1]}." if names else "You have not told me your name."
    messages.append({"role": "user", "content": maker.phrasing(ASK_NAME, "ask_name")})
    return Example("multi-name", messages, reply, reply)


def draw_example(maker: _Maker, skill: str) -> Example:
    """One example of `skill` (a name from SKILLS)."""
    if skill.startswith("system-"):
        return _system_example(maker, skill.removeprefix("system-"))
    makers = {
        "greeting": lambda: _single_example(maker, skill, maker.greet),
        "arithmetic": lambda: _single_example(maker, skill, maker.arith),
        "repeat": lambda: _single_example(maker, skill, lambda: maker.copy("Repeat")),
        "reverse": lambda: _single_example(maker, skill, lambda: maker.copy("Reverse")),
        "uppercase": lambda: _single_example(maker, skill, lambda: maker.copy("Uppercase")),
        "format-faq": lambda: _single_example(maker, skill, maker.faq),
        "refusal": lambda: _single_example(maker, skill, maker.unknown),
        "multi-arithmetic": lambda: _follow_up_example(maker),
        "multi-first": lambda: _recall_example(maker),
        "multi-name": lambda: _name_example(maker),
        "greeting-casual": lambda: _after_history_example(maker, skill, maker.casual_greet),
        "thanks-goodbye": lambda: _after_history_example(maker, skill, maker.thanks),
        "format-tokens": lambda: _after_history_example(maker, skill, maker.token_question),
        "arithmetic-symbols": lambda: _after_history_example(maker, skill, maker.symbol_sum),
    }
    return makers[skill]()


# Training mixture: how often each skill is drawn (evaluation takes the same number of each,
# in this order). Weighted towards the skills that copy from far back (the first message, the
# name) and the counted sums. Version 8's skills come last, so the held-out prompts of the
# others are drawn as before; they are light, as they reuse replies the others teach.
SKILLS = {
    "greeting": 6, "arithmetic": 14, "repeat": 4, "reverse": 7, "uppercase": 4, "format-faq": 7,
    "refusal": 7, "system-upper": 5, "system-brief": 6, "system-pirate": 5, "system-ok": 6,
    "multi-arithmetic": 10, "multi-first": 15, "multi-name": 11,
    "greeting-casual": 2, "thanks-goodbye": 2, "format-tokens": 3, "arithmetic-symbols": 4,
}  # fmt: skip


def training_stream(
    seed: int = 0, version: int = CORPUS_VERSION, skills: Mapping[str, int] = SKILLS
) -> Callable[[], Example]:
    """A function that returns the next training example, deterministic for its arguments."""
    train, _ = make_pools()
    rng = random.Random(f"tutor-train-{seed}")
    maker = _Maker(train, rng, version)
    names, weights = list(skills), list(skills.values())
    return lambda: draw_example(maker, rng.choices(names, weights)[0])


def held_out_set(per_skill: int = 40, seed: int = 0) -> list[Example]:
    """The evaluation set: `per_skill` held-out examples of every skill."""
    _, test = make_pools()
    maker = _Maker(test, random.Random(f"tutor-eval-{seed}"), EVAL_VERSION)
    return [draw_example(maker, skill) for skill in SKILLS for _ in range(per_skill)]
