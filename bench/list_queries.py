"""Read-path benchmark: the contacts list, search, `total` and the eligible stream at scale.

Seeds a dedicated PostgreSQL database (``contact_sync_bench``, never ``test``) with realistic
contacts spread evenly over teams, migrated by the project's own Alembic migrations, then times
random queries of each kind *through the read module* (``contact_sync.contacts.query``) on one
pooled SQLAlchemy connection, the way the API and the scheduler call it, and checks each kind
against the targets of issue 7:

- a list page with filters, ``total`` included: p95 <= 15 ms;
- a search page, ``total`` included: p95 <= 30 ms;
- the eligible stream of a whole ~10,000-contact team, pages of 1,000: p95 <= 150 ms;
- under the calling policy (issues 14 and 17): the first team (by id) gets a calls ledger of
  ~20 calls a contact over 60 days (outcomes, 90 % outbound) and its number facts; its whole
  stream with a full policy (window, days, holidays, caps total and per day, retry delays,
  jurisdiction rules) p95 <= 100 ms and within 1.5x of the same stream with the policy off
  (same instants, interleaved), and one contact's eligibility p95 <= 10 ms. Each stream is
  timed with ``to_json()`` of its pages, the bytes the API answers. ``--policy-only``
  runs only these.

Run from the repository root (the first run seeds for a few minutes; ``--reuse`` keeps a
database already seeded with the same sizes)::

    /work/venv/bin/python bench/list_queries.py                      # 1M contacts, 100 teams
    /work/venv/bin/python bench/list_queries.py --reuse --scale-check
    /work/venv/bin/python bench/list_queries.py --contacts 50000 --teams 5 --queries 50

``--scale-check`` also seeds ``<database>_scale`` with 100,000 contacts in 10 teams (the same
team size) and prints the key figures side by side: the cost must follow the team's size, not
the table's. For every kind that misses its target the script prints ``EXPLAIN (ANALYZE,
BUFFERS)`` of its slowest query, once with the values inlined (a custom plan) and once as a
prepared statement forced to a generic plan, which is what psycopg runs after five executions.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import random
import re
import statistics
import sys
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers
import psycopg
from psycopg import sql
from sqlalchemy import Connection, Engine, event, func, select
from sqlalchemy.engine import make_url

from contact_sync.accounts.teams import name_key
from contact_sync.contacts.query import (
    ContactQuery,
    EligibleQuery,
    _filters,
    list_contacts,
    list_eligible,
)
from contact_sync.db.engine import make_engine, safe_url
from contact_sync.db.migrate import upgrade
from contact_sync.db.tables import contacts
from contact_sync.scheduling.jurisdictions import load_jurisdictions
from contact_sync.scheduling.numbers import phone_facts

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/contact_sync_bench"
SCALE_CONTACTS = 100_000
SCALE_TEAMS = 10
LIST_TARGET_MS = 15.0
SEARCH_TARGET_MS = 30.0
STREAM_TARGET_MS = 150.0
SCALE_RATIO = 1.5
WARMUP = 10

# fmt: off
FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony",
    "Margaret", "Mark", "Sandra", "Donald", "Ashley", "Steven", "Kimberly", "Paul", "Emily",
    "Andrew", "Donna", "Joshua", "Michelle", "Kenneth", "Carol", "Kevin", "Amanda", "Brian",
    "Dorothy", "George", "Melissa", "Timothy", "Deborah", "Ronald", "Stephanie", "Edward",
    "Rebecca", "Jason", "Sharon", "Jeffrey", "Laura", "Ryan", "Cynthia", "Jacob", "Kathleen",
    "Gary", "Amy", "Nicholas", "Angela", "Eric", "Shirley", "Jonathan", "Anna", "Stephen",
    "Brenda", "Larry", "Pamela", "Justin", "Emma", "Scott", "Nicole", "Brandon", "Helen",
    "Benjamin", "Samantha", "Samuel", "Katherine", "Gregory", "Christine", "Alexander", "Debra",
    "Frank", "Rachel", "Patrick", "Carolyn", "Raymond", "Janet", "Jack", "Catherine", "Dennis",
    "Maria", "Jerry", "Heather", "Tyler", "Diane", "Aaron", "Ruth", "Jose", "Julie", "Adam",
    "Olivia", "Nathan", "Joyce", "Henry", "Virginia", "Douglas", "Victoria", "Zachary", "Kelly",
    "Peter", "Lauren", "Kyle", "Christina", "Ethan", "Joan", "Walter", "Evelyn", "Noah", "Judith",
    "Jeremy", "Megan", "Christian", "Andrea", "Keith", "Cheryl", "Roger", "Hannah", "Terry",
    "Jacqueline", "Gerald", "Martha", "Harold", "Gloria", "Sean", "Teresa", "Austin", "Ann",
    "Carl", "Sara", "Arthur", "Madison", "Lawrence", "Frances", "Dylan", "Kathryn", "Jesse",
    "Janice", "Jordan", "Jean", "Bryan", "Abigail", "Billy", "Alice", "Joe", "Julia", "Bruce",
    "Judy", "Gabriel", "Sophia", "Logan", "Grace", "Albert", "Denise", "Willie", "Amber", "Alan",
    "Doris", "Juan", "Marilyn", "Wayne", "Danielle", "Elijah", "Beverly", "Randy", "Isabella",
    "Roy", "Theresa", "Vincent", "Diana", "Ralph", "Natalie", "Eugene", "Brittany", "Russell",
    "Charlotte", "Bobby", "Marie", "Mason", "Kayla", "Philip", "Alexis", "Louis", "Lori",
    "Élodie", "José", "Zoë", "Renée", "Siobhán", "Björn", "Chloé", "Ángel", "Mei", "Hiroshi",
    "Priya", "Arjun", "Fatima", "Omar", "Wei", "Aisha", "Dmitri", "Ingrid", "Kwame", "Lucía",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans",
    "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris",
    "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson",
    "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson",
    "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes", "Price",
    "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez",
    "Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell", "Coleman", "Butler", "Henderson",
    "Barnes", "Gonzales", "Fisher", "Vasquez", "Simmons", "Romero", "Jordan", "Patterson",
    "Alexander", "Hamilton", "Graham", "Reynolds", "Griffin", "Wallace", "Moreno", "West",
    "Cole", "Hayes", "Bryant", "Herrera", "Gibson", "Ellis", "Tran", "Medina", "Aguilar",
    "Stevens", "Murray", "Ford", "Castro", "Marshall", "Owens", "Harrison", "Fernandez",
    "McDonald", "Woods", "Washington", "Kennedy", "Wells", "Vargas", "Henry", "Chen", "Freeman",
    "Webb", "Tucker", "Guzman", "Burns", "Crawford", "Olson", "Simpson", "Porter", "Hunter",
    "Gordon", "Mendez", "Silva", "Shaw", "Snyder", "Mason", "Dixon", "Munoz", "Hunt", "Hicks",
    "Holmes", "Palmer", "Wagner", "Black", "Robertson", "Boyd", "Rose", "Stone", "Salazar", "Fox",
    "Warren", "Mills", "Meyer", "Rice", "Schmidt", "Garza", "Daniels", "Ferguson", "Nichols",
    "Stephens", "Soto", "Weaver", "Ryan", "Gardner", "Payne", "Grant", "Dunn", "Kelley",
    "Spencer", "Hawkins", "Arnold", "Pierce", "Vazquez", "Hansen", "Peters", "Santos", "Hart",
    "Bradley", "Knight", "Elliott", "Cunningham", "Duncan", "Armstrong", "Hudson", "Carroll",
    "Lane", "Riley", "Andrews", "Alvarado", "Ray", "Delgado", "Berry", "Perkins", "Hoffman",
    "Johnston", "Matthews", "Peña", "Richards", "Willis", "Carpenter", "Lawrence", "Sandoval",
    "O'Brien", "O'Connor", "Müller", "Nakamura", "Kowalski", "Nováková", "Ødegaard", "Dubois",
)
COMPANY_WORDS = (
    "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Soylent",
    "Cyberdyne", "Tyrell", "Wonka", "Gringotts", "Aperture", "Massive", "Dynamic", "Pied Piper",
    "Blue Sky", "Northwind", "Contoso", "Fabrikam", "Litware", "Tailspin", "Woodgrove", "Adatum",
    "Proseware", "Lucerne", "Coho", "Wingtip", "Alpine", "Summit", "Harbor", "Cascade", "Pioneer",
    "Redwood", "Granite", "Beacon", "Meridian", "Keystone", "Evergreen",
)
COMPANY_SUFFIXES = ("Inc", "LLC", "Corp", "Group", "Labs", "Partners", "Holdings", "Systems")
MAIL_DOMAINS = (
    "gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com", "proton.me",
    "comcast.net", "att.net", "msn.com",
)
AREA_CODES = (
    "201", "202", "203", "205", "206", "207", "208", "210", "212", "213", "214", "215", "216",
    "217", "218", "219", "224", "225", "234", "239", "240", "248", "251", "252", "253", "254",
    "256", "260", "262", "267", "269", "270", "281", "301", "302", "303", "304", "305", "307",
    "308", "309", "310", "312", "313", "314", "315", "316", "317", "318", "319", "320", "321",
    "323", "330", "334", "336", "337", "339", "347", "352", "360", "361", "385", "386", "401",
    "402", "404", "405", "406", "407", "408", "409", "410", "412", "413", "414", "415", "417",
    "419", "423", "424", "425", "430", "432", "434", "435", "440", "443", "469", "470", "475",
    "478", "479", "480", "484", "501", "502", "503", "504", "505", "507", "508", "509", "510",
    "512", "513", "515", "516", "517", "518", "520", "530", "540", "541", "551", "559", "561",
    "562", "563", "567", "570", "571", "573", "574", "575", "580", "585", "586", "601", "602",
    "603", "605", "606", "607", "608", "609", "610", "612", "614", "615", "616", "617", "618",
    "619", "620", "623", "626", "630", "631", "636", "641", "646", "650", "651", "660", "661",
    "662", "678", "682", "701", "702", "703", "704", "706", "707", "708", "712", "713", "714",
    "715", "716", "717", "718", "719", "720", "724", "727", "731", "732", "734", "740", "754",
    "757", "760", "763", "765", "770", "772", "773", "774", "775", "781", "785", "786", "801",
    "802", "803", "804", "805", "806", "808", "810", "812", "813", "814", "815", "816", "817",
    "818", "828", "830", "831", "832", "843", "845", "847", "848", "850", "856", "857", "858",
    "859", "860", "862", "863", "864", "865", "870", "878", "901", "903", "904", "906", "907",
    "908", "909", "910", "912", "913", "914", "915", "916", "917", "918", "919", "920", "925",
    "928", "931", "936", "937", "940", "941", "947", "949", "951", "952", "954", "956", "970",
    "971", "972", "973", "978", "979", "980", "985", "989",
)
US_ZONES = (
    "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
    "America/Phoenix", "America/Anchorage", "Pacific/Honolulu", "America/Detroit",
    "America/Indiana/Indianapolis", "America/Boise",
)
ZONE_WEIGHTS = (38, 28, 7, 16, 3, 1, 1, 3, 2, 1)
JOB_TITLES = (
    "CEO", "CTO", "VP Sales", "Sales Manager", "Account Executive", "Office Manager",
    "Operations Director", "Procurement Lead", "Marketing Manager", "Owner", "Engineer",
    "Consultant", "Buyer", "HR Manager", "Founder",
)
SOURCES = ("trade-show", "website", "referral", "inbound-call", "import", "webinar", "partner")
METHODS = ("phone", "email", "sms")
TAGS = ("vip", "newsletter", "q4-push", "webinar-2025", "follow-up", "enterprise", "smb", "hot")
INDUSTRIES = ("retail", "healthcare", "finance", "logistics", "education", "saas", "energy")
STATUSES = (
    "new", "contacted", "qualified", "unqualified",
    "converted", "customer", "churned", "do_not_contact",
)
STATUS_WEIGHTS = (34, 26, 12, 9, 6, 6, 4, 3)
# fmt: on

CONTACT_COLUMNS = (
    "id",
    "team_id",
    "company_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "phone_secondary",
    "job_title",
    "lead_status",
    "source",
    "timezone",
    "preferred_contact_method",
    "do_not_call",
    "notes",
    "custom_fields",
    "tags",
    "provenance",
    "version",
    "created_at",
    "updated_at",
)


# --------------------------------------------------------------------------- database setup


def psycopg_dsn(url: str, database: str | None = None) -> str:
    """``url`` as a plain libpq URL for psycopg, optionally naming another database."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def database_name(url: str) -> str:
    """The database ``url`` points at; refuses the test suite's database."""
    name = make_url(url).database
    if not name or name == "test":
        raise SystemExit("Use a dedicated database for the benchmark, not 'test'")
    return name


