"""Storyworld: a seeded generator of TinyStories-like children's stories.

The course trains small language models and then looks inside them with
sparse autoencoders. Both need a corpus, and the second needs *ground truth*:
to ask "does feature 1234 track who is speaking?" we must know, for every
token, who is speaking. Real TinyStories has no such labels, so this module
writes its own stories and records, while writing, the facts a reader would
infer: which characters are inside a quotation and who says it, which
character each pronoun points to, where a name is repeated (what an induction
head copies), which place a sentence is set in, and whether we are in the
opening, middle or ending.

How a story is made
-------------------
A *plot skeleton* (lost toy, sharing, a storm, ...) is a list of beats; each
beat holds several alternative templates, so stories vary in wording and not
only in the names slotted in. Templates use a tiny markup:

    {A} {B} {M}        the name of a role (A hero, B partner, M Mom or Dad)
    {AB}               "Lily and Tom"
    {A.he} {A.His}     a pronoun of A (he/him/his/himself; capitalised form
                       capitalises the word); {AB.they} {AB.them} {AB.their}
    {A.kind}           "girl", "dog", "mom" ...
    [A|Hello, {B}!]    a quotation spoken by A, rendered as "Hello, Tom!"
    {toy} {Place}      any other slot, looked up in the story's context; a
                       capitalised key capitalises the value

Text is produced as labelled pieces and appended by a builder that records
character spans as it goes, so labels are exact by construction rather than
recovered by searching the text afterwards.

Stories that reward copying
---------------------------
A model learns in-context abilities only when the corpus makes them pay. Half the
children get invented names (`invented_name`: tens of thousands, two to four BPE
tokens each), so a name's later mentions are predictable only from its first. Some
plots repeat what was said: a memory game (lists of random words said back), a
parrot (it says back each line), a magic word said again and again, a bag packed
and unpacked. The memory game is drawn more often than the other plots.

Labels (``Story.spans``; spans of one variable never overlap)
-------------------------------------------------------------
in_quote          each quotation, both quote marks included; value "1"
speaker           the same spans; value the speaker's name ("Lily", "Mom")
pronoun_referent  each pronoun that points to a character (he/him/his/
                  himself, she/her, it/its, they/them/their); value the
                  name, or "Lily+Tom" for a plural pronoun
name_repeat       every occurrence of a character name after its first
                  (inside quotations too); value the name, equal to the text
place             each beat (one to three sentences) set in a place, without
                  the separating whitespace; value the place name ("beach")
section           "opening", "middle", "ending": they tile the whole text; the
                  space or newline between two sections belongs to the first

Everything is standard library and deterministic: story ``i`` of seed ``s``
depends only on ``(s, i)`` (``random.Random(f"{s}:{i}")``, which hashes the
string with SHA-512, unlike the salted built-in ``hash``).
"""

from __future__ import annotations

import random
import re
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Sequence

LABEL_VARIABLES = ("in_quote", "speaker", "pronoun_referent", "name_repeat", "place", "section")


@dataclass(frozen=True)
class Span:
    start: int  # character offset into Story.text, inclusive
    end: int  # exclusive
    variable: str  # one of LABEL_VARIABLES
    value: str


@dataclass(frozen=True)
class Story:
    text: str
    spans: tuple[Span, ...]
    skeleton: str  # plot skeleton name
    characters: tuple[str, ...]  # characters mentioned, in order of first mention


@dataclass(frozen=True)
class Character:
    name: str
    kind: str  # "girl", "boy", "dog", "cat", ..., "mom", "dad"
    gender: str  # "female", "male" or "neuter" (an animal called "it")


@dataclass(frozen=True)
class Place:
    name: str  # the label value, e.g. "beach"
    the: str  # "the beach", used after "went to"
    at: str  # "at the beach" / "in the forest" (may hold markup: "in {A}'s room")
    words: frozenset[str]  # related words, for tests and feature analysis
    acts: tuple[str, ...]  # past-tense verb phrases without a subject
    sights: tuple[str, ...]  # noun phrases
    spots: tuple[str, ...]  # where a lost thing or an animal might be
    finds: tuple[str, ...]  # a small thing one child can give another
    goal: str  # the finish line of a race


# ---------------------------------------------------------------------------
# Word tables
# ---------------------------------------------------------------------------

_GIRLS = ("Lily Mia Sue Anna Lucy Emma Sara Amy Zoe Ella Kate Jane Molly Ruby Grace "
          "Sophie Lola Nina Eva Jill Megan Sally").split()
_BOYS = ("Tom Ben Max Tim Sam Jack Leo Bob Joe Jake Finn Dan Luke Mark Paul Ted "
         "Billy Timmy Jimmy Danny Peter Noah").split()
# Named animals, with the pronoun a TinyStories writer would use for each.
_ANIMALS = (("Spot", "dog", "male"), ("Buddy", "dog", "male"), ("Rex", "dog", "male"),
            ("Coco", "dog", "female"), ("Kitty", "cat", "female"), ("Mittens", "cat", "female"),
            ("Whiskers", "cat", "male"), ("Tweety", "bird", "neuter"), ("Chirpy", "bird", "neuter"),
            ("Hoppy", "bunny", "male"), ("Fluffy", "bunny", "female"), ("Quacky", "duck", "neuter"),
            ("Polly", "parrot", "female"), ("Kiwi", "parrot", "male"), ("Rio", "parrot", "male"),
            ("Sunny", "parrot", "female"))

NAMES: tuple[Character, ...] = (
    tuple(Character(n, "girl", "female") for n in _GIRLS)
    + tuple(Character(n, "boy", "male") for n in _BOYS)
    + tuple(Character(n, k, g) for n, k, g in _ANIMALS))
PARENTS: tuple[Character, ...] = (Character("Mom", "mom", "female"), Character("Dad", "dad", "male"))
_CHILDREN = tuple(c for c in NAMES if c.kind in ("girl", "boy"))
_PETS = tuple(c for c in NAMES if c.kind in ("dog", "cat", "bunny"))
_GENDERS = {c.name: c.gender for c in NAMES + PARENTS}

# Invented names. With only the table's 44 children a model learns which names are likely
# and never needs to look back: "Tim" after "Tim" is no easier than "Tim" anywhere. Half
# the children are named from syllables instead (tens of thousands of names, two to four
# BPE tokens each), so the only way to predict a name's second mention is to copy the
# first: the pressure that grows induction heads (Olsson et al. 2022). Girls' names end in
# a vowel, boys' in a consonant, so a name's gender is a function of its spelling
# (`gender_of`), as for the table's names.
_ONSETS = "b d f g h j k l m n p r s t v w z bl br dr fl gr kl pl pr sk st tr sh ch".split()
_VOWELS = "a e i o u a o ee oo ai".split()
_GIRL_ENDS = "a i ee ie ella ina".split()
_BOY_ENDS = "n k r x m s l t".split()
INVENTED_SHARE = 0.5  # of the children cast; the rest come from the table
MEMORY_GAME_WEIGHT = 4.0  # the memory game is drawn this many times as often as another plot


def invented_name(rng: random.Random, gender: str) -> str:
    """A new name of two or three syllables ("Brakomin", "Zeelotina"), by `gender`'s rule."""
    n = rng.choice((2, 2, 3))
    syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n)]
    if gender == "female":
        syllables[-1] = rng.choice(_ONSETS) + rng.choice(_GIRL_ENDS)
    else:
        syllables[-1] += rng.choice(_BOY_ENDS)
    return "".join(syllables).capitalize()


def invented_word(rng: random.Random) -> str:
    """A made-up magic word of two or three syllables ("zabooki")."""
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.choice((2, 3))))


def gender_of(name: str) -> str:
    """"female", "male" or "neuter" for a character name of any story (table or invented)."""
    known = _GENDERS.get(name)
    if known is not None:
        return known
    return "male" if name[-1] in "".join(_BOY_ENDS) else "female"


_PRONOUNS = {
    "female": {"he": "she", "him": "her", "his": "her", "himself": "herself"},
    "male": {"he": "he", "him": "him", "his": "his", "himself": "himself"},
    "neuter": {"he": "it", "him": "it", "his": "its", "himself": "itself"},
    "plural": {"they": "they", "them": "them", "their": "their", "themselves": "themselves"},
}


def _place(name, the, at, words, acts, sights, spots, finds, goal) -> Place:
    return Place(name, the, at, frozenset(words.split()) | {name}, acts, sights, spots, finds, goal)


