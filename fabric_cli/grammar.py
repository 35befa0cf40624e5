"""The Chronicles grammar: sentence shapes and the plain words around the lexicon. Data only.

A template is text with slots. `{a}`..`{y}` name a character (its role in the sentence):
`{x}` a later mention ("the queen", "Ada"), `{x.new}` a first mention ("the old queen", "Ada the
professor"), `{x.indef}` ("a queen"), `{x.subj}` / `{x.obj}` / `{x.poss}` its pronoun, `{x.vp}` a verb
phrase of its category, `{x.item}` its possession, `{x.gift}` a gift it would like, and the plain
words chosen by kind and number: `{x.was}`, `{x.meet.y}` (a verb for x meeting y), `{x.give}`,
`{x.see}`, `{x.watch}`, `{x.arrive}`, `{x.come}`, `{x.idle}`, `{x.generic}`, `{x.mood}`, `{x.who}`,
`{x.have}`, `{x.itemwas}`. Slots without a dot are scene words: `{opener}`, `{place}`, `{adv}`, `{line}`,
`{itemadj}`, `{giver}` (someone outside the story) and `{give}`.

Plain words follow a pronoun only in a few rare shapes (`generic`, `mood`, "he admired her crown"),
so the word after a pronoun is almost always one that only its referent's category uses.
"""

from __future__ import annotations

OPENERS = ("One morning,", "Long ago,", "One winter evening,", "On a bright spring day,", "Once upon a time,",
           "Late one night,", "Early one summer morning,", "In a quiet village,", "In a faraway land,",
           "One rainy afternoon,", "On the first day of autumn,")
PLACES = ("at the market", "by the river", "near the old mill", "on the bridge", "in the village square",
          "at the crossroads", "by the well", "at the fair", "in the garden", "on the hill",
          "at the edge of the forest", "outside the bakery", "on the road to town", "by the church")
SEA_PLACES = ("in the harbour", "near the shore", "at the docks", "in the bay", "by the lighthouse")
ADVERBS = ("Later", "Then", "Soon", "Afterwards", "After a while,", "That afternoon,", "At noon,",
           "In the evening,", "Before long,", "Meanwhile,", "The next day,", "At dawn,",
           "When the bells rang,", "As the sun went down,", "Once the rain stopped,")
LINES = ("Good morning", "What a lovely day", "Look over there", "We must hurry", "Welcome home",
         "Thank you kindly", "Come and see", "What a surprise", "Let us go home")
SCENES = ("A cold wind blew across the hills.", "Rain began to fall.", "The bells of the town rang out.",
          "The sun rose over the valley.", "Clouds gathered in the west.", "Snow fell softly on the roofs.",
          "The evening grew quiet.", "A storm was coming.", "The river sparkled in the sun.",
          "Far away, thunder rumbled.", "The road was long and dusty.", "The moon rose over the trees.",
          "Leaves drifted down from the trees.", "The air smelled of rain.")
CLOSINGS = ("In the end, everyone went home happy.", "That night, the whole village slept soundly.",
            "And so the long day came to an end.", "By evening, the sky had turned gold.",
            "Nobody ever forgot that day.", "The next morning, all was calm again.")
GIVERS = ("A stranger", "Someone", "A kind neighbour", "An old friend", "A passing visitor")
ITEM_ADJECTIVES = ("old", "new", "heavy", "shiny", "dusty", "beautiful", "broken", "small", "fine", "worn")

# adjectives for a first mention ("the old queen"), by kind
ADJECTIVES = {
    "person": ("old", "young", "kind", "clever", "brave", "tall", "cheerful", "grumpy", "wise", "quiet"),
    "animal": ("little", "old", "grey", "hungry", "clever", "sleepy", "young"),
    "machine": ("old", "shiny", "rusty", "little", "clever"),
    "vessel": ("old", "little", "battered", "red", "great"),
}
# a verb for character A meeting character B, by (A's kind, B's kind); vessels only pass by
_P_P = ("met", "greeted", "visited", "waved to", "bumped into", "spoke with", "called on", "helped")
MEET = {
    ("person", "person"): _P_P,
    ("person", "animal"): ("found", "fed", "noticed", "watched", "spotted", "met"),
    ("person", "machine"): ("found", "noticed", "watched", "repaired", "inspected"),
    ("person", "vessel"): ("watched", "boarded", "noticed", "inspected"),
    ("animal", "person"): ("followed", "watched", "found", "ran to"),
    ("animal", "animal"): ("chased", "watched", "followed", "played with", "spotted"),
    ("machine", "person"): ("greeted", "followed", "watched", "helped"),
    ("machine", "animal"): ("followed", "watched", "noticed", "chased"),
}
MEET_DEFAULT = {"vessel": ("passed", "sailed past", "drifted past")}  # any other pair: "watched", "noticed"
GIVE = {"person": ("gave", "brought", "offered", "handed", "sent"), "animal": ("brought",),
        "machine": ("brought", "handed")}
SEE = {"person": ("admired", "noticed", "found", "looked at"), "animal": ("noticed", "found"),
       "machine": ("noticed", "scanned", "found")}
WATCH = {"person": ("watched as", "waited while", "smiled as", "looked on as"), "animal": ("watched as",),
         "machine": ("watched as",)}
