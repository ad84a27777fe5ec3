"""Statement splitting of MariaDB dumps (no server needed): the mariadb client's rules, at every
read boundary."""
from __future__ import annotations

import io

import pytest

from backups_app.engines.mysql_parallel import classify
from backups_app.engines.sql_statements import StatementReader, _unescaped_quotes

HARD_DUMP = (
    b"/*M!999999\\- enable the sandbox mode */ \n"
    b"-- MariaDB dump 10.19\n--\n-- Host: 127.0.0.1    Database: it's\n\n"
    b"/*!40101 SET NAMES utf8mb4 */;\n"
    b"# a hash comment with a quote ' and a ; inside\n"
    b"/* a plain comment; with 'quotes' */\n"
    b"CREATE TABLE `we;ird``name` (\n  `a;b` text DEFAULT 'x;y' COMMENT 'it''s; \"fine\"'\n);\n"
    b"INSERT INTO `we;ird``name` VALUES ('semi;colon'),('quote\\'s;'),('back\\\\'),('nl\\n;'),"
    b"(0x3B0A27),('raw\nnewline;\nstill inside'),(\"dq;\\\"\"),('-- not a comment;'),('/* nor this; */');\n"
    b"SELECT 5--3;\n"
    b"SELECT 1 -- trailing comment; with a quote '\n;\n"
    b"--\n/*!50003 SET @x = 'cond;itional' */;\n"
    b"DELIMITER ;;\n"
    b"/*!50003 CREATE*/ /*!50003 TRIGGER t BEFORE INSERT ON x FOR EACH ROW BEGIN SET @a = 1; SET @b = ';;'; END */;;\n"
    b"DELIMITER ;\n"
    b"delimiter $$\nCREATE PROCEDURE p() BEGIN SELECT '$'; SELECT 1; END$$\ndelimiter ;\n"
    b"SELECT 'last'"
)

EXPECTED = [
    b"/*!40101 SET NAMES utf8mb4 */",
    b"CREATE TABLE `we;ird``name` (\n  `a;b` text DEFAULT 'x;y' COMMENT 'it''s; \"fine\"'\n)",
    b"INSERT INTO `we;ird``name` VALUES ('semi;colon'),('quote\\'s;'),('back\\\\'),('nl\\n;'),"
    b"(0x3B0A27),('raw\nnewline;\nstill inside'),(\"dq;\\\"\"),('-- not a comment;'),('/* nor this; */')",
    b"SELECT 5--3",
    b"SELECT 1 -- trailing comment; with a quote '\n",
    b"/*!50003 SET @x = 'cond;itional' */",
    b"/*!50003 CREATE*/ /*!50003 TRIGGER t BEFORE INSERT ON x FOR EACH ROW BEGIN SET @a = 1; SET @b = ';;'; END */",
    b"CREATE PROCEDURE p() BEGIN SELECT '$'; SELECT 1; END",
    b"SELECT 'last'",
]


@pytest.mark.parametrize("read_size", [1, 2, 3, 7, 64, 1 << 20])
def test_statements_end_where_the_client_ends_them_at_any_read_boundary(read_size):
    assert list(StatementReader(io.BytesIO(HARD_DUMP), read_size=read_size)) == EXPECTED


def test_binary_bytes_and_a_long_string_split_the_same():
    blob = bytes(range(256)).replace(b"'", b"\\'").replace(b"\\", b"\\\\").replace(b"\\\\'", b"\\'")
    long_text = b"x;" * 300_000
    dump = b"INSERT INTO `b` VALUES ('" + blob + b"'),('" + long_text + b"');\nSELECT 2;\n"
    for read_size in (5, 4096, 1 << 20):
        statements = list(StatementReader(io.BytesIO(dump), read_size=read_size))
        assert statements == [dump[: dump.index(b");\nSELECT") + 1], b"SELECT 2"]


def test_without_backslash_escapes_a_backslash_ends_nothing():
    reader = StatementReader(io.BytesIO(b"SELECT 'C:\\';\nSELECT 'next';\n"))
    reader.backslash_escapes = False
    assert list(reader) == [b"SELECT 'C:\\'", b"SELECT 'next'"]
    # With escapes (the default) the first string goes on and the last one never ends: all of it
    # is one statement, sent at the end of the stream as the client does (the server refuses it).
    assert list(StatementReader(io.BytesIO(b"SELECT 'C:\\';\nSELECT 'next';\n"))) == [b"SELECT 'C:\\';\nSELECT 'next';\n"]


def test_client_commands_are_sql_for_the_server_not_commands():
    dump = b"\\! touch /tmp/x\nsystem touch /tmp/y;\nsource /etc/passwd;\n"
    assert list(StatementReader(io.BytesIO(dump))) == [b"\\! touch /tmp/x\nsystem touch /tmp/y", b"source /etc/passwd"]


def test_a_dump_of_comments_only_has_no_statements():
    assert list(StatementReader(io.BytesIO(b"-- nothing\n/* here */\n\n# at all\n-- Dump completed"))) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [(rb"'a'", 2), (rb"'a\'b'", 2), (rb"'a\\'", 2), (rb"'a\\\'b'", 2), (rb"'a\\\\'", 2), (rb"'a\'", 1)],
)
def test_unescaped_quotes_follow_backslash_runs(text, expected):
    assert _unescaped_quotes(text) == expected


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (b"INSERT INTO `messages` VALUES (1)", ("insert", "messages")),
        (b"INSERT INTO `we``ird` VALUES (1)", ("insert", "we`ird")),
        (b"/*!40101 SET NAMES utf8mb4 */", ("set", None)),
        (b"/*!50003 SET sql_mode = '' */ ", ("set", None)),
        (b"LOCK TABLES `t` WRITE", ("skip", None)),
        (b"UNLOCK TABLES", ("skip", None)),
        (b"DROP TABLE IF EXISTS `t`", ("table", "t")),
        (b"CREATE TABLE `t` (\n  `id` int)", ("table", "t")),
        (b"/*!40000 ALTER TABLE `t` DISABLE KEYS */", ("table", "t")),
        (b"/*!40000 ALTER TABLE `t` ENABLE KEYS */", ("enable-keys", "t")),
        (b"/*!50001 CREATE VIEW `v` AS SELECT 1 */", ("barrier", None)),
        (b"/*!50003 CREATE*/ /*!50003 TRIGGER x */", ("barrier", None)),
        (b"ALTER TABLE `t` ADD COLUMN x int", ("barrier", None)),
        (b"\\! touch /tmp/x", ("barrier", None)),
    ],
)
def test_statements_are_classified_by_their_first_words(statement, expected):
    assert classify(statement) == expected
