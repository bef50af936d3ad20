"""What an upload is made of: small real files, and multipart/form-data bodies by hand.

The files are the smallest that are what they claim to be, so the server's sniffing
(by first bytes, never by label) has something true to find. The bodies are built
byte by byte (RFC 7578, on RFC 2046 §5.1.1's framing), so a test says exactly what
went over the wire instead of what some client library chose to send.
"""

import struct
import zlib

BOUNDARY = "meditrack-test-boundary-7f3a9c"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


# -- files that look like the real thing ------------------------------------------------

def png_chunk(kind: bytes, data: bytes) -> bytes:
    # PNG (RFC 2083 §3.2): length, type, data, and a CRC-32 of type and data
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PDF = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
       b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n")
PNG = (b"\x89PNG\r\n\x1a\n"                                      # a 1x1 grey pixel
       + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
       + png_chunk(b"IDAT", zlib.compress(b"\x00\x80"))
       + png_chunk(b"IEND", b""))
JPEG = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"   # SOI, APP0 (JFIF)
        b"\xff\xdb\x00\x43\x00" + bytes(range(1, 65)) + b"\xff\xd9")               # a DQT, EOI


def pdf_of_size(size: int) -> bytes:
    """A file the server sniffs as PDF, exactly `size` bytes long."""
    return (b"%PDF-1.4\n" + b"0" * size)[:size]


# -- multipart bodies, by hand ------------------------------------------------------------

def quoted(text: str) -> str:
    # RFC 9110 §5.6.4: inside a quoted-string, a backslash escapes " and \ itself
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def part(name: str, data: bytes, *, filename: str | None = None, content_type: str | None = None,
         disposition: str | None = None) -> bytes:
    """One part: its header block, the blank line, its data (without the delimiter)."""
    if disposition is None:
        disposition = f"form-data; name={quoted(name)}"
        if filename is not None:
            disposition += f"; filename={quoted(filename)}"
    headers = [f"Content-Disposition: {disposition}"]
    if content_type is not None:
        headers.append(f"Content-Type: {content_type}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("utf-8") + data


def file_part(data: bytes, filename: str = "scan.pdf", content_type: str = "application/pdf") -> bytes:
    return part("file", data, filename=filename, content_type=content_type)


def multipart(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    """RFC 2046 §5.1.1: each part after "--boundary" CRLF, then the closing "--boundary--"."""
    delimiter = b"--" + boundary.encode("ascii")
    return b"".join(delimiter + b"\r\n" + each + b"\r\n" for each in parts) + delimiter + b"--\r\n"
