"""The Chronicles lexicon: who can appear in a story, what they do, what they own. Data only.

Every noun belongs to one category. A category's verb phrases, possessions and gifts are its own:
their first words occur in no other category, so the word after a pronoun ("she ruled", "her crown",
"gave her jewels") says which character the pronoun means. Categories mix genders (queen and king
are both royalty), so a pronoun's gender never gives the category away; only its referent does.

Agreement classes: "f" (she/her/her), "m" (he/him/his), "n" (it/it/its), "pl" (they/them/their).
`roles` are gender-neutral singular nouns (professor, nurse); the generator gives them a gender
with a first name: "Ada the professor". Verb phrases may hold {poss} (the subject's own possessive
pronoun) and {s} (an "s" when the subject is plural: "wagged their tails").
"""

from __future__ import annotations

from dataclasses import dataclass

CLASSES = ("f", "m", "n", "pl")

# pronoun forms per agreement class: subject, object, possessive
PRONOUNS: dict[str, dict[str, str]] = {
    "f": {"subj": "she", "obj": "her", "poss": "her"},
    "m": {"subj": "he", "obj": "him", "poss": "his"},
    "n": {"subj": "it", "obj": "it", "poss": "its"},
    "pl": {"subj": "they", "obj": "them", "poss": "their"},
}
# the agreement class of each pronoun word ("her" is the object and the possessive of "she")
PRONOUN_CLASS: dict[str, str] = {w: c for c, forms in PRONOUNS.items() for w in forms.values()}


@dataclass(frozen=True)
class Category:
    name: str
    kind: str  # person, animal, machine or vessel: decides which plain verbs fit ("met", "fed", "boarded")
    female: tuple[str, ...]
    male: tuple[str, ...]
    plural: tuple[str, ...]
    neuter: tuple[str, ...]
    roles: tuple[str, ...]
    verbs: tuple[str, ...]  # follow a subject pronoun: "she ruled the kingdom wisely"
    items: tuple[str, ...]  # follow a possessive: "her crown"
    gifts: tuple[str, ...]  # follow an object pronoun: "the farmer gave her jewels"

    def nouns(self, cls: str) -> tuple[str, ...]:
        """The nouns of one agreement class (roles are singular but need a name for their gender)."""
        return {"f": self.female, "m": self.male, "pl": self.plural, "n": self.neuter}[cls]


def _cat(name, kind, *, f="", m="", pl="", n="", roles="", verbs=(), items="", gifts="") -> Category:
    return Category(name, kind, tuple(f.split()), tuple(m.split()), tuple(pl.split()), tuple(n.split()),
                    tuple(roles.split()), tuple(verbs), tuple(items.split()), tuple(gifts.split()))


