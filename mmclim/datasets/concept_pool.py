# Copyright (c) mmclim contributors. All rights reserved.
"""The concept pool of RegionCLIP: object concepts parsed from captions.

RegionCLIP (Zhong et al. 2022, Sec. 4.1) parses the nouns of its pre-training captions and keeps
those found at least 100 times (4764 concepts on COCO Captions, 6790 on CC3M). Its official code
ships no parser; this module is our documented rule.

**The rule.** A caption is tagged with TextBlob's ``PatternTagger`` (the pattern library's
lexicon-based Penn-Treebank tagger, which ships its lexicon and tokenizer inside the package: no
NLTK data or network is needed). A concept is a maximal run of consecutive common-noun tokens
(tags ``NN`` and ``NNS``), lower-cased and joined by single spaces, its last token (the head)
singularised with TextBlob's ``singularize`` when it is tagged plural (``NNS``): "Two fire
hydrants" gives ``'fire hydrant'``. Only plural heads are singularised because ``singularize``
also cuts a final "s" off singular nouns (``'grass'`` would become ``'gras'``, ``'bus'``
``'bu'``). Proper nouns (``NNP``, ``NNPS``) are not object concepts and break a run, and so does
every token that is not alphabetic (letters, with hyphens or apostrophes only between letters:
``'t-shirt'`` counts, ``'3'`` and ``','`` do not). With ``with_adjectives=True`` the
adjectives (``JJ``, ``JJR``, ``JJS``, alphabetic) directly before a run are kept in front of it
("a red frisbee" gives ``'red frisbee'``): for vocabularies whose names are attribute and noun,
such as the toy data's ``'red circle'``. Each caption gives its concepts once each, in order of
appearance; a pool counts the captions that give each concept.

The tagger is statistical and makes the mistakes of its lexicon: a verb taken for a plural noun
joins the run before it ("a man rides a horse" gives ``'man ride'``), and a plural noun taken for
a verb ends a compound early ("teddy bears" gives ``'teddy'``). RegionCLIP's frequency threshold
keeps such rare mistakes out of a large pool.

:func:`write_concept_pool` writes a pool as a ``.txt`` with one concept per line, the class-name
file that ``load_class_names`` and ``tools/generate_text_embeddings.py`` read, and a ``.json``
sidecar with the counts and how they were made. ``tools/dataset_converters/extract_concepts.py``
builds a pool from a caption file.
"""
import json
import re
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

# Penn-Treebank tags of the tokens a concept is made of: common nouns (singular or mass, plural)
# and the adjectives kept in front with ``with_adjectives``. Proper nouns (NNP, NNPS) are not
# object concepts.
NOUN_TAGS = frozenset({'NN', 'NNS'})
PLURAL_NOUN_TAG = 'NNS'
ADJECTIVE_TAGS = frozenset({'JJ', 'JJR', 'JJS'})
# A word a concept may hold: letters, with hyphens or apostrophes only between letters.
WORD = re.compile(r"[^\W\d_]+(?:[-'\u2019][^\W\d_]+)*")
TAGGER_PACKAGE = 'textblob'
# The rule, as recorded in the sidecar (see the module docstring).
CONCEPT_RULE = ('textblob PatternTagger; a concept is a maximal run of NN/NNS tokens (NNP/NNPS '
                'and non-alphabetic tokens break runs), lower-cased, its head singularised when '
                'NNS; with_adjectives keeps the JJ/JJR/JJS tokens directly before a run')
# The fields of the sidecar ``.json`` written beside a concept pool's ``.txt``.
CONCEPTS_KEY = 'concepts'
RULE_KEY = 'rule'
TAGGER_KEY = 'tagger'
MIN_COUNT_KEY = 'min_count'
WITH_ADJECTIVES_KEY = 'with_adjectives'
RESERVED_KEYS = (CONCEPTS_KEY, RULE_KEY, TAGGER_KEY, MIN_COUNT_KEY, WITH_ADJECTIVES_KEY)
POOL_SUFFIX = '.txt'
SIDECAR_SUFFIX = '.json'

