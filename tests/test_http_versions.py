"""HTTP tests for versions: ETag and If-None-Match on reads, If-Match on writes (412,
and 428 when the server requires it), JSON Merge Patch, and a patient's history.

Each rule of the contract is one test, named after it, on every store. Two clinicians
saving one record at once is the case all of this is for: the concurrency test sends
sixteen PUTs naming one version at the same moment, and exactly one may win.
"""

import json

import pytest

from tests.support.api import ApiClient
from tests.support.concurrency import race
from tests.support.problems import assert_problem
from tests.support.raw_http import RawConnection, http_request
from tests.support.records import PATIENT

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
FULL = {**PATIENT, "gender": "female", "email": "ada@example.org", "phone": "+44 20 7946 0018",
        "address": {"line": "12 St James's Square", "city": "London", "country": "GB"},
        "bloodType": "O-", "allergies": ["penicillin"], "notes": "Prefers mornings."}


def etag(version: int) -> str:
    return f'"{version}"'


def path(patient: dict, suffix: str = "") -> str:
    return f"/patients/{patient['id']}{suffix}"


def patch(client, patient, body, **headers):
    return client.request("PATCH", path(patient), json=body, headers={**MERGE_PATCH, **headers})


# -- version and ETag -----------------------------------------------------------------------

def test_a_created_patient_is_version_1_with_its_etag(client):
    created = client.post("/patients", json=PATIENT)
    assert created.status_code == 201
    assert created.json()["version"] == 1 and created.headers["ETag"] == etag(1)


def test_get_sends_the_version_as_a_strong_etag(client, patient):
    response = client.get(path(patient))
    assert response.json()["version"] == 1 and response.headers["ETag"] == '"1"'


def test_every_change_moves_the_version_by_one_and_the_etag_with_it(client, patient):
    assert client.put(path(patient), json=FULL).headers["ETag"] == etag(2)
    assert patch(client, patient, {"notes": "x"}).headers["ETag"] == etag(3)
    uploaded = client.post(path(patient, "/reports"), files={"file": ("a.pdf", b"%PDF-1.4 x")})
    assert uploaded.status_code == 201
    assert client.get(path(patient)).json()["version"] == 4  # the representation lists its reports
    client.delete(path(patient, f"/reports/{uploaded.json()['id']}"))
    assert client.get(path(patient)).headers["ETag"] == etag(5)


# -- If-None-Match on GET --------------------------------------------------------------------------

@pytest.mark.parametrize("if_none_match", ['"1"', 'W/"1"', "*", '"7", "1"'])
def test_if_none_match_that_matches_is_304_with_no_body(client, patient, if_none_match):
    response = client.get(path(patient), headers={"If-None-Match": if_none_match})
    assert response.status_code == 304
    assert response.content == b"" and response.headers["ETag"] == etag(1)
    assert "Content-Length" not in response.headers


def test_if_none_match_naming_an_old_version_gets_the_new_one(client, patient):
    client.put(path(patient), json=FULL)
    response = client.get(path(patient), headers={"If-None-Match": etag(1)})
    assert response.status_code == 200 and response.json()["version"] == 2


def test_if_none_match_is_checked_after_ownership(client, other_client, patient):
    assert_problem(other_client.get(path(patient), headers={"If-None-Match": "*"}), 403)


# -- If-Match on PUT, PATCH, DELETE -----------------------------------------------------------------

def test_put_with_the_current_etag_succeeds(client, patient):
    response = client.put(path(patient), json=FULL, headers={"If-Match": etag(1)})
    assert response.status_code == 200 and response.json()["version"] == 2


def test_a_stale_put_is_412_and_changes_nothing(client, patient):
    client.put(path(patient), json=FULL, headers={"If-Match": etag(1)})
    stale = client.put(path(patient), json={**PATIENT, "lastName": "Byron"}, headers={"If-Match": etag(1)})
    assert_problem(stale, 412)
    after = client.get(path(patient)).json()
    assert after["version"] == 2 and after["lastName"] == FULL["lastName"] and after["notes"] == FULL["notes"]


