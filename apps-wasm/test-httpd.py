#!/usr/bin/env python3
"""Checks httpd (c/httpd.c) over real TCP, as test-native.sh's launcher.

    test-httpd.py HTTPD

Binds 127.0.0.1:0, starts HTTPD on a temporary directory with the socket's descriptor in
LISTEN_FD (socket activation), runs the checks with http.client and raw sockets, then stops it.
Prints one "FAIL: ..." line per failed check on stderr and "CHECKS FAILURES" on stdout.
Every socket operation has a timeout, so a hung server fails the run instead of blocking it.
"""

import hashlib
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading

TIMEOUT = 30
checks = 0
failures = 0


def check(name, ok, detail=""):
    global checks, failures
    checks += 1
    if not ok:
        failures += 1
        print(f"FAIL: httpd {name}" + (f": {detail}" if detail else ""), file=sys.stderr)
    return ok


def read_response(stream, head_request=False):
    """Reads one response from a socket's binary file: (status, headers, body)."""
    status_line = stream.readline()
    if not status_line:
        return None, {}, b""
    parts = status_line.decode("latin-1").split(" ", 2)
    status = int(parts[1])
    headers = {}
    while True:
        line = stream.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = b"" if head_request else stream.read(length)
    return status, headers, body


class Raw:
    """A raw connection for requests that http.client would not send."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        self.stream = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)

    def response(self, head_request=False):
        return read_response(self.stream, head_request)

    def at_eof(self):
        try:
            return self.stream.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.stream.close()
        self.sock.close()


def get(port, path, method="GET", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def run_checks(port, files):
    big = files["big.bin"]

    response, body = get(port, "/hello.txt")
    check("GET /hello.txt", (response.status, body) == (200, files["hello.txt"]),
          f"{response.status} {body!r}")
    check("Content-Type of .txt", response.getheader("Content-Type") == "text/plain; charset=utf-8",
          response.getheader("Content-Type"))
    check("Content-Length of .txt", response.getheader("Content-Length") == str(len(files["hello.txt"])))
    for name, want in [("style.css", "text/css"), ("app.js", "text/javascript"),
                       ("data.json", "application/json"), ("pic.png", "image/png"),
                       ("photo.JPG", "image/jpeg"), ("blob.bin", "application/octet-stream"),
                       ("noext", "application/octet-stream")]:
        response, body = get(port, "/" + name)
        check(f"GET /{name}", response.status == 200 and body == files[name], str(response.status))
        check(f"Content-Type of {name}", (response.getheader("Content-Type") or "").startswith(want),
              response.getheader("Content-Type"))

    response, body = get(port, "/big.bin")
    check("GET 10 MiB file: status and length", response.status == 200 and len(body) == len(big),
          f"{response.status}, {len(body)} bytes")
    check("GET 10 MiB file: sha256", hashlib.sha256(body).hexdigest() == hashlib.sha256(big).hexdigest())

    response, body = get(port, "/")
    check("GET / serves index.html", response.status == 200 and body == files["index.html"])
    check("index.html is text/html", response.getheader("Content-Type") == "text/html; charset=utf-8")
    response, body = get(port, "/sub")
    check("directory without / redirects", response.status == 301 and
          response.getheader("Location") == "/sub/", f"{response.status} {response.getheader('Location')}")
    response, body = get(port, "/sub/")
    check("directory listing", response.status == 200 and b'href="a.txt"' in body and
          b'href="deeper/"' in body, f"{response.status} {body!r}")
    response, body = get(port, "/space%20name.txt")
    check("percent-decoded path", response.status == 200 and body == files["space name.txt"])
    response, body = get(port, "/sub/./a.txt?query=1#frag")
    check("'.' segment, query and fragment", response.status == 200 and body == files["sub/a.txt"])

    for path in ["/../secret.txt", "/%2e%2e/secret.txt", "/sub/../hello.txt", "/sub/%2E%2E/%2e%2e/x"]:
        raw = Raw(port)
        raw.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        status, _, body = raw.response()
        check(f"'..' in {path} refused", status == 403, str(status))
        raw.close()

    # HEAD: the headers of a GET and no body; a GET on the same connection follows at once.
    raw = Raw(port)
    raw.send(b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, _ = raw.response(head_request=True)
    check("HEAD status and Content-Length", status == 200 and headers.get("content-length") == str(len(big)),
          f"{status} {headers}")
    status, headers, body = raw.response()
    check("HEAD sends no body", status == 200 and body == files["hello.txt"], f"{status} {body!r}")
    raw.close()

    response, body = get(port, "/missing.txt")
    check("404 for a missing file", response.status == 404, str(response.status))
    response, body = get(port, "/hello.txt/x")
    check("404 below a file", response.status == 404, str(response.status))

    # Keep-alive: http.client reuses its socket only if the server kept the connection open.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    conn.request("GET", "/hello.txt")
    first = conn.getresponse()
    first_body = first.read()
    sock = conn.sock
    conn.request("GET", "/missing.txt")
    second = conn.getresponse()
    second.read()
    conn.request("GET", "/style.css")
    third = conn.getresponse()
    third_body = third.read()
    check("keep-alive: three requests on one connection",
          sock is not None and conn.sock is sock and first.status == 200 and second.status == 404 and
          third.status == 200 and first_body == files["hello.txt"] and third_body == files["style.css"])
    conn.close()

    # Pipelining: three requests in one write, answered in order.
    raw = Raw(port)
    raw.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
             b"HEAD /style.css HTTP/1.1\r\nHost: t\r\n\r\n"
             b"GET /data.json HTTP/1.1\r\nHost: t\r\n\r\n")
    r1, r2, r3 = raw.response(), raw.response(head_request=True), raw.response()
    check("pipelined requests answered in order",
          (r1[0], r1[2], r2[0], r2[1].get("content-length"), r3[0], r3[2]) ==
          (200, files["hello.txt"], 200, str(len(files["style.css"])), 200, files["data.json"]))
    raw.close()

    # Connection: close, and HTTP/1.0 with and without keep-alive.
    raw = Raw(port)
    raw.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    status, headers, body = raw.response()
    check("Connection: close honoured", status == 200 and headers.get("connection") == "close" and raw.at_eof())
    raw.close()
    raw = Raw(port)
    raw.send(b"GET /hello.txt HTTP/1.0\r\n\r\n")
    status, _, body = raw.response()
    check("HTTP/1.0 closes by default", status == 200 and body == files["hello.txt"] and raw.at_eof())
    raw.close()
    raw = Raw(port)
    raw.send(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = raw.response()
    raw.send(b"GET /data.json HTTP/1.0\r\n\r\n")
    status2, _, body2 = raw.response()
    check("HTTP/1.0 keep-alive", status == 200 and headers.get("connection") == "keep-alive" and
          status2 == 200 and body2 == files["data.json"] and raw.at_eof())
    raw.close()

    # Request bodies are skipped; other methods get 405 and the connection goes on.
    raw = Raw(port)
    raw.send(b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nGET /x HTTP"
             b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody"
             b"GET /data.json HTTP/1.1\r\nHost: t\r\n\r\n")
    r1, r2, r3 = raw.response(), raw.response(), raw.response()
    check("405 for POST, with Allow", r1[0] == 405 and r1[1].get("allow") == "GET, HEAD", str(r1[:2]))
    check("request bodies skipped on keep-alive",
          (r2[0], r2[2], r3[0], r3[2]) == (200, files["hello.txt"], 200, files["data.json"]),
          f"{r2[0]} {r3[0]}")
    raw.close()

    # Malformed requests: 400 (or 505, 414, 431, 501), then the connection is closed.
    bad = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET\r\n\r\n", 400),
        (b"GET  /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /hello.txt HTTP/1.1 extra\r\nHost: t\r\n\r\n", 400),
        (b"GET /hello.txt HTTP/x.y\r\nHost: t\r\n\r\n", 400),
        (b"GET hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"G\x00T /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"\xff\xfe\x00\x01binary\r\n\r\n", 400),
        (b"GET /hello.txt HTTP/1.1\r\n\r\n", 400),
        (b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", 400),
        (b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400),
        (b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", 400),
        (b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
        (b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /a%00b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /hello.txt HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    ]
    for request, want in bad:
        raw = Raw(port)
        raw.send(request)
        status, headers, _ = raw.response()
        check(f"{want} for {request[:40]!r}", status == want and headers.get("connection") == "close" and
              raw.at_eof(), f"got {status}")
        raw.close()
    response, body = get(port, "/hello.txt")
    check("still serving after bad requests", response.status == 200 and body == files["hello.txt"])

    # A client that goes away mid-transfer (a small receive buffer keeps the server mid-file).
    raw = Raw(port, rcvbuf=8192)
    raw.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    raw.sock.recv(1000)
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()
    # An idle connection and a half-sent request stay open while other clients are served.
    idle = Raw(port)
    partial = Raw(port)
    partial.send(b"GET /hello.txt HTTP/1.1\r\nHo")

    errors = []

    def client(index):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            for i in range(20):
                name = ["hello.txt", "style.css", "data.json", "medium.bin", "sub/a.txt"][(index + i) % 5]
                conn.request("GET", "/" + name)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200 or body != files[name]:
                    errors.append(f"client {index} request {i}: {response.status}, {len(body)} bytes")
            conn.close()
        except Exception as error:  # reported as a failed check
            errors.append(f"client {index}: {error!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 4)
    check("10 concurrent clients x 20 requests", not errors and not any(t.is_alive() for t in threads),
          "; ".join(errors[:5]))

    partial.send(b"st: t\r\n\r\n")
    status, _, body = partial.response()
    check("half-sent request completed after the others", status == 200 and body == files["hello.txt"])
    idle.send(b"GET /data.json HTTP/1.1\r\nHost: t\r\n\r\n")
    status, _, body = idle.response()
    check("idle connection still served", status == 200 and body == files["data.json"])
    partial.close()
    idle.close()


def main():
    if len(sys.argv) != 2:
        print("usage: test-httpd.py HTTPD", file=sys.stderr)
        return 2
    httpd = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="keel-httpd-") as work:
        root = os.path.join(work, "www")
        os.makedirs(os.path.join(root, "sub", "deeper"))
        files = {
            "hello.txt": b"Hello from Keel's httpd\n",
            "index.html": b"<!DOCTYPE html>\n<title>Keel</title>\n<p>index</p>\n",
            "style.css": b"body { color: black; }\n",
            "app.js": b"console.log('hi');\n",
            "data.json": b'{"answer": 42}\n',
            "pic.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
            "photo.JPG": b"\xff\xd8\xff" + bytes(100),
            "blob.bin": bytes(range(256)) * 4,
            "noext": b"no extension\n",
            "space name.txt": b"a space\n",
            "sub/a.txt": b"in a subdirectory\n",
            "medium.bin": os.urandom(300 * 1024),
            "big.bin": os.urandom(10 * 1024 * 1024 + 12345),
        }
        for name, data in files.items():
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)
        with open(os.path.join(work, "secret.txt"), "wb") as f:
            f.write(b"outside the served directory\n")

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        log_path = os.path.join(work, "log")
        err_path = os.path.join(work, "err")
        with open(log_path, "wb") as log, open(err_path, "wb") as err:
            server = subprocess.Popen([httpd, root], stdout=log, stderr=err, stdin=subprocess.DEVNULL,
                                      pass_fds=[listener.fileno()],
                                      env=dict(os.environ, LISTEN_FD=str(listener.fileno())))
        listener.close()
        try:
            run_checks(port, files)
        except Exception as error:
            check("checks ran to the end", False, repr(error))
        finally:
            alive = server.poll() is None
            check("server still running after the checks", alive, f"exit status {server.returncode}")
            if alive:
                server.terminate()
            server.wait(TIMEOUT)

        with open(log_path, encoding="latin-1") as f:
            log_lines = f.read().splitlines()
        with open(err_path, encoding="latin-1") as f:
            errors = f.read()
        check("nothing on stderr", errors == "", errors[:500])
        for line in [f"GET /hello.txt 200 {len(files['hello.txt'])}", "HEAD /big.bin 200 0",
                     f"GET /big.bin 200 {len(files['big.bin'])}", "GET /missing.txt 404 14",
                     "POST /hello.txt 405 23", "- - 400 16", "GET /../secret.txt 403 14"]:
            check(f"log line '{line}'", line in log_lines)
        check("one log line per request: 200 concurrent ones",
              sum(1 for l in log_lines if l.startswith("GET /medium.bin 200 ")) == 40)
        check("the aborted transfer is logged", sum(1 for l in log_lines if l.startswith("GET /big.bin 200 ")) == 2)
    print(checks, failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
