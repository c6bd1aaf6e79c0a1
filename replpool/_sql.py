"""What a statement does to a database session, told from its text alone (pure).

A router that sends statements of one connection to different servers must know, for each
statement, whether it may run on a replica, and whether it creates, reads or depends on
state that lives in the database session (which a replica connection does not share with
the primary one). :func:`classify` answers with a :class:`Kind`.

How it reads a statement: a lexer per server (comments, string literals in every quoting
form, quoted identifiers, dollar quotes, MySQL's executable comments) turns the text into
tokens, so a name inside a string or a comment never counts and one in a quoted
identifier does. Statements are then judged by what they do: their first keywords (``SET``,
``PREPARE``, ``LISTEN``, ``CREATE TEMP``...), the functions they call, the system views
and variables they read, and clauses such as ``FOR UPDATE`` or ``INTO``. Several
statements in one string count as the most demanding of them.

Functions are told apart with the server's own list of builtins (``_sqlnames``, generated
from real servers by ``scripts/sql_builtins.py``), reviewed below against each server's
documentation. PostgreSQL labels each builtin: immutable functions cannot touch the
database or the session; "parallel unsafe" ones write, access sequences or change settings;
"parallel restricted" ones read temporary tables, client connection state, cursors,
prepared statements or other backend-local state (PostgreSQL 15 documentation, 15.4.1
"Parallel Labeling for Functions and Aggregates"). Those labels give the default class of a
builtin; the tables below correct the ones whose label says too little. A function the
classifier does not know (a function of yours, of an extension, or of a newer server)
keeps the statement on the primary, and is taken to be able to change the session, unless
its name is in ``replica_functions``. Unclear cases lean the same way: a false "primary"
costs a little offload, a false "replica" is a bug.

What text cannot show, and so is not seen: session state changed inside functions the
caller listed in ``replica_functions``, inside triggers, rules, views or column defaults
that call user functions, inside PostgreSQL operators defined by users (an unknown operator
does keep the statement on the primary), and PostgreSQL's attribute notation for calling a
function (``t.f`` for ``f(t)``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from functools import lru_cache, partial

from . import _sqlnames as _names

__all__ = ["Kind", "classify", "DIALECTS"]

DIALECTS = ("postgresql", "mysql")


class Kind(enum.Enum):
    """What a statement needs of the session it runs in.

    ==============  ===============================================================
    READ            may run on a replica
    DIAGNOSTICS     reads what the connection's previous statement left behind (MariaDB
                    and MySQL: ``FOUND_ROWS()``, ``ROW_COUNT()``, ``SHOW WARNINGS``,
                    ``@@warning_count``): where that statement ran
                    (MariaDB "Information Functions", "SHOW WARNINGS", "Diagnostics
                    Area"); changes nothing
    CONTROL         transaction control only (``BEGIN``, ``SAVEPOINT``, ``SET LOCAL``
                    ...): the primary; leaves nothing once the transaction ends
    LOCKING         a read that locks (``FOR UPDATE``, ``LOCK IN SHARE MODE``, a
                    transaction-level advisory lock): the primary; leaves no state
    SESSION_READ    reads or depends on state of the session, or of the server it runs
                    on (``lastval()``, ``LAST_INSERT_ID()``, ``SHOW``, ``@var``...): the
                    primary; leaves no new state
    WRITE           writes, DDL, statements that cannot be read: the primary
    SESSION         creates or changes session state that outlives the statement
                    (``SET``, temporary tables, ``PREPARE``, session locks...): the
                    primary, and the connection must stay there until it is closed
    SESSION_WRITE   both WRITE and SESSION (``nextval()``, ``EXECUTE``, a function or
                    statement the classifier does not know)
    ==============  ===============================================================
    """

    READ = "read"
    DIAGNOSTICS = "diagnostics"
    CONTROL = "control"
    LOCKING = "locking"
    SESSION_READ = "session_read"
    WRITE = "write"
    SESSION = "session"
    SESSION_WRITE = "session_write"

    @property
    def replica_ok(self) -> bool:
        """True only for READ."""
        return self is Kind.READ

    @property
    def writes(self) -> bool:
        """WRITE or SESSION_WRITE: the session's position should advance."""
        return self is Kind.WRITE or self is Kind.SESSION_WRITE

    @property
    def sets_session_state(self) -> bool:
        """SESSION or SESSION_WRITE: later statements must stay on the primary."""
        return self is Kind.SESSION or self is Kind.SESSION_WRITE

    def __or__(self, other: Kind) -> Kind:
        """The more demanding of the two (WRITE | SESSION is SESSION_WRITE)."""
        return _JOIN[self, other]


_RANK = list(Kind)  # READ < DIAGNOSTICS < CONTROL < LOCKING < SESSION_READ < WRITE < SESSION < SESSION_WRITE
_JOIN = {
    (a, b): (
        Kind.SESSION_WRITE
        if {a, b} == {Kind.WRITE, Kind.SESSION}
        else max(a, b, key=_RANK.index)
    )
    for a in Kind
    for b in Kind
}

READ, DIAGNOSTICS, CONTROL, LOCKING = Kind.READ, Kind.DIAGNOSTICS, Kind.CONTROL, Kind.LOCKING
SESSION_READ, WRITE = Kind.SESSION_READ, Kind.WRITE
SESSION, SESSION_WRITE = Kind.SESSION, Kind.SESSION_WRITE

UNKNOWN = SESSION_WRITE  # a function or statement the classifier does not know
UNREADABLE = WRITE       # a statement the lexer cannot read (an unterminated quote or
                         # comment): the server refuses it, so it runs nothing


# -- lexing ---------------------------------------------------------------------------------
#
# A token is a pair (type, value):
#   "w" word (keyword or unquoted identifier), value upper-cased
#   "q" quoted identifier, value unescaped, case kept
#   "s" string literal, value its text with quotes
#   "n" number, "p" placeholder (%s, %(name)s, $1, ?)
#   "o" operator or punctuation, value its text
#   "v" MySQL user variable (@x), "V" MySQL system variable (@@x, @@session.x)


class _Unreadable(Exception):
    """Text the lexer cannot read; ``toks`` are the tokens read before it."""

    def __init__(self, toks: list[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.toks = toks or []


_IDENT = r"(?:[A-Za-z_]|[^\x00-\x7f])(?:[\w$]|[^\x00-\x7f])*"
_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


def _pg_pattern(standard_strings: bool) -> re.Pattern[str]:
    # standard_conforming_strings on (the default since 9.1): a backslash in '...' is a
    # character; off: it escapes. E'...' always escapes (PostgreSQL 15, 4.1.2).
    plain = r"'(?:[^']|'')*'" if standard_strings else r"'(?:[^'\\]|\\.|'')*'"
    return re.compile(
        rf"""
          \s+
        | --[^\n]*
        | /\*(?:[^*/]|\*(?!/)|/(?!\*))*\*/
        | (?P<nested>/\*)
        | (?P<s>[Ee]'(?:[^'\\]|\\.|'')*'|{plain})
        | (?P<d>\$(?P<tag>(?:(?:[A-Za-z_]|[^\x00-\x7f])(?:\w|[^\x00-\x7f])*)?)\$.*?\$(?P=tag)\$)
        | (?P<p>%\([^)]*\)s|%s|%%|\$\d+)
        | (?P<q>"(?:[^"]|"")*")
        | (?P<bad>['"$])
        | (?P<n>{_NUMBER})
        | (?P<w>{_IDENT})
        | (?P<o>(?:[+*<>=~!@\#^&|`?]|%(?![s(%])|-(?!-)|/(?!\*))+|::|[^\s])
        """,
        re.X | re.S,
    )


def _mysql_pattern(backslashes: bool, ansi_quotes: bool) -> re.Pattern[str]:
    # MariaDB/MySQL: '...' and "..." take backslash escapes unless NO_BACKSLASH_ESCAPES;
    # "..." is an identifier under ANSI_QUOTES. "-- " needs a space or control character
    # after it; # comments to the end of the line; /*! ... */ and /*M! ... */ are
    # executable comments: their text is code (MariaDB "Comment Syntax", MySQL 11.7).
    body = r"(?:[^{q}\\]|\\.|{q}{q})*" if backslashes else r"(?:[^{q}]|{q}{q})*"
    single = "'" + body.format(q="'") + "'"
    double = '"' + body.format(q='"') + '"'
    string = f"{single}|{double}" if not ansi_quotes else single
    quoted = r"`(?:[^`]|``)*`" + (r'|"(?:[^"]|"")*"' if ansi_quotes else "")
    var_name = rf"[\w$.]+|{single}|{double}|`(?:[^`]|``)*`"
    return re.compile(
        rf"""
          \s+
        | (?:--(?=[\s\x00-\x1f]|$)|\#)[^\n]*
        | (?P<x>/\*M?!\d*)
        | /\*(?:[^*]|\*(?!/))*\*/
        | (?P<s>{string})
        | (?P<q>{quoted})
        | (?P<V>@@(?:(?:global|session|local)\s*\.\s*)?[\w$]+)
        | (?P<v>@(?:{var_name}))
        | (?P<p>%\([^)]*\)s|%s|%%|\?)
        | (?P<n>{_NUMBER})
        | (?P<w>{_IDENT})
        | (?P<bad>/\*|['"`])
        | (?P<xe>\*/)
        | (?P<o>:=|[^\s])
        """,
        re.X | re.S | re.I,
    )


def _unquote(text: str) -> str:
    q = text[0]
    return text[1:-1].replace(q + q, q)


def _nested_comment_end(sql: str, start: int) -> int:
    """The end of the PostgreSQL comment opened at ``start`` (comments nest)."""
    depth, i = 0, start
    while True:
        opening, closing = sql.find("/*", i), sql.find("*/", i)
        if closing < 0:
            raise _Unreadable
        if 0 <= opening < closing:
            depth, i = depth + 1, opening + 2
        else:
            depth, i = depth - 1, closing + 2
            if depth == 0:
                return i


_PG_PLAIN_OP = re.compile(r"[~!@#%^&|`?]")


def _pg_tokens(sql: str, pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    toks: list[tuple[str, str]] = []
    append = toks.append
    pos, end = 0, len(sql)
    match = pattern.match
    while pos < end:
        m = match(sql, pos)
        if m is None:  # pragma: no cover - the last alternative matches any character
            raise _Unreadable
        kind = m.lastgroup
        pos = m.end()
        if kind is None:
            continue
        text = m.group(kind)
        if kind == "w":
            append(("w", text.upper()))
        elif kind == "o":
            if len(text) > 1 and text[-1] in "+-" and text != "::" and not _PG_PLAIN_OP.search(text):
                # "A multi-character operator name cannot end in + or -, unless the name
                # also contains at least one of ~ ! @ # % ^ & | ` ?" (PostgreSQL 15, 4.1.3)
                stripped = text.rstrip("+-") or text[0]
                append(("o", stripped))
                for ch in text[len(stripped):]:
                    append(("o", ch))
            else:
                append(("o", text))
        elif kind == "q":
            append(("q", _unquote(text)))
        elif kind == "nested":
            try:
                pos = _nested_comment_end(sql, m.start())
            except _Unreadable:
                raise _Unreadable(toks) from None
        elif kind == "bad":
            raise _Unreadable(toks)
        elif kind == "p":
            append(("o", "%") if text == "%%" else ("p", text))
        else:  # s, d, n
            append(("s" if kind == "d" else kind, text))
    return toks


# The fast path: one findall over text without block comments or dollar quotes (all the
# SQL an ORM writes), then a dispatch on each token's first character. Text with "/*" or
# "$" takes the careful paths above and below.

def _pg_fast_pattern(standard_strings: bool) -> re.Pattern[str]:
    plain = r"'[^']*(?:''[^']*)*'" if standard_strings else r"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'"
    return re.compile(
        rf"""\s*(
          "[^"]*(?:""[^"]*)*"
        | [Ee]'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'
        | [^\W\d][\w$]*
        | {plain}
        | --[^\n]*
        | %\([^)]*\)s|%s|%%
        | {_NUMBER}
        | (?:[+*<>=~!@\#^&|`?/]|%(?![s(%])|-(?!-))+
        | ::
        | \S
        )""",
        re.X,
    )


_PUNCT_CHARS = frozenset("(),.;[]:")


def _pg_fast_tokens(sql: str, pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    toks: list[tuple[str, str]] = []
    append = toks.append
    for tok in pattern.findall(sql):
        c = tok[0]
        if c == '"':
            if len(tok) == 1:
                raise _Unreadable(toks)
            append(("q", tok[1:-1].replace('""', '"')))
        elif len(tok) == 1 and c in _PUNCT_CHARS:
            append(("o", tok))
        elif c.isalpha() or c == "_":
            if tok[-1] == "'" and len(tok) > 1 and tok[1] == "'":
                append(("s", tok))  # E'...'
            else:
                append(("w", tok.upper()))
        elif c == "'":
            if len(tok) == 1:
                raise _Unreadable(toks)
            append(("s", tok))
        elif c == "%" and (tok == "%s" or tok[:2] == "%("):
            append(("p", tok))
        elif c.isdigit() or c == ".":
            append(("n", tok))
        elif c == "-" and tok[:2] == "--":
            continue
        elif tok == "%%":
            append(("o", "%"))
        elif len(tok) > 1 and tok[-1] in "+-" and tok != "::" and not _PG_PLAIN_OP.search(tok):
            stripped = tok.rstrip("+-") or tok[0]  # see _pg_tokens
            append(("o", stripped))
            for ch in tok[len(stripped):]:
                append(("o", ch))
        else:
            append(("o", tok))
    return toks


def _mysql_fast_pattern(backslashes: bool, ansi_quotes: bool) -> re.Pattern[str]:
    body = r"[^{q}\\]*(?:(?:\\.|{q}{q})[^{q}\\]*)*" if backslashes else r"[^{q}]*(?:{q}{q}[^{q}]*)*"
    single = "'" + body.format(q="'") + "'"
    double = '"' + body.format(q='"') + '"'
    return re.compile(
        rf"""\s*(
          `[^`]*(?:``[^`]*)*`
        | {'"[^"]*(?:""[^"]*)*"' if ansi_quotes else double}
        | [^\W\d][\w$]*
        | {single}
        | (?:--(?=[\s\x00-\x1f]|$)|\#)[^\n]*
        | @@(?:(?:global|session|local)\s*\.\s*)?[\w$]+
        | @(?:[\w$.]+|{single}|{double}|`[^`]*(?:``[^`]*)*`)
        | %\([^)]*\)s|%s|%%
        | {_NUMBER}
        | :=
        | \S
        )""",
        re.X | re.I,
    )


def _mysql_fast_tokens(sql: str, pattern: re.Pattern[str], ansi_quotes: bool) -> list[tuple[str, str]]:
    toks: list[tuple[str, str]] = []
    append = toks.append
    quote = '"' if ansi_quotes else "`"
    for tok in pattern.findall(sql):
        c = tok[0]
        if c == "`" or c == quote:
            if len(tok) == 1:
                raise _Unreadable(toks)
            append(("q", tok[1:-1].replace(c + c, c)))
        elif len(tok) == 1 and c in _PUNCT_CHARS:
            append(("o", tok))
        elif c.isalpha() or c == "_":
            append(("w", tok.upper()))
        elif c == "'" or c == '"':
            if len(tok) == 1:
                raise _Unreadable(toks)
            append(("s", tok))
        elif c == "@":
            if tok[:2] == "@@":
                append(("V", "".join(tok.split()).upper()))
            elif len(tok) > 1:
                append(("v", tok))
            else:
                append(("o", tok))
        elif c == "%" and (tok == "%s" or tok[:2] == "%("):
            append(("p", tok))
        elif c == "?":
            append(("p", tok))
        elif c.isdigit() or c == ".":
            append(("n", tok))
        elif c == "#" or tok[:2] == "--":
            continue
        elif tok == "%%":
            append(("o", "%"))
        else:
            append(("o", tok))
    return toks


def _mysql_tokens(sql: str, pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    toks: list[tuple[str, str]] = []
    append = toks.append
    executable = False
    for m in pattern.finditer(sql):
        kind = m.lastgroup
        if kind is None:
            continue
        text = m.group(kind)
        if kind == "w":
            append(("w", text.upper()))
        elif kind == "x":
            if executable:  # executable comments do not nest
                raise _Unreadable(toks)
            executable = True
        elif kind == "xe":
            if executable:
                executable = False
            else:
                append(("o", "*"))
                append(("o", "/"))
        elif kind == "q":
            append(("q", _unquote(text)))
        elif kind == "bad":
            raise _Unreadable(toks)
        elif kind == "p":
            append(("o", "%") if text == "%%" else ("p", text))
        elif kind == "V":
            append(("V", "".join(text.split()).upper()))
        elif kind == "v":
            append(("v", text))
        else:  # s, n, o
            append((kind, text))
    if executable:
        raise _Unreadable(toks)
    return toks


# -- statement analysis shared by both servers -----------------------------------------------

# Keywords that may stand before "(" without being a function call.
_NOT_CALL = frozenset("""
    ALL AND ANY AS ASC BETWEEN BY CASE CHECK COLLATE COLUMNS CONFLICT CONSTRAINT CUBE
    DEFAULT DELETE DESC DISTINCT DO DUPLICATE ELSE END ESCAPE EXCEPT EXCLUDE EXISTS FETCH
    FILTER FOLLOWING FOR FOREIGN FROM GROUP GROUPS HAVING IN INCLUDE INDEX INSERT INTERSECT
    INTO IS JOIN KEY LATERAL LIKE ILIKE LIMIT MATERIALIZED MEMBER MINUS NESTED NOT OF OFFSET
    ON ONLY OPERATOR OR ORDER ORDINALITY OVER OVERLAPS PARTITION PASSING PATH PLACING
    PRECEDING PRIMARY RANGE RECURSIVE REFERENCES REPEATABLE RETURNING ROLLUP ROWS SELECT
    SET SETS SIMILAR SOME SYMMETRIC TABLE THEN TO UNION UNIQUE UPDATE USING VALUES
    VARIADIC VARYING WHEN WHERE WINDOW WITH WITHIN XOR ARRAY ROW
""".split())

# Words after which a name followed by "(" is a type or an alias, not a call.
_TYPE_OR_ALIAS = frozenset({"AS", "::"})
_PUNCTUATION = frozenset({"(", ")", ",", ";", ".", "[", "]", ":", "::"})
_OPEN, _CLOSE, _DOT, _NONE = ("o", "("), ("o", ")"), ("o", "."), ("", "")

_MODIFYING = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"})
_QUERY_HEADS = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})
_LOCK_AFTER_FOR = frozenset({"UPDATE", "SHARE", "NO", "KEY"})


def _is(tok: tuple[str, str] | None, value: str) -> bool:
    return tok is not None and tok[1] == value and tok[0] in "wo"


def _matching(st: list[tuple[str, str]], open_index: int) -> int:
    """The index of the ")" closing the "(" at ``open_index`` (len(st) if none)."""
    depth = 0
    for j in range(open_index, len(st)):
        t, v = st[j]
        if t == "o":
            if v == "(":
                depth += 1
            elif v == ")":
                depth -= 1
                if depth == 0:
                    return j
    return len(st)


class _Dialect:
    """The parts of the analysis both servers share; subclasses fill in the rest."""

    name = ""
    functions: dict[str, Kind]        # builtin name (upper case) -> kind
    argument_dependent: frozenset[str]
    bare_session_words: frozenset[str]  # keywords that read session state without "("

    # -- entry ----------------------------------------------------------------------------

    def classify(self, sql: str, replica_functions: frozenset[str]) -> Kind:
        kind = READ
        for lexer in self.lexers(sql):
            try:
                toks = lexer(sql)
            except _Unreadable as exc:
                # The statements before the unreadable one may run (MySQL runs a
                # multi-statement string one statement at a time).
                done = [k for k, tok in enumerate(exc.toks) if tok == ("o", ";")]
                if done:
                    kind = kind | self.statements(exc.toks[:done[-1]], replica_functions)
                kind = kind | UNREADABLE
                continue
            kind = kind | self.statements(toks, replica_functions)
        return kind

    def lexers(self, sql: str) -> list[Callable[[str], list[tuple[str, str]]]]:
        raise NotImplementedError

    def statements(self, toks: list[tuple[str, str]], rf: frozenset[str]) -> Kind:
        kind = READ
        start = 0
        for i, tok in enumerate(toks):
            if tok == ("o", ";"):
                if i > start:
                    kind = kind | self.statement(toks[start:i], rf)
                start = i + 1
        if start < len(toks):
            kind = kind | self.statement(toks[start:] if start else toks, rf)
        return kind

    def statement(self, st: list[tuple[str, str]], rf: frozenset[str]) -> Kind:
        i = 0
        while i < len(st) and st[i] == ("o", "("):
            i += 1
        if i == len(st):
            return READ  # only parentheses: nothing runs
        t, head = st[i]
        if t != "w":
            return UNKNOWN
        handler = self.heads.get(head)
        if handler is None:
            return UNKNOWN
        if isinstance(handler, Kind):
            return handler
        return handler(self, st, i, rf)

    # The first keyword of a statement -> its kind, or the method that works it out.
    heads: dict[str, Kind | Callable[..., Kind]] = {}

    # -- queries ----------------------------------------------------------------------------

    def query(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        """SELECT, VALUES, TABLE, WITH: READ unless a clause or a call says otherwise."""
        kind = READ
        n = len(st)
        for j in range(i, n):
            t, v = st[j]
            if t != "w":
                continue
            if v == "FOR" and j + 1 < n and st[j + 1][1] in _LOCK_AFTER_FOR and st[j + 1][0] == "w":
                kind = kind | LOCKING
            elif v in _MODIFYING:
                if self.modifies(st, j):
                    kind = kind | WRITE
            elif v == "INTO":
                kind = kind | self.select_into(st, j)
            elif v == "LOCK" and j + 1 < n and st[j + 1] == ("w", "IN"):
                kind = kind | LOCKING  # LOCK IN SHARE MODE
        return kind | self.scan(st, i, rf, strict=True)

    def modifies(self, st: list[tuple[str, str]], j: int) -> bool:
        """Whether the keyword at ``j`` (INSERT, UPDATE...) inside a query modifies data."""
        prev = st[j - 1] if j else None
        nxt = st[j + 1] if j + 1 < len(st) else None
        v = st[j][1]
        if v == "UPDATE" and prev is not None and prev[1] in ("FOR", "KEY", "NO"):
            return False  # FOR UPDATE, FOR NO KEY UPDATE: locking, handled by the caller
        if v in ("INSERT", "REPLACE") and _is(nxt, "("):
            return False  # MySQL's INSERT(str, pos, len, new) and REPLACE(...)
        if prev is not None and prev == ("o", "."):
            return False  # a column called update, t.delete...
        return True

    def select_into(self, st: list[tuple[str, str]], j: int) -> Kind:
        raise NotImplementedError

    # -- expressions --------------------------------------------------------------------------

    def scan(self, st: list[tuple[str, str]], i: int, rf: frozenset[str], strict: bool) -> Kind:
        """Calls, system views and variables in ``st[i:]``. ``strict``: a call of a function
        the classifier does not know counts as UNKNOWN (else it is ignored: DDL)."""
        kind = READ
        n = len(st)
        prev: tuple[str, str] = st[i - 1] if i else ("", "")
        watch = self.watch
        for j in range(i, n):
            tok = st[j]
            t = tok[0]
            if t == "w" or t == "q":
                nxt = st[j + 1] if j + 1 < n else _NONE
                if nxt == _OPEN:
                    if not (
                        (t == "w" and tok[1] in _NOT_CALL)
                        or prev[1] in _TYPE_OR_ALIAS
                        or prev == _CLOSE
                    ):
                        k = self.call(st, j, rf, strict)
                        if k is not READ:
                            kind = kind | k
                elif nxt == _DOT or prev == _DOT or (tok[1] if t == "w" else tok[1].upper()) in watch:
                    k = self.named(st, j, prev, nxt)
                    if k is not READ:
                        kind = kind | k
            elif t == "o":
                if tok[1] not in _PUNCTUATION:
                    k = self.operator(tok[1], st, j, strict)
                    if k is not READ:
                        kind = kind | k
            elif t == "v" or t == "V":
                kind = kind | self.variable(st, j)
            prev = tok
        return kind

    def call(self, st: list[tuple[str, str]], j: int, rf: frozenset[str], strict: bool) -> Kind:
        t, v = st[j]
        schema = None
        if j >= 2 and st[j - 1] == ("o", ".") and st[j - 2][0] in "wq":
            schema = st[j - 2]
        kind = self.builtin(t, v, schema)
        if kind is None:
            name = v.lower()
            if name in rf or (schema is not None and f"{schema[1].lower()}.{name}" in rf):
                return READ
            if not strict or self.not_a_call(st, j):
                return READ
            return UNKNOWN
        if v in self.argument_dependent and t == "w":
            return self.by_arguments(st, j, v)
        return kind

    def builtin(self, t: str, v: str, schema: tuple[str, str] | None) -> Kind | None:
        raise NotImplementedError

    def by_arguments(self, st: list[tuple[str, str]], j: int, name: str) -> Kind:
        raise NotImplementedError

    def not_a_call(self, st: list[tuple[str, str]], j: int) -> bool:
        """Names before "(" that are not calls, checked only for names the classifier does
        not know: a CTE's column list (``WITH t (a) AS (...)``) and an INSERT's target
        table with its column list (``INSERT INTO t (a, b)``)."""
        close = _matching(st, j + 1)
        if close + 2 < len(st) and _is(st[close + 1], "AS") and st[close + 2] in (
            _OPEN, ("w", "MATERIALIZED"), ("w", "NOT")
        ):
            return True  # WITH name (columns) AS [NOT MATERIALIZED] (query)
        k = j
        if k >= 2 and st[k - 1] == ("o", "."):
            k -= 2
        before = st[k - 1] if k else None
        return before is not None and before[0] == "w" and before[1] in (
            "INTO", "INSERT", "IGNORE", "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "REPLACE"
        )

    def named(self, st: list[tuple[str, str]], j: int, prev: tuple[str, str],
              nxt: tuple[str, str]) -> Kind:
        """A name not followed by "(": a keyword reading session state, a system view."""
        raise NotImplementedError

    watch: frozenset[str] = frozenset()  # words (upper case) that named() must see

    def operator(self, op: str, st: list[tuple[str, str]], j: int, strict: bool) -> Kind:
        return READ

    def variable(self, st: list[tuple[str, str]], j: int) -> Kind:
        return READ

    # -- statements of a fixed kind, with calls scanned ----------------------------------------

    def write(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        """DML: WRITE, and whatever its expressions call."""
        return WRITE | self.scan(st, i + 1, rf, strict=True)

    def ddl(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        """DDL and maintenance: WRITE, and the known builtins it calls (names in a DDL
        statement followed by "(" are mostly tables and types, so unknown ones are not
        counted)."""
        return WRITE | self.scan(st, i + 1, rf, strict=False)

    def explain(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        """EXPLAIN [options] statement: the kind of the statement (EXPLAIN ANALYZE runs it;
        without ANALYZE it does not, but judging it the same way stays on the safe side)."""
        j, n = i + 1, len(st)
        if j + 1 < n and st[j] == _OPEN and st[j + 1] != _OPEN and st[j + 1][1] not in _QUERY_HEADS:
            j = _matching(st, j) + 1  # PostgreSQL: EXPLAIN (ANALYZE, BUFFERS) statement
        while j < n and st[j][0] == "w" and st[j][1] in self.explain_options:
            j += 1
            if j + 1 < n and st[j] == ("o", "="):  # MySQL: FORMAT = JSON
                j += 2
        if j >= n:
            return UNKNOWN
        return self.statement(st[j:], rf)

    explain_options: frozenset[str] = frozenset()


# -- PostgreSQL ------------------------------------------------------------------------------

def _split(text: str) -> list[str]:
    return text.split()


# Functions whose PostgreSQL label says too little or too much, with the section of the
# PostgreSQL 15 documentation that says what they do.
_PG_REVIEWED: dict[str, Kind] = {}


def _review(kind: Kind, names: str) -> None:
    for name in names.split():
        _PG_REVIEWED[name] = kind


# 9.27.1 Configuration Settings Functions; 9.3 Mathematical Functions (setseed seeds the
# session's random()); 9.27.10 Advisory Lock Functions (session level); F.35 pg_trgm
# (set_limit sets the session's pg_trgm.similarity_threshold).
_review(SESSION, """
    setseed pg_advisory_lock pg_advisory_lock_shared pg_try_advisory_lock
    pg_try_advisory_lock_shared set_limit pg_backup_start pg_backup_stop
""")
# 9.17 Sequence Manipulation Functions: nextval and setval write the sequence and define
# the session's currval and lastval.
_review(SESSION_WRITE, "nextval setval")
# 9.27.5 Snapshot Synchronization Functions: an exported snapshot lives until the
# transaction ends.
_review(CONTROL, "pg_export_snapshot")
# 9.27.10: transaction-level advisory locks are released at the end of the transaction,
# but lock nothing unless taken on the primary.
_review(LOCKING, """
    pg_advisory_xact_lock pg_advisory_xact_lock_shared pg_try_advisory_xact_lock
    pg_try_advisory_xact_lock_shared
""")
# Read the session's state (9.17 currval/lastval; 9.27.10 unlocks act on the session's
# locks; 9.27.1 settings; 9.26 Session Information Functions, Transaction ID and Snapshot
# Information Functions) or the server's own, which differs between a primary and its
# replicas (9.26 server start and configuration, 9.27.4 Recovery Control, 9.27.9 Generic
# File Access, 9.27.3 WAL positions, 28.2 statistics, 9.26 Committed Transaction
# Information, replication slots, the server's installed extensions).
_review(SESSION_READ, """
    currval lastval pg_advisory_unlock pg_advisory_unlock_shared pg_advisory_unlock_all
    current_setting pg_show_all_settings show_limit
    current_schema current_schemas current_user session_user getpgusername
    pg_client_encoding pg_current_xact_id_if_assigned txid_current_if_assigned
    pg_current_snapshot txid_current_snapshot
    version pg_postmaster_start_time pg_jit_available
    pg_is_in_recovery pg_last_wal_receive_lsn pg_last_wal_replay_lsn
    pg_last_xact_replay_timestamp pg_is_wal_replay_paused pg_get_wal_replay_pause_state
    pg_current_wal_lsn pg_current_wal_insert_lsn pg_current_wal_flush_lsn
    pg_control_checkpoint pg_control_system pg_control_init pg_control_recovery
    pg_current_logfile pg_ls_dir pg_ls_logdir pg_ls_waldir pg_ls_archive_statusdir
    pg_ls_tmpdir pg_ls_logicalmapdir pg_ls_logicalsnapdir pg_ls_replslotdir pg_read_file
    pg_read_file_old pg_read_binary_file pg_stat_file pg_hba_file_rules
    pg_ident_file_mappings pg_show_all_file_settings pg_get_shmem_allocations
    pg_blocking_pids pg_safe_snapshot_blocking_pids pg_lock_status
    pg_isolation_test_session_is_blocked pg_prepared_xact pg_get_multixact_members
    pg_xact_commit_timestamp pg_xact_commit_timestamp_origin pg_last_committed_xact
    pg_xact_status txid_status pg_get_replication_slots pg_available_extensions
    pg_available_extension_versions pg_extension_update_paths pg_stat_get_recovery_prefetch
    pg_sequence_last_value
""")
# Act on the server (9.27.2 Server Signaling, 9.27.3 Backup Control, 9.27.4 Recovery
# Control, 28.2 statistics reset functions), assign a transaction ID (9.26, Transaction ID
# and Snapshot Information Functions), notify (NOTIFY, whose pg_notify form it documents),
# or touch large objects (35.4 Server-Side Functions).
_review(WRITE, """
    pg_cancel_backend pg_terminate_backend pg_reload_conf pg_rotate_logfile
    pg_rotate_logfile_old pg_promote pg_wal_replay_pause pg_wal_replay_resume
    pg_create_restore_point pg_switch_wal pg_log_backend_memory_contexts pg_stat_reset
    pg_stat_reset_shared pg_stat_reset_single_table_counters
    pg_stat_reset_single_function_counters pg_stat_reset_slru pg_stat_reset_replication_slot
    pg_stat_reset_subscription_stats pg_import_system_collations pg_notify txid_current
    pg_current_xact_id lo_close lo_creat lo_create lo_export lo_from_bytea lo_get lo_import
    lo_lseek lo_lseek64 lo_open lo_put lo_tell lo_tell64 lo_truncate lo_truncate64
    lo_unlink loread lowrite
""")
# Labelled restricted or unsafe, yet a plain read: random() is restricted only because
# setseed() gives it session state, and setseed() keeps the connection on the primary;
# age(xid) reads the transaction horizon through a per-transaction cache; the tablesample
# methods of tsm_system_rows and tsm_system_time carry no label at all.
_review(READ, "random age system_rows system_time")

# SQL constructs written like calls that are not in pg_proc under that name.
_PG_SYNTAX = """
    coalesce nullif greatest least cast treat trim grouping xmlelement xmlforest xmlparse
    xmlpi xmlroot xmlserialize xmlconcat xmlexists xmlattributes xmltable xmlnamespaces
    current_date current_time current_timestamp localtime localtimestamp char character
    varchar decimal dec float double precision time timestamp interval bit nchar national
    numeric
"""


def _pg_functions() -> dict[str, Kind]:
    default = {"s": READ, "r": SESSION_READ, "u": SESSION_WRITE}
    out: dict[str, Kind] = {}
    for table in (_names.POSTGRESQL_FUNCTIONS, _names.POSTGRESQL_CONTRIB):
        for label, names in table.items():
            # Immutable functions cannot modify the database nor read anything outside
            # their arguments (PostgreSQL 15, 38.7 Function Volatility Categories),
            # whatever their parallel label (old contrib functions carry none).
            kind = READ if label[0] == "i" else default[label[1]]
            for name in names.split():
                prior = out.get(name.upper())
                out[name.upper()] = kind if prior is None else prior | kind
    for name in _PG_SYNTAX.split():
        out.setdefault(name.upper(), READ)
    for name, kind in _PG_REVIEWED.items():
        out[name.upper()] = kind
    out["SET_CONFIG"] = SESSION  # refined by its arguments
    return out


class _PostgreSQL(_Dialect):
    name = "postgresql"
    argument_dependent = frozenset({"SET_CONFIG"})
    # 9.26 Session Information Functions written without parentheses.
    bare_session_words = frozenset({
        "CURRENT_USER", "SESSION_USER", "CURRENT_ROLE", "USER", "CURRENT_SCHEMA", "SYSTEM_USER",
    })
    explain_options = frozenset({"ANALYZE", "ANALYSE", "VERBOSE"})

    def __init__(self) -> None:
        self.functions = _pg_functions()
        self.operators = frozenset(_names.POSTGRESQL_OPERATORS) | {"!=", "=>"}
        self.views: dict[str, Kind] = {}
        for view, funcs in _names.POSTGRESQL_VIEWS.items():
            kind = READ
            for f in funcs:
                kind = kind | self.functions.get(f.upper(), UNKNOWN)
            if kind is not READ:
                self.views[view.upper()] = kind
        self.watch = self.bare_session_words | {v for v in self.views if "." not in v}
        self._careful = {m: _pg_pattern(m) for m in (True, False)}
        self._fast = {m: _pg_fast_pattern(m) for m in (True, False)}

    def lexers(self, sql: str) -> list[Callable[[str], list[tuple[str, str]]]]:
        # The server's standard_conforming_strings decides how a backslash in '...' reads:
        # where there is one, read the text both ways.
        modes = (True, False) if "\\" in sql else (True,)
        if "$" in sql or "/*" in sql:
            return [partial(_pg_tokens, pattern=self._careful[m]) for m in modes]
        return [partial(_pg_fast_tokens, pattern=self._fast[m]) for m in modes]

    def builtin(self, t: str, v: str, schema: tuple[str, str] | None) -> Kind | None:
        if schema is not None:
            qualifier = schema[1].lower()
            if qualifier == "pg_temp" or qualifier.startswith("pg_temp_"):
                return None  # a temporary function: unknown (and session state)
            if qualifier != "pg_catalog":
                return None  # a function of a user's schema, even if named like a builtin
        if t == "q":
            if v != v.lower():
                return None  # "Lower"(x) is not lower(x): quoted names keep their case
            v = v.upper()
        return self.functions.get(v)

    def by_arguments(self, st: list[tuple[str, str]], j: int, name: str) -> Kind:
        # set_config(name, value, is_local): is_local true lasts until the transaction
        # ends, like SET LOCAL; false (or anything not a literal true) is a session SET.
        close = _matching(st, j + 1)
        args: list[list[tuple[str, str]]] = [[]]
        depth = 0
        for tok in st[j + 2:close]:
            if tok[0] == "o" and tok[1] in "([":
                depth += 1
            elif tok[0] == "o" and tok[1] in ")]":
                depth -= 1
            if depth == 0 and tok == ("o", ","):
                args.append([])
            else:
                args[-1].append(tok)
        inner = READ
        for arg in args:
            inner = inner | self.scan(arg, 0, frozenset(), strict=True) if arg else inner
        if len(args) == 3 and args[2] in ([("w", "TRUE")], [("s", "'t'")], [("s", "'true'")], [("s", "'on'")]):
            return CONTROL | inner
        return SESSION | inner

    def named(self, st: list[tuple[str, str]], j: int, prev: tuple[str, str],
              nxt: tuple[str, str]) -> Kind:
        t, v = st[j]
        key = v if t == "w" else v.upper()
        if nxt == _DOT:
            if key == "PG_TEMP" or key.startswith("PG_TEMP_"):
                return SESSION_READ  # pg_temp.t: the session's temporary objects
            return READ
        if prev == _DOT:
            qualifier = st[j - 2][1].upper() if j >= 2 else ""
            if qualifier == "INFORMATION_SCHEMA":
                return self.views.get("INFORMATION_SCHEMA." + key, READ)
            if qualifier == "PG_CATALOG":
                return self.views.get(key, READ)
            return READ  # a column, or a relation of another schema
        if t == "w" and v in self.bare_session_words:
            return READ if prev[1] == "AS" else SESSION_READ
        return self.views.get(key, READ)

    def operator(self, op: str, st: list[tuple[str, str]], j: int, strict: bool) -> Kind:
        if strict and op not in self.operators:
            return UNKNOWN  # an operator of a user, or of an extension not listed
        return READ

    # -- statements ---------------------------------------------------------------------------

    def select_into(self, st: list[tuple[str, str]], j: int) -> Kind:
        # SELECT ... INTO [TEMP | TEMPORARY | UNLOGGED] [TABLE] name creates a table.
        nxt = st[j + 1][1] if j + 1 < len(st) else ""
        if nxt in ("TEMP", "TEMPORARY") or self.mentions_pg_temp(st):
            return SESSION
        return WRITE

    def mentions_pg_temp(self, st: list[tuple[str, str]]) -> bool:
        for k, (t, v) in enumerate(st[:-1]):
            if t in "wq" and st[k + 1] == ("o", "."):
                low = v.lower()
                if low == "pg_temp" or low.startswith("pg_temp_"):
                    return True
        return False

    def set_statement(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        # SET [SESSION | LOCAL] ...; SET TRANSACTION / SET CONSTRAINTS act on the current
        # transaction only; SET SESSION CHARACTERISTICS, SET ROLE, SET SESSION
        # AUTHORIZATION, SET TIME ZONE... change the session (PostgreSQL 15, SET).
        nxt = st[i + 1][1] if i + 1 < len(st) else ""
        if nxt in ("LOCAL", "TRANSACTION", "CONSTRAINTS"):
            return CONTROL
        return SESSION

    def create(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        j = i + 1
        temporary = False
        while j < len(st) and st[j][0] == "w" and st[j][1] in (
            "OR", "REPLACE", "GLOBAL", "LOCAL", "TEMP", "TEMPORARY", "UNLOGGED", "RECURSIVE",
        ):
            temporary = temporary or st[j][1] in ("TEMP", "TEMPORARY")
            j += 1
        if temporary or self.mentions_pg_temp(st):
            return SESSION | self.scan(st, i + 1, rf, strict=False)
        return self.ddl(st, i, rf)

    def declare(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        # DECLARE name [...] CURSOR [WITH HOLD | WITHOUT HOLD] FOR query: a cursor WITH
        # HOLD outlives its transaction; without, it ends with it.
        j = i + 1
        while j < len(st) and st[j] != ("w", "FOR"):
            j += 1
        words = {v for t, v in st[i:j] if t == "w"}
        kind = SESSION if "HOLD" in words and "WITHOUT" not in words else CONTROL
        if j + 1 < len(st):
            kind = kind | self.statement(st[j + 1:], rf)
        return kind

    def rollback(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        # COMMIT PREPARED / ROLLBACK PREPARED finish a two-phase transaction: a write.
        nxt = st[i + 1][1] if i + 1 < len(st) else ""
        return WRITE if nxt == "PREPARED" else CONTROL

    def prepare(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        nxt = st[i + 1][1] if i + 1 < len(st) else ""
        return WRITE if nxt == "TRANSACTION" else SESSION

    heads: dict[str, Kind | Callable[..., Kind]] = {
        "SELECT": _Dialect.query, "VALUES": _Dialect.query, "TABLE": _Dialect.query,
        "WITH": _Dialect.query,
        "BEGIN": CONTROL, "START": CONTROL, "END": CONTROL, "ABORT": CONTROL,
        "SAVEPOINT": CONTROL, "RELEASE": CONTROL, "COMMIT": rollback, "ROLLBACK": rollback,
        "SET": set_statement, "RESET": SESSION_READ, "DISCARD": SESSION_READ, "SHOW": SESSION_READ,
        "PREPARE": prepare, "EXECUTE": SESSION_WRITE, "DEALLOCATE": SESSION_READ,
        "DECLARE": declare, "FETCH": SESSION_READ, "MOVE": SESSION_READ, "CLOSE": SESSION_READ,
        "LISTEN": SESSION, "UNLISTEN": SESSION_READ, "NOTIFY": WRITE, "LOAD": SESSION,
        "LOCK": LOCKING, "CREATE": create, "EXPLAIN": _Dialect.explain,
        "CALL": SESSION_WRITE, "DO": SESSION_WRITE,
        "INSERT": _Dialect.write, "UPDATE": _Dialect.write, "DELETE": _Dialect.write,
        "MERGE": _Dialect.write,
        **{word: _Dialect.ddl for word in """
            ALTER DROP TRUNCATE COMMENT GRANT REVOKE VACUUM ANALYZE ANALYSE CLUSTER REINDEX
            CHECKPOINT REFRESH SECURITY IMPORT REASSIGN COPY
        """.split()},
    }


# -- MariaDB and MySQL -----------------------------------------------------------------------

# MariaDB "Information Functions", "Miscellaneous Functions" ("Locking functions"),
# "Sequence Functions"; MySQL 8.0 manual 14.14 Locking Functions, 14.15 Information
# Functions, 19.1.7 (replication functions), 14.21 Performance Schema Functions.
_MYSQL_REVIEWED: dict[str, Kind] = {
    **dict.fromkeys(["GET_LOCK"], SESSION),
    **dict.fromkeys(["NEXTVAL", "SETVAL"], SESSION_WRITE),
    **dict.fromkeys(["FOUND_ROWS", "ROW_COUNT"], DIAGNOSTICS),
    **dict.fromkeys("""
        LASTVAL CONNECTION_ID RELEASE_LOCK RELEASE_ALL_LOCKS
        IS_FREE_LOCK IS_USED_LOCK CURRENT_USER CURRENT_ROLE USER SESSION_USER SYSTEM_USER
        DATABASE SCHEMA SCHEMAS BINLOG_GTID_POS MASTER_GTID_WAIT MASTER_POS_WAIT
        SOURCE_POS_WAIT WAIT_FOR_EXECUTED_GTID_SET WAIT_UNTIL_SQL_THREAD_AFTER_GTIDS
        WSREP_LAST_SEEN_GTID WSREP_LAST_WRITTEN_GTID WSREP_SYNC_WAIT_UPTO_GTID LOAD_FILE
        VERSION PS_CURRENT_THREAD_ID PS_THREAD_ID ROLES_GRAPHML DES_ENCRYPT DES_DECRYPT
    """.split(), SESSION_READ),
    "LAST_INSERT_ID": SESSION_READ,  # refined by its arguments
}

# Functions of MySQL 8 that MariaDB does not have (MySQL 8.0 manual, 14.1 Built-In
# Function and Operator Reference), and constructs written like calls that MariaDB's
# function lists leave out; all compute from their arguments only.
_MYSQL_EXTRA = """
    ANY_VALUE BIN_TO_UUID GROUPING GTID_SUBSET GTID_SUBTRACT ICU_VERSION IS_UUID JSON_TABLE
    JSON_SCHEMA_VALID JSON_SCHEMA_VALIDATION_REPORT JSON_STORAGE_FREE JSON_STORAGE_SIZE
    REGEXP_LIKE ROW_NUMBER STATEMENT_DIGEST STATEMENT_DIGEST_TEXT UUID_TO_BIN
    VALIDATE_PASSWORD_STRENGTH ST_LATITUDE ST_LONGITUDE ST_TRANSFORM ST_FRECHETDISTANCE
    ST_HAUSDORFFDISTANCE ST_LINEINTERPOLATEPOINT ST_LINEINTERPOLATEPOINTS
    ST_POINTATDISTANCE ST_SWAPXY ST_ISVALID MBRCOVERS MBREQUALS
    MATCH AGAINST TIME TIMESTAMP VALUE VALUES COLUMN_ADD COLUMN_CREATE COLUMN_DELETE
    COLUMN_GET ROW CHAR_LENGTH SIGNED UNSIGNED
"""


def _mysql_functions() -> dict[str, Kind]:
    out = {name: READ for name in _names.MARIADB_FUNCTIONS}
    for name in _MYSQL_EXTRA.split():
        out[name] = READ
    out.update(_MYSQL_REVIEWED)
    return out


# SHOW statements that read the schema only (MariaDB "SHOW TABLES", "SHOW COLUMNS",
# "SHOW INDEX", "SHOW DATABASES"), after an optional FULL.
_MYSQL_SCHEMA_SHOWS = frozenset({"TABLES", "COLUMNS", "FIELDS", "INDEX", "INDEXES", "KEYS", "DATABASES", "SCHEMAS"})

# Session variables that count the conditions the previous statement raised (MariaDB
# "warning_count", "error_count"): read where that statement ran.
_MYSQL_DIAGNOSTIC_VARIABLES = frozenset(
    f"@@{scope}{name}" for scope in ("", "SESSION.", "LOCAL.") for name in ("WARNING_COUNT", "ERROR_COUNT")
)

# information_schema tables that describe the schema (replicated); every other one reads
# the server's or the session's own state (PROCESSLIST, SESSION_VARIABLES, USER_VARIABLES,
# INNODB_*, ...). performance_schema and sys are the server's own.
_MYSQL_SCHEMA_TABLES = frozenset("""
    CHARACTER_SETS CHECK_CONSTRAINTS COLLATIONS COLLATION_CHARACTER_SET_APPLICABILITY COLUMNS
    COLUMN_PRIVILEGES EVENTS GEOMETRY_COLUMNS KEYWORDS KEY_COLUMN_USAGE PARAMETERS PARTITIONS
    REFERENTIAL_CONSTRAINTS ROUTINES SCHEMATA SCHEMA_PRIVILEGES SPATIAL_REF_SYS SQL_FUNCTIONS
    STATISTICS TABLES TABLE_CONSTRAINTS TABLE_PRIVILEGES TRIGGERS USER_PRIVILEGES VIEWS
    COLUMN_STATISTICS ST_GEOMETRY_COLUMNS ST_SPATIAL_REFERENCE_SYSTEMS ST_UNITS_OF_MEASURE
    VIEW_ROUTINE_USAGE VIEW_TABLE_USAGE
""".split())


class _MySQL(_Dialect):
    name = "mysql"
    argument_dependent = frozenset({"LAST_INSERT_ID"})
    bare_session_words = frozenset({"CURRENT_USER", "CURRENT_ROLE"})
    explain_options = frozenset({"EXTENDED", "PARTITIONS", "FORMAT", "ANALYZE"})

    def __init__(self) -> None:
        self.functions = _mysql_functions()
        modes = [(b, a) for b in (True, False) for a in (False, True)]
        self._careful = {m: _mysql_pattern(*m) for m in modes}
        self._fast = {m: _mysql_fast_pattern(*m) for m in modes}

    def lexers(self, sql: str) -> list[Callable[[str], list[tuple[str, str]]]]:
        # sql_mode decides how quotes read (NO_BACKSLASH_ESCAPES, ANSI_QUOTES): read the
        # text every way it can be read where it makes a difference.
        modes = [(True, False)]
        if "\\" in sql:
            modes.append((False, False))
        if '"' in sql:
            modes += [(b, True) for b, _ in list(modes)]
        if "/*" in sql:
            return [partial(_mysql_tokens, pattern=self._careful[m]) for m in modes]
        return [partial(_mysql_fast_tokens, pattern=self._fast[m], ansi_quotes=m[1]) for m in modes]

    def builtin(self, t: str, v: str, schema: tuple[str, str] | None) -> Kind | None:
        if schema is not None or t == "q":
            return None  # db.f() and `f`() name stored functions, never builtins
        return self.functions.get(v)

    def by_arguments(self, st: list[tuple[str, str]], j: int, name: str) -> Kind:
        # LAST_INSERT_ID() reads the session's value; LAST_INSERT_ID(expr) sets it.
        if j + 2 < len(st) and st[j + 2] == ("o", ")"):
            return SESSION_READ
        return SESSION

    watch = frozenset({"CURRENT_USER", "CURRENT_ROLE", "SQL_CALC_FOUND_ROWS", "VALUE"})

    def named(self, st: list[tuple[str, str]], j: int, prev: tuple[str, str],
              nxt: tuple[str, str]) -> Kind:
        t, v = st[j]
        key = v if t == "w" else v.upper()
        if nxt == _DOT:
            # performance_schema.x, sys.x: the server's own state
            return SESSION_READ if key in ("PERFORMANCE_SCHEMA", "SYS") else READ
        if prev == _DOT:
            if key in ("NEXTVAL", "CURRVAL", "LASTVAL") and t == "w":  # seq.nextval (ORACLE mode)
                return SESSION_WRITE if key == "NEXTVAL" else SESSION_READ
            qualifier = st[j - 2][1].upper() if j >= 2 else ""
            if qualifier == "INFORMATION_SCHEMA" and key not in _MYSQL_SCHEMA_TABLES:
                return SESSION_READ
            return READ
        if t != "w":
            return READ
        if key in self.bare_session_words:
            return SESSION_READ
        if key == "SQL_CALC_FOUND_ROWS":
            return SESSION  # FOUND_ROWS() must then run where this ran
        if key == "VALUE" and prev[1] in ("NEXT", "PREVIOUS") and _is(nxt, "FOR"):
            return SESSION_WRITE if prev[1] == "NEXT" else SESSION_READ  # NEXT VALUE FOR seq
        return READ

    def operator(self, op: str, st: list[tuple[str, str]], j: int, strict: bool) -> Kind:
        return SESSION if op == ":=" else READ  # @x := value

    def variable(self, st: list[tuple[str, str]], j: int) -> Kind:
        # @x := ... assigns a user variable; @@warning_count and @@error_count count the
        # previous statement's conditions; any other use of @x or @@x reads the session
        t, v = st[j]
        if t == "v" and j + 1 < len(st) and st[j + 1] == ("o", ":="):
            return SESSION
        if t == "V" and v in _MYSQL_DIAGNOSTIC_VARIABLES:
            return DIAGNOSTICS
        return SESSION_READ

    def show(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        # SHOW WARNINGS / ERRORS [LIMIT ...], SHOW COUNT(*) WARNINGS / ERRORS: the previous
        # statement's conditions. SHOW [FULL] TABLES / COLUMNS, SHOW INDEX, SHOW CREATE
        # TABLE / VIEW, SHOW DATABASES: the schema, which replicas have (Django's
        # introspection asks SHOW FULL TABLES; a temporary table, which only the session
        # has, keeps its connection on the primary anyway). Any other SHOW: the
        # session's or the server's state.
        words = [v for t, v in st[i + 1:i + 6] if t == "w"]
        if words[:1] in (["WARNINGS"], ["ERRORS"]) or (words[:1] == ["COUNT"] and words[1:2] in (
                ["WARNINGS"], ["ERRORS"])):
            return DIAGNOSTICS
        if words[:1] == ["FULL"]:
            words = words[1:]
        if words[:1] and (words[0] in _MYSQL_SCHEMA_SHOWS or (
                words[0] == "CREATE" and words[1:2] in (["TABLE"], ["VIEW"]))):
            return READ
        return SESSION_READ

    # -- statements ---------------------------------------------------------------------------

    def select_into(self, st: list[tuple[str, str]], j: int) -> Kind:
        # SELECT ... INTO @var sets user variables; INTO OUTFILE / DUMPFILE writes a file
        # on the server; INTO a local variable only exists in stored programs.
        nxt = st[j + 1] if j + 1 < len(st) else ("", "")
        if nxt[0] == "w" and nxt[1] in ("OUTFILE", "DUMPFILE"):
            return WRITE
        return SESSION

    def set_statement(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        n = len(st)
        nxt = st[i + 1] if i + 1 < n else ("", "")
        if nxt == ("w", "STATEMENT"):
            # SET STATEMENT var = value [, ...] FOR statement: the settings last for that
            # statement only (MariaDB).
            j = i + 2
            depth = 0
            while j < n and not (depth == 0 and st[j] == ("w", "FOR")):
                if st[j] == ("o", "("):
                    depth += 1
                elif st[j] == ("o", ")"):
                    depth -= 1
                j += 1
            return self.statement(st[j + 1:], rf) if j + 1 < n else UNKNOWN
        # Each assignment: GLOBAL / PERSIST / @@global. change the server (a write on the
        # primary); PASSWORD and DEFAULT ROLE change accounts; everything else, including
        # SET TRANSACTION without a scope (it applies to the next transaction), NAMES,
        # ROLE, user variables and session variables, changes the session.
        kind = READ
        starts = [i + 1]
        depth = 0
        for j in range(i + 1, n):
            tok = st[j]
            if tok == ("o", "("):
                depth += 1
            elif tok == ("o", ")"):
                depth -= 1
            elif depth == 0 and tok == ("o", ","):
                starts.append(j + 1)
        for s in starts:
            first = st[s] if s < n else ("", "")
            if first[0] == "w" and first[1] in ("GLOBAL", "PERSIST", "PERSIST_ONLY", "PASSWORD"):
                kind = kind | WRITE
            elif first == ("w", "DEFAULT") and s + 1 < n and st[s + 1] == ("w", "ROLE"):
                kind = kind | WRITE
            elif first[0] == "V" and first[1].startswith("@@GLOBAL."):
                kind = kind | WRITE
            else:
                kind = kind | SESSION
        return kind | self.scan(st, i + 1, rf, strict=True)

    def create(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        j = i + 1
        while j < len(st) and st[j] in (("w", "OR"), ("w", "REPLACE")):
            j += 1
        if j < len(st) and st[j] == ("w", "TEMPORARY"):
            return SESSION | self.scan(st, i + 1, rf, strict=False)
        return self.ddl(st, i, rf)

    def drop(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        nxt = st[i + 1][1] if i + 1 < len(st) else ""
        if nxt in ("TEMPORARY", "PREPARE"):
            return SESSION_READ  # removes session state, adds none
        return self.ddl(st, i, rf)

    def begin(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        # BEGIN [WORK] starts a transaction; BEGIN NOT ATOMIC ... END is a compound
        # statement (MariaDB), which may do anything.
        nxt = st[i + 1][1] if i + 1 < len(st) else ""
        return UNKNOWN if nxt == "NOT" else CONTROL

    def start(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        nxt = st[i + 1][1] if i + 1 < len(st) else ""
        return CONTROL if nxt == "TRANSACTION" else WRITE  # START SLAVE / REPLICA / ...

    def handler(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        # HANDLER t OPEN keeps a table handle in the session; READ and CLOSE use it.
        return SESSION if ("w", "OPEN") in st[i + 1:i + 5] else SESSION_READ

    def flush(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        # FLUSH TABLES ... WITH READ LOCK / FOR EXPORT leaves the session holding locks.
        words = {v for t, v in st[i:] if t == "w"}
        return SESSION if "LOCK" in words or "EXPORT" in words else WRITE

    def backup(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        nxt = st[i + 1][1] if i + 1 < len(st) else ""
        return SESSION_READ if nxt == "UNLOCK" else SESSION  # BACKUP LOCK / BACKUP STAGE

    def explain(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        # DESCRIBE t [col], EXPLAIN t: the table's columns. EXPLAIN FOR CONNECTION n: another
        # session of this server. Otherwise the statement explained (ANALYZE runs it).
        rest = st[i + 1:]
        if rest and rest[0] == ("w", "FOR"):
            return SESSION_READ
        if rest and rest[0][0] in "wq" and (rest[0][0] == "q" or rest[0][1] not in self.heads) \
                and rest[0][1] not in self.explain_options:
            return READ
        return _Dialect.explain(self, st, i, rf)

    def analyze(self, st: list[tuple[str, str]], i: int, rf: frozenset[str]) -> Kind:
        # MariaDB: ANALYZE [FORMAT=JSON] statement runs and explains it; ANALYZE TABLE
        # updates statistics.
        nxt = st[i + 1][1] if i + 1 < len(st) else ""
        if nxt in ("TABLE", "NO_WRITE_TO_BINLOG", "LOCAL"):
            return self.ddl(st, i, rf)
        return _Dialect.explain(self, st, i, rf)

    heads: dict[str, Kind | Callable[..., Kind]] = {
        "SELECT": _Dialect.query, "VALUES": _Dialect.query, "TABLE": _Dialect.query,
        "WITH": _Dialect.query, "DO": _Dialect.query,
        "BEGIN": begin, "START": start, "COMMIT": CONTROL, "ROLLBACK": CONTROL,
        "SAVEPOINT": CONTROL, "RELEASE": CONTROL,
        "SET": set_statement, "SHOW": show, "USE": SESSION, "HELP": SESSION_READ,
        # GET DIAGNOSTICS reads the previous statement's conditions into user variables
        # (outside stored programs, its only targets): it changes the session.
        "GET": SESSION,
        "PREPARE": SESSION, "EXECUTE": SESSION_WRITE, "DEALLOCATE": SESSION_READ,
        "LOCK": SESSION, "UNLOCK": SESSION_READ, "HANDLER": handler, "FLUSH": flush,
        "BACKUP": backup, "CREATE": create, "DROP": drop,
        "DESCRIBE": explain, "DESC": explain, "EXPLAIN": explain, "ANALYZE": analyze,
        "CALL": SESSION_WRITE,
        "INSERT": _Dialect.write, "REPLACE": _Dialect.write, "UPDATE": _Dialect.write,
        "DELETE": _Dialect.write,
        **{word: _Dialect.ddl for word in """
            ALTER RENAME TRUNCATE GRANT REVOKE LOAD OPTIMIZE REPAIR CHECK CHECKSUM CACHE
            PURGE RESET CHANGE STOP INSTALL UNINSTALL KILL SHUTDOWN BINLOG XA IMPORT
            RESTART CLONE SIGNAL RESIGNAL
        """.split()},
    }


_DIALECT_OBJECTS: dict[str, _Dialect] = {}


def _dialect(dialect: str) -> _Dialect:
    obj = _DIALECT_OBJECTS.get(dialect)
    if obj is None:
        if dialect == "postgresql":
            obj = _PostgreSQL()
        elif dialect == "mysql":
            obj = _MySQL()
        else:
            raise ValueError(
                f"dialect must be 'postgresql' or 'mysql' (MariaDB and MySQL), not {dialect!r}"
            )
        _DIALECT_OBJECTS[dialect] = obj
    return obj


@lru_cache(maxsize=4096)
def classify(sql: str, dialect: str, replica_functions: frozenset[str] = frozenset()) -> Kind:
    """The :class:`Kind` of ``sql`` (one statement or several separated by ``;``: the most
    demanding counts) on a server of ``dialect``: ``"postgresql"`` or ``"mysql"`` (MariaDB
    and MySQL).

    ``replica_functions``: lower-case names (``"f"`` or ``"schema.f"``) of functions that
    are not the server's own builtins and are known to be harmless on a replica (they
    read, and change no session state); any other function the classifier does not know
    makes the statement SESSION_WRITE. Builtins keep their class whatever this says.

    Cached per (sql, dialect, replica_functions): applications repeat their statements.
    Raises ValueError for another dialect.
    """
    return _dialect(dialect).classify(sql, replica_functions)