@pytest.mark.parametrize("if_match", ['W/"1"', "1", '"1', "garbage", '""'])
def test_a_weak_or_malformed_if_match_never_matches(client, patient, if_match):
    assert_problem(client.put(path(patient), json=FULL, headers={"If-Match": if_match}), 412)
    assert client.get(path(patient)).json()["version"] == 1


@pytest.mark.parametrize("if_match", ["*", '"5", "1"'])
def test_if_match_star_or_a_list_naming_the_version_succeeds(client, patient, if_match):
    assert client.put(path(patient), json=FULL, headers={"If-Match": if_match}).status_code == 200


def test_put_with_if_none_match_that_matches_is_412(client, patient):
    assert_problem(client.put(path(patient), json=FULL, headers={"If-None-Match": "*"}), 412)


def test_a_stale_patch_is_412_and_changes_nothing(client, patient):
    client.put(path(patient), json=FULL)
    assert_problem(patch(client, patient, {"notes": "late"}, **{"If-Match": etag(1)}), 412)
    assert client.get(path(patient)).json()["notes"] == FULL["notes"]


def test_a_stale_delete_is_412_and_deletes_nothing(client, patient):
    client.put(path(patient), json=FULL)
    assert_problem(client.delete(path(patient), headers={"If-Match": etag(1)}), 412)
    assert client.get(path(patient)).status_code == 200
    assert client.delete(path(patient), headers={"If-Match": etag(2)}).status_code == 204
    assert_problem(client.get(path(patient)), 404)


def test_if_match_is_checked_after_ownership_and_existence(client, other_client, patient):
    assert_problem(other_client.put(path(patient), json=FULL, headers={"If-Match": etag(9)}), 403)
    missing = {"id": "0123456789abcdef01234567"}
    assert_problem(client.put(path(missing), json=FULL, headers={"If-Match": etag(1)}), 404)


def test_of_sixteen_puts_naming_one_version_exactly_one_is_200_and_fifteen_412(live_server, client, patient):
    clients = []
    for _ in range(16):  # a client of its own per thread: requests.Session is not safe to share
        clients.append(ApiClient(live_server.url))
        clients[-1].session.headers.update(client.session.headers)
    responses, errors = race(16, lambda index: clients[index].put(
        path(patient), json={**PATIENT, "notes": f"clinician {index}"}, headers={"If-Match": etag(1)}))
    assert errors == []
    assert sorted(response.status_code for response in responses) == [200] + [412] * 15
    winner = next(response.json() for response in responses if response.status_code == 200)
    after = client.get(path(patient)).json()
    assert after["version"] == 2 and after["notes"] == winner["notes"]
    assert [item["version"] for item in client.get(path(patient, "/versions")).json()["items"]] == [2, 1]


# -- MEDITRACK_REQUIRE_IF_MATCH -----------------------------------------------------------------------

@pytest.fixture
def strict_server(start_server):
    return start_server(require_if_match=True)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("if_match", [None, "*"])
def test_a_write_without_a_version_is_428_when_the_server_requires_one(strict_server, method, if_match):
    client = ApiClient(strict_server.url).register_and_login()
    patient = client.post("/patients", json=PATIENT).json()
    headers = {**MERGE_PATCH} if method == "PATCH" else {}
    if if_match:
        headers["If-Match"] = if_match
    response = client.request(method, path(patient), json={"notes": "x"} if method == "PATCH" else FULL,
                              headers=headers)
    assert_problem(response, 428)
    assert client.get(path(patient)).json()["version"] == 1


def test_a_write_naming_the_version_is_accepted_when_the_server_requires_one(strict_server):
    client = ApiClient(strict_server.url).register_and_login()
    patient = client.post("/patients", json=PATIENT).json()
    assert client.put(path(patient), json=FULL, headers={"If-Match": etag(1)}).status_code == 200
    assert_problem(client.put(path(patient), json=FULL, headers={"If-Match": etag(1)}), 412)


# -- PATCH (RFC 7396) -------------------------------------------------------------------------------

def full_patient(client) -> dict:
    return client.post("/patients", json=FULL).json()


def test_patch_changes_only_the_members_it_names(client):
    patient = full_patient(client)
    response = patch(client, patient, {"phone": "+1 555 0100", "allergies": ["latex"]})
    assert response.status_code == 200
    expected = {**patient, "phone": "+1 555 0100", "allergies": ["latex"], "version": 2}
    assert {k: v for k, v in response.json().items() if k != "updatedAt"} == \
        {k: v for k, v in expected.items() if k != "updatedAt"}