PLACES: dict[str, Place] = {p.name: p for p in (
    _place("park", "the park", "at the park",
           "swing swings slide tree trees grass bench sandbox ducks leaf flower rock",
           ("played on the swings", "went down the big slide", "ran on the green grass",
            "played in the sandbox", "fed the ducks by the bench"),
           ("a big red slide", "tall green trees", "kids on the swings", "a bench under a tree"),
           ("under the slide", "behind a big tree", "in the sandbox", "under a bench"),
           ("a shiny rock", "a yellow flower", "a pretty leaf"), "the big tree"),
    _place("beach", "the beach", "at the beach",
           "ocean sea sand waves shell shells fish swim swam water crab castle stone rock",
           ("built a sand castle", "looked for shells in the sand", "splashed in the waves",
            "swam in the blue water", "dug a big hole in the sand"),
           ("a little red crab", "big blue waves", "pretty shells on the sand", "fish in the water"),
           ("under the sand", "near the waves", "behind a big rock by the water"),
           ("a pretty shell", "a smooth stone from the sea"), "the big rock"),
    _place("forest", "the forest", "in the forest",
           "woods tree trees leaves leaf bird birds branch path mushroom mushrooms squirrel log pine cone",
           ("walked on a path between the trees", "jumped in a pile of leaves",
            "listened to the birds sing", "looked for mushrooms under the trees"),
           ("a squirrel in a tree", "birds on a branch", "tall green trees", "a little brown mushroom"),
           ("under a pile of leaves", "behind a tall tree", "next to an old log"),
           ("a pine cone", "a red leaf"), "the old log"),
    _place("farm", "the farm", "on the farm",
           "cow cows barn hay pig pigs horse chicken chickens eggs egg tractor mud feather",
           ("fed the cows", "jumped in the hay", "looked for eggs in the barn",
            "rode on a big tractor", "petted a soft horse"),
           ("a big red barn", "pigs in the mud", "a brown cow", "little yellow chickens"),
           ("in the hay", "behind the barn", "near the pig pen"),
           ("a brown egg", "a soft feather"), "the red barn"),
    _place("kitchen", "the kitchen", "in the kitchen",
           "cake cookies muffins pie bake oven flour bowl spoon milk eggs sugar table plate jar",
           ("mixed flour and sugar in a big bowl", "cracked eggs into a bowl",
            "licked the spoon", "set the table with plates"),
           ("a warm oven", "a big bowl", "cookies on a plate", "a jar of sugar"),
           ("under the kitchen table", "behind the flour jar", "next to the oven"),
           ("a warm cookie",), "the table"),
    _place("garden", "the garden", "in the garden",
           "flowers flower bees bee butterfly butterflies seeds dirt plant plants roses rose gate",
           ("watered the flowers", "planted seeds in the dirt", "watched the bees buzz",
            "chased butterflies", "smelled the roses"),
           ("pretty flowers", "a busy bee", "a yellow butterfly", "red roses"),
           ("under the roses", "behind the flower pots", "in the dirt near the plants"),
           ("a red rose", "a yellow flower"), "the gate"),
    _place("zoo", "the zoo", "at the zoo",
           "lion lions monkey monkeys elephant giraffe tiger zebra zebras goats cage animals peacock feather",
           ("watched the monkeys swing", "fed the goats at the zoo", "waved at a big lion",
            "looked at the zebras"),
           ("a tall giraffe", "a big gray elephant", "funny monkeys", "a sleepy tiger"),
           ("near the monkey cage", "under a bench by the lions", "behind the elephant house"),
           ("a peacock feather",), "the lion cage"),
    _place("pond", "the pond", "at the pond",
           "ducks duck frog frogs water fish rocks rock lily pads bread",
           ("fed bread to the ducks", "threw rocks into the water", "watched the frogs jump"),
           ("a green frog", "ducks swimming", "little fish in the water", "big lily pads"),
           ("near the water", "behind a big rock", "under a lily pad"),
           ("a smooth flat rock",), "the big rock"),
    _place("bedroom", "the bedroom", "in {A}'s room",
           "bed blanket pillow pillows toys closet lamp desk crayons room",
           ("built a fort with a blanket and pillows", "read a book on the bed",
            "drew with crayons at the desk"),
           ("a soft bed", "a little lamp", "a big pile of toys"),
           ("under the bed", "in the closet", "behind a pillow"),
           ("a soft pillow",), "the door"),
)}

_COLORS = ("red", "blue", "green", "yellow", "pink", "purple", "orange")
_TOYS = ("ball", "teddy bear", "kite", "doll", "toy car", "truck", "boat", "train", "robot",
         "yo-yo", "drum", "toy plane")
_ADJS = ("happy", "kind", "curious", "cheerful", "playful", "sweet", "friendly", "smart", "gentle",
         "funny", "good", "nice")
_HOBBIES = ("play outside", "draw pictures", "sing songs", "read books with {A.his} {M.kind}",
            "run and jump in the sun", "play games with {A.his} friends", "look at the clouds",
            "build tall towers with blocks", "dance to music", "help {A.his} {M.kind}",
            "play with {A.his} toys", "ride {A.his} bike")
_ONE_DAY = ("One day", "One sunny day", "One morning", "One bright morning", "One afternoon",
            "One warm day")
_GIVERS = ("grandma", "grandpa", "aunt", "dad", "mom", "uncle")
_FAMILIES = ("mom and dad", "mom", "dad", "grandma", "family", "big sister", "little brother")
_PARROT_LINES = ("I like {color} apples.", "The sun is hot today.", "Where is my {toy}?",
                 "Time for lunch!", "Look at the big tree!", "Good morning, {B}!",
                 "I love you, {B}.", "Let's play a game!", "It is time for bed.",
                 "What a funny hat!", "Can I have a cookie?", "The cat is on the bed.",
                 "Hello, hello!", "I am a good bird.", "Please close the door.",
                 "We are going to {place}!", "My {toy} is the best.", "Who wants to play?",
                 "Do not eat my socks!", "The rain is coming.", "I can fly so high!",
                 "Happy birthday to you!", "Wash your hands, {A}.", "Be quiet, please.")
_PACKING = ("a hat", "two apples", "a blanket", "a little shovel", "a bottle of water",
            "a book", "a red bucket", "some crayons", "a sandwich", "a warm coat",
            "a ball", "a kite", "three cookies", "a map", "a toy boat", "a jar of jam",
            "a towel", "a blue cup", "a flashlight", "a pillow")


# ---------------------------------------------------------------------------
# Plot skeletons
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Beat:
    alts: tuple[str, ...]  # alternative templates; one is told
    where: str | None = None  # "main" or "other" place, or None when not set anywhere
    p: float = 1.0  # probability that the beat is told at all


@dataclass(frozen=True)
class Plot:
    name: str
    places: tuple[str, ...]  # candidates for the main place
    partner: str  # who B is: "child", "animal" or "any"
    opening: tuple[Beat, ...]
    middle: tuple[Beat, ...]
    ending: tuple[Beat, ...]
    # Extra context, one chosen per story; "at_place" or "places" override the main place.
    variants: tuple[dict, ...] = ({},)
    others: tuple[str, ...] = ()  # candidates for a second place
    weight: float = 1.0  # how often the plot is drawn, relative to the others


def _b(*alts: str, where: str | None = None, p: float = 1.0) -> Beat:
    return Beat(alts, where, p)


_INTRO = _b(
    "Once upon a time, there was a little {A.kind} named {A}.",
    "Once upon a time, there was a {adj} {A.kind} named {A}.",
    "Once upon a time, in a small town, there lived a {adj} little {A.kind} named {A}.",
    "There once was a little {A.kind} called {A}.",
    "Once upon a time, there was a {adj} {A.kind}. {A.His} name was {A}.",
    "{A} was a {adj} little {A.kind} who lived in a small house with {A.his} {family}.",
    "Once there was a {A.kind} named {A}. {A.He} was {age} years old.")
_TRAIT = _b("{A.He} loved to {hobby}.", "{A.He} liked to {hobby} every day.",
            "Every day, {A.he} would {hobby}.", "More than anything, {A} loved to {hobby}.", p=0.6)
_THE_END = _b("The end.", p=0.2)

