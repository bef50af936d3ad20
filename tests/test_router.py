"""Tests for web/router.py: templates compiled once, one segment per parameter, 404 vs 405.

Handlers here are plain sentinels: the router only has to hand back the right one, so a
test can compare routes by identity and never calls a handler.
"""

import re

import pytest

from web import router as router_module
from web.router import MethodNotAllowed, RouteNotFound, Router, compile_template


def handler_named(name: str):
    def handler(request):
        return name
    handler.__name__ = name
    return handler


get_patient = handler_named("get_patient")
replace_patient = handler_named("replace_patient")
delete_patient = handler_named("delete_patient")
list_patients = handler_named("list_patients")
get_openapi = handler_named("get_openapi")
get_report = handler_named("get_report")


@pytest.fixture
def router() -> Router:
    router = Router()
    router.add("GET", "/patients", list_patients)
    router.add("GET", "/patients/{patientId}", get_patient, auth=True)
    router.add("PUT", "/patients/{patientId}", replace_patient, auth=True)
    router.add("DELETE", "/patients/{patientId}", delete_patient, auth=True)
    router.add("GET", "/patients/{patientId}/reports/{fileId}", get_report)
    router.add("GET", "/openapi.json", get_openapi)
    return router


# --- compiling templates ------------------------------------------------------------


def test_templates_are_compiled_when_added():
    router = Router()
    router.add("GET", "/patients/{patientId}", get_patient)
    assert isinstance(router.routes[0].pattern, re.Pattern)


def test_matching_compiles_nothing(router, monkeypatch):
    class NoRegularExpressions:
        def __getattr__(self, name):
            raise AssertionError(f"re.{name} was used while matching")

    monkeypatch.setattr(router_module, "re", NoRegularExpressions())
    monkeypatch.setattr(router_module, "compile_template",
                        lambda template: pytest.fail("a template was compiled while matching"))
    for _ in range(3):
        route, params = router.match("GET", "/patients/abc")
        assert route.handler is get_patient and params == {"patientId": "abc"}


def test_compile_template_names_each_parameter_group():
    pattern = compile_template("/patients/{patientId}/reports/{fileId}")
    assert pattern.groupindex.keys() == {"patientId", "fileId"}


def test_route_keeps_its_options(router):
    route, _ = router.match("GET", "/patients/abc")
    assert (route.auth, route.max_body, route.rate_limit, dict(route.tags)) == (True, None, None, {})
    assert route.template == "/patients/{patientId}"


def test_a_misspelt_route_option_is_an_error_when_the_table_is_built(router):
    # A typo must never leave a route silently open: `auht=True` is not `auth=True`.
    with pytest.raises(TypeError):
        router.add("GET", "/secrets", get_patient, auht=True)
    assert all(route.template != "/secrets" for route in router.routes)


# --- literal parts ------------------------------------------------------------------


def test_literal_path_matches_itself(router):
    route, params = router.match("GET", "/openapi.json")
    assert route.handler is get_openapi and params == {}


@pytest.mark.parametrize("path", ["/openapiXjson", "/openapi-json", "/openapi/json"])
def test_dot_in_a_template_is_a_literal_dot_not_any_character(router, path):
    with pytest.raises(RouteNotFound):
        router.match("GET", path)


@pytest.mark.parametrize("template, near_miss", [
    ("/a+b", "/aab"),
    ("/a*", "/aaa"),
    ("/a?", "/"),
    ("/(x|y)", "/x"),
    ("/[ab]", "/a"),
    ("/^start$", "/start"),
    ("/back\\slash", "/backslash"),
])
def test_regex_characters_in_a_template_are_literal(template, near_miss):
    router = Router()
    router.add("GET", template, get_openapi)
    assert router.match("GET", template)[0].handler is get_openapi
    with pytest.raises(RouteNotFound):
        router.match("GET", near_miss)


@pytest.mark.parametrize("path", ["/patients/x", "/xpatients", "/patientsx", "/api/patients"])
def test_a_literal_template_matches_the_whole_path_only(path):
    router = Router()
    router.add("GET", "/patients", list_patients)
    with pytest.raises(RouteNotFound):
        router.match("GET", path)


# --- path parameters ----------------------------------------------------------------


def test_parameters_are_returned_by_name(router):
    route, params = router.match("GET", "/patients/p1/reports/f2")
    assert route.handler is get_report
    assert params == {"patientId": "p1", "fileId": "f2"}


@pytest.mark.parametrize("path", [
    "/patients/a/b",
    "/patients/a/reports/b/c",
    "/patients/a/b/reports/c",
])
def test_a_parameter_never_spans_a_slash(router, path):
    with pytest.raises(RouteNotFound):
        router.match("GET", path)


def test_a_parameter_never_matches_an_empty_segment(router):
    with pytest.raises(RouteNotFound):
        router.match("GET", "/patients//reports/f")