ARRIVE = {"person": ("arrived", "came back", "woke up", "appeared"), "animal": ("arrived", "woke up", "appeared"),
          "machine": ("arrived", "appeared"), "vessel": ("arrived", "appeared")}
COME = {"person": ("arrived", "appeared", "came along", "turned up"), "animal": ("arrived", "appeared", "came along"),
        "machine": ("arrived", "appeared"), "vessel": ("arrived", "appeared")}
IDLE = {"person": ("waiting", "resting", "working", "reading"), "animal": ("sleeping", "resting", "hiding"),
        "machine": ("waiting", "resting"), "vessel": ("waiting",)}
GENERIC = {"person": ("smiled", "laughed", "nodded", "sighed", "waved", "yawned"),
           "animal": ("yawned", "paused", "waited"), "machine": ("paused", "waited")}
MOOD = {"person": ("happy", "tired", "hungry", "cheerful", "worried", "proud"),
        "animal": ("hungry", "tired", "sleepy"), "machine": ("quiet",)}

# ---------------------------------------------------------------------------------- sentence shapes
# Each entry: (template, weight, condition). Conditions name what the characters must allow:
#   "no_pl": nobody in the story is plural (so "they" could not mean a coordinated pair);
#   "a_sg": a is singular; "agent:y": y is not a vessel; "gifts:x": x's category has gifts;
#   "person:x": x is a person; "acts:x": x is a person, animal or machine.

# introductions of two characters; a is mentioned first
INTROS = (
    ("{opener}{a.new} {a.meet.b} {b.new} {place}.", 4, ()),
    ("{place}, {a.new} {a.meet.b} {b.new}.", 2, ()),
    ("{opener}{a.new} {a.was} {a.idle} {place} when {b.new} {b.come}.", 2, ()),
    ("There was once {a.indef} {a.who} lived near {b.indef}.", 1, ("a_sg", "acts:a", "agent:b")),
    ("{opener}{a.new} and {b.new} were together {place}.", 1, ("no_pl",)),
    ("{opener}{a.new} {a.was} visited by {b.new} {place}.", 1, ("person:a", "person:b")),
)
# an introduction that goes straight on with x (one of a and b) in the same sentence
INTROS_THEN = (
    ("{opener}{a.new} {a.meet.b} {b.new} {place}, and then {x.subj} {x.vp}.", 2, ()),
    ("When {a.new} {a.meet.b} {b.new}, {x.subj} {x.vp}.", 2, ()),
    ("{opener}{a.new} {a.meet.b} {b.new} before {x.subj} {x.vp}.", 1, ()),
)
# a character who joins later
JOINS = (
    ("Soon {c.indef} {c.come}.", 2, ()),
    ("{adv} {c.new} {c.come} {place}.", 2, ()),
    ("Nearby, {c.indef} {c.was} {c.idle}.", 1, ()),
    ("{adv} {a} {a.meet.c} {c.new}.", 2, ()),
)
# what happens: x acts; y is another character
EVENTS = (
    ("{adv} {x.subj} {x.vp}.", 3, ()),
    ("{x.subj} {x.vp}.", 2, ()),
    ("{x.subj} {x.vp}, and then {x.subj} {x.vp}.", 1, ()),
    ("{x.poss} {x.item} {x.itemwas} {itemadj}.", 1.5, ()),
    ("{x} had {x.have}.", 1, ()),
    # the pronoun right after its noun: the nearest, plainest evidence of a noun's gender and number
    ("{x} {x.vp}, and then {x.subj} {x.vp}.", 2, ()),
    ("{x} {x.vp}.", 1, ()),
    ("{adv} {x} {x.vp}.", 0.5, ()),
    ("{x.subj} {x.generic}.", 0.4, ("acts:x",)),
    ("{adv} {x.subj} {x.generic}.", 0.3, ("acts:x",)),
    ("{x.subj} {x.was} {x.mood}.", 0.4, ("acts:x",)),
    ('"{line}," said {x}.', 0.3, ("person:x",)),
    ('"{line}!" cried {x}.', 0.2, ("person:x",)),
    ("{giver} {give} {x.obj} {x.gift}.", 0.5, ("gifts:x",)),
    ("{y} {y.watch} {x.subj} {x.vp}.", 1.5, ("agent:y",)),
    ("When {y} {y.arrive}, {x.subj} {x.vp}.", 1, ()),
    ("{x.subj} {x.vp} while {y} {y.vp}.", 1, ()),
    ("{x.subj} {x.vp}, and {y.subj} {y.vp}.", 1, ()),
    ("After {y.subj} {y.vp}, {x.subj} {x.vp}.", 0.5, ()),
    ("{y} {y.see} {x.poss} {x.item}.", 1.5, ("agent:y",)),
    ("{y.subj} {y.see} {x.poss} {x.item}.", 0.4, ("agent:y",)),
    ("{y} {y.give} {x.obj} {x.gift}.", 1.5, ("agent:y", "gifts:x")),
    ("{adv} {y} {y.meet.x} {x}.", 0.5, ()),
)
SCENE_PROBABILITY = 0.04  # a sentence of weather or sounds, with no character in it
