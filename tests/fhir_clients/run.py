"""`make test-fhir`: off-the-shelf FHIR clients against MediTrack's FHIR R4 view.

    python tests/fhir_clients/run.py      (with the python of its own venv: see the Makefile)

HAPI's validator says each resource is valid R4; this says real clients can use the server.
SMART's `fhirclient` starts from the CapabilityStatement (`prepare()`), then reads, vreads,
lists history and searches as it is written to, its strict models parsing each answer;
`fhir.resources` (pydantic models of R4) must accept every JSON response too. One user gets
25 patients (accents, spaces, shared prefixes, every gender, dates at the edges of months
and years), one edited twice, one with a PDF report; another user an "Ada Lovelace" that
must never be seen. Each supported search parameter is used (modifiers, every date prefix,
comma OR, repeated AND, `_sort` both ways, `_summary=count`, `_total=none`, paging by
`next` links), each search checked against the patients the data says it must find, each
once; unsupported ones must be refused with an OperationOutcome. Exits 1 on any failure.
"""

import json
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote_plus

import requests
from fhir.resources import construct_fhir_element
from fhirclient import client
from fhirclient.models.bundle import Bundle
from fhirclient.models.documentreference import DocumentReference
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException, FHIRPermissionDeniedException

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from bench.processes import stop  # noqa: E402
from bench.soak import start_server  # noqa: E402  (its access log drained, so the pipe never fills)

SYSTEM = "urn:meditrack:patient-id"
# Patient's search parameters, as the CapabilityStatement must list them: each is searched below.
SEARCHED = ("_id", "identifier", "name", "family", "given", "birthdate", "gender", "_lastUpdated")
PASSWORD = "fhir clients check password"
PEOPLE_TEXT = """
    Ada Lovelace 1815-12-10 female|Émile Zola 1840-04-02 male|Grace Murray 1906-12-09 female
    Alan Turing 1912-06-23 male|Éloïse Lefèvre 1985-03-14 female|Eloise Lefebvre 1985-07-01 female
    Gabriel García Márquez 1927-03-06 male|José Garcia 1972-11-30 male|Ada Byron 1990-06-30 female
    Adam Smith 1990-07-01 male|Lovisa Andersson 2001-01-01 female|François Müller 1968-05-17 male
    Chloé Dubois 1999-12-31 female|Søren Kierkegaard 1813-05-05 male|Zoë Ivanova 2010-02-28 female
    Marie Curie 1867-11-07 female|Nikola Tesla 1856-07-10 male|Alex Morgan 1985-12-31 other
    Sam Rivera 2000-02-29 unknown|Jordan Lee 1979-11-30 other|Hedy Lamarr 1914-11-09 female
    Ángel Núñez 1983-08-15 male|Renée Lévesque 1985-01-01 female|Mary Shelley 1797-08-30 female
    Lise Meitner 1878-11-07 female
"""
PEOPLE = [[first, *rest.rsplit(maxsplit=2)] for first, rest in  # first name, family name, birth date, gender
          (entry.split(maxsplit=1) for entry in PEOPLE_TEXT.replace("\n", "|").split("|") if entry.strip())]
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
failures: list[str] = []
shorten: dict[str, str] = {}  # full id → "…last6", for the log


def check(ok: bool, message: str) -> bool:
    if not ok:
        failures.append(message)
        print(f"   FAIL: {message}")
    return ok


def short(text: str) -> str:
    for full, abbreviated in shorten.items():
        text = text.replace(full, abbreviated)
    return text


def fold(text: str) -> str:
    """Case- and accent-free, as FHIR string search compares."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def born(value: str):
    """FHIR R4 search.html#prefix, for a birthDate (the day [d, d+1)) and the search's range [low, high)."""
    prefix, text = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
    parts = [int(part) for part in text.split("-")] + [1, 1]
    low = datetime(*parts[:3])
    high = {1: low.replace(year=low.year + 1), 2: (low + timedelta(days=31)).replace(day=1),
            3: low + timedelta(days=1)}[text.count("-") + 1]
    if prefix == "ap":  # the ranges meet once the search's is widened by a tenth of its distance from now
        slack = (datetime.now(timezone.utc).replace(tzinfo=None) - low) / 10
        low, high = low - slack, high + slack
        return lambda p: low < datetime.fromisoformat(p["dateOfBirth"]) + timedelta(days=1) and \
            datetime.fromisoformat(p["dateOfBirth"]) < high
    tests = {"eq": lambda d: low <= d < high, "ne": lambda d: not low <= d < high, "lt": lambda d: d < low,
             "gt": lambda d: d >= high, "ge": lambda d: d >= low, "le": lambda d: d < high,
             "sa": lambda d: d >= high, "eb": lambda d: d < low}
    return lambda p: tests[prefix](datetime.fromisoformat(p["dateOfBirth"]))