_PLOTS: tuple[Plot, ...] = (
    Plot("lost_toy", ("park", "beach", "garden", "forest", "farm"), "any",
         opening=(_b("{A} had a {toy}. {A.He} loved it very much and took it everywhere.",
                     "{A.His} favorite toy was a {toy}. {A.He} played with it every day.",
                     "{A} had a {toy} from {A.his} {giver}. It was {A.his} favorite toy in the whole world."),),
         middle=(
             _b("{one_day}, {A} took {A.his} {toy} to {place}. {A.He} {act} and had lots of fun.",
                "{one_day}, {A} went to {place} with {A.his} {toy}. {A.He} {act}. Then {A.he} {act2}.",
                "{one_day}, {A} and {A.his} {M.kind} went to {place}. {A} brought {A.his} {toy} too.",
                where="main"),
             _b("When it was time to go home, {A} looked for {A.his} {toy}. But it was gone!",
                "After a while, {A} wanted to play with {A.his} {toy}, but {A.he} could not find it. "
                "The {toy} was not there.",
                "Later, {A} looked down and saw that {A.his} {toy} was gone."),
             _b("{A} began to cry. [A|Where is my {toy}?] {A.he} said.",
                "{A} was very sad. [A|Oh no! I lost my {toy}!] {A.he} cried.",
                "[A|My {toy}! Where did it go?] said {A}. {A.His} eyes filled with tears."),
             _b("Just then, a {B.kind} named {B} came by. [B|Why are you sad?] asked {B}.",
                "Then {A.his} friend {B} came over. {B} saw that {A} was sad.",
                "A little {B.kind} named {B} saw {A} crying. {B} wanted to help."),
             _b("[A|I lost my {toy},] said {A}. [B|Don't worry. I will help you look,] said {B}.",
                "{A} told {B} about the {toy}. [B|Let's look for it together!] {B} said.",
                "[A|I can't find my {toy},] {A} said. [B|I will help you find it,] said {B}."),
             _b("{AB.They} looked {spot}. Then {AB.they} looked {spot2}. The {toy} was not there.",
                "{A} and {B} looked everywhere. {AB.They} looked {spot} and {spot2}.",
                "First, {B} looked {spot}. Then {A} looked {spot2}. {AB.They} did not give up.",
                where="main"),
             _b("Then {B} saw something {spot3}. It was the {toy}!",
                "Suddenly, {A} saw the {toy} {spot3}. [A|There it is!] {A.he} shouted.",
                "At last, {B} looked {spot3}, and there was the {toy}!", where="main"),
             _b("{B} picked up the {toy} and gave it to {A}. [A|Thank you, {B}!] said {A}.",
                "{B} gave the {toy} to {A}. {A} hugged {B} and said, [A|You are a good friend!]",
                "{A} picked up {A.his} {toy} and held it tight. Then {A.he} thanked {B}."),
         ),
         ending=(_b("From that day on, {A} always took good care of {A.his} {toy}. "
                    "And {A} and {B} were best friends.",
                    "{A} learned to be careful with {A.his} things. {A.He} was happy to have a friend like {B}.",
                    "{AB.They} played together until the sun went down. {A} was very happy."),)),

    Plot("sharing", ("park", "beach", "garden", "pond"), "child",
         opening=(_b("{A} had a new {toy}. {A.He} loved it very much.",
                     "{A.His} {giver} gave {A.him} a shiny new {toy} for {A.his} birthday.",
                     "{A} had a {toy} that {A.he} did not like to share."),),
         middle=(
             _b("{one_day}, {A} took the {toy} to {place}. {A.He} {act}.",
                "{one_day}, {A} was playing with {A.his} {toy} {at}. Nearby, some kids {act}.",
                where="main"),
             _b("A {B.kind} named {B} came over. {B} looked at the {toy} with big eyes.",
                "Soon, a little {B.kind} named {B} walked up to {A}. {B} had no toys to play with.",
                "Then {A} saw a {B.kind} named {B}. {B} was sitting all alone."),
             _b("{B} said, [B|Can I play with your {toy}?]",
                "[B|That is a nice {toy},] said {B}. [B|Can I play with it too?]",
                "{B} asked {A}, [B|Will you share your {toy} with me?]"),
             _b("[A|No! It is mine,] said {A}. {A.He} held the {toy} close.",
                "{A} did not want to share. [A|No, you can't. It is my {toy},] {A.he} said.",
                "{A} shook {A.his} head. [A|No,] {A.he} said. [A|I want to play with it by myself.]"),
             _b("{B} was sad. {B.He} walked away and sat down alone.",
                "{B.His} face looked very sad. {B} looked at the ground and did not say a word.",
                "{B} felt sad and started to cry."),
             _b("{A} looked at {B}. {A.He} did not feel happy anymore.",
                "Playing alone was not fun. {A} thought about {B} and felt bad.",
                "{A} saw how sad {B} was. {A.He} felt a little sorry."),
             _b("{A.His} {M.kind} came over and said, [M|It is kind to share, {A}.]",
                "{A} remembered what {A.his} {M.kind} always said: sharing is caring.", p=0.5),
             _b("{A} walked over to {B} and gave the {toy} to {B.him}. [A|We can play with it together,] {A.he} said.",
                "[A|I'm sorry, {B},] said {A}. [A|Here, you can play with my {toy}.] {A} gave the {toy} to {B}.",
                "{A} gave the {toy} to {B}. [A|You can have a turn,] said {A}."),
             _b("{B} smiled a big smile. [B|Thank you, {A}!] {B.he} said.",
                "{B} was so happy. {B.He} said, [B|Thank you! You are very kind.]"),
             _b("Then {AB.they} {act2} together. {AB.They} laughed and had so much fun.",
                "{A} and {B} played with the {toy} all day. Then {AB.they} {act2}.", where="main"),
         ),
         ending=(_b("{A} learned that sharing is caring. From that day on, {A} and {B} were best friends.",
                    "From that day on, {A} always shared {A.his} toys. Playing together was more fun than playing alone.",
                    "{A} felt warm inside. {A.He} knew that sharing made everyone happy, even {A.himself}."),)),

    Plot("trip", ("beach", "farm", "zoo", "forest", "pond"), "child",
         opening=(_b("{A} had never been to {place}. {A.He} wanted to go there very much.",
                     "{A} loved {place} more than anything.",
                     "{A} always asked {A.his} {M.kind} about {place}."),),
         middle=(
             _b("{one_day}, {A.his} {M.kind} said, [M|We are going to {place} today!] "
                "{A} was so happy that {A.he} jumped up and down.",
                "[M|Get your shoes on, {A},] said {M}. [M|We are going to {place}!]",
                "{one_day}, {A} woke up early. It was the day of the big trip to {place}!"),
             _b("{A} asked {A.his} friend {B} to come too.",
                "{A.His} best friend {B} came too.",
                "{A} brought {A.his} friend {B}. {B} was a {adj2} little {B.kind}."),
             _b("Before the trip, {A} packed a bag. {A.He} put in {items}.",
                "{A} packed {items} in {A.his} bag."),
             _b("When {AB.they} got to {place}, {A} saw {sight}. [A|Wow!] said {A}.",
                "{Place} was big and bright. {A} saw {sight} and {sight2}.",
                "{At}, the sun was warm. {AB.They} saw {sight}.", where="main"),
             _b("First, {AB.they} {act}. Then {AB.they} {act2}.",
                "{A} and {B} {act}. {AB.They} laughed and laughed.",
                "{B} said, [B|Look, {A}! Let's go see!] So {AB.they} {act}.", where="main"),
             _b("{A} saw {sight3}. [A|Look, {B}!] {A.he} said. {B} looked and smiled.",
                "{B} found {find} and gave it to {A}. [B|This is for you,] {B.he} said.",
                "{B} gave {find} to {A}. {A} put it in {A.his} pocket to keep.", where="main"),
             _b("After a while, {AB.they} were hungry. {AB.They} sat down and ate {lunch}.", p=0.6),
             _b("{A} opened {A.his} bag. Out came {items}.",
                "{A} looked in {A.his} bag. There were {items}. [A|I packed well!] said {A}.", p=0.7),
             _b("When the sun began to set, it was time to go home. {A} was tired but happy.",
                "Soon it was time to go home. {A} said, [A|Can we come back tomorrow?] [M|Yes, we can,] said {M}.",
                "At the end of the day, {AB.they} waved goodbye to {place}."),
         ),
         ending=(_b("That night, {A} dreamed about {place}. It had been the best day ever.",
                    "{A} would never forget the fun day at {place} with {B}.",
                    "{A} hugged {B} and said, [A|Thank you for coming with me!] {AB.They} were happy friends."),),
         variants=tuple({"lunch": x} for x in ("sandwiches and apples", "cookies and milk",
                                                "bread and cheese", "a big picnic lunch"))),

    Plot("fear", ("park",), "any",
         opening=(_b("But {A} had a secret. {A.He} was afraid of {fear}.",
                     "{A} was a little bit scared of {fear}.",
                     "There was one thing {A} did not like: {fear}. {A.He} was afraid of {fear}."),),
         middle=(
             _b("{one_day}, {A} went to {place} with {A.his} friend {B}.",
                "{one_day}, {A} and a {B.kind} named {B} were playing {at}.", where="main"),
             _b("{AB.They} played for a while. Then {A} saw {fear}. {Scary}",
                "{A} looked at {fear}. {Scary}",
                "Soon {A} saw {fear}. {A.His} tummy felt funny. {Scary}", where="main"),
             _b("{B} said, [B|Let's {dare}!]",
                "[B|Come on, {A}! Let's {dare},] said {B}."),
             _b("{A} shook {A.his} head. [A|I can't. I am scared,] {A.he} said.",
                "[A|No, I don't want to,] said {A}. {A.His} legs were shaking.",
                "{A} felt scared. {A.He} wanted to run away."),
             _b("[B|Don't be afraid. I will be right here with you,] said {B}.",
                "{B} smiled at {A}. [B|You can do it! You are brave,] {B.he} said.",
                "{B} said, [B|I was scared too, once. It is not so bad.]"),
             _b("{A} took a deep breath. Slowly, {A.he} {try}.",
                "{A} counted to three. Then {A.he} {try}.",
                "Step by step, {A} {try}.", where="main"),
             _b("It was not scary at all. It was fun! [A|I did it!] {A.he} shouted.",
                "{A} laughed. [A|That was fun! Let's do it again!] said {A}.",
                "[A|Look, {B}! I am not scared anymore!] {A} said with a big smile."),
             _b("{B} cheered. [B|I knew you could do it!] said {B}.",
                "{B} was very proud of {B.his} friend.", p=0.7),
         ),
         ending=(_b("From that day on, {A} was never afraid of {fear} again.",
                    "{A} learned that being brave means trying even when you feel scared.",
                    "{A} and {B} played {at} until it was time to go home. {A} felt very brave."),),
         variants=(
             {"at_place": "park", "fear": "the big slide", "dare": "go down the big slide",
              "scary": "It was so tall!", "try": "climbed up the ladder and went down the slide"},
             {"at_place": "beach", "fear": "the waves", "dare": "swim in the water",
              "scary": "The waves looked so big!", "try": "walked into the water and splashed in the waves"},
             {"at_place": "farm", "fear": "the big cows", "dare": "pet the cows",
              "scary": "They were so big and loud!", "try": "walked up to a brown cow and petted its nose"},
             {"at_place": "garden", "fear": "the bees", "dare": "pick flowers by the bees",
              "scary": "They buzzed so loud!", "try": "picked a flower while the bees buzzed by"},
             {"at_place": "forest", "fear": "the dark woods", "dare": "walk into the woods",
              "scary": "The trees were tall and dark.", "try": "walked down the path between the trees"},
             {"at_place": "zoo", "fear": "the big lion", "dare": "go see the lion",
              "scary": "It had big teeth!", "try": "walked up to the lion cage and waved at the lion"})),

    Plot("gift", ("garden",), "child",
         opening=(_b("{A} had a best friend named {B}. {B} was a {adj2} {B.kind} who lived next door.",
                     "{A.His} best friend was a {B.kind} named {B}. {AB.They} played together every day."),),
         middle=(
             _b("{one_day}, {A} remembered that {B}'s birthday was soon. {A.He} wanted to give {B} something special.",
                "{A} knew that {B}'s birthday was coming. [A|What can I give {B}?] {A.he} asked {A.his} {M.kind}.",
                "{one_day}, {A.his} {M.kind} said, [M|Tomorrow is {B}'s birthday.] {A} wanted to make a gift for {B.him}."),
             _b("{A} thought and thought. Then {A.he} had an idea.",
                "[M|Why don't you make something?] said {M}. [A|That is a great idea!] said {A}."),
             _b("{A} {make}.", "So {A} {make}. It took a long time, but {A.he} did not give up.",
                where="main"),
             _b("{A} wrapped the gift in pretty paper.",
                "{A.He} put the gift in a box with a big red bow.", p=0.6),
             _b("The next day, {A} went to {B}'s house. {A} gave {gift} to {B}. [A|Happy birthday, {B}!] said {A}.",
                "At the party, {A} gave {gift} to {B}. [A|I made this for you,] said {A}.",
                "{A} ran to {B} and gave {gift} to {B.him}. [A|Happy birthday!] {A.he} said."),
             _b("{B} smiled. [B|I love it! Thank you, {A}!] said {B}.",
                "{B} was so surprised. [B|Wow! Did you make this for me?] {B.he} asked. [A|Yes, I did,] said {A}.",
                "{B} gave {A} a big hug. [B|This is the best gift ever,] {B.he} said."),
         ),
         ending=(_b("{A} felt happy inside. Giving a gift was even better than getting one.",
                    "{A} learned that the best gifts come from the heart. And {AB.they} lived happily ever after.",
                    "From that day on, {B} kept the gift in a special place."),),
         variants=(
             {"at_place": "garden", "gift": "the flowers",
              "make": "went to the garden and picked the prettiest flowers. {A.He} picked red roses and yellow flowers"},
             {"at_place": "kitchen", "gift": "the cookies",
              "make": "baked cookies in the kitchen with {A.his} {M.kind}. {A.He} put the cookies on a pretty plate"},
             {"at_place": "bedroom", "gift": "the drawing",
              "make": "sat at the desk in {A.his} room and drew a picture of {B} with {A.his} crayons"},
             {"at_place": "beach", "gift": "the necklace",
              "make": "went to the beach and found pretty shells in the sand. {A.He} put them on a string to make a necklace"})),

    Plot("race", ("park", "beach", "farm", "forest"), "any",
         opening=(_b("{A} liked to run fast. {A.He} was the fastest {A.kind} in town.",
                     "{A} loved to run. {A.He} ran everywhere {A.he} went."),),
         middle=(
             _b("{one_day}, {A} was {at} with {A.his} friend {B}.",
                "{one_day}, {A} and a {B.kind} named {B} were playing {at}. {AB.They} {act}.",
                where="main"),
             _b("{B} said, [B|Let's have a race! The first one to {goal} wins.]",
                "[A|I bet I can run faster than you, {B}!] said {A}. [B|Let's see! Run to {goal}!] said {B}."),
             _b("[A|Ready, set, go!] shouted {A}. {AB.They} ran across {place} as fast as {AB.they} could.",
                "{A} and {B} lined up. One, two, three, go! {AB.They} ran past {sight}.", where="main"),
             _b("{B} was in front. But then {B} tripped on a rock and fell down. [B|Ouch!] {B.he} cried.",
                "Then {B} tripped and fell. {B.He} hurt {B.his} knee."),
             _b("{A} could win the race. But {A.he} stopped and ran back to {B}.",
                "{A} saw {B} on the ground. {A.He} did not care about the race anymore."),
             _b("[A|Are you okay?] asked {A}. {A} helped {B} get up.",
                "{A} helped {B} stand up. [A|Let's finish together,] {A.he} said."),
             _b("{AB.They} walked to {goal} side by side. [B|Thank you, {A},] said {B}. [B|You are a true friend.]",
                "{A} and {B} reached {goal} together. Everyone {at} clapped.", where="main"),
         ),
         ending=(_b("{A} did not win the race, but {A.he} felt like a winner. Being a good friend was more important.",
                    "{A} learned that helping a friend is better than winning.",
                    "From that day on, {A} and {B} always ran together, side by side."),)),

    Plot("helping_animal", ("park", "forest", "garden", "farm", "pond"), "animal",
         opening=(_b("{A} loved animals. {A.He} liked to watch the birds and pet the dogs in {A.his} town.",
                     "{A} had a big heart. {A.He} always wanted to help others."),),
         middle=(
             _b("{one_day}, {A} was playing {at}. {A.He} {act}.",
                "{one_day}, {A} went to {place} with {A.his} {M.kind}.", where="main"),
             _b("Suddenly, {A} heard a small sound. {A.He} looked {spot} and saw a little {B.kind}.",
                "Then {A} saw a little {B.kind} {spot}.", where="main"),
             _b("{Trouble}.", "{Trouble}. The poor {B.kind} looked scared."),
             _b("[A|Don't worry, little {B.kind}. I will help you,] said {A}.",
                "{A} said softly, [A|Poor little {B.kind}. I will take care of you.]"),
             _b("{A} decided to call {B.him} {B}.", "{A} named the {B.kind} {B}."),
             _b("{A} {help}.", "Carefully, {A} {help}."),
             _b("After a few days, {heal}.", "Soon, {heal}."),
             _b("[B|Thank you, {A}!] said {B}, and {B.he} {glad}.",
                "{B} was so happy. {B.He} {glad}."),
         ),
         ending=(_b("From that day on, {B} came to visit {A} every day. {AB.They} were the best of friends.",
                    "{A} felt proud. Helping others made {A.him} feel warm and happy inside.",
                    "{A} learned that even small animals need help sometimes."),),
         variants=(
             {"B_kind": "bird", "trouble": "{B.His} wing was hurt, and {B.he} could not fly",
              "help": "made a soft bed for {B.him} in a little box and gave {B.him} some water",
              "heal": "{B.his} wing was better", "glad": "flew up high into the sky"},
             {"B_kind": "cat", "places": ("park", "forest", "garden"), "trouble": "{B.He} was stuck high up in a tree",
              "help": "climbed up slowly and carried {B} down",
              "heal": "{B} was not scared of trees anymore", "glad": "purred and rubbed against {A.his} leg"},
             {"B_kind": "dog", "trouble": "{B.He} was lost and could not find {B.his} home",
              "help": "looked at the tag on {B.his} collar and walked {B.him} back to {B.his} house",
              "heal": "{B.his} family thanked {A} with a big smile", "glad": "wagged {B.his} tail"},
             {"B_kind": "bunny", "trouble": "{B.He} was very hungry and very thin",
              "help": "ran home and gave a big orange carrot to {B}",
              "heal": "{B} was fat and strong again", "glad": "hopped around in a happy circle"},
             {"B_kind": "duck", "at_place": "pond", "trouble": "{B.He} had lost {B.his} mom and was all alone",
              "help": "walked with {B.him} along the water until {AB.they} found {B.his} mom",
              "heal": "{B} was swimming with {B.his} mom every day", "glad": "quacked a happy quack"})),

    Plot("storm", ("park", "beach", "garden", "farm"), "any",
         opening=(_b("{A} loved to play outside when the sun was shining.",
                     "{A} liked sunny days best of all."),),
         middle=(
             _b("{one_day}, {A} and {A.his} friend {B} were {at}. {AB.They} {act}.",
                "{one_day}, {A} went to {place} to play with {B}, a {B.kind} from next door. {AB.They} {act}.",
                where="main"),
             _b("Suddenly, the sky turned dark. Big gray clouds came over {place}.",
                "Then the wind began to blow over {place}. {A} looked up and saw dark clouds in the sky.",
                where="main"),
             _b("Boom! There was a loud sound of thunder. {B} jumped. [B|What was that?] {B.he} asked.",
                "Then the rain came down. Drip, drop, drip! Then came a loud boom of thunder.",
                "Rain started to fall, and the thunder went boom!"),
             _b("{A} was scared. [A|I want to go home!] {A.he} cried.",
                "[A|I'm scared,] said {A}. [B|Me too,] said {B}."),
             _b("{AB.They} ran home as fast as {AB.they} could. {AB.They} were all wet.",
                "{A} and {B} ran all the way home in the rain."),
             _b("At home, {A.his} {M.kind} gave {AB.them} warm towels and hot milk.",
                "{M} hugged {AB.them} and said, [M|Don't worry. The storm can't hurt you in here.]",
                "[M|You are safe now,] said {M}. {M.He} wrapped {AB.them} in a soft blanket."),
             _b("{AB.They} sat by the window and watched the rain.",
                "{A} and {B} hid under a big blanket. {AB.They} told stories until the storm was over.", p=0.7),
             _b("Soon the rain stopped. The sun came out, and there was a big rainbow over {place}!",
                "After a while, the storm went away. {AB.They} went back to {place} and saw a rainbow.",
                where="main"),
         ),
         ending=(_b("[A|Look, a rainbow!] said {A}. {A} was not scared anymore.",
                    "{A} learned that storms do not last forever. The sun always comes back.",
                    "{A} and {B} played in the puddles until dinner time. It was a good day after all."),)),

    Plot("baking", ("kitchen",), "child",
         opening=(_b("{A} loved to help {A.his} {M.kind} in the kitchen.",
                     "{A.His} favorite thing to do was bake with {A.his} {M.kind}."),),
         middle=(
             _b("{one_day}, {A} ran into the kitchen and said, [A|Can we bake {bake}?] [M|Yes, we can!] said {M}.",
                "{one_day}, {A} and {A.his} {M.kind} decided to bake {bake}.", where="main"),
             _b("[A|Let's make some for {B} too!] said {A}. {B} was {A.his} best friend.",
                "{A} wanted to share with {A.his} friend {B}, a {adj2} {B.kind} from school."),
             _b("{A} {act}. Then {A.he} {act2}.",
                "{M} put flour, sugar and eggs in a big bowl. {A} mixed it all with a spoon.", where="main"),
             _b("Oops! {A} spilled some flour on the floor. [A|Oh no!] {A.he} said. [M|That's okay. We can clean it up,] said {M}.",
                "Soon there was flour on {A.his} nose! {M} laughed and laughed.", where="main", p=0.7),
             _b("{M} put {bake_the} in the hot oven. {A} watched and waited.",
                "Then {bake_the} went into the oven. The kitchen smelled so good.", where="main"),
             _b("When {bake_the} came out of the oven, {A} clapped. [A|Yum!] {A.he} said.",
                "Ding! It was time to take {bake_the} out of the oven.", where="main"),
             _b("{A} took some to {B}'s house. {A} gave {piece} to {B}. [B|Mmm, this is so good!] said {B}.",
                "Then {B} came over to play. {A} gave {piece} to {B}, and {AB.they} ate together.",
                "{A} put {piece} on a plate and gave it to {B}. [A|I made it myself!] said {A}."),
         ),
         ending=(_b("{A} was proud. Baking was fun, but sharing was the best part.",
                    "From that day on, {A} and {B} baked together every week.",
                    "{A} smiled. [A|Can we bake again tomorrow?] {A.he} asked. [M|Of course,] said {M}."),),
         variants=({"bake": "a cake", "bake_the": "the cake", "piece": "a big piece of cake"},
                   {"bake": "cookies", "bake_the": "the cookies", "piece": "a warm cookie"},
                   {"bake": "muffins", "bake_the": "the muffins", "piece": "a muffin"},
                   {"bake": "an apple pie", "bake_the": "the pie", "piece": "a slice of pie"})),

    Plot("new_friend", ("park", "beach", "zoo", "pond"), "any",
         opening=(_b("{A} had just moved to a new town. {A.He} did not have any friends yet.",
                     "{A} was a shy little {A.kind}. {A.He} often played alone."),),
         middle=(
             _b("{one_day}, {A} went to {place}. {A.He} saw {sight}.",
                "{one_day}, {A} was sitting alone {at}. Other kids {act3}.", where="main"),
             _b("Then {A} saw a {B.kind} named {B} playing nearby.",
                "A {B.kind} named {B} was also there, playing alone."),
             _b("{A} wanted to say hello, but {A.he} felt shy. Then {A.he} took a deep breath and walked over.",
                "{A} walked over to {B} and said, [A|Hi! My name is {A}. What is your name?] [B|I'm {B},] said {B}."),
             _b("[A|Do you want to play with me?] asked {A}. [B|Yes!] said {B}.",
                "{B} smiled and said, [B|Do you want to play with me?] {A} nodded."),
             _b("{AB.They} {act}. Then {AB.they} {act2}.",
                "{A} and {B} {act}. {AB.They} laughed a lot.", where="main"),
             _b("Then {A} and {B} went to {place}. {B} gave {find} to {A}.",
                "Later, {AB.they} walked to {place} together. {A} gave {find} to {B}.",
                "Then {AB.they} went to {place}. {AB.They} {act}.", where="other", p=0.8),
         ),
         ending=(_b("From that day on, {A} and {B} were best friends. {A} was not lonely anymore.",
                    "{A} was so happy. {A.He} had made a new friend!",
                    "{A} learned that saying hello can be the start of a great friendship."),),
         others=("park", "beach", "garden", "forest", "pond")),

    Plot("broken_toy", ("park",), "child",
         opening=(_b("{A} had a friend named {B}. {B} had a {thing} that {B.he} loved very much.",
                     "{A.His} friend {B} had a new {thing}. It was {color} and shiny."),),
         middle=(
             _b("{one_day}, {A} and {B} were playing {at}. {B} let {A} play with the {thing}.",
                "{one_day}, {B} came to play {at}. {B} brought {B.his} {thing}.", where="main"),
             _b("{A} played too rough, and {break}.",
                "{A} dropped the {thing} by accident, and {break}."),
             _b("{A} felt scared. What would {B} say?",
                "{A} wanted to hide the {thing}. [A|Maybe {B} won't see,] {A.he} thought."),
             _b("But {A} knew that hiding the truth was wrong.",
                "Then {A} remembered what {A.his} {M.kind} always said: telling the truth is best."),
             _b("{A} went to {B} and said, [A|I'm sorry, {B}. I broke your {thing}.]",
                "[A|{B}, I have to tell you something,] said {A}. [A|I broke your {thing}. I am very sorry.]"),
             _b("{B} was sad for a moment. Then {B.he} said, [B|Thank you for telling me the truth.]",
                "{B} looked at the {thing}. [B|It's okay,] said {B}. [B|We can fix it together.]"),
             _b("{AB.They} {fix}. Soon the {thing} was as good as new.",
                "{A} and {B} worked together. {AB.They} {fix}."),
         ),
         ending=(_b("{A} learned that it is always best to tell the truth.",
                    "From that day on, {A} was careful with other people's toys. And {A} and {B} stayed best friends."),),
         variants=(
             {"at_place": "park", "thing": "toy car", "break": "one of the wheels came off",
              "fix": "used some glue to put the wheel back on"},
             {"at_place": "park", "thing": "kite", "break": "the kite got a big hole",
              "fix": "used tape to fix the hole"},
             {"at_place": "bedroom", "thing": "doll", "break": "the doll's arm came off",
              "fix": "sewed the arm back on with a needle and thread"},
             {"at_place": "bedroom", "thing": "toy robot", "break": "the robot's arm fell off",
              "fix": "snapped the arm back into place"},
             {"at_place": "garden", "thing": "toy boat", "break": "the little sail broke",
              "fix": "made a new sail out of paper and a stick"})),

    Plot("listen", ("kitchen",), "child",
         opening=(_b("{A} was a curious {A.kind}. {A.He} always wanted to touch and see everything.",
                     "{A} did not always listen to {A.his} {M.kind}."),),
         middle=(
             _b("{one_day}, {A} was {at} with {A.his} {M.kind}.",
                "{one_day}, {A} and {A.his} {M.kind} went to {place}.", where="main"),
             _b("{M} said, [M|{A}, {dont}.] [A|Okay,] said {A}.",
                "[M|{Dont},] said {M}. {A} nodded."),
             _b("But {A} was curious. {A.He} {bad}.",
                "{A} did not listen. When {M} was not looking, {A.he} {bad}.", where="main"),
             _b("{Hurt}!", "Oh no! {Hurt}!", where="main"),
             _b("{A} began to cry. [A|{M}! Help!] {A.he} called.", "[A|{M}!] cried {A}."),
             _b("{M} came running. {M.He} hugged {A} and made it all better.",
                "{M} helped {A} right away. [M|Are you okay?] {M.he} asked."),
             _b("[A|I'm sorry I did not listen,] said {A}. [M|It's okay. Rules keep you safe,] said {M}.",
                "{A} said sorry to {M}. {M} gave {A} a big hug."),
         ),
         ending=(_b("From that day on, {A} always listened to {A.his} {M.kind}.",
                    "{A} learned an important lesson: listening keeps you safe."),),
         variants=(
             {"at_place": "kitchen", "dont": "don't touch the oven. It is very hot",
              "bad": "reached out and touched the oven door", "hurt": "The oven was very hot, and {A.his} finger turned red"},
             {"at_place": "pond", "dont": "stay away from the edge of the water",
              "bad": "walked right up to the edge to look at the frogs", "hurt": "{A.He} slipped and fell into the cold water"},
             {"at_place": "forest", "dont": "stay on the path",
              "bad": "ran off the path to chase a squirrel", "hurt": "Soon {A.he} could not see the path, and {A.he} was lost"},
             {"at_place": "garden", "dont": "don't pick the roses. They have thorns",
              "bad": "grabbed a red rose", "hurt": "The sharp thorns on the rose hurt {A.his} fingers"},
             {"at_place": "farm", "dont": "don't climb on the hay. It is too high",
              "bad": "climbed to the top of the hay", "hurt": "{A.He} slid down and landed in the mud"})),

    Plot("planting", ("garden",), "any",
         opening=(_b("{A} wanted to grow {plant} more than anything.",
                     "{A} loved to watch things grow."),),
         middle=(
             _b("{one_day}, {A.his} {M.kind} gave some seeds to {A}. [M|If you take care of them, they will grow,] said {M}.",
                "{one_day}, {A} found a little bag of seeds. [A|Can I plant them?] {A.he} asked. [M|Yes,] said {M}."),
             _b("{A} and {A.his} friend {B} dug little holes in the garden. {AB.They} put the seeds in the dirt.",
                "{A} went to the garden with {B}, a {B.kind} from next door. {AB.They} planted the seeds in the dirt.",
                where="main"),
             _b("Every day, {A} watered the seeds in the garden.",
                "{A} gave the seeds water every morning. The sun kept the garden warm.", where="main"),
             _b("But nothing happened. [A|Why are they not growing?] asked {A}. [M|Be patient, {A},] said {M}.",
                "For many days, nothing grew. {A} was sad, but {A.he} did not give up."),
             _b("One morning, {A} saw a tiny green plant! [A|Look! It's growing!] {A.he} shouted.",
                "After many days, little green plants came out of the dirt. {A} jumped for joy.", where="main"),
             _b("Soon the garden was full of {plant}. Bees buzzed around the flowers.",
                "The plants grew big and tall. Soon there were {plant} everywhere.", where="main"),
             _b("{A} picked the best one and gave it to {B}. [B|Thank you, {A}!] said {B}.",
                "{A} gave some of the {plant} to {B}. [A|We grew these together,] {A.he} said.", p=0.8),
         ),
         ending=(_b("{A} learned that good things take time.",
                    "From that day on, {A} and {B} took care of the garden together."),),
         variants=tuple({"plant": x} for x in ("sunflowers", "carrots", "tomatoes", "strawberries"))),

    # A parrot says back what it hears, and a magic word works when said again: stories
    # whose next words are predictable only by copying earlier ones, as names are.
    Plot("parrot", ("park", "garden", "bedroom", "kitchen"), "animal",
         opening=(_b("{A} had a pet parrot named {B}. {B} was green and {adj2}, and {B.he} could talk.",
                     "{A.His} {giver} gave {A.him} a parrot named {B}. {B} liked to say what {A} said."),),
         middle=(
             _b("{one_day}, {A} was {at} with {B}.", "{one_day}, {A} took {B} to {place}.",
                where="main"),
             _b("{A} said, [A|{line1}] And {B} said, [B|{line1}]",
                "{A} looked at {B} and said, [A|{line1}] {B} said, [B|{line1}]"),
             _b("{A} laughed. Then {A.he} said, [A|{line2}] {B} said it too: [B|{line2}]",
                "Then {A} said, [A|{line2}] Right away, {B} said, [B|{line2}]"),
             _b("{A} wanted to teach {B} a new word. [A|Say {word}!] said {A}. [B|{Word}! {Word}!] said {B}.",
                "{A} made up a funny word: {word}. [A|{Word},] said {A}. [B|{Word},] said {B}."),
             _b("Then {M} came in and said, [M|{line3}] {B} said, [B|{line3}] {M} laughed and laughed.",
                "{M} called, [M|{line3}] And {B} called too: [B|{line3}]", p=0.8),
         ),
         ending=(_b("From that day on, {A} taught {B} a new word every day. And {B} said it right back.",
                    "{A} hugged {B}. [A|You are the best parrot,] said {A}. [B|You are the best parrot,] said {B}.",
                    "{A} and {B} were the best of friends. And {B} never stopped talking."),),
         variants=({"B_kind": "parrot"},)),

    # Said, then said back: a list of random words copied verbatim, the in-story twin of
    # the [start] + R + R test an induction head is found with.
    Plot("memory_game", ("park", "beach", "garden", "bedroom", "kitchen"), "child",
         opening=(_b("{A} and {A.his} friend {B} liked to play a memory game. One says some words, "
                     "and the other says them back.",
                     "{A.His} favorite game was the memory game. {A} played it with {A.his} friend {B} every day."),),
         middle=(
             _b("{one_day}, {A} and {B} were {at}. [A|Let's play the memory game!] said {A}.",
                "{one_day}, {A} went to {place} with {B}. [B|Can we play the memory game?] asked {B}.",
                where="main"),
             _b("[A|Listen: {list1},] said {A}. {B} thought hard. [B|{List1}!] {B.he} said. [A|Yes!] said {A}.",
                "{A} said, [A|{List1}.] {B} closed {B.his} eyes and said, [B|{List1}.]"),
             _b("Then it was {B}'s turn. [B|{List2},] said {B}. [A|{List2}!] said {A}.",
                "{B} said, [B|Now you: {list2}.] {A} said, [A|{List2}.] [B|Good job!] said {B}."),
             _b("[A|Now a long one: {list3},] said {A}. [B|{List3}!] said {B}. {AB.They} laughed.",
                "{A} said, [A|Try this one: {list3}.] {B} said, [B|{List3}.] [A|You did it!] said {A}.", p=0.8),
             _b("{M} wanted to play too. [M|{List4},] said {M}. [A|{List4}!] said {A}.",
                "Then {M} came and said, [M|{List4}.] {B} said, [B|{List4}.] [M|Very good!] said {M}.", p=0.6),
         ),
         ending=(_b("{AB.They} played the memory game until it was time for dinner.",
                    "From that day on, {A} and {B} played the memory game every day.",
                    "{A} and {B} were very good at the memory game. {AB.They} remembered everything."),),
         weight=MEMORY_GAME_WEIGHT),

    Plot("magic_word", ("bedroom", "garden", "forest", "park"), "child",
         opening=(_b("{A} found an old book. In the book was a magic word: {word}.",
                     "{A} had a magic wand. Only {A} knew the magic word. It was {word}."),),
         middle=(
             _b("{one_day}, {A} and {B} were playing {at}.",
                "{one_day}, {A} went to {place} with {A.his} friend {B}.", where="main"),
             _b("[A|Do you want to see some magic?] asked {A}. [B|Yes!] said {B}.",
                "[A|I know a magic word,] said {A}. [B|Show me!] said {B}."),
             _b("{A} waved {A.his} hands and said, [A|{Word}!] And {effect}.",
                "[A|{Word}, {word}!] said {A}. Then {effect}."),
             _b("[B|Wow! Can I try?] asked {B}. [A|Yes. Say {word},] said {A}.",
                "{B} wanted to try too. {A} told {B.him} the word: {word}."),
             _b("{B} said, [B|{Word}!] And {effect2}.", "[B|{Word}!] said {B}. Then {effect2}."),
             _b("{AB.They} laughed. [A|{Word}!] [B|{Word}!] {AB.They} said it again and again.",
                "{A} and {B} clapped. [A|Let's say it together!] {AB.They} said, [A|{Word}!]", p=0.7),
         ),
         ending=(_b("From that day on, {A} and {B} said {word} every day.",
                    "{A} never forgot the magic word. It was {word}.",
                    "{A} put the magic away. [A|Tomorrow we can say {word} again,] said {A}."),),
         variants=tuple({"effect": a, "effect2": b} for a, b in (
             ("a {color} butterfly flew out of the book", "flowers grew all around"),
             ("the {toy} began to dance", "it began to snow"),
             ("the leaves danced in the wind", "a rainbow came out"),
             ("a little bird began to sing", "the {toy} turned {color}")))),
)

