"""AWS Signature Version 4 (storage/s3/sigv4.py) against Amazon S3's own worked examples.

The four header-authentication examples of the S3 API reference ("Signature
Calculations for the Authorization Header: Transferring Payload in a Single Chunk"):
bucket `examplebucket`, region us-east-1, 24 May 2013 00:00:00 UTC, and the example
credentials below. Each step's published value must come out byte for byte: the
canonical request, the hash the string to sign ends with, the signature and the whole
header. (A live server refusing a wrong secret: tests/test_s3.py.)
"""

import hashlib

from storage.s3 import sigv4

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
HOST = "examplebucket.s3.amazonaws.com"
WHEN = "20130524T000000Z"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def check(method, path, query, headers, payload_hash, *, canonical_sha256, signature, signed):
    canonical = sigv4.canonical_request(method, path, query, headers, payload_hash)
    assert hashlib.sha256(canonical.encode()).hexdigest() == canonical_sha256
    assert sigv4.string_to_sign(WHEN, "us-east-1", canonical).splitlines() == [
        "AWS4-HMAC-SHA256", WHEN, "20130524/us-east-1/s3/aws4_request", canonical_sha256]
    header = sigv4.authorization(method, path, query, headers, payload_hash, access_key=ACCESS_KEY,
                                 secret_key=SECRET_KEY, region="us-east-1")
    assert header == (f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20130524/us-east-1/s3/aws4_request,"
                      f"SignedHeaders={signed},Signature={signature}")
    return canonical


def test_get_object_with_a_range():
    canonical = check("GET", "/test.txt", [], {"Host": HOST, "Range": "bytes=0-9", "x-amz-content-sha256": EMPTY,
                                               "x-amz-date": WHEN}, EMPTY,
                      canonical_sha256="7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
                      signature="f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
                      signed="host;range;x-amz-content-sha256;x-amz-date")
    assert canonical == ("GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
                         f"x-amz-content-sha256:{EMPTY}\nx-amz-date:20130524T000000Z\n\n"
                         f"host;range;x-amz-content-sha256;x-amz-date\n{EMPTY}")


def test_put_object_with_a_dollar_in_its_name():
    body = b"Welcome to Amazon S3."
    payload = hashlib.sha256(body).hexdigest()
    assert payload == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    canonical = check("PUT", "/test$file.text", [], {
        "Date": "Fri, 24 May 2013 00:00:00 GMT", "Host": HOST, "x-amz-date": WHEN,
        "x-amz-storage-class": "REDUCED_REDUNDANCY", "x-amz-content-sha256": payload}, payload,
        canonical_sha256="9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
        signature="98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        signed="date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class")
    assert canonical.splitlines()[1] == "/test%24file.text"  # "$" encoded once, "/" kept


def test_get_bucket_lifecycle_a_parameter_without_a_value():
    canonical = check("GET", "/", [("lifecycle", "")], {"Host": HOST, "x-amz-date": WHEN,
                                                        "x-amz-content-sha256": EMPTY}, EMPTY,
                      canonical_sha256="9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
                      signature="fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
                      signed="host;x-amz-content-sha256;x-amz-date")
    assert canonical.splitlines()[2] == "lifecycle="


def test_list_objects_sorts_the_query_by_name():
    canonical = check("GET", "/", [("prefix", "J"), ("max-keys", "2")], {
        "Host": HOST, "x-amz-date": WHEN, "x-amz-content-sha256": EMPTY}, EMPTY,
        canonical_sha256="df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
        signature="34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        signed="host;x-amz-content-sha256;x-amz-date")
    assert canonical.splitlines()[2] == "max-keys=2&prefix=J"


def test_the_signing_key_is_scoped_to_a_day_a_region_and_s3():
    key = sigv4.signing_key(SECRET_KEY, "20130524", "us-east-1")
    assert key != sigv4.signing_key(SECRET_KEY, "20130525", "us-east-1")
    assert key != sigv4.signing_key(SECRET_KEY, "20130524", "eu-west-1")
    assert len(key) == 32


def test_encoding_keeps_only_unreserved_characters():
    assert sigv4.uri_encode("a b/ü~*", keep_slash=True) == "a%20b/%C3%BC~%2A"
    assert sigv4.uri_encode("a b/ü~*", keep_slash=False) == "a%20b%2F%C3%BC~%2A"
    assert sigv4.canonical_query([("b", "2"), ("a", "x y"), ("a", "1")]) == "a=1&a=x%20y&b=2"
    assert sigv4.canonical_headers({"X-Amz-Meta": "  a   b  ", "Host": "h"}) == ("host:h\nx-amz-meta:a b\n",
                                                                                   "host;x-amz-meta")


def test_amz_date_is_iso_8601_basic_in_utc():
    assert sigv4.amz_date(1369353600) == WHEN