def seed_label(n_contacts: int, n_teams: int) -> str:
    """What the database comment says once seeding finished (how --reuse recognises it)."""
    return f"contact_sync bench: contacts={n_contacts} teams={n_teams}"


def prepare_database(url: str, n_contacts: int, n_teams: int, *, reuse: bool) -> None:
    """Create, migrate and seed the database behind ``url`` (or reuse a matching one)."""
    name = database_name(url)
    label = seed_label(n_contacts, n_teams)
    with psycopg.connect(psycopg_dsn(url, "postgres"), autocommit=True) as admin:
        row = admin.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
        if reuse and row is not None and row[0] == label:
            print(f"reusing {name} ({label})", flush=True)
            migrate(url)  # applies any migration newer than the seed
            with psycopg.connect(psycopg_dsn(url), autocommit=True) as conn:
                conn.execute("ANALYZE contacts")
            return
        started = time.perf_counter()
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        migrate(url)
        seed(url, n_contacts, n_teams)
        admin.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(label))
        )
        print(f"seeded {name} in {time.perf_counter() - started:.0f} s", flush=True)


def migrate(url: str) -> None:
    """The project's migrations, exactly as ``contact-sync migrate`` runs them."""
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- data generation


def uuid7_at(moment: datetime, rng: random.Random) -> str:
    """A UUIDv7 for ``moment``, like ``contact_sync.ids.new_id`` would have made then."""
    millis = int(moment.timestamp() * 1000)
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= rng.getrandbits(12) << 64
    value |= 0b10 << 62
    value |= rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def ascii_slug(text: str) -> str:
    """``Élodie O'Brien`` → ``elodieobrien``: what people put in the local part of an email."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", folded.lower())


def valid_phone_prefixes(rng: random.Random, count: int = 3000) -> list[str]:
    """Area code + exchange pairs whose numbers ``phonenumbers`` accepts as valid US numbers."""
    prefixes: list[str] = []
    while len(prefixes) < count:
        prefix = rng.choice(AREA_CODES) + str(rng.randint(200, 999))
        if prefix[4:] == "11":
            continue
        samples = (f"+1{prefix}{rng.randint(0, 9999):04d}" for _ in range(3))
        if all(phonenumbers.is_valid_number(phonenumbers.parse(s)) for s in samples):
            prefixes.append(prefix)
    return prefixes


@dataclass
class Team:
    """A seeded team, with its company ids and business email domains."""

    id: str
    companies: list[tuple[str, str]]  # (id, email domain)


def make_teams(n_teams: int, start: datetime, rng: random.Random) -> list[Team]:
    """Teams of about 20 companies each (some with more, some with fewer)."""
    teams = []
    for _ in range(n_teams):
        companies = []
        for _ in range(rng.randint(15, 25)):
            name = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)}"
            companies.append((str(uuid.uuid4()), ascii_slug(name) + rng.choice((".com", ".io"))))
        teams.append(Team(uuid7_at(start, rng), companies))
    return teams


class ContactFactory:
    """Rows of realistic contacts, in the contacts table's column order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.prefixes = valid_phone_prefixes(rng)
        self.status_cdf = cumulative(STATUS_WEIGHTS)
        self.zone_cdf = cumulative(ZONE_WEIGHTS)

    def phone(self) -> str:
        return f"+1{self.rng.choice(self.prefixes)}{self.rng.randint(0, 9999):04d}"

    def row(self, team: Team, created_at: datetime) -> tuple[Any, ...]:
        rng = self.rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        company_id: str | None = None
        domain = rng.choice(MAIL_DOMAINS)
        if rng.random() < 0.5:
            # A few big accounts and a long tail, as in a real CRM.
            company_id, company_domain = team.companies[
                int(len(team.companies) * rng.random() ** 2)
            ]
            if rng.random() < 0.7:
                domain = company_domain
        email = None
        if rng.random() < 0.95:
            local = rng.choice(
                (
                    f"{ascii_slug(first)}.{ascii_slug(last)}",
                    f"{ascii_slug(first)[:1]}{ascii_slug(last)}",
                    f"{ascii_slug(first)}{rng.randint(1, 999)}",
                )
            )
            email = f"{local}@{domain}"
        phone = self.phone() if rng.random() < 0.9 else None
        status = STATUSES[bisect.bisect(self.status_cdf, rng.random())]
        custom: dict[str, Any] = {"industry": rng.choice(INDUSTRIES)}
        if rng.random() < 0.6:
            custom["employees"] = rng.choice((5, 12, 40, 150, 800, 5000))
        if rng.random() < 0.3:
            custom["budget_usd"] = rng.randint(1, 500) * 1000
        updated_at = created_at + timedelta(seconds=rng.randint(0, 86_400 * 30))
        return (
            uuid7_at(created_at, rng),
            team.id,
            company_id,
            first,
            last,
            email,
            phone,
            self.phone() if rng.random() < 0.3 else None,
            rng.choice(JOB_TITLES) if rng.random() < 0.7 else None,
            status,
            rng.choice(SOURCES) if rng.random() < 0.8 else None,
            US_ZONES[bisect.bisect(self.zone_cdf, rng.random())] if rng.random() < 0.85 else None,
            rng.choice(METHODS) if rng.random() < 0.5 else None,
            rng.random() < 0.1,
            f"Met {first} at a {rng.choice(SOURCES)} event." if rng.random() < 0.2 else None,
            json.dumps(custom),
            json.dumps(rng.sample(TAGS, rng.choice((0, 0, 1, 1, 2, 3)))),
            "{}",
            1,
            created_at,
            min(updated_at, NOW),
        )