SKELETONS: tuple[str, ...] = tuple(p.name for p in _PLOTS)
_PLOT_WEIGHTS = tuple(p.weight for p in _PLOTS)


# ---------------------------------------------------------------------------
# Rendering templates into labelled pieces
# ---------------------------------------------------------------------------

_MARKUP = re.compile(r"\[([A-Z])\|([^\]]*)\]|\{([^}]+)\}")
_ARTICLE = re.compile(r"\b(an?|An?) ([A-Za-z]+)")


@lru_cache(maxsize=None)
def _parse(template: str) -> tuple:
    """Split a template into ("t", text), ("slot", key) and ("q", role, inner) items."""
    items, pos = [], 0
    for m in _MARKUP.finditer(template):
        if m.start() > pos:
            items.append(("t", template[pos:m.start()]))
        if m.group(1):
            items.append(("q", m.group(1), _parse(m.group(2))))
        else:
            items.append(("slot", m.group(3)))
        pos = m.end()
    if pos < len(template):
        items.append(("t", template[pos:]))
    return tuple(items)


def _fix_articles(text: str) -> str:
    # Slots are filled after the template was written, so "a {adj}" may meet "orange".
    def pick(m: re.Match) -> str:
        vowel = m.group(2)[0].lower() in "aeiou"
        art = ("an" if vowel else "a")
        return (art.capitalize() if m.group(1)[0] == "A" else art) + " " + m.group(2)
    return _ARTICLE.sub(pick, text)