@pytest.mark.parametrize("member, default", [
    ("email", None), ("phone", None), ("address", None), ("bloodType", None), ("notes", None),
    ("gender", "unknown"), ("allergies", []),
])
def test_patch_null_resets_an_optional_field_to_its_default(client, member, default):
    patient = full_patient(client)
    response = patch(client, patient, {member: None})
    assert response.status_code == 200 and response.json()[member] == default


def test_patch_merges_the_address_member_by_member(client):
    patient = full_patient(client)
    response = patch(client, patient, {"address": {"city": "Paris", "country": None, "postalCode": "75001"}})
    assert response.json()["address"] == {"line": "12 St James's Square", "city": "Paris", "postalCode": "75001"}


def test_patch_can_give_an_address_to_a_patient_without_one(client, patient):
    response = patch(client, patient, {"address": {"city": "Paris"}})
    assert response.json()["address"] == {"city": "Paris"}


@pytest.mark.parametrize("member", ["firstName", "lastName", "dateOfBirth"])
def test_patch_setting_a_required_field_to_null_is_400_and_changes_nothing(client, patient, member):
    problem = assert_problem(patch(client, patient, {member: None}), 400)
    assert problem["errors"] == [{"field": member, "message": "is required"}]
    assert client.get(path(patient)).json()["version"] == 1


@pytest.mark.parametrize("body", [
    {"shoeSize": 44},                        # unknown members are refused, as in a PUT
    {"id": "0123456789abcdef01234567"},
    {"firstName": " "},                      # trimmed, then too short
    {"dateOfBirth": "2999-01-01"},           # in the future
    {"address": {"planet": "Mars"}},
    {"allergies": "penicillin"},
    ["firstName"],                           # a patch that is not an object replaces the whole record
    "Ada",
])
def test_patch_whose_result_is_not_a_valid_patient_is_400(client, patient, body):
    assert_problem(patch(client, patient, body), 400)
    assert client.get(path(patient)).json()["version"] == 1


# RFC 7396 Appendix A, case by case, with the RFC's members played by a patient's fields:
# (the stored fields beyond PATIENT, the patch, the fields after it — or 400 when the
# merged result is no longer a valid patient).
APPENDIX_A_ON_A_PATIENT = [
    ({"notes": "b"}, {"notes": "c"}, {"notes": "c"}),                                      # 1
    ({"notes": "b"}, {"phone": "555"}, {"notes": "b", "phone": "555"}),                    # 2
    ({"notes": "b"}, {"notes": None}, {"notes": None}),                                    # 3
    ({"notes": "b", "phone": "555"}, {"notes": None}, {"notes": None, "phone": "555"}),    # 4
    ({"allergies": ["b"]}, {"allergies": "c"}, 400),                                       # 5
    ({"notes": "c"}, {"notes": ["b"]}, 400),                                               # 6
    ({"address": {"city": "c"}}, {"address": {"city": "d", "line": None}}, {"address": {"city": "d"}}),  # 7
    ({"allergies": ["b", "c"]}, {"allergies": ["d"]}, {"allergies": ["d"]}),               # 8
    ({"allergies": ["b"]}, ["c", "d"], 400),                                               # 9
    ({"notes": "b"}, ["c"], 400),                                                          # 10
    ({"notes": "foo"}, None, 400),                                                         # 11
    ({"notes": "foo"}, "bar", 400),                                                        # 12
    ({"email": None}, {"phone": "1"}, {"email": None, "phone": "1"}),                      # 13
    ({}, {"address": {"city": {"ccc": None}}}, 400),                                       # 15
]


@pytest.mark.parametrize("stored, body, after", APPENDIX_A_ON_A_PATIENT,
                         ids=[str(n) for n in (*range(1, 14), 15)])
def test_rfc_7396_appendix_a_on_a_patient(client, stored, body, after):
    patient = client.post("/patients", json={**PATIENT, **stored}).json()
    response = client.request("PATCH", path(patient), data=json.dumps(body), headers=MERGE_PATCH)
    if after == 400:
        assert_problem(response, 400)
        assert client.get(path(patient)).json()["version"] == 1
        return
    assert response.status_code == 200, response.text
    assert {name: response.json()[name] for name in after} == after