@pytest.mark.parametrize("raw, decoded", [
    ("caf%C3%A9", "café"),
    ("a%20b", "a b"),
    ("100%25", "100%"),
    ("a+b", "a+b"),            # '+' means space only in form data, never in a path
    ("plain", "plain"),
])
def test_parameters_are_percent_decoded(router, raw, decoded):
    _, params = router.match("GET", f"/patients/{raw}")
    assert params == {"patientId": decoded}


def test_an_encoded_slash_stays_inside_its_segment(router):
    route, params = router.match("GET", "/patients/a%2Fb")
    assert route.handler is get_patient
    assert params == {"patientId": "a/b"}


def test_parameters_are_decoded_once_only(router):
    _, params = router.match("GET", "/patients/%2541")
    assert params == {"patientId": "%41"}


# --- trailing slashes and unknown paths ---------------------------------------------


@pytest.mark.parametrize("path", ["/patients/", "/patients/abc/", "/openapi.json/"])
def test_a_trailing_slash_does_not_match(router, path):
    with pytest.raises(RouteNotFound):
        router.match("GET", path)


@pytest.mark.parametrize("path", ["/", "", "/nothing", "/PATIENTS", "/patients/abc/reports"])
def test_unknown_path_is_route_not_found(router, path):
    with pytest.raises(RouteNotFound):
        router.match("GET", path)


def test_unknown_path_is_404_even_for_an_unknown_method(router):
    with pytest.raises(RouteNotFound):
        router.match("BREW", "/coffee")


# --- 405 ------------------------------------------------------------------------------


def test_known_path_with_wrong_method_is_method_not_allowed(router):
    with pytest.raises(MethodNotAllowed) as caught:
        router.match("POST", "/patients/abc")
    assert caught.value.allowed == ["DELETE", "GET", "HEAD", "PUT"]


def test_allowed_methods_are_sorted_and_listed_once():
    router = Router()
    router.add("PUT", "/items/{itemId}", replace_patient)
    router.add("GET", "/items/{itemId}", get_patient)
    router.add("GET", "/items/special", get_openapi)
    router.add("DELETE", "/items/{itemId}", delete_patient)
    router.add("PUT", "/items/{name}", replace_patient)
    with pytest.raises(MethodNotAllowed) as caught:
        router.match("POST", "/items/special")
    assert caught.value.allowed == ["DELETE", "GET", "HEAD", "PUT"]


def test_methods_are_matched_case_sensitively(router):
    # RFC 9110 §9.1: the method token is case-sensitive; "get" is not GET.
    with pytest.raises(MethodNotAllowed) as caught:
        router.match("get", "/openapi.json")
    assert caught.value.allowed == ["GET", "HEAD"]


def test_head_is_answered_by_the_get_route(router):
    route, params = router.match("HEAD", "/openapi.json")
    assert route.method == "GET" and route.template == "/openapi.json"


def test_method_not_allowed_only_lists_routes_whose_path_matched(router):
    with pytest.raises(MethodNotAllowed) as caught:
        router.match("DELETE", "/patients")
    assert caught.value.allowed == ["GET", "HEAD"]


# --- order ----------------------------------------------------------------------------


def test_first_matching_route_wins():
    router = Router()
    router.add("GET", "/patients/{patientId}", get_patient)
    router.add("GET", "/patients/search", list_patients)
    route, params = router.match("GET", "/patients/search")
    assert route.handler is get_patient and params == {"patientId": "search"}


def test_a_literal_route_added_first_wins_over_a_parameter():
    router = Router()
    router.add("GET", "/patients/search", list_patients)
    router.add("GET", "/patients/{patientId}", get_patient)
    assert router.match("GET", "/patients/search")[0].handler is list_patients
    assert router.match("GET", "/patients/other")[0].handler is get_patient


def test_a_later_route_with_the_right_method_is_found_after_a_wrong_method_one():
    router = Router()
    router.add("PUT", "/patients/{patientId}", replace_patient)
    router.add("GET", "/patients/{patientId}", get_patient)
    assert router.match("GET", "/patients/abc")[0].handler is get_patient


def test_a_second_route_for_the_same_method_and_path_stops_start_up():
    router = Router()
    router.add("GET", "/patients/{patientId}", get_patient)
    with pytest.raises(ValueError, match="GET /patients/{patientId} is already a route"):
        router.add("GET", "/patients/{patientId}", list_patients)
    router.add("PUT", "/patients/{patientId}", replace_patient)  # another method on that path is fine
    assert [route.method for route in router.routes] == ["GET", "PUT"]
    assert router.match("GET", "/patients/1")[0].handler is get_patient


def test_a_routes_tags_are_kept_as_given_and_never_read_by_the_router():
    router = Router()
    router.add("GET", "/patients/{patientId}", get_patient, tags={"audit": ("read", "Patient"), "anything": 1})
    route, _ = router.match("GET", "/patients/abc")
    assert route.tags == {"audit": ("read", "Patient"), "anything": 1}