class _Builder:
    """Appends labelled pieces to a growing text and records their spans.

    A piece is ``(text, tag)``: tag None is plain text; ("name", who),
    ("pron", text_value) label the piece; ("open", speaker) and ("close",)
    bracket a quotation.
    """

    def __init__(self, cast: dict[str, Character], ctx: dict[str, str]):
        self.cast, self.ctx = cast, ctx
        self.chunks: list[str] = []
        self.pos = 0
        self.spans: list[Span] = []
        self.seen: list[str] = []  # character names in order of first mention
        self.named: set[str] = set()  # names already written in the text

    # -- template expansion ------------------------------------------------
    def expand(self, items: tuple, out: list) -> None:
        for item in items:
            if item[0] == "t":
                out.append((item[1], None))
            elif item[0] == "q":
                speaker = self.cast[item[1]].name
                out.append(('"', ("open", speaker)))
                self.expand(item[2], out)
                out.append(('"', ("close",)))
            else:
                self.slot(item[1], out)

    def slot(self, key: str, out: list) -> None:
        who, _, attr = key.partition(".")
        if who.isupper() and all(r in self.cast for r in who):
            people = [self.cast[r] for r in who]
            if not attr:  # names: "Lily" or "Lily and Tom"
                for i, c in enumerate(people):
                    if i:
                        out.append((" and ", None))
                    out.append((c.name, ("name", c.name)))
                return
            if attr == "kind":
                out.append((people[0].kind, None))
                return
            table = _PRONOUNS["plural" if len(people) > 1 else people[0].gender]
            word = table[attr.lower()]
            word = word.capitalize() if attr[0].isupper() else word
            out.append((word, ("pron", "+".join(c.name for c in people))))
            return
        value = self.ctx[key.lower()] if key not in self.ctx else self.ctx[key]
        sub: list = []
        self.expand(_parse(value), sub)
        if key[0].isupper() and sub:  # {Place} -> "The park"
            text, tag = sub[0]
            sub[0] = (text[0].upper() + text[1:], tag)
        out.extend(sub)

    # -- appending ---------------------------------------------------------
    def write(self, text: str) -> None:
        self.chunks.append(text)
        self.pos += len(text)

    def emit(self, template: str) -> None:
        pieces: list = []
        self.expand(_parse(template), pieces)
        plain: list[str] = []
        quote_start = None
        for text, tag in pieces + [("", ("end",))]:
            if tag is None:
                plain.append(text)
                continue
            if plain:
                self.write(_fix_articles("".join(plain)))
                plain = []
            kind = tag[0]
            start = self.pos
            if kind == "open":
                quote_start, speaker = start, tag[1]
                self.write(text)
            elif kind == "close":
                self.write(text)
                self.spans.append(Span(quote_start, self.pos, "in_quote", "1"))
                self.spans.append(Span(quote_start, self.pos, "speaker", speaker))
                self.mention(speaker)
            elif kind == "name":
                self.write(text)
                if text in self.named:
                    self.spans.append(Span(start, self.pos, "name_repeat", text))
                self.named.add(text)
                self.mention(text)
            elif kind == "pron":
                self.write(text)
                self.spans.append(Span(start, self.pos, "pronoun_referent", tag[1]))
                for name in tag[1].split("+"):
                    self.mention(name)

    def mention(self, name: str) -> None:
        if name not in self.seen:
            self.seen.append(name)