def cumulative(weights: Sequence[int]) -> list[float]:
    """Bisectable cumulative distribution of ``weights``."""
    total, running, cdf = sum(weights), 0, []
    for weight in weights[:-1]:
        running += weight
        cdf.append(running / total)
    return cdf


NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def seed(url: str, n_contacts: int, n_teams: int) -> None:
    """Teams, companies and contacts by COPY, then the migration's indexes and VACUUM ANALYZE.

    Contacts arrive in ``created_at`` order with teams interleaved, as a live table fills: a
    team's rows are spread over the whole heap. Secondary indexes are dropped for the load and
    rebuilt from their own definitions (one sorted build beats a million inserts), and foreign
    key triggers are skipped: the generator respects them by construction.
    """
    rng = random.Random(20261126)
    start = NOW - timedelta(days=730)
    teams = make_teams(n_teams, start, rng)
    factory = ContactFactory(rng)
    span = (NOW - start).total_seconds()
    offsets = sorted(rng.random() * span for _ in range(n_contacts))
    with psycopg.connect(psycopg_dsn(url)) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET maintenance_work_mem = '1GB'")
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'contacts' "
            "AND indexname <> 'contacts_pkey'"
        ).fetchall()
        for name, _definition in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        with conn.cursor().copy(
            "COPY teams (id, name, name_key, default_region, calls_overwrite_people, created_at) "
            "FROM STDIN"
        ) as copy:
            for number, team in enumerate(teams, 1):
                name = f"Team {number:03d}"
                copy.write_row((team.id, name, name_key(name), "US", False, start))
        with conn.cursor().copy(
            "COPY companies (id, team_id, name, created_at, updated_at) FROM STDIN"
        ) as copy:
            for team in teams:
                for company_id, domain in team.companies:
                    copy.write_row((company_id, team.id, domain.split(".")[0], start, start))
        loaded = time.perf_counter()
        columns = sql.SQL(", ").join(map(sql.Identifier, CONTACT_COLUMNS))
        with conn.cursor().copy(sql.SQL("COPY contacts ({}) FROM STDIN").format(columns)) as copy:
            for number, offset in enumerate(offsets, 1):
                team = teams[rng.randrange(n_teams)]
                copy.write_row(factory.row(team, start + timedelta(seconds=offset)))
                if number % 200_000 == 0:
                    print(f"  {number:,} contacts copied", flush=True)
        print(f"  contacts copied in {time.perf_counter() - loaded:.0f} s", flush=True)
        built = time.perf_counter()
        for _name, definition in indexes:
            conn.execute(definition)
        conn.commit()
        print(
            f"  {len(indexes)} indexes rebuilt in {time.perf_counter() - built:.0f} s", flush=True
        )
    with psycopg.connect(psycopg_dsn(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) teams, companies, contacts")


# --------------------------------------------------------------------------- workload


@dataclass
class Sample:
    """Real values of one team, to build queries that find something."""

    team_id: str
    companies: list[str]
    names: list[str]
    emails: list[str]
    phones: list[str]


def load_samples(engine: Engine) -> list[Sample]:
    """Per team: its companies and ~1% of its contacts' names, emails and phones."""
    with engine.connect() as conn:
        samples = {
            team_id: Sample(team_id, [], [], [], [])
            for (team_id,) in conn.exec_driver_sql("SELECT id FROM teams")
        }
        for team_id, company_id in conn.exec_driver_sql("SELECT team_id, id FROM companies"):
            samples[team_id].companies.append(company_id)
        rows = conn.exec_driver_sql(
            "SELECT team_id, first_name, last_name, email, phone "
            "FROM contacts TABLESAMPLE SYSTEM (1) REPEATABLE (7)"
        )
        for team_id, first, last, email, phone in rows:
            sample = samples[team_id]
            sample.names += [first, last]
            if email:
                sample.emails.append(email)
            if phone:
                sample.phones.append(phone)
    return [s for s in samples.values() if s.names and s.emails and s.phones and s.companies]


def fragment(text: str, rng: random.Random, shortest: int, longest: int) -> str:
    """A random substring of ``text`` of ``shortest``..``longest`` characters."""
    size = min(len(text), rng.randint(shortest, longest))
    begin = rng.randint(0, len(text) - size)
    return text[begin : begin + size]


def phone_search(phone: str, rng: random.Random) -> str:
    """4-7 consecutive digits of the national number, typed the way people do: ``202-555``."""
    digits = fragment(phone[2:], rng, 4, 7)
    return f"{digits[:3]}-{digits[3:]}"


QueryMaker = Callable[[Sample, random.Random], dict[str, Any]]

LIST_KINDS: dict[str, QueryMaker] = {
    "page": lambda s, r: {},
    "page offset 5000": lambda s, r: {"offset": 5000},
    "company": lambda s, r: {"company_id": r.choice(s.companies)},
    "lead_status": lambda s, r: {"lead_status": r.choice(STATUSES)},
    "do_not_call=true": lambda s, r: {"do_not_call": True},
    "do_not_call=false": lambda s, r: {"do_not_call": False},
    "has_phone=true": lambda s, r: {"has_phone": True},
    "has_phone=false": lambda s, r: {"has_phone": False},
    "company+status+phone": lambda s, r: {
        "company_id": r.choice(s.companies),
        "lead_status": r.choice(STATUSES[:4]),
        "has_phone": True,
    },
}
SEARCH_KINDS: dict[str, QueryMaker] = {
    "search name": lambda s, r: {"search": fragment(r.choice(s.names), r, 3, 5)},
    "search email": lambda s, r: {"search": fragment(r.choice(s.emails), r, 3, 5)},
    "search phone": lambda s, r: {"search": phone_search(r.choice(s.phones), r)},
}
STREAM_KINDS = ("eligible stream", "eligible stream+window")


def call_time(rng: random.Random) -> datetime:
    """A weekday moment when most of the US is inside 09:00-17:00 (the scheduler's busy hours)."""
    day = NOW - timedelta(days=rng.randint(0, 60))
    return day.replace(hour=rng.randint(14, 20), minute=rng.randint(0, 59))


@dataclass
class Result:
    """The latencies of one kind, and the slowest query (for EXPLAIN)."""

    kind: str
    target_ms: float | None
    times_ms: list[float] = field(default_factory=list)
    slowest: Any = None
    rows: int = 0

    def add(self, elapsed_ms: float, query: Any, rows: int) -> None:
        if not self.times_ms or elapsed_ms > max(self.times_ms):
            self.slowest = query
        self.times_ms.append(elapsed_ms)
        self.rows += rows

    def pct(self, q: float) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p95(self) -> float:
        return self.pct(0.95)

    @property
    def verdict(self) -> str:
        if self.target_ms is None:
            return "info"
        return "PASS" if self.p95 <= self.target_ms else "FAIL"


def stream(conn: Connection, query: EligibleQuery) -> int:
    """The whole eligible stream of a team, page after page; returns the contacts seen."""
    seen = 0
    while True:
        page = list_eligible(conn, query)
        page.to_json()  # what the API answers
        seen += len(page.documents)
        if page.next_cursor is None:
            return seen
        query = query.model_copy(update={"cursor": page.next_cursor})


def count_only(conn: Connection, query: ContactQuery) -> int:
    """The ``total`` statement of ``list_contacts``, alone (same filters, same builder)."""
    statement = (
        select(func.count()).select_from(contacts).where(*_filters(query, conn.dialect.name))
    )
    return int(conn.execute(statement).scalar_one())


def run_list_kind(
    conn: Connection, samples: list[Sample], kind: str, maker: QueryMaker, n: int, seed: int
) -> tuple[Result, Result]:
    """``n`` random list calls of one kind, and the ``total`` statement of the same queries."""
    rng = random.Random(seed)
    target = SEARCH_TARGET_MS if kind in SEARCH_KINDS else LIST_TARGET_MS
    page_result, total_result = Result(kind, target), Result(f"  total: {kind}", None)
    queries = [
        ContactQuery(team_id=sample.team_id, **maker(sample, rng))
        for sample in (rng.choice(samples) for _ in range(n + WARMUP))
    ]
    for number, query in enumerate(queries):
        began = time.perf_counter()
        page = list_contacts(conn, query)
        elapsed = (time.perf_counter() - began) * 1000
        conn.rollback()
        if number >= WARMUP:
            page_result.add(elapsed, query, page.total)
    for number, query in enumerate(queries):
        began = time.perf_counter()
        total = count_only(conn, query)
        elapsed = (time.perf_counter() - began) * 1000
        conn.rollback()
        if number >= WARMUP:
            total_result.add(elapsed, query, total)
    return page_result, total_result


def run_stream_kind(
    conn: Connection, samples: list[Sample], kind: str, n: int, seed: int
) -> Result:
    """``n`` full eligible streams (pages of 1,000) of random teams."""
    rng = random.Random(seed)
    result = Result(kind, STREAM_TARGET_MS)
    for number in range(n + WARMUP):
        at = call_time(rng) if kind.endswith("window") else None
        query = EligibleQuery(team_id=rng.choice(samples).team_id, at=at, limit=1000)
        began = time.perf_counter()
        seen = stream(conn, query)
        elapsed = (time.perf_counter() - began) * 1000
        conn.rollback()
        if number >= WARMUP:
            result.add(elapsed, query, seen)
    return result


@dataclass
class Bench:
    """One seeded database under test."""

    label: str
    url: str
    engine: Engine
    samples: list[Sample]

    @classmethod
    def open(cls, label: str, url: str) -> Bench:
        engine = make_engine(url)
        return cls(label, url, engine, load_samples(engine))


def run_all(benches: list[Bench], n: int) -> dict[str, list[Result]]:
    """Every kind on every database, kind by kind, so a noisy minute hits all alike."""
    results: dict[str, list[Result]] = {bench.label: [] for bench in benches}
    kinds = [*LIST_KINDS.items(), *SEARCH_KINDS.items()]
    for seed, (kind, maker) in enumerate(kinds):
        print(f"  running {kind} …", flush=True)
        for bench in benches:
            with bench.engine.connect() as conn:
                page, total = run_list_kind(conn, bench.samples, kind, maker, n, seed)
            results[bench.label] += [page, total]
    for seed, kind in enumerate(STREAM_KINDS, len(kinds)):
        print(f"  running {kind} …", flush=True)
        for bench in benches:
            with bench.engine.connect() as conn:
                results[bench.label].append(run_stream_kind(conn, bench.samples, kind, n, seed))
    return results


# --------------------------------------------------------------------------- reporting


def print_table(label: str, results: list[Result]) -> None:
    """Kind, p50, p95, max, mean rows (or total) per query, target and verdict."""
    print(f"\n{label}")
    header = f"{'kind':<34}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'rows/total':>12}  target"
    print(header)
    print("-" * (len(header) + 10))
    for r in results:
        target = f"p95 ≤ {r.target_ms:.0f} ms  {r.verdict}" if r.target_ms else "—"
        mean_rows = r.rows / len(r.times_ms)
        print(
            f"{r.kind:<34}{r.p50:>9.2f}{r.p95:>9.2f}{max(r.times_ms):>9.2f}"
            f"{mean_rows:>12.0f}  {target}"
        )


def print_scale(big: list[Result], small: list[Result], big_label: str, small_label: str) -> bool:
    """The same kinds side by side; the p50 ratio must stay within SCALE_RATIO."""
    print(f"\nscale check: {big_label} vs {small_label} (ratio = big / small)")
    header = (
        f"{'kind':<34}{'p50 big':>9}{'p50 small':>10}{'ratio':>7}"
        f"{'p95 big':>9}{'p95 small':>10}{'ratio':>7}  verdict"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for b, s in zip(big, small, strict=True):
        if b.target_ms is None:
            continue
        ratio50, ratio95 = b.p50 / s.p50, b.p95 / s.p95
        passed = ratio50 <= SCALE_RATIO
        ok &= passed
        print(
            f"{b.kind:<34}{b.p50:>9.2f}{s.p50:>10.2f}{ratio50:>7.2f}"
            f"{b.p95:>9.2f}{s.p95:>10.2f}{ratio95:>7.2f}  {'PASS' if passed else 'FAIL'}"
        )
    return ok


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every (statement, parameters) the engine sends while the block runs."""
    statements: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, parameters: Any, *_args: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def clip(text: str, width: int = 400) -> str:
    """Long IN lists make plans unreadable: keep the start of each line."""
    return "\n".join(
        line if len(line) <= width else line[:width] + " …" for line in text.split("\n")
    )


def numbered_params(statement: str) -> tuple[str, list[str]]:
    """A pyformat statement (``%(name)s``, ``%%``) as server-side SQL (``$1``), with the names."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[0] == "%%":
            return "%"
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return re.sub(r"%%|%\((\w+)\)s", number, statement), names


def explain(bench: Bench, result: Result) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements behind the kind's slowest query.

    Twice: with the values inlined (the custom plan the first five executions get) and as a
    prepared statement forced to its generic plan (what psycopg may run from the sixth on).
    """
    query = result.slowest
    with bench.engine.connect() as conn, captured(bench.engine) as statements:
        if isinstance(query, tuple):
            from contact_sync.scheduling.check import contact_eligibility

            contact_eligibility(conn, team_id=query[0], contact_id=query[1], at=query[2])
        elif isinstance(query, EligibleQuery):
            list_eligible(conn, query)
        elif result.kind.startswith("  total"):
            count_only(conn, query)
        else:
            list_contacts(conn, query)
        conn.rollback()
    raw = psycopg.connect(psycopg_dsn(bench.url), autocommit=True)
    with raw, raw.cursor() as cur:
        for statement, params in statements:
            numbered, names = numbered_params(statement)
            literals = [sql.Literal(params[name]).as_string(raw) for name in names]
            inlined = psycopg.ClientCursor(raw).mogrify(statement, params)
            print(f"\n--- {bench.label} / {result.kind}: {query!r}")
            print(f"--- custom plan:\n{clip(inlined)}")
            for (line,) in cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) {inlined}"):
                print("    " + clip(line))
            cur.execute("SET plan_cache_mode = force_generic_plan")
            cur.execute(f"PREPARE bench_q AS {numbered}")
            print("--- generic plan (prepared statement):")
            args = f"({', '.join(literals)})" if literals else ""
            for (line,) in cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_q{args}"):
                print("    " + clip(line))
            cur.execute("DEALLOCATE bench_q")
            cur.execute("RESET plan_cache_mode")


# --------------------------------------------------------------------------- cf. filters

# Issue 15's custom-field filters: 10 defined fields a team, each set on ~70% of contacts.
CF_ONE_TARGET_MS = 20.0
CF_TWO_TARGET_MS = 30.0
CF_PRODUCTS = ("solar", "wind", "hydro", "heat_pump", "battery")
CF_FIELDS: tuple[dict[str, Any], ...] = (
    {"key": "budget", "label": "Budget", "type": "number", "min": 0},
    {"key": "seats", "label": "Seats", "type": "integer"},
    {"key": "score", "label": "Score", "type": "number"},
    {"key": "homeowner", "label": "Homeowner", "type": "boolean"},
    {"key": "callback_day", "label": "Callback", "type": "date"},
    {"key": "met_at", "label": "Met", "type": "datetime"},
    {"key": "product", "label": "Product", "type": "select", "options": list(CF_PRODUCTS)},
    {"key": "wants", "label": "Wants", "type": "multi_select", "options": list(CF_PRODUCTS)},
    {"key": "channel", "label": "Channel", "type": "select", "options": ["web", "ad", "referral"]},
    {"key": "note", "label": "Note", "type": "text"},
)
# One UPDATE computes every contact's values in the database: each field on ~70% of rows.
CF_VALUES = """
UPDATE contacts SET custom_fields = custom_fields || jsonb_strip_nulls(jsonb_build_object(
  'budget', CASE WHEN random() < 0.7 THEN floor(random() * 20000)::int END,
  'seats', CASE WHEN random() < 0.7 THEN floor(random() * 50)::int END,
  'score', CASE WHEN random() < 0.7 THEN round((random() * 100)::numeric, 2) END,
  'homeowner', CASE WHEN random() < 0.7 THEN random() < 0.5 END,
  'callback_day', CASE WHEN random() < 0.7
    THEN to_char(date '2026-01-01' + floor(random() * 365)::int, 'YYYY-MM-DD') END,
  'met_at', CASE WHEN random() < 0.7 THEN to_char(timestamp '2026-01-01'
    + floor(random() * 31536000)::int * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"') END,
  'product', CASE WHEN random() < 0.7
    THEN (ARRAY['solar','wind','hydro','heat_pump','battery'])[1 + floor(random() * 5)::int] END,
  'wants', CASE WHEN random() < 0.7 THEN (ARRAY['["solar"]', '["wind"]',
    '["solar", "battery"]', '["hydro"]', '["wind", "heat_pump"]'])
    [1 + floor(random() * 5)::int]::jsonb END,
  'channel', CASE WHEN random() < 0.7
    THEN (ARRAY['web','ad','referral'])[1 + floor(random() * 3)::int] END,
  'note', CASE WHEN random() < 0.7 THEN 'note ' || floor(random() * 1000)::int END
))
"""


def _cf_body(spec: dict[str, Any]) -> dict[str, Any]:
    options = spec.get("options")
    if options is None:
        return spec
    return {**spec, "options": [{"value": o, "label": o.replace("_", " ")} for o in options]}


def seed_custom_fields(url: str) -> None:
    """Define ``CF_FIELDS`` in every team and give ~70% of contacts a value of each, once."""
    from contact_sync.fields.definitions import parse_definition, spec_json

    with psycopg.connect(psycopg_dsn(url)) as conn:
        if conn.execute("SELECT 1 FROM custom_field_definitions LIMIT 1").fetchone():
            return
        began = time.perf_counter()
        definitions = [parse_definition(_cf_body(spec)) for spec in CF_FIELDS]
        team_ids = [row[0] for row in conn.execute("SELECT id FROM teams").fetchall()]
        with conn.cursor().copy(
            "COPY custom_field_definitions (team_id, key, label, type, spec, ai_extractable, "
            "created_at, updated_at) FROM STDIN"
        ) as copy:
            for team_id in team_ids:
                for d in definitions:
                    spec = json.dumps(spec_json(d))
                    copy.write_row((team_id, d.key, d.label, d.type, spec, True, NOW, NOW))
        conn.execute(CF_VALUES)
        conn.commit()
    fill_side_table(url)
    with psycopg.connect(psycopg_dsn(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) contacts, custom_field_definitions, custom_field_values")
    print(f"custom fields seeded in {time.perf_counter() - began:.0f} s", flush=True)


def fill_side_table(url: str) -> None:
    """The side table of the seeded values, as the migration's backfill computes it (with
    its indexes dropped for the load and rebuilt after, as ``seed`` does)."""
    from contact_sync.contacts.field_values import rebuild_all

    with psycopg.connect(psycopg_dsn(url)) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'custom_field_values'"
        ).fetchall()
        for name, _definition in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        conn.commit()
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            rebuild_all(connection)
    finally:
        engine.dispose()
    with psycopg.connect(psycopg_dsn(url)) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        for _name, definition in indexes:
            conn.execute(definition)
        conn.commit()


def _cf_filter(rng: random.Random) -> dict[str, str]:
    """One random ``cf.`` filter of the kinds a campaign builder asks."""
    return rng.choice(
        [
            {"cf.budget.gte": str(rng.randrange(0, 20000, 500))},
            {"cf.seats.lt": str(rng.randint(1, 50))},
            {"cf.homeowner": rng.choice(("true", "false"))},
            {"cf.callback_day.lt": f"2026-{rng.randint(1, 12):02d}-15"},
            {"cf.met_at.gte": f"2026-{rng.randint(1, 12):02d}-01T00:00:00Z"},
            {"cf.product": rng.choice(CF_PRODUCTS)},
            {"cf.product.in": ",".join(rng.sample(CF_PRODUCTS, 2))},
            {"cf.wants": rng.choice(CF_PRODUCTS)},
            {"cf.channel": rng.choice(("web", "ad", "referral"))},
            {"cf.note.exists": "true"},
        ]
    )


CF_KINDS: dict[str, tuple[QueryMaker, float]] = {
    "cf one filter": (lambda s, r: _cf_filter(r), CF_ONE_TARGET_MS),
    "cf two filters+lead_status": (
        lambda s, r: {**_cf_filter(r), **_cf_filter(r), "lead_status": r.choice(STATUSES[:4])},
        CF_TWO_TARGET_MS,
    ),
}


def run_cf_kind(
    conn: Connection, samples: list[Sample], kind: str, n: int, seed: int
) -> tuple[Result, Result]:
    """``n`` random list pages with ``cf.`` filters (``total`` included), and their count."""
    from contact_sync.fields.store import definitions_by_team

    maker, target = CF_KINDS[kind]
    rng = random.Random(seed)
    defined = definitions_by_team(conn, [s.team_id for s in samples])
    page_result, total_result = Result(kind, target), Result(f"  total: {kind}", None)
    queries = [
        ContactQuery.parse(
            {"team_id": sample.team_id, **maker(sample, rng)},
            definitions=defined.get(sample.team_id, {}),
        )
        for sample in (rng.choice(samples) for _ in range(n + WARMUP))
    ]
    conn.rollback()
    for number, query in enumerate(queries):
        began = time.perf_counter()
        page = list_contacts(conn, query)
        elapsed = (time.perf_counter() - began) * 1000
        conn.rollback()
        if number >= WARMUP:
            page_result.add(elapsed, query, page.total)
    for number, query in enumerate(queries):
        began = time.perf_counter()
        total = count_only(conn, query)
        elapsed = (time.perf_counter() - began) * 1000
        conn.rollback()
        if number >= WARMUP:
            total_result.add(elapsed, query, total)
    return page_result, total_result


def run_cf(benches: list[Bench], n: int, results: dict[str, list[Result]]) -> None:
    """The ``cf.`` kinds on every database, added to ``results``."""
    for seed, kind in enumerate(CF_KINDS, 100):
        print(f"  running {kind} …", flush=True)
        for bench in benches:
            with bench.engine.connect() as conn:
                results[bench.label].extend(run_cf_kind(conn, bench.samples, kind, n, seed))


# --------------------------------------------------------------------------- calling policy

# Issue 14/17: the eligible stream and one contact's eligibility under a full calling policy.
POLICY_STREAM_TARGET_MS = 100.0  # issue 17 part 3 (issue 14 says 150)
POLICY_RATIO = 1.5  # the stream with the full policy against the same stream with it off
ONE_CONTACT_TARGET_MS = 10.0
CALLS_PER_CONTACT = 20  # on average, in the measured team
CALL_DAYS = 60  # the calls spread over the 60 days before CALLS_END
# The ledger's "now": a Wednesday, 16:00 in New York. The streams ask about instants of
# the 8 hours before it (as a dialer asks about now), so few calls are later than `at`.
CALLS_END = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
OUTCOMES = ("no_answer", "voicemail", "busy", "failed", "completed")
OUTCOME_WEIGHTS = (45, 20, 8, 5, 22)
FULL_POLICY: dict[str, Any] = {
    "window": {"start": "09:00", "end": "20:00"},
    "days": ["mon", "tue", "wed", "thu", "fri", "sat"],
    "holidays": ["2026-11-11", "2026-11-26", "2026-12-24", "2026-12-25", "2027-01-01"],
    "max_attempts_total": 30,
    "max_attempts_per_day": 3,
    "retry_after": {"no_answer": "4h", "busy": "30m", "voicemail": "1d", "failed": "1h"},
    "jurisdiction_rules": True,
}
# The same window with nothing else: no caps, no delays, no holidays, no state rules.
OFF_POLICY: dict[str, Any] = {
    "window": {"start": "09:00", "end": "20:00"},
    "retry_after": dict.fromkeys(OUTCOMES, "0m"),
    "jurisdiction_rules": False,
}
CALL_COLUMNS = (
    "id",
    "team_id",
    "contact_id",
    "call_id",
    "event_id",
    "campaign_id",
    "direction",
    "outcome",
    "duration_seconds",
    "started_at",
    "ended_at",
    "phone",
    "summary",
    "recorded_at",
)


def measured_team(conn: psycopg.Connection[Any]) -> str:
    """The team whose contacts get the calls: the first by id (deterministic)."""
    row = conn.execute("SELECT id FROM teams ORDER BY id LIMIT 1").fetchone()
    assert row is not None
    return str(row[0])


def _fill_phone_facts(conn: psycopg.Connection[Any], rows: list[tuple[str, str | None]]) -> None:
    """``phone_zone``/``phone_state`` of the team's contacts, as the contact writer keeps them."""
    from contact_sync.scheduling.numbers import phone_facts

    conn.execute("CREATE TEMP TABLE facts (id text, zone text, state text) ON COMMIT DROP")
    with conn.cursor().copy("COPY facts FROM STDIN") as copy:
        for contact_id, phone in rows:
            copy.write_row((contact_id, *phone_facts(phone)))
    conn.execute(
        "UPDATE contacts c SET phone_zone = f.zone, phone_state = f.state FROM facts f "
        "WHERE c.id = f.id"
    )


def _call_rows(
    team_id: str, contacts_: list[tuple[str, str | None]], rng: random.Random
) -> Iterator[tuple[Any, ...]]:
    """~CALLS_PER_CONTACT calls per contact over CALL_DAYS days to CALLS_END, in US daytime,
    90 % outbound."""
    cdf = cumulative(OUTCOME_WEIGHTS)
    for contact_id, phone in contacts_:
        for _ in range(rng.randint(0, 2 * CALLS_PER_CONTACT)):
            day = CALLS_END - timedelta(days=rng.randint(0, CALL_DAYS))
            ended = day.replace(hour=13, minute=0) + timedelta(seconds=rng.randint(0, 11 * 3600))
            if ended > CALLS_END:
                ended -= timedelta(days=1)
            outcome = OUTCOMES[bisect.bisect(cdf, rng.random())]
            duration = rng.randint(60, 900) if outcome == "completed" else rng.randint(0, 40)
            yield (
                str(uuid.uuid4()),
                team_id,
                contact_id,
                f"call-{uuid.uuid4()}",
                f"evt-{uuid.uuid4()}",
                "campaign-1",
                "outbound" if rng.random() < 0.9 else "inbound",
                outcome,
                duration,
                ended - timedelta(seconds=duration),
                ended,
                phone,
                None,
                ended,
            )


def seed_calls(url: str) -> None:
    """The measured team's number facts and calls ledger, and its contacts' call fields, once.

    The call fields are recomputed by the contact writer's own ``refresh_call_fields``.
    """
    from contact_sync.contacts.writer import refresh_call_fields

    with psycopg.connect(psycopg_dsn(url)) as conn:
        if conn.execute("SELECT 1 FROM calls LIMIT 1").fetchone():
            return
        began = time.perf_counter()
        team_id = measured_team(conn)
        rows = [
            (str(r[0]), r[1])
            for r in conn.execute(
                "SELECT id, phone FROM contacts WHERE team_id = %s ORDER BY id", (team_id,)
            )
        ]
        _fill_phone_facts(conn, rows)
        columns = sql.SQL(", ").join(map(sql.Identifier, CALL_COLUMNS))
        with conn.cursor().copy(sql.SQL("COPY calls ({}) FROM STDIN").format(columns)) as copy:
            for call in _call_rows(team_id, rows, random.Random(20261204)):
                copy.write_row(call)
        conn.commit()
    engine = make_engine(url)
    try:
        with engine.begin() as sa_conn:
            refresh_call_fields(sa_conn, [contact_id for contact_id, _ in rows])
    finally:
        engine.dispose()
    with psycopg.connect(psycopg_dsn(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) calls, contacts")
        count = conn.execute("SELECT count(*) FROM calls").fetchone()
    print(f"calls seeded ({count[0] if count else 0:,}) in {time.perf_counter() - began:.0f} s")


def set_policy(engine: Engine, team_id: str, body: dict[str, Any]) -> None:
    """The team's calling policy, through the project's own service."""
    from contact_sync.scheduling.policies import save_policy
    from contact_sync.scheduling.policy import parse_policy

    with engine.begin() as conn:
        save_policy(conn, team_id, parse_policy(body), "bench")


def policy_instant(rng: random.Random) -> datetime:
    """An instant of the 8 hours before ``CALLS_END`` (08:00-16:00 in New York)."""
    return CALLS_END - timedelta(seconds=rng.randint(0, 8 * 3600))


def run_policy(bench: Bench, n: int) -> list[Result]:
    """The measured team's whole stream with the full policy and with it off (interleaved,
    at the same instants), and one contact's eligibility with the full policy."""
    from contact_sync.scheduling.check import contact_eligibility

    with psycopg.connect(psycopg_dsn(bench.url)) as raw:
        team_id = measured_team(raw)
        found = raw.execute("SELECT id FROM contacts WHERE team_id = %s", (team_id,))
        ids = [str(r[0]) for r in found]
    rng = random.Random(1417)
    on = Result("policy stream (full policy)", POLICY_STREAM_TARGET_MS)
    off = Result("policy stream (policy off)", None)
    one = Result("eligibility of one contact", ONE_CONTACT_TARGET_MS)
    with bench.engine.connect() as conn:
        for number in range(n + WARMUP):
            at = policy_instant(rng)
            for body, result in ((FULL_POLICY, on), (OFF_POLICY, off)):
                set_policy(bench.engine, team_id, body)
                query = EligibleQuery(team_id=team_id, at=at, limit=1000)
                began = time.perf_counter()
                seen = stream(conn, query)
                elapsed = (time.perf_counter() - began) * 1000
                conn.commit()  # as the route ends its unit of work: prepared statements stay
                if number >= WARMUP:
                    result.add(elapsed, query, seen)
        set_policy(bench.engine, team_id, FULL_POLICY)
        for number in range(5 * n + WARMUP):
            contact_id, at = rng.choice(ids), policy_instant(rng)
            began = time.perf_counter()
            contact_eligibility(conn, team_id=team_id, contact_id=contact_id, at=at)
            elapsed = (time.perf_counter() - began) * 1000
            conn.rollback()
            if number >= WARMUP:
                one.add(elapsed, (team_id, contact_id, at), 1)
    return [on, off, one]


def print_policy_ratio(results: list[Result]) -> bool:
    """The full policy's stream against the same stream with the policy off."""
    on, off = results[0], results[1]
    ratio50, ratio95 = on.p50 / off.p50, on.p95 / off.p95
    passed = ratio95 <= POLICY_RATIO
    print(
        f"\npolicy on / off: p50 {ratio50:.2f}, p95 {ratio95:.2f} "
        f"(≤ {POLICY_RATIO})  {'PASS' if passed else 'FAIL'}"
    )
    return passed


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200, help="random queries of each kind")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument(
        "--reuse", action="store_true", help="keep the database if seeded with the same sizes"
    )
    parser.add_argument(
        "--scale-check",
        action="store_true",
        help=f"also run on {SCALE_CONTACTS:,} contacts in {SCALE_TEAMS} teams, side by side",
    )
    parser.add_argument(
        "--explain",
        choices=("failed", "all", "none"),
        default="failed",
        help="which kinds get EXPLAIN (ANALYZE, BUFFERS) of their slowest query",
    )
    parser.add_argument(
        "--cf-only", action="store_true", help="run only the custom-field (cf.) filter kinds"
    )
    parser.add_argument(
        "--policy-only",
        action="store_true",
        help="run only the calling-policy kinds (stream with the full policy and without it, "
        "one contact's eligibility)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    url = args.database_url
    prepare_database(url, args.contacts, args.teams, reuse=args.reuse)
    seed_custom_fields(url)
    seed_calls(url)
    benches = [Bench.open(f"{args.contacts:,} contacts / {args.teams} teams", url)]
    if args.scale_check:
        scale_url = make_url(url).set(database=f"{database_name(url)}_scale")
        scale_url_text = scale_url.render_as_string(hide_password=False)
        prepare_database(scale_url_text, SCALE_CONTACTS, SCALE_TEAMS, reuse=args.reuse)
        seed_custom_fields(scale_url_text)
        benches.append(
            Bench.open(f"{SCALE_CONTACTS:,} contacts / {SCALE_TEAMS} teams", scale_url_text)
        )
    with benches[0].engine.connect() as conn:
        settings = conn.exec_driver_sql(
            "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ' ') FROM pg_settings "
            "WHERE name IN ('shared_buffers', 'work_mem', 'random_page_cost', 'jit', "
            "'effective_cache_size', 'plan_cache_mode')"
        ).scalar_one()
    # As the API process after its startup (api/app.py): what is loaded by now is frozen
    # out of the garbage collector's full walks, which otherwise land inside a query.
    load_jurisdictions()
    phone_facts("+12025550100")
    gc.collect()
    gc.freeze()
    print(f"\nPostgreSQL at {safe_url(url)}: {settings}")
    print(f"{args.queries} random queries of each kind (after {WARMUP} warm-up), random team each")
    only = args.cf_only or args.policy_only
    results = run_all(benches, args.queries) if not only else {b.label: [] for b in benches}
    if not args.policy_only:
        run_cf(benches, args.queries, results)
    policy: list[Result] = []
    if not args.cf_only:
        print("  running the calling-policy kinds …", flush=True)
        policy = run_policy(benches[0], args.queries)
        results[benches[0].label] += policy
    for bench in benches:
        print_table(bench.label, results[bench.label])
    ok = all(r.verdict != "FAIL" for rs in results.values() for r in rs)
    if policy:
        ok &= print_policy_ratio(policy)
    if args.scale_check:
        big, small = benches
        ok &= print_scale(results[big.label], results[small.label], big.label, small.label)
    if args.explain != "none":
        for bench in benches[:1]:
            for result in results[bench.label]:
                if args.explain == "all" or result.verdict == "FAIL":
                    explain(bench, result)
    for bench in benches:
        bench.engine.dispose()
    print("\nall targets met" if ok else "\nsome targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