def test_patch_trims_names_like_put(client, patient):
    assert patch(client, patient, {"firstName": "  Augusta "}).json()["firstName"] == "Augusta"


def test_an_empty_patch_still_makes_a_version(client, patient):
    response = patch(client, patient, {})
    assert response.status_code == 200 and response.json()["version"] == 2


@pytest.mark.parametrize("content_type", ["application/json", "application/json-patch+json", "text/plain", None])
def test_patch_in_another_format_is_415_naming_merge_patch_in_accept_patch(client, patient, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.request("PATCH", path(patient), data=b'{"notes": "x"}', headers=headers)
    assert_problem(response, 415)
    assert response.headers["Accept-Patch"] == "application/merge-patch+json"


def test_patch_with_a_malformed_body_is_400(client, patient):
    response = client.request("PATCH", path(patient), data=b'{"notes": ', headers=MERGE_PATCH)
    assert_problem(response, 400)


def test_patch_of_another_users_patient_is_403_and_of_none_404(client, other_client, patient):
    assert_problem(patch(other_client, patient, {"notes": "x"}), 403)
    assert_problem(patch(client, {"id": "0123456789abcdef01234567"}, {"notes": "x"}), 404)


# -- history ----------------------------------------------------------------------------------------

def test_versions_lists_every_version_newest_first(client, patient):
    client.put(path(patient), json=FULL)
    patch(client, patient, {"notes": "later"})
    listed = client.get(path(patient, "/versions")).json()
    assert [item["version"] for item in listed["items"]] == [3, 2, 1] and listed["nextCursor"] is None
    assert all(set(item) == {"version", "updatedAt"} for item in listed["items"])


def test_versions_pages_with_a_cursor(client, patient):
    for number in range(6):
        patch(client, patient, {"notes": str(number)})
    seen, cursor = [], None
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(path(patient, "/versions" + query)).json()
        seen += [item["version"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [7, 6, 5, 4, 3, 2, 1]


def test_a_version_shows_the_fields_as_they_were(client):
    patient = full_patient(client)
    client.put(path(patient), json=PATIENT)
    first = client.get(path(patient, "/versions/1")).json()
    assert first == {"id": patient["id"], "version": 1, **{k: patient[k] for k in FULL},
                     "updatedAt": patient["updatedAt"]}
    second = client.get(path(patient, "/versions/2")).json()
    assert second["notes"] is None and second["version"] == 2


@pytest.mark.parametrize("version", ["2", "99", "2147483647"])
def test_a_version_that_never_existed_is_404(client, patient, version):
    assert_problem(client.get(path(patient, f"/versions/{version}")), 404)


@pytest.mark.parametrize("version", ["0", "-1", "abc", "1.0", "99999999999", "%201"])
def test_a_malformed_version_is_400(client, patient, version):
    assert_problem(client.get(path(patient, f"/versions/{version}")), 400)


@pytest.mark.parametrize("query", ["?cursor=abc", "?cursor=0", "?limit=0", "?limit=101"])
def test_a_malformed_versions_query_is_400(client, patient, query):
    assert_problem(client.get(path(patient, "/versions" + query)), 400)


def test_another_users_history_is_403(client, other_client, patient):
    assert_problem(other_client.get(path(patient, "/versions")), 403)
    assert_problem(other_client.get(path(patient, "/versions/1")), 403)


def test_a_deleted_patients_history_is_gone(client, patient):
    client.put(path(patient), json=FULL)
    client.delete(path(patient))
    assert_problem(client.get(path(patient, "/versions")), 404)
    assert_problem(client.get(path(patient, "/versions/1")), 404)


def test_a_304_ends_at_its_head_so_the_connection_serves_the_next_request(live_server, client, patient):
    auth = {"Authorization": client.session.headers["Authorization"]}
    with RawConnection(live_server) as connection:
        not_modified = connection.request(http_request("GET", path(patient), headers={**auth, "If-None-Match": '"1"'}))
        assert not_modified.status == 304 and not_modified.header("Content-Length") is None
        assert connection.request(http_request("GET", path(patient), headers=auth)).status == 200