# The tagger, built at the first call of :func:`extract_concepts` (importing textblob imports
# nltk and scipy, about 1.5 s, and building the tagger reads its lexicon).
_tagger: Optional[Any] = None


def _get_tagger() -> Any:
    """The module's ``PatternTagger``, built at the first call."""
    global _tagger
    if _tagger is None:
        from textblob.en.taggers import PatternTagger
        _tagger = PatternTagger()
    return _tagger


def _check_min_count(min_count: int) -> None:
    """Raise ValueError naming ``min_count`` unless it is a positive int."""
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f'min_count must be a positive int, got {min_count!r}')


def _is_word(token: str) -> bool:
    """Whether ``token`` is alphabetic (hyphens and apostrophes allowed between letters)."""
    return WORD.fullmatch(token) is not None


def extract_concepts(caption: str, with_adjectives: bool = False) -> List[str]:
    """The concepts of one caption, by the rule of the module docstring.

    Args:
        caption (str): A caption, e.g. ``'Two dogs are playing with a red frisbee.'``.
        with_adjectives (bool): Keep the adjectives directly before a noun run in front of it.
            Defaults to False.

    Returns:
        List[str]: The concepts in order of first appearance, each once, e.g.
        ``['dog', 'frisbee']`` (``['dog', 'red frisbee']`` with adjectives); ``[]`` for an empty
        or blank caption.

    Raises:
        TypeError: When ``caption`` is not a str.
    """
    if not isinstance(caption, str):
        raise TypeError(f'extract_concepts: caption must be a str, got '
                        f'{type(caption).__name__} {caption!r:.80}')
    if not caption.strip():
        return []
    from textblob.en.inflect import singularize
    tagged = _get_tagger().tag(caption) + [('', '')]  # the sentinel ends the last run
    concepts: Dict[str, None] = {}  # an ordered set
    run: List[Tuple[str, str]] = []
    adjectives: List[str] = []
    for token, tag in tagged:
        if tag in NOUN_TAGS and _is_word(token):
            run.append((token.lower(), tag))
            continue
        if run:
            words = [word for word, _ in run]
            if run[-1][1] == PLURAL_NOUN_TAG:
                words[-1] = singularize(words[-1])
            concepts[' '.join((adjectives if with_adjectives else []) + words)] = None
            run, adjectives = [], []
        if tag in ADJECTIVE_TAGS and _is_word(token):
            adjectives.append(token.lower())
        else:
            adjectives = []
    return list(concepts)


def count_concepts(captions: Iterable[str], with_adjectives: bool = False) -> Counter:
    """In how many captions each concept appears.

    Args:
        captions (Iterable[str]): N captions.
        with_adjectives (bool): See :func:`extract_concepts`. Defaults to False.

    Returns:
        Counter: Concept -> number of captions that give it (a caption counts once).

    Raises:
        TypeError: When a caption is not a str, naming its index.
    """
    counts: Counter = Counter()
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TypeError(f'count_concepts: captions[{index}] must be a str, got '
                            f'{type(caption).__name__} {caption!r:.80}')
        counts.update(extract_concepts(caption, with_adjectives))
    return counts


def select_concepts(counts: Mapping[str, int], min_count: int) -> List[Tuple[str, int]]:
    """The concepts counted at least ``min_count`` times, most frequent first.

    Args:
        counts (Mapping[str, int]): Concept -> count, from :func:`count_concepts`.
        min_count (int): The least count kept (RegionCLIP: 100).

    Returns:
        List[Tuple[str, int]]: ``(concept, count)`` by count descending, then name ascending.

    Raises:
        ValueError: When ``min_count`` is not a positive int, or when no concept reaches it
            (saying how many were found and the highest count).
    """
    _check_min_count(min_count)
    pool = sorted(((name, count) for name, count in counts.items() if count >= min_count),
                  key=lambda item: (-item[1], item[0]))
    if not pool:
        highest = max(counts.values(), default=0)
        raise ValueError(f'no concept reaches min_count={min_count}: {len(counts)} concepts were '
                         f'found, the most frequent in {highest} captions')
    return pool


