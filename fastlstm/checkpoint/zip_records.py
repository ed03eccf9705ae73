"""Reading the records of a zip archive, tolerating what ``torch.save`` writes.

``zipfile`` reads the central directory.  Stored (uncompressed) records are read
straight from their offset, because torch can write CRC fields of 0
(``torch.serialization.set_crc32_options(False)``) which ``zipfile`` rejects;
the CRC is checked whenever it is not 0.
"""

import struct
import zipfile
import zlib

from .errors import CorruptCheckpointError

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")


def is_zip(head):
    return head[:4] in ZIP_SIGNATURES


class ZipRecords:
    """Named byte records of the zip at ``path``; ``close()`` when done."""

    def __init__(self, path):
        self.path = path
        self._file = open(path, "rb")
        try:
            self._zip = zipfile.ZipFile(self._file)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
            self._file.close()
            raise CorruptCheckpointError(
                f"{path}: starts like a zip archive but cannot be opened as one ({error}); the file "
                f"is truncated or corrupt: re-download or re-save it") from None
        self._infos = {info.filename: info for info in self._zip.infolist()}

    @property
    def names(self):
        return list(self._infos)

    def size(self, name):
        return self._infos[name].file_size

    def __contains__(self, name):
        return name in self._infos

    def read(self, name):
        """The bytes of record ``name`` (CorruptCheckpointError if missing or damaged)."""
        info = self._infos.get(name)
        if info is None:
            raise CorruptCheckpointError(f"{self.path}: record {name!r} is missing from the archive")
        try:
            if info.compress_type != zipfile.ZIP_STORED:
                return self._zip.read(info)
            self._file.seek(info.header_offset)
            signature, name_length, extra_length = _LOCAL_HEADER.unpack(
                self._file.read(_LOCAL_HEADER.size))
            if signature != _LOCAL_SIGNATURE:
                raise CorruptCheckpointError(f"{self.path}: record {name!r} has a bad local header")
            self._file.seek(name_length + extra_length, 1)
            data = self._file.read(info.file_size)
        except (zipfile.BadZipFile, struct.error, OSError, EOFError, NotImplementedError,
                RuntimeError, zlib.error) as error:
            raise CorruptCheckpointError(f"{self.path}: cannot read record {name!r}: {error}") from None
        if len(data) != info.file_size:
            raise CorruptCheckpointError(
                f"{self.path}: record {name!r} is cut short ({len(data)} of {info.file_size} bytes); "
                f"the file is truncated")
        if info.CRC != 0 and zlib.crc32(data) != info.CRC:
            raise CorruptCheckpointError(f"{self.path}: record {name!r} fails its CRC check; "
                                         f"the file is corrupt")
        return data

    def close(self):
        self._zip.close()
        self._file.close()
