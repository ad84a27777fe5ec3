"""Splitting a MariaDB/MySQL dump into statements, the way the `mariadb` client does with --binary-mode.

The parallel loader (`mysql_parallel.py`) sends statements through the driver, so the rules the
client applies while it reads a dump must be applied here, and nothing more:

- a statement ends at the current delimiter (`;` unless a `DELIMITER` line changed it), but not
  inside a '...' or "..." string (a backslash escapes the next byte, unless the session's sql_mode
  has NO_BACKSLASH_ESCAPES), a `...` identifier, a /* ... */ comment, a `-- ` or `#` comment;
- /*! ... */ and /*M! ... */ comments are SQL the server runs: the delimiter counts inside them, as
  mariadb-dump's triggers (`/*!50003 CREATE*/ ... */;;`) require;
- `DELIMITER x` is recognised on a line of its own between statements, the one client command
  --binary-mode keeps. No other client command exists here: `\\!`, `system` or `source` reach the
  server as SQL and fail there (what --sandbox guarantees for the client);
- the first line's `/*M!999999\\- enable the sandbox mode */` is the client's sandbox switch; the
  server skips it as a comment for a version it is not.

Scanning is done by compiled regular expressions whose loops run inside the regex engine
(possessive quantifiers), so that a multi-megabyte INSERT costs one match, not a Python loop per
value; the data of binary columns is hex (--hex-blob) and needs no special case.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import BinaryIO

READ_SIZE = 1 << 20
_DEFAULT_DELIMITER = b";"
_SPACE = rb" \t\r\n\f\v"
_LINE_SPACE = rb" \t\r\f\v"  # "--" then a newline is a comment ending on that very line

# What may stand between statements without being one: blanks, comments the server ignores, and
# the client's sandbox switch on mariadb-dump's first line.
_GAP_TOKENS = (
    rb"[" + _SPACE + rb"]++|--(?:[" + _LINE_SPACE + rb"][^\n]*+)?(?:\n{end})|#[^\n]*+(?:\n{end})"
    rb"|/\*M?!999999\\- enable the sandbox mode \*/"
    rb"|/\*(?![!]|M!)(?:[^*]++|\*(?!/))*+\*/"
)
# Line comments end at a newline; only a whole statement (its end known) may end inside one.
_GAP = re.compile(rb"(?:" + _GAP_TOKENS.replace(b"{end}", b"") + rb")*+")
_COMMENT_ONLY = re.compile(rb"(?:" + _GAP_TOKENS.replace(b"{end}", rb"|\Z") + rb")*+\Z")
# mariadb-dump's data statements: INSERT INTO `table` VALUES (...),(...);
_DUMP_INSERT = re.compile(rb"INSERT INTO `(?:[^`]|``)++` VALUES[ \n]")
_DELIMITER_COMMAND = re.compile(rb"delimiter[ \t]++([^" + _SPACE + rb"]++)[^\n]*+(?:\n|\Z)", re.IGNORECASE)


class DumpSyntaxError(ValueError):
    """A DELIMITER line the client would refuse."""


@lru_cache(maxsize=16)
def _body(delimiter: bytes, backslash_escapes: bool) -> re.Pattern[bytes]:
    """Everything of a statement up to (not including) its delimiter, in one possessive match.

    The match stops at the delimiter, or where a token is not complete yet (a string, identifier
    or comment whose end is not in the buffer): the caller reads more and matches again from there.
    """
    first, rest = delimiter[:1], delimiter[1:]
    plain = re.escape(b"'\"`#/-" + first)
    if backslash_escapes:
        single, double = rb"'(?:[^'\\]++|\\.)*+'", rb'"(?:[^"\\]++|\\.)*+"'
    else:
        single, double = rb"'[^']*+'", rb'"[^"]*+"'
    alternatives = [
        rb"[^" + plain + rb"]++",
        single,
        double,
        rb"`[^`]*+`",
        rb"--(?:[" + _LINE_SPACE + rb"][^\n]*+)?\n",
        rb"#[^\n]*+\n",
        rb"/\*(?![!]|M!)(?:[^*]++|\*(?!/))*+\*/",
        # A lone - or / that starts no comment: decided only once the next byte is known.
        rb"-(?=[^-])",
        rb"-(?=-[^" + _SPACE + rb"])",
        rb"/(?=[^*])",
        rb"/(?=\*(?:!|M!))",
    ]
    if first in b"'\"`#/-":
        raise DumpSyntaxError(f"unsupported delimiter {delimiter!r}")
    if rest:
        # The delimiter's first byte alone, once enough bytes follow to know it is not the delimiter.
        alternatives.append(re.escape(first) + rb"(?=.{%d})(?!%s)" % (len(rest), re.escape(rest)))
    return re.compile(rb"(?:" + rb"|".join(alternatives) + rb")*+", re.DOTALL)


class StatementReader:
    """Iterate over the statements of a dump stream (bytes, without their delimiter).

    `backslash_escapes` follows the server: the loader turns it off when a statement it ran set
    NO_BACKSLASH_ESCAPES in the sql_mode, as the client does from the server's status flags.
    Memory: the current statement plus one read (a statement is as large as the dump's largest
    INSERT: mariadb-dump keeps them near its net_buffer_length, 1 MiB by default).
    """

    def __init__(self, stream: BinaryIO, *, read_size: int = READ_SIZE) -> None:
        self.stream = stream
        self.read_size = read_size
        self.delimiter = _DEFAULT_DELIMITER
        self.backslash_escapes = True
        self._buffer = b""
        self._start = 0
        self._eof = False

    def _fill(self, at_least: int = 0) -> bool:
        """Read more (at least `at_least` bytes, so that a long token is rescanned a bounded
        number of times); False at the end of the stream."""
        if self._eof:
            return False
        chunk = self.stream.read(max(self.read_size, at_least))
        if not chunk:
            self._eof = True
            return False
        # One copy: the unread rest and the new read, joined (slicing first would copy twice).
        self._buffer = b"".join((memoryview(self._buffer)[self._start :], chunk))
        self._start = 0
        return True

    def _skip_gap(self) -> None:
        """Move past blanks, comments and DELIMITER lines before the next statement."""
        while True:
            end = _GAP.match(self._buffer, self._start).end()
            self._start = end
            if self._gap_may_go_on(end) and self._fill():
                continue  # a blank run or comment may go on in the next read
            if self._buffer[end : end + 9].lower() != b"delimiter":
                return
            while self._buffer.find(b"\n", self._start) < 0 and self._fill():
                pass
            match = _DELIMITER_COMMAND.match(self._buffer, self._start)
            if match is None:
                return
            delimiter = match.group(1)
            if b"\\" in delimiter:
                raise DumpSyntaxError("DELIMITER cannot contain a backslash")
            self.delimiter = delimiter
            self._start = match.end()

    def _gap_may_go_on(self, end: int) -> bool:
        """Whether the bytes after `end` could still be a comment or a DELIMITER line once more
        of the stream is read (the next read then decides)."""
        if self._eof:
            return False
        if len(self._buffer) - end < 64:
            return True
        head = self._buffer[end : end + 2]
        if head[:1] == b"#" or head == b"--" or head[:1].lower() == b"d":
            return self._buffer.find(b"\n", end) < 0
        if head == b"/*":
            return self._buffer.find(b"*/", end) < 0
        return False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        self._skip_gap()
        if self._start >= len(self._buffer):
            raise StopIteration
        if self.delimiter == b";" and self.backslash_escapes and _DUMP_INSERT.match(self._buffer, self._start):
            statement = self._dump_insert()
            if statement is not None:
                return statement
        position = self._start
        while True:
            pattern = _body(self.delimiter, self.backslash_escapes)
            position = pattern.match(self._buffer, position).end()
            if self._buffer.startswith(self.delimiter, position):
                statement = self._buffer[self._start : position]
                self._start = position + len(self.delimiter)
                return statement
            consumed = position - self._start
            if not self._fill(at_least=len(self._buffer) - self._start):
                break
            position = consumed
        # The end of the dump without a delimiter: the client sends what is left as a last statement.
        statement = self._buffer[self._start :]
        self._start = len(self._buffer)
        if _COMMENT_ONLY.match(statement):
            raise StopIteration
        return statement


    def _dump_insert(self) -> bytes | None:
        """The fast path for mariadb-dump's INSERTs, or None to scan the statement the exact way.

        mariadb-dump writes every value as a number, NULL, hex (--hex-blob) or a quoted string
        escaped by mysql_real_escape_string, so a newline never stands inside a string: such a
        statement ends at the first ";" that ends a line. That end is taken only when the quotes
        before it balance, backslash escapes removed (a ";" that ended a line inside a string would
        leave one open), and the statement ends with the ")" of its last row; anything else is
        scanned by the exact rules. Costs a few passes of bytes.find/replace/count, C loops at GB/s,
        where the exact scan runs at ~40 MB/s.
        """
        search = self._start
        while True:
            index = self._buffer.find(b";", search)
            if 0 <= index < len(self._buffer) - 1:
                if self._buffer[index + 1] == 0x0A:  # ";\n"
                    break
                search = index + 1
                continue
            searched = (index if index >= 0 else len(self._buffer)) - self._start
            if not self._fill(at_least=len(self._buffer) - self._start):
                if index < 0:
                    return None
                break  # the last byte of the dump is the ";"
            search = self._start + searched
        statement = self._buffer[self._start : index]
        if not statement.endswith(b")") or _unescaped_quotes(statement) % 2:
            return None
        self._start = index + 1
        return statement


def _unescaped_quotes(statement: bytes) -> int:
    """How many ' in `statement` are not escaped by a backslash, by counting alone.

    A quote after a run of k backslashes is escaped when k is odd. It is counted once in each of
    count("\\'"), count("\\\\'"), ... up to k backslashes: the alternating sum of those counts is 1
    for an odd run, 0 for an even one.
    """
    quotes = statement.count(b"'")
    if b"\\" not in statement:  # one memchr: most statements have no escape at all
        return quotes
    sign, run = -1, b"\\'"
    while (found := statement.count(run)) > 0:
        quotes += sign * found
        sign, run = -sign, b"\\" + run
    return quotes


def is_comment_only(statement: bytes) -> bool:
    return _COMMENT_ONLY.match(statement) is not None