class Recorder:
    """A requests hook: keeps each response under /fhir/, for fhir.resources to validate."""

    def __init__(self):
        self.pending, self.validated = [], Counter()

    def __call__(self, response, *args, **kwargs):
        if "/fhir/" in response.url:
            self.pending.append(response)

    def validate(self):
        for response in self.pending:
            where = short(f"{response.request.method} {response.url} → {response.status_code}")
            kind = response.headers.get("Content-Type", "")
            if check(kind.startswith("application/fhir+json"), f"{where}: Content-Type {kind!r}"):
                body = response.json()
                try:
                    construct_fhir_element(body["resourceType"], body)
                    self.validated[body["resourceType"]] += 1
                except Exception as exc:  # pydantic's ValidationError, or no resourceType at all
                    check(False, f"{where}: not R4 to fhir.resources: {exc}")
        self.pending = []


def set_up(url: str) -> tuple[str, list[dict], dict]:
    """Through the plain API: the first user's token, their patients as last answered, ids of note."""
    def user(name):
        session = requests.Session()
        session.hooks["response"].append(lambda response, *args, **kwargs: response.raise_for_status())
        session.post(f"{url}/auth/register", json={"username": name, "password": PASSWORD})
        token = session.post(f"{url}/auth/login", json={"username": name, "password": PASSWORD}).json()["accessToken"]
        session.headers["Authorization"] = f"Bearer {token}"
        return session, token

    def create(session, first, last, birth, gender):
        return session.post(f"{url}/patients", json={"firstName": first, "lastName": last, "dateOfBirth": birth,
                                                     "gender": gender}).json()["id"]
    other, _ = user("fhirother")
    ids = {"foreign": create(other, "Ada", "Lovelace", "1815-12-10", "female")}
    session, token = user("fhirclients")
    created = [create(session, *person) for person in PEOPLE]
    ids.update(ada=created[0], grace=created[2])
    ids["report"] = session.post(f"{url}/patients/{ids['ada']}/reports", data={"description": "check report"},
                                 files={"file": ("notes.pdf", PDF, "application/pdf")}).json()["id"]
    for change in ({"lastName": "Hopper"}, {"notes": "edited twice"}):
        session.patch(f"{url}/patients/{ids['grace']}", data=json.dumps(change),
                      headers={"Content-Type": "application/merge-patch+json"})
    shorten.update({i: "…" + i[-6:] for i in [*created, *ids.values()]})
    return token, [session.get(f"{url}/patients/{patient_id}").json() for patient_id in created], ids