def build_concept_pool(captions: Iterable[str],
                       min_count: int,
                       with_adjectives: bool = False) -> List[Tuple[str, int]]:
    """The concept pool of a caption corpus (:func:`count_concepts`, :func:`select_concepts`).

    Args:
        captions (Iterable[str]): N captions.
        min_count (int): The least number of captions a kept concept appears in (RegionCLIP:
            100).
        with_adjectives (bool): See :func:`extract_concepts`. Defaults to False.

    Returns:
        List[Tuple[str, int]]: ``(concept, count)`` by count descending, then name ascending.

    Raises:
        ValueError: When ``min_count`` is not a positive int or no concept reaches it.
        TypeError: When a caption is not a str.
    """
    _check_min_count(min_count)  # before the captions are tagged
    return select_concepts(count_concepts(captions, with_adjectives), min_count)


def write_concept_pool(path: str, pool: List[Tuple[str, int]], metadata: dict, *, min_count: int,
                       with_adjectives: bool) -> str:
    """Write a concept pool: ``path`` (``.txt``, one concept per line) and its ``.json`` sidecar.

    The ``.txt`` is a class-name file of ``load_class_names`` (names with spaces are kept as
    they are). The sidecar, beside it with the same stem, holds
    ``{'concepts': [[name, count], ...], 'rule': CONCEPT_RULE, 'tagger': 'textblob X.Y.Z',
    'min_count': ..., 'with_adjectives': ..., **metadata}``. Missing parent folders are made.

    Args:
        path (str): The pool file, ending in ``.txt``.
        pool (List[Tuple[str, int]]): ``(concept, count)`` pairs, from
            :func:`build_concept_pool`.
        metadata (dict): More sidecar fields (the source file, the number of captions); must
            not use the keys of :data:`RESERVED_KEYS`.
        min_count (int): The threshold the pool was built with; every count must reach it.
        with_adjectives (bool): Whether the pool was built with adjectives.

    Returns:
        str: The sidecar's path.

    Raises:
        ValueError: When ``path`` does not end in ``.txt``, ``pool`` is empty, a name would not
            be read back as it is (blank, repeated, with a line break, an underscore or
            surrounding spaces), a count is below ``min_count``, or ``metadata`` uses a reserved
            key.
    """
    if not str(path).endswith(POOL_SUFFIX):
        raise ValueError(f'write_concept_pool: path must end in {POOL_SUFFIX!r} (a class-name '
                         f'file), got {path!r}')
    if not pool:
        raise ValueError(f'write_concept_pool: {path}: pool is empty')
    clashes = sorted(set(metadata) & set(RESERVED_KEYS))
    if clashes:
        raise ValueError(f'write_concept_pool: {path}: metadata must not use the keys '
                         f'{clashes}, which the sidecar sets itself')
    seen = set()
    for index, (name, count) in enumerate(pool):
        # load_class_names reads names line by line, underscores as spaces, spaces collapsed.
        if not (isinstance(name, str) and name and ' '.join(name.split()) == name
                and '_' not in name):
            raise ValueError(f'write_concept_pool: {path}: pool[{index}] name {name!r} would not '
                             'be read back as it is; expected words joined by single spaces, '
                             'without underscores')
        if name in seen:
            raise ValueError(f'write_concept_pool: {path}: pool[{index}] name {name!r} is '
                             'repeated')
        seen.add(name)
        if isinstance(count, bool) or not isinstance(count, int) or count < min_count:
            raise ValueError(f'write_concept_pool: {path}: pool[{index}] ({name!r}) has count '
                             f'{count!r}, expected an int >= min_count={min_count}')
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(''.join(f'{name}\n' for name, _ in pool), encoding='utf-8')
    sidecar = file.with_suffix(SIDECAR_SUFFIX)
    info = {
        CONCEPTS_KEY: [[name, count] for name, count in pool],
        RULE_KEY: CONCEPT_RULE,
        TAGGER_KEY: f'{TAGGER_PACKAGE} {version(TAGGER_PACKAGE)}',
        MIN_COUNT_KEY: min_count,
        WITH_ADJECTIVES_KEY: with_adjectives,
        **metadata
    }
    sidecar.write_text(json.dumps(info, indent=1), encoding='utf-8')
    return str(sidecar)