# ---------------------------------------------------------------------------
# Composing a story
# ---------------------------------------------------------------------------

def _place_slots(place: Place, rng: random.Random) -> dict[str, str]:
    # Shuffled once per story, so "act" and "act2" (or three spots) always differ.
    acts, sights = rng.sample(place.acts, len(place.acts)), rng.sample(place.sights, len(place.sights))
    spots = rng.sample(place.spots, len(place.spots))
    slots = {"place": place.the, "at": place.at, "goal": place.goal, "find": rng.choice(place.finds)}
    for i in range(3):
        suffix = str(i + 1) if i else ""
        slots["act" + suffix] = acts[i % len(acts)]
        slots["sight" + suffix] = sights[i % len(sights)]
        slots["spot" + suffix] = spots[i % len(spots)]
    return slots


@lru_cache(maxsize=1)
def known_words() -> frozenset[str]:
    """Every word the templates and tables can write, lower-cased: an invented name or
    magic word must not be one of them, or labels and first mentions would be ambiguous."""
    tables = (_PLOTS, PLACES, NAMES, PARENTS, _COLORS, _TOYS, _ADJS, _HOBBIES, _ONE_DAY,
              _GIVERS, _FAMILIES, _PARROT_LINES, _PACKING, _INTRO, _TRAIT)
    return frozenset(w.lower() for w in re.findall(r"[A-Za-z]+", repr(tables)))


