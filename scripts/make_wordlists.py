"""Build the Wordle word lists shipped in assets/wordle/ (run once; the lists are committed).

    .venv/bin/pip install wordfreq==3.1.1 english-words==2.0.2
    .venv/bin/python scripts/make_wordlists.py

Sources, both on PyPI:
- `wordfreq` (Robyn Speer, word frequencies from Wikipedia, subtitles, news, books, web text,
  Twitter and Reddit): ranks words by how common they are in English.
- `english-words` (the `web2` list, Webster's Second International, and `gcide`, the GNU
  Collaborative International Dictionary of English): decides what counts as a dictionary word,
  and `web2`'s capitalised entries mark proper nouns.

allowed.txt: every 5-letter dictionary word, plus the plurals and past tenses of dictionary words
that wordfreq has seen (dictionaries list the base forms only). About 12,600 words, close to the
course's list of about 12,900.

answers.txt: the 2,315 most frequent allowed words (the size of the original Wordle answer list)
that are base forms, like Wordle answers: no plurals or past tenses of shorter words, no words
that web2 also lists capitalised (names), no apostrophe-less contractions (didnt), no Roman
numerals, and none of the names, vulgar words and slang listed by hand below.

Both files are upper-case, one word a line, sorted, letters A-Z only.
"""

from __future__ import annotations

import re
from pathlib import Path

from english_words import get_english_words_set
from wordfreq import top_n_list

OUTPUT_DIR = Path(__file__).resolve().parent.parent / "assets" / "wordle"
ANSWER_COUNT = 2315
WORD_LENGTH = 5
LETTERS_ONLY = re.compile(r"^[A-Za-z]+$")
ROMAN_NUMERAL = re.compile(r"^m{0,4}(cm|cd|d?c{0,3})(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})$")

# Kept out of the answers by hand: a game should not hinge on a name, a slur or slang. These are
# the ones the rules cannot catch, because a dictionary also lists them in lower case.
NAMES = set("""
abbas abuja accra acton advil albus amman ansar appel arjun astor auden bafta banco barra barth
berne betis bilbo boden bosch bowie boyer boyne brant brest britt brock buffy bundy burke busby
cabot calle campo camus chaka cheng chevy chile ching cisco cleve clint clive coker conte corby
cotta crain darby delft derry dewar dhaka dhoni diddy dolce dover drago dulce dunne durga ecole
emmet engle erika faust finns firth fitch freud fuchs garth ghana ghazi goran groot hafiz hakim
hamza hanna hasan hegel hogan honda hough hoyle hsien hurst ibsen jenna joshi josie julio kashi
keita kenya korea kraft kylie laine laker laney layne lazar levin leyte lhasa liang libya lindy
logan logie lohan loire lowry macao macau malik malta manus maris masha massa mavis meath mensa
mille minot mirza missy monde moria morin negev nicky palma paolo papua patel peele pepsi porte
porto posey punta purdy quran rabat raton reddy reese reina rhine riley rishi roche roddy rogan
rohan rosen rowan rubin ryder salam salle salma sault savoy scala serra seton sheng sikhs silva
singh slade sloan smyth snape snell speer strom sturt surat tania terra tibet tilly timor timur
tinto tulsi utica vardy varna vidya vinny wally walsh waugh weber welch wicca wigan zaman zorro
lindo machi pardo
""".split())
VULGAR = set("bitch boner dildo gipsy honky horny labia panty penis pussy semen squaw titty vulva whore".split())
INFORMAL = set("ascii calif covid dunno gonna gotta scifi wanna".split())


def dictionary_words() -> tuple[set[str], set[str]]:
    """(lower-case dictionary words of every length, words web2 also lists capitalised)."""
    web2 = {w for w in get_english_words_set(["web2"]) if LETTERS_ONLY.match(w)}
    gcide = {w.lower() for w in get_english_words_set(["gcide"]) if LETTERS_ONLY.match(w)}
    web2_lower = {w for w in web2 if w.islower()}
    web2_capitalised = {w.lower() for w in web2 if not w.islower()}
    only_capitalised = web2_capitalised - web2_lower
    return (web2_lower | gcide) - only_capitalised, web2_capitalised


def is_inflection(word: str, dictionary: set[str]) -> bool:
    """A plural or past tense of a shorter dictionary word (YEARS, BOXES, ASKED, BASED)."""
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        if word[:-1] in dictionary or (word.endswith("es") and word[:-2] in dictionary):
            return True
    return word.endswith("ed") and (word[:-1] in dictionary or word[:-2] in dictionary)


def apostrophe_dropped_words(by_frequency: list[str]) -> set[str]:
    """DIDNT, YOUVE, CITYS: words that are mostly written with an apostrophe (DIDN'T, CITY'S)."""
    rank = {word: position for position, word in enumerate(by_frequency)}
    dropped = set()
    for word in by_frequency:
        plain = word.replace("'", "")
        if plain != word and rank[word] < rank.get(plain, len(by_frequency)):
            dropped.add(plain)
    return dropped


def build_lists() -> tuple[list[str], list[str]]:
    dictionary, web2_capitalised = dictionary_words()
    by_frequency = top_n_list("en", 1_000_000)
    contractions = apostrophe_dropped_words(by_frequency)
    usable = [
        w for w in by_frequency
        if len(w) == WORD_LENGTH and w.isascii() and LETTERS_ONLY.match(w)
        and not ROMAN_NUMERAL.match(w) and w not in contractions
    ]
    answers = [
        w for w in usable
        if w in dictionary and w not in web2_capitalised and w not in NAMES | VULGAR | INFORMAL and not is_inflection(w, dictionary)
    ][:ANSWER_COUNT]
    inflections = {w for w in usable if is_inflection(w, dictionary)}
    five_letter_dictionary = {
        w for w in dictionary if len(w) == WORD_LENGTH and w.isascii() and not ROMAN_NUMERAL.match(w)
    }
    allowed = five_letter_dictionary | inflections | set(answers)
    return sorted(w.upper() for w in answers), sorted(w.upper() for w in allowed)


def main() -> None:
    answers, allowed = build_lists()
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / "answers.txt").write_text("\n".join(answers) + "\n", encoding="ascii")
    (OUTPUT_DIR / "allowed.txt").write_text("\n".join(allowed) + "\n", encoding="ascii")
    print(f"answers.txt: {len(answers)} words, allowed.txt: {len(allowed)} words, in {OUTPUT_DIR}")


if __name__ == "__main__":
    main()