CATEGORIES: tuple[Category, ...] = (
    # ------------------------------------------------------------------ people
    _cat("royalty", "person",
         f="queen princess empress duchess countess baroness heiress lady",
         m="king prince emperor duke earl baron heir lord",
         pl="kings queens princes princesses dukes nobles",
         verbs=("ruled the kingdom wisely", "reigned over the northern lands", "decreed a day of feasting",
                "knighted a brave young squire", "pardoned a prisoner", "banished a traitor from the realm",
                "proclaimed a holiday"),
         items="crown throne sceptre tiara", gifts="jewels gold rubies silk"),
    _cat("scholars", "person",
         f="headmistress schoolmistress governess", m="headmaster schoolmaster",
         pl="professors scholars librarians historians teachers tutors",
         roles="professor scholar librarian historian teacher philosopher tutor",
         verbs=("lectured on ancient history", "studied the old manuscripts", "translated a Latin poem",
                "catalogued the new books", "graded a pile of essays", "annotated a dusty scroll"),
         items="spectacles notebook manuscript lectern", gifts="ink parchment quills books"),
    _cat("scientists", "person",
         pl="scientists chemists astronomers inventors engineers",
         roles="scientist chemist physicist astronomer inventor engineer biologist",
         verbs=("measured the speed of sound", "experimented with strange liquids",
                "observed the rings of a distant planet", "calculated the orbit of a comet",
                "analysed the water samples", "tested a daring theory", "invented a clever device"),
         items="microscope telescope laboratory formula", gifts="magnets crystals chemicals lenses"),
    _cat("healers", "person",
         f="matron midwife", pl="nurses doctors surgeons healers midwives",
         roles="nurse doctor surgeon physician healer pharmacist dentist",
         verbs=("bandaged a wounded arm", "examined a feverish patient", "prescribed a bitter tonic",
                "treated a nasty burn", "sutured a deep cut", "vaccinated the whole village",
                "diagnosed a rare illness"),
         items="stethoscope thermometer syringe", gifts="bandages medicine ointment pills"),
    _cat("sailors", "person",
         f="fisherwoman", m="fisherman boatswain", pl="sailors fishermen mariners pirates captains deckhands",
         roles="sailor captain mariner pirate deckhand navigator",
         verbs=("rowed out past the rocks", "steered through the storm", "hoisted the mainsail",
                "navigated by the stars", "anchored in a quiet cove", "swabbed the deck", "moored at the old pier"),
         items="oar spyglass hammock", gifts="rope tar sailcloth"),
    _cat("farmers", "person",
         f="shepherdess milkmaid dairymaid", m="ploughman herdsman",
         pl="farmers shepherds farmhands gardeners ploughmen milkmaids",
         roles="farmer shepherd farmhand gardener",
         verbs=("ploughed the north field", "harvested the golden wheat", "sowed barley in the meadow",
                "planted rows of cabbages", "pruned the apple trees", "weeded the vegetable patch",
                "threshed the barley"),
         items="plough pitchfork hoe scythe wheelbarrow", gifts="seeds hay grain turnips"),
    _cat("soldiers", "person",
         f="heroine", m="hero", pl="soldiers knights guards archers sentries heroes",
         roles="soldier knight guard archer sentry sergeant",
         verbs=("marched to the border", "saluted the banner", "guarded the city walls", "drilled the new recruits",
                "charged across the battlefield", "patrolled the mountain pass", "fought bravely in the battle"),
         items="sword shield helmet spear armour", gifts="arrows rations whetstones"),
    _cat("musicians", "person",
         pl="musicians singers pianists violinists drummers pipers bards",
         roles="musician singer pianist violinist drummer piper bard composer organist",
         verbs=("sang a sweet melody", "strummed a cheerful tune", "composed a lullaby", "tuned the old piano",
                "drummed a steady beat", "serenaded the sleepy town"),
         items="violin lute flute harp fiddle", gifts="strings rosin songbooks reeds"),
    _cat("performers", "person",
         f="actress ballerina", m="actor showman", pl="actors actresses dancers clowns jugglers acrobats",
         roles="dancer clown juggler acrobat comedian",
         verbs=("rehearsed the final scene", "performed on the grand stage", "danced a graceful waltz",
                "juggled five painted balls", "recited a famous speech", "tumbled across the stage"),
         items="costume mask script wig", gifts="roses bouquets tickets"),
    _cat("clergy", "person",
         f="nun priestess abbess", m="monk priest abbot friar vicar", pl="nuns monks priests friars",
         roles="chaplain preacher",
         verbs=("prayed in the quiet chapel", "chanted an ancient hymn", "blessed the harvest bread",
                "preached a long sermon", "meditated in silence", "fasted for three days"),
         items="rosary prayerbook hymnal cowl", gifts="candles incense alms"),
    _cat("household", "person",
         f="mother grandmother aunt widow wife stepmother godmother",
         m="father grandfather uncle widower husband stepfather godfather",
         pl="parents grandparents aunts uncles widows",
         verbs=("knitted a warm scarf", "swept the kitchen floor", "mended the torn curtains",
                "darned a pair of socks", "tidied the little cottage", "dusted the mantelpiece"),
         items="shawl teapot armchair", gifts="yarn tea jam"),
    _cat("wedding", "person",
         f="bride bridesmaid", m="groom bridegroom groomsman", pl="newlyweds bridesmaids groomsmen",
         verbs=("vowed eternal love", "toasted the happy guests", "waltzed around the hall",
                "exchanged golden rings", "sliced the wedding cake"),
         items="veil ring", gifts="champagne confetti"),
    _cat("children", "person",
         f="girl daughter niece granddaughter schoolgirl sister",
         m="boy son nephew grandson schoolboy brother",
         pl="children twins girls boys kids siblings",
         verbs=("giggled at a silly joke", "skipped down the lane", "climbed the old apple tree",
                "splashed in the puddles", "built a sandcastle", "played hide and seek"),
         items="kite doll teddy hoop", gifts="sweets toys marbles crayons"),
    _cat("traders", "person",
         f="saleswoman businesswoman", m="salesman businessman",
         pl="merchants shopkeepers pedlars grocers traders",
         roles="merchant shopkeeper pedlar grocer trader",
         verbs=("haggled over the price", "bargained with a stranger", "counted the day's takings",
                "weighed a sack of spices", "stocked the shelves", "tallied the accounts"),
         items="ledger purse scales", gifts="coins spices"),
    _cat("cooks", "person",
         pl="bakers cooks chefs confectioners", roles="baker cook chef confectioner",
         verbs=("baked a batch of fresh loaves", "kneaded the dough", "stirred a pot of soup",
                "roasted chestnuts", "simmered a rich stew", "whisked a bowl of cream"),
         items="ladle oven whisk", gifts="flour butter eggs"),
    _cat("tailors", "person",
         f="seamstress", pl="tailors seamstresses weavers dressmakers cobblers",
         roles="tailor weaver dressmaker cobbler",
         verbs=("sewed a fine velvet coat", "hemmed a pair of trousers", "wove a length of linen",
                "embroidered a silk handkerchief", "patched a worn cloak", "stitched a torn sleeve"),
         items="needle thimble loom spindle", gifts="thread cloth lace buttons"),
    _cat("smiths", "person",
         pl="blacksmiths carpenters masons builders woodcutters",
         roles="blacksmith carpenter mason builder woodcutter locksmith",
         verbs=("hammered a glowing horseshoe", "forged a new blade", "sawed a thick plank",
                "carved a wooden bench", "chopped a pile of firewood", "sanded a rough board"),
         items="hammer anvil chisel saw axe", gifts="nails iron timber coal"),
    _cat("magic", "person",
         f="witch sorceress enchantress", m="wizard sorcerer warlock enchanter",
         pl="witches wizards sorcerers enchanters",
         verbs=("cast a powerful spell", "brewed a bubbling potion", "conjured a ball of light",
                "enchanted an old broom", "vanished in a puff of smoke", "levitated a heavy stone"),
         items="wand cauldron spellbook broomstick", gifts="potions toadstools moonstones"),
    _cat("servants", "person",
         f="maid housemaid maidservant stewardess", m="butler footman valet manservant steward",
         pl="servants maids butlers footmen", roles="servant housekeeper",
         verbs=("polished the silver", "ironed the linen", "served tea in the parlour",
                "folded the fresh laundry", "announced the next visitor", "aired the guest rooms"),
         items="tray duster livery", gifts="soap starch"),
    _cat("police", "person",
         f="policewoman", m="policeman", pl="detectives constables policemen inspectors",
         roles="detective inspector constable sheriff",
         verbs=("investigated the strange theft", "questioned a nervous witness", "arrested a pickpocket",
                "searched the abandoned house", "shadowed a suspicious stranger", "interrogated a smuggler"),
         items="badge whistle truncheon", gifts="handcuffs"),
    _cat("explorers", "person",
         pl="explorers travellers adventurers pilgrims wanderers",
         roles="explorer traveller adventurer pilgrim wanderer mapmaker",
         verbs=("explored a hidden valley", "trekked across the desert", "mapped the winding coast",
                "camped beneath the stars", "hiked up the mountain"),
         items="map compass lantern rucksack", gifts="provisions"),
    _cat("riders", "person",
         f="cowgirl horsewoman", m="cowboy horseman", pl="cowboys cowgirls horsemen ranchers",
         roles="rancher jockey",
         verbs=("lassoed a runaway calf", "rode across the prairie", "wrangled a herd of cattle",
                "corralled the cattle"),
         items="lasso spurs", gifts="horseshoes"),
    _cat("officials", "person",
         f="chairwoman mayoress", m="chairman alderman", pl="councillors mayors governors",
         roles="mayor governor councillor",
         verbs=("chaired a long meeting", "signed the new town charter", "governed the little town",
                "campaigned in the square", "debated the new budget"),
         items="gavel", gifts="petitions"),
    _cat("postal", "person",
         f="postwoman", m="postman", pl="postmen couriers messengers", roles="courier messenger",
         verbs=("delivered a stack of letters", "sorted the morning post", "cycled up the steep hill"),
         items="satchel bicycle", gifts="stamps envelopes parcels"),
    _cat("merfolk", "person",
         f="mermaid", m="merman", pl="mermaids mermen",
         verbs=("swam to the coral reef", "dived beneath the waves", "surfaced beside the rocks",
                "glided through the kelp"),
         items="trident seashell", gifts="pearls"),
    _cat("giants", "person",
         f="giantess ogress", m="giant ogre troll", pl="giants ogres trolls",
         verbs=("stomped across the hills", "bellowed across the valley", "uprooted an old oak",
                "thundered down the mountain"),
         items="club", gifts="boulders"),
    # ------------------------------------------------------------------ animals
    _cat("cats", "animal",
         n="cat kitten tabby", pl="cats kittens",
         verbs=("purred by the warm fire", "pounced on a ball of wool", "licked {poss} paws",
                "curled up on a cushion", "meowed at the door", "hissed at a shadow"),
         items="whiskers claws", gifts="fish milk cream sardines"),
    _cat("dogs", "animal",
         n="dog puppy hound terrier spaniel sheepdog beagle", pl="dogs puppies hounds terriers",
         verbs=("barked at a passing cart", "wagged {poss} tail{s}", "fetched a stick", "sniffed the ground",
                "howled at the moon", "dug a hole in the garden", "growled at a stranger"),
         items="collar leash kennel", gifts="bones sausages"),
    _cat("birds", "animal",
         n="owl crow parrot robin sparrow raven eagle swan goose duck pigeon magpie",
         pl="owls crows parrots sparrows geese ducks pigeons swans",
         verbs=("flew over the rooftops", "fluttered to a branch", "chirped a bright song", "pecked at the ground",
                "hooted softly", "soared above the trees", "perched on the chimney", "preened {poss} feathers"),
         items="nest feathers wings beak", gifts="crumbs worms berries"),
    _cat("horses", "animal",
         n="horse pony donkey mule foal", pl="horses ponies donkeys mules",
         verbs=("galloped across the meadow", "trotted down the lane", "neighed loudly", "whinnied softly",
                "grazed by the fence", "cantered along the river"),
         items="mane hooves saddle bridle", gifts="oats apples carrots"),
    _cat("woodland", "animal",
         n="fox badger hare squirrel hedgehog mouse rabbit mole otter",
         pl="foxes badgers squirrels hedgehogs mice rabbits",
         verbs=("scurried under a hedge", "burrowed into the soft earth", "foraged among the leaves",
                "nibbled a fallen apple", "darted into the bushes", "gnawed on a twig"),
         items="burrow den", gifts="nuts acorns mushrooms"),
    _cat("beasts", "animal",
         n="bear wolf lion tiger", pl="bears wolves lions tigers",
         verbs=("roared across the valley", "lumbered through the forest", "stalked through the long grass",
                "bared {poss} teeth", "snarled at the shadows"),
         items="fangs lair", gifts="honey meat"),
    _cat("dragons", "animal",
         n="dragon unicorn griffin phoenix", pl="dragons unicorns griffins",
         verbs=("breathed a plume of fire", "hoarded a pile of treasure", "spread {poss} great wings",
                "glowed with a strange light"),
         items="hoard horn", gifts="treasure"),
    # ------------------------------------------------------------------ things
    _cat("machines", "machine",
         n="robot machine computer automaton android", pl="robots machines computers androids",
         verbs=("beeped three times", "whirred into motion", "computed a long sum", "clanked across the floor",
                "buzzed loudly", "rebooted with a click"),
         items="gears circuits battery antenna", gifts="oil batteries bolts"),
    _cat("vessels", "vessel",
         n="ship boat yacht ferry steamer canoe", pl="ships boats yachts ferries",
         verbs=("sailed into the harbour", "drifted toward the shore", "creaked in the wind", "bobbed on the waves",
                "docked at the quay", "rocked gently at anchor"),
         items="mast sails hull"),
)