def search(server, struct: dict, expected: list[dict], *, order=None, total: int | None = None, foreign=()):
    """One search through fhirclient, following `next` links: exactly `expected`, each once,
    the right `total`, and sorted by `order` ((key, descending)) if given."""
    query = short(unquote_plus(Patient.where(struct=struct).construct()))
    bundles = []
    for bundle in Patient.where(struct=struct).perform_iter(server):
        bundles.append(bundle)
        if not check(len(bundles) <= 50, f"{query}: more than 50 pages, the next links never end"):
            break
    entries = [entry for bundle in bundles for entry in bundle.entry or []]
    ids = [entry.resource.id for entry in entries]
    names = {p["id"]: f"{p['firstName']} {p['lastName']}" for p in expected}
    check(all(bundle.type == "searchset" for bundle in bundles), f"{query}: a Bundle that is no searchset")
    check(all(entry.resource.resource_type == "Patient" and entry.fullUrl.endswith(f"/fhir/Patient/{entry.resource.id}")
              for entry in entries), f"{query}: an entry that is no Patient at its fullUrl")
    check(not [i for i, n in Counter(ids).items() if n > 1], f"{query}: a patient seen twice")
    check(not set(ids) & set(foreign), f"{query}: another user's patient")
    check(set(ids) == set(names), f"{query}: missing {sorted(names[i] for i in set(names) - set(ids))}, "
          f"unexpected {short(str(sorted(set(ids) - set(names))))}")
    wanted_total = (None if struct.get("_total") == "none" else len(names)) if total is None else total
    check(all(bundle.total == wanted_total for bundle in bundles),
          f"{query}: total {[bundle.total for bundle in bundles]}, expected {wanted_total}")
    if "_count" in struct:
        size = int(struct["_count"])
        check(all(len(bundle.entry or []) <= size for bundle in bundles), f"{query}: a page larger than {size}")
        check(len(bundles) == max(1, -(-len(names) // size)), f"{query}: {len(bundles)} pages")
    if order:
        key, descending = order
        by_id = {p["id"]: p for p in expected}
        values = [key(by_id[i]) for i in ids if i in by_id]
        check(values == sorted(values, reverse=descending), f"{query}: not in order")
    shown = ", ".join(names.get(i, i) for i in ids) if len(ids) <= 3 else f"{len(set(ids))} patients"
    pages = f" in {len(bundles)} pages" if len(bundles) > 1 else ""
    print(f"  {query} → {shown or 'none'}{pages}, total {bundles[0].total if bundles else '?'}")


def refused(server, struct: dict, code: str):
    """An unsupported search: 400, and an OperationOutcome whose issue says why."""
    query = short(unquote_plus(Patient.where(struct=struct).construct()))
    try:
        next(Patient.where(struct=struct).perform_iter(server))
        check(False, f"{query}: answered, expected 400 {code}")
    except requests.HTTPError as exc:
        body = exc.response.json()
        issue = (body.get("issue") or [{}])[0]
        check(exc.response.status_code == 400 and body.get("resourceType") == "OperationOutcome"
              and issue.get("code") == code, f"{query}: {exc.response.status_code} {issue}, expected 400 {code}")
        print(f"  {query} → {exc.response.status_code} OperationOutcome {issue.get('code')}: "
              f"{issue.get('diagnostics', '')[:60]}…")


def searches(server, patients: list[dict], ids: dict):
    def where(test):
        return [p for p in patients if test(p)]

    def starts(fields, value):
        return where(lambda p: any(fold(p[f]).startswith(fold(value)) for f in fields))
    changed = next(p for p in patients if p["id"] == ids["grace"])["updatedAt"]  # the last change of all
    for struct, expected in [
        ({"_id": ids["ada"]}, where(lambda p: p["id"] == ids["ada"])),
        ({"_id": {"$or": [ids["ada"], ids["grace"]]}}, where(lambda p: p["id"] in (ids["ada"], ids["grace"]))),
        ({"identifier": f"{SYSTEM}|{ids['ada']}"}, where(lambda p: p["id"] == ids["ada"])),
        ({"identifier": f"http://example.org/other|{ids['ada']}"}, []),
        ({"name": "lov"}, starts(("lastName", "firstName"), "lov")),
        ({"name": "ada", "gender": "female"}, [p for p in starts(("lastName", "firstName"), "ada")
                                               if p["gender"] == "female"]),
        ({"family": "LEFÈ"}, starts(("lastName",), "lefe")),
        ({"family": "garcía m"}, starts(("lastName",), "garcia m")),
        ({"family": "Zzz"}, []),
        ({"family": {"$or": ["zola", "turing"]}}, starts(("lastName",), "zola") + starts(("lastName",), "turing")),
        ({"family": {"$exact": "Zola"}}, where(lambda p: p["lastName"] == "Zola")),
        ({"family": {"$exact": "zola"}}, []),
        ({"family:contains": "OV"}, where(lambda p: "ov" in fold(p["lastName"]))),
        ({"name:contains": "mil"}, where(lambda p: "mil" in fold(p["lastName"]) + " " + fold(p["firstName"]))),
        ({"given": "emile"}, starts(("firstName",), "emile")),
        ({"given": {"$exact": "Ada"}}, where(lambda p: p["firstName"] == "Ada")),
        ({"gender": "female"}, where(lambda p: p["gender"] == "female")),
        ({"gender": {"$or": ["male", "other"]}}, where(lambda p: p["gender"] in ("male", "other"))),
        ({"gender": "http://hl7.org/fhir/administrative-gender|unknown"}, where(lambda p: p["gender"] == "unknown")),
        *[({"birthdate": value}, where(born(value))) for value in (
            "1985", "1985-03", "eq1985-07-01", "ne1985", "lt1900", "gt1990-06", "ge1985-07-01",
            "le1815-12-10", "sa1999", "eb1813-05-06", "ap1985")],
        ({"birthdate": {"$and": ["ge1900", "lt1950"]}}, where(lambda p: "1900" <= p["dateOfBirth"] < "1950")),
        ({"_lastUpdated": f"ge{changed}"}, where(lambda p: p["updatedAt"] >= changed)),
        ({"_lastUpdated": f"lt{changed}"}, where(lambda p: p["updatedAt"] < changed)),
        ({"_lastUpdated": "gt2000"}, patients),
    ]:
        search(server, struct, expected, foreign=[ids["foreign"]])
    print("  sorted, and paged by the next link:")
    for struct, expected, order in [
        ({"_sort": "birthdate"}, patients, (lambda p: p["dateOfBirth"], False)),
        ({"gender": "female", "_sort": "-birthdate", "_count": "4"}, where(lambda p: p["gender"] == "female"),
         (lambda p: p["dateOfBirth"], True)),
        ({"_sort": "family", "_count": "100"}, patients, (lambda p: fold(p["lastName"]), False)),
        ({"_sort": "-given", "_count": "6"}, patients, (lambda p: fold(p["firstName"]), True)),
        ({"_sort": "-_lastUpdated", "_count": "10"}, patients, (lambda p: p["updatedAt"], True)),
        ({"_count": "5"}, patients, None),
    ]:
        search(server, struct, expected, order=order, foreign=[ids["foreign"]])
    print("  totals:")
    search(server, {"_summary": "count"}, [], total=len(patients))
    search(server, {"family": "l", "_total": "none"}, starts(("lastName",), "l"))
    print("  refused:")
    for struct, code in [({"address-city": "Paris"}, "not-supported"), ({"family": {"$text": "x"}}, "not-supported"),
                         ({"_sort": "email"}, "not-supported"), ({"birthdate": {"$gt": "1980"}}, "invalid")]:
        refused(server, struct, code)


def reads(server, patients: list[dict], ids: dict):
    ada, grace = (next(p for p in patients if p["id"] == ids[name]) for name in ("ada", "grace"))
    patient = Patient.read(ada["id"], server)
    name = patient.name[0]
    check((name.family, name.given, patient.birthDate.isostring, patient.gender, patient.meta.versionId)
          == ("Lovelace", ["Ada"], ada["dateOfBirth"], ada["gender"], str(ada["version"]))
          and [(i.system, i.value) for i in patient.identifier] == [(SYSTEM, ada["id"])],
          short(f"Patient/{ada['id']}: {patient.as_json()}"))
    print(short(f"  read Patient/{ada['id']} → {name.given[0]} {name.family}, born {patient.birthDate.isostring}, "
                f"version {patient.meta.versionId}"))
    for path, refusal in ((f"Patient/{ids['foreign']}", FHIRPermissionDeniedException),  # another user's
                          (f"Patient/{'0' * 24}", FHIRNotFoundException),
                          (f"Patient/{grace['id']}/_history/4", FHIRNotFoundException)):
        try:
            Patient.read_from(path, server)
            check(False, short(f"{path}: answered, expected {refusal.__name__}"))
        except refusal as exc:
            print(short(f"  read {path} → {exc.response.status_code} {exc.response.json()['resourceType']}"))
    history = Bundle(server.request_json(f"Patient/{grace['id']}/_history"))
    versions = [(entry.resource.meta.versionId, entry.resource.name[0].family) for entry in history.entry or []]
    check(history.type == "history" and history.total == 3 == grace["version"]
          and versions == [("3", "Hopper"), ("2", "Hopper"), ("1", "Murray")], f"_history: {versions}")
    print(short(f"  Patient/{grace['id']}/_history → total {history.total}: ")
          + ", ".join(f"v{version} {family}" for version, family in versions))
    for version, family in (("1", "Murray"), ("2", "Hopper")):
        old = Patient.read_from(f"Patient/{grace['id']}/_history/{version}", server)
        check((old.meta.versionId, old.name[0].family) == (version, family), f"vread {version}: {old.as_json()}")
        print(short(f"  vread Patient/{grace['id']}/_history/{version} → {old.name[0].given[0]} "
                    f"{old.name[0].family}, version {old.meta.versionId}"))


def documents(server, ids: dict):
    found = [entry.resource for bundle in DocumentReference.where(struct={"patient": ids["ada"]}).perform_iter(server)
             for entry in bundle.entry or []]
    check([(d.id, d.subject.reference) for d in found] == [(ids["report"], f"Patient/{ids['ada']}")],
          short(f"DocumentReference?patient: {[d.as_json() for d in found]}"))
    attachment = DocumentReference.read(ids["report"], server).content[0].attachment
    check((attachment.contentType, attachment.size) == ("application/pdf", len(PDF)), f"{attachment.as_json()}")
    print(short(f"  DocumentReference?patient={ids['ada']} → {len(found)}; DocumentReference/{ids['report']} → "
                f"{attachment.contentType}, {attachment.size} bytes"))
    everything = Bundle(server.request_json(f"Patient/{ids['ada']}/$everything"))
    kinds = [entry.resource.resource_type for entry in everything.entry or []]
    check(kinds == ["Patient", "DocumentReference"], f"$everything: {kinds}")
    print(short(f"  Patient/{ids['ada']}/$everything → {', '.join(kinds)}"))


def session(url: str):
    print(f"MediTrack at {url} (embedded store, fresh data directory)")
    token, patients, ids = set_up(url)
    genders = ", ".join(f"{n} {g}" for g, n in sorted(Counter(p["gender"] for p in patients).items()))
    print(f"set up: {len(patients)} patients ({genders}) for one user, an Ada Lovelace for another; "
          f"Grace Murray → Hopper edited twice (3 versions); a {len(PDF)}-byte PDF report for Ada Lovelace")
    recorder = Recorder()
    smart = client.FHIRClient(settings={"app_id": "meditrack-check", "api_base": f"{url}/fhir/"})
    smart.server.session.hooks["response"].append(recorder)  # requests' own hook: sees every response

    def prepare():
        check(smart.prepare() is True, "prepare(): not ready")
        statement = smart.server.capabilityStatement
        patient = next(r for r in statement.rest[0].resource if r.type == "Patient")
        names = [p.name for p in patient.searchParam]
        check(set(names) == set(SEARCHED), f"the CapabilityStatement's Patient search parameters: {names}")
        print(f"  prepare() → ready; CapabilityStatement fhirVersion {statement.fhirVersion}; Patient search: "
              f"{' '.join(names)}")
        # fhirclient's auth is "none" (the statement names no OAuth endpoints), so it signs
        # nothing: its requests carry what its requests session carries.
        smart.server.session.headers["Authorization"] = f"Bearer {token}"
    for title, action, *arguments in [
            ("FHIRClient.prepare(), without a token:", prepare),
            ("read, history, vread:", reads, smart.server, patients, ids),
            ("DocumentReference and $everything:", documents, smart.server, ids),
            ("Patient.where(...).perform_iter(), each answer checked against the data:",
             searches, smart.server, patients, ids)]:
        print(title)
        try:
            action(*arguments)
        except Exception as exc:  # a client error, an HTTP error, a model that would not parse
            check(False, f"{title} {type(exc).__name__}: {short(str(exc))}")
        recorder.validate()
    print(f"fhir.resources 6.4.0 accepted {sum(recorder.validated.values())} responses as R4: "
          + ", ".join(f"{n} {kind}" for kind, n in sorted(recorder.validated.items())))


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="meditrack-fhir-clients-") as data_dir:
        process, url = start_server(Path(data_dir), {"MEDITRACK_RATE_LIMIT": "0", "MEDITRACK_AUTH_RATE_LIMIT": "0",
                                                     "MEDITRACK_BCRYPT_ROUNDS": "4"})
        try:
            session(url)
        except Exception as exc:  # the set-up failed: nothing could be checked
            check(False, f"{type(exc).__name__}: {exc}")
        finally:
            stop(process)
    took = f"{time.monotonic() - started:.1f} s"
    print(f"FHIR clients check FAILED ({took}):\n" + "\n".join(f"- {f}" for f in failures) if failures
          else f"FHIR clients check passed ({took})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