@lru_cache(maxsize=1)
def _memory_words() -> tuple[str, ...]:
    """The memory game's words: every place word, colour and one-word toy (sorted, so the
    same on every machine)."""
    words = set(_COLORS) | {t for t in _TOYS if " " not in t and "-" not in t}
    for place in PLACES.values():
        words |= place.words
    return tuple(sorted(words))


def _new_word(rng: random.Random, make, avoid: set[str]) -> str:
    while True:
        word = make(rng)
        if word.lower() not in known_words() and word not in avoid:
            return word


def _child(rng: random.Random, avoid: set[str]) -> Character:
    if rng.random() < INVENTED_SHARE:
        gender = rng.choice(("female", "male"))
        name = _new_word(rng, lambda r: invented_name(r, gender), avoid)
        return Character(name, "girl" if gender == "female" else "boy", gender)
    return rng.choice([c for c in _CHILDREN if c.name not in avoid])


def _cast(plot: Plot, variant: dict, rng: random.Random) -> dict[str, Character]:
    hero = _child(rng, set())
    if plot.partner == "animal":
        partner = rng.choice([c for c in NAMES if c.kind == variant.get("B_kind")])
    elif plot.partner == "any" and rng.random() < 0.3:
        partner = rng.choice(_PETS)
    else:
        partner = _child(rng, {hero.name})
    return {"A": hero, "B": partner, "M": rng.choice(PARENTS)}