# First names that give a gender-neutral role its gender: "Ada the professor".
NAMES: dict[str, tuple[str, ...]] = {
    "f": tuple("""Ada Alice Anna Beatrice Clara Daisy Edith Eleanor Ella Emily Emma Flora Grace Hannah
        Harriet Helen Ivy Jane Julia Kate Laura Lily Lucy Mabel Margaret Maria Martha Mary Matilda Molly
        Nancy Nora Olivia Ruth Sarah Sophie Susan Victoria Violet Agnes Dora Esther Florence Greta Hilda
        Irene Judith Lydia Rebecca Charlotte""".split()),
    "m": tuple("""Albert Arthur Benjamin Charles Daniel David Edward Frank Frederick George Harold Harry
        Henry Hugo Isaac Jack Jacob James John Joseph Leo Louis Martin Matthew Oliver Oscar Peter Philip
        Richard Robert Samuel Thomas Tom Walter William Alfred Bernard Cedric Edmund Felix Gilbert Howard
        Ivan Jonas Lewis Otto Patrick Rupert Simon""".split()),
}
NAME_CLASS: dict[str, str] = {name: cls for cls, names in NAMES.items() for name in names}

# noun -> (agreement class, category); roles map to None: they get their gender from a name
NOUN_CLASS: dict[str, tuple[str | None, Category]] = {}
for _c in CATEGORIES:
    for _cls in CLASSES:
        for _w in _c.nouns(_cls):
            NOUN_CLASS[_w] = (_cls, _c)
    for _w in _c.roles:
        NOUN_CLASS[_w] = (None, _c)
CATEGORY: dict[str, Category] = {c.name: c for c in CATEGORIES}


def mention_class(mention: str) -> str:
    """The agreement class of a mention as the suites mark it: "queen", "sailors", "Ada the professor", "Ada".

    Example:
        >>> mention_class("Ada the professor"), mention_class("twins"), mention_class("the fox")
        ('f', 'pl', 'n')
    """
    words = mention.split()
    if words and words[0] in NAME_CLASS:
        return NAME_CLASS[words[0]]
    cls = NOUN_CLASS.get(words[-1], (None, None))[0] if words else None
    if cls is None:
        raise KeyError(f"{mention!r} is neither a gendered noun nor a named person of the lexicon")
    return cls


def counts() -> dict[str, int]:
    """How many nouns of each kind the lexicon holds (roles: gender-neutral, named at use)."""
    out = {cls: sum(len(c.nouns(cls)) for c in CATEGORIES) for cls in CLASSES}
    out["roles"] = sum(len(c.roles) for c in CATEGORIES)
    out["nouns"] = len(NOUN_CLASS)
    out["names"] = len(NAME_CLASS)
    out["categories"] = len(CATEGORIES)
    return out
