"""gzip through ISA-L (the `isal` package) stays the standard format: `gunzip` reads what we write,
and we read what `gzip` wrote (backups taken before the switch)."""
from __future__ import annotations

import io
import os
import shutil
import subprocess

import pytest

from backups_app import pipeline
from backups_app.exceptions import BackupError
from backups_app.pipeline import DecompressingReader, Decompressor, make_compressor, stream_check


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("OPSDESK_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{tool} is not installed; OPSDESK_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(f"{tool} is not installed")
    return path


def dump_like_text() -> bytes:
    rows = b",\n".join(
        b"(%d,'l\\'un;e \\\\ \xc3\xa9\xf0\x9f\x98\x80 %d',0x%s,NULL)" % (index, index * 7, bytes(range(index % 256)).hex().encode())
        for index in range(20000)
    )
    return b"INSERT INTO `t` VALUES " + rows + b";\n-- Dump completed on 2026-11-29\n"


def compress(data: bytes) -> bytes:
    compressor = make_compressor("gzip")
    parts = [compressor.compress(data[start : start + 65536]) for start in range(0, len(data), 65536)]
    return b"".join(parts) + compressor.flush()


def test_gzip_goes_through_isal_when_it_is_installed():
    pytest.importorskip("isal")
    assert pipeline.gzip_zlib.__name__ == "isal.isal_zlib"


def test_the_real_gunzip_reads_what_we_write(tmp_path):
    gunzip = require("gunzip")
    data = dump_like_text()
    path = tmp_path / "dump.sql.gz"
    path.write_bytes(compress(data))
    subprocess.run([gunzip, "--test", str(path)], check=True)
    assert subprocess.run([gunzip, "--stdout", str(path)], check=True, capture_output=True).stdout == data


def test_we_read_what_the_real_gzip_wrote():
    gzip_tool = require("gzip")
    data = dump_like_text()
    stored = subprocess.run([gzip_tool, "-6", "--stdout"], input=data, check=True, capture_output=True).stdout
    check = stream_check(io.BytesIO(stored), compression="gzip")
    assert check.stream_complete and check.raw_size_bytes == len(data)
    with DecompressingReader(io.BytesIO(stored), compression="gzip") as reader:
        assert reader.read() == data


def test_a_truncated_or_corrupt_gzip_is_not_complete():
    stored = compress(dump_like_text())
    assert not stream_check(io.BytesIO(stored[:-9]), compression="gzip").stream_complete
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0xFF
    decompressor = Decompressor("gzip")
    with pytest.raises(BackupError, match="corrupt"):
        decompressor.decompress(bytes(damaged))
