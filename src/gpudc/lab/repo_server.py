"""The lab's stand-in NVIDIA apt repository, served over HTTP/1.1.

`python -m http.server` answers in HTTP/1.0 and closes the connection after each response.
apt's http method pipelines its requests, and against such a server it was seen to stall with
the next response unread (its socket in CLOSE_WAIT) until Ansible's task timeout. With HTTP/1.1
keep-alive the pipelined requests are answered in order on one connection, "not found" included
(http.server closes the connection after any error; apt asks for files that may be missing, such
as InRelease, and a close there left the 404's body unread in the stall above).

    python -m gpudc.lab.repo_server --bind 10.213.0.1 --directory DIR 8080
"""

from __future__ import annotations

import argparse
import functools
import http.server


class RepoHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection is closed after a minute

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code not in (403, 404, 410) or self.close_connection:
            super().send_error(code, message, explain)  # malformed requests: answer and close
            return
        body = f"{code} {message or self.responses[code][0]}\n".encode()
        self.send_response(code, message)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def make_server(bind: str, port: int, directory: str) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer((bind, port), functools.partial(RepoHandler, directory=directory))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gpudc-lab-repo")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--directory", required=True)
    parser.add_argument("port", type=int)
    args = parser.parse_args(argv)
    make_server(args.bind, args.port, args.directory).serve_forever()


if __name__ == "__main__":
    main()