def _join_and(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1]


def _paragraph_breaks(n_beats: int, rng: random.Random) -> set[int]:
    # TinyStories mixes one-paragraph stories with ones split into a few.
    n_par = rng.choices((1, 2, 3, 4), weights=(2, 3, 3, 2))[0]
    n_par = min(n_par, n_beats)
    return set(rng.sample(range(1, n_beats), n_par - 1))


def _compose(rng: random.Random) -> Story:
    """Draw a plot, cast and places, pick one alternative per beat, and render."""
    plot = rng.choices(_PLOTS, weights=_PLOT_WEIGHTS)[0]
    variant = rng.choice(plot.variants)
    cast = _cast(plot, variant, rng)
    main = variant.get("at_place") or rng.choice(variant.get("places", plot.places))
    other = rng.choice([p for p in plot.others if p != main] or [main])
    ctx = {
        "toy": rng.choice(_TOYS) if rng.random() < 0.5 else f"{rng.choice(_COLORS)} {rng.choice(_TOYS)}",
        "color": rng.choice(_COLORS), "adj": rng.choice(_ADJS), "adj2": rng.choice(_ADJS),
        "hobby": rng.choice(_HOBBIES), "one_day": rng.choice(_ONE_DAY), "giver": rng.choice(_GIVERS),
        "family": rng.choice(_FAMILIES), "age": rng.choice(("three", "four", "five", "six")),
    }
    # what the parrot repeats, the magic word and the packed bag: copied later in the story
    lines = rng.sample(_PARROT_LINES, 3)
    ctx.update({"line1": lines[0], "line2": lines[1], "line3": lines[2],
                "word": _new_word(rng, invented_word, {c.name.lower() for c in cast.values()}),
                "items": _join_and(rng.sample(_PACKING, 3))})
    for i in range(1, 5):  # the memory game's lists: 3 to 7 words from the whole world
        ctx[f"list{i}"] = ", ".join(rng.sample(_memory_words(), rng.randint(4, 9)))
    ctx.update((k, v) for k, v in variant.items() if isinstance(v, str))
    main_slots = _place_slots(PLACES[main], rng)
    other_slots = _place_slots(PLACES[other], rng)
    ctx.update(main_slots)

    beats = [("opening", b) for b in (_INTRO, _TRAIT) + plot.opening]
    beats += [("middle", b) for b in plot.middle]
    beats += [("ending", b) for b in plot.ending + (_THE_END,)]
    told = [(sec, b, rng.choice(b.alts)) for sec, b in beats if b.p >= 1.0 or rng.random() < b.p]
    breaks = _paragraph_breaks(len(told), rng)

    builder = _Builder(cast, ctx)
    section_starts: list[tuple[int, str]] = []
    for i, (section, beat, template) in enumerate(told):
        if i:
            builder.write("\n" if i in breaks else " ")
        if not section_starts or section_starts[-1][1] != section:
            section_starts.append((builder.pos if i else 0, section))
        start = builder.pos
        if beat.where == "other":
            builder.ctx = {**ctx, **other_slots}
        builder.emit(template)
        builder.ctx = ctx
        if beat.where:
            name = other if beat.where == "other" else main
            builder.spans.append(Span(start, builder.pos, "place", name))
    text = "".join(builder.chunks)
    bounds = [s for s, _ in section_starts] + [len(text)]
    spans = builder.spans + [Span(bounds[k], bounds[k + 1], "section", sec)
                             for k, (_, sec) in enumerate(section_starts)]
    spans.sort(key=lambda s: (s.start, s.end, s.variable))
    return Story(text, tuple(spans), plot.name, tuple(builder.seen))


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------

MIN_WORDS, MAX_WORDS = 80, 250


def generate_story(seed: int, index: int) -> Story:
    """Story ``index`` of corpus ``seed``; depends on nothing else."""
    story = None
    for attempt in range(50):
        # Redraw (deterministically) in the rare case a draw is too short or long.
        key = f"{seed}:{index}" if attempt == 0 else f"{seed}:{index}:{attempt}"
        story = _compose(random.Random(key))
        if MIN_WORDS <= len(story.text.split()) <= MAX_WORDS:
            return story
    return story


def generate_stories(n: int, seed: int = 0, start: int = 0) -> Iterator[Story]:
    """Stories ``start`` .. ``start + n - 1`` of corpus ``seed``, lazily."""
    for i in range(start, start + n):
        yield generate_story(seed, i)


def story_texts(n: int, seed: int = 0) -> Iterator[str]:
    """Just the text of the first ``n`` stories."""
    for story in generate_stories(n, seed):
        yield story.text


def token_labels(story: Story, offsets: Sequence[tuple[int, int]]) -> dict[str, list[str | None]]:
    """Per-token label values from a tokenizer's character offsets.

    A token ``(s, e)`` takes the value of the span that contains its *last*
    character ``e - 1`` (so " Lily" with a leading-space offset still maps to
    the name, and a closing quote token belongs to the quotation). Tokens with
    ``e <= s`` (special tokens) or outside the text get None. Spans of one
    variable never overlap, so the answer is unique.
    """
    n = len(story.text)
    by_var: dict[str, list[Span]] = {v: [] for v in LABEL_VARIABLES}
    for span in story.spans:
        by_var[span.variable].append(span)
    out: dict[str, list[str | None]] = {}
    for var, spans in by_var.items():
        spans.sort(key=lambda s: s.start)
        starts = [s.start for s in spans]
        labels: list[str | None] = []
        for s, e in offsets:
            value = None
            if e > s and 0 < e <= n:
                k = bisect_right(starts, e - 1) - 1
                if k >= 0 and spans[k].end > e - 1:
                    value = spans[k].value
            labels.append(value)
        out[var] = labels
    return out
