"""Read a user's text file (``.env``, a symbols file) whatever a Windows editor saved it as.

Notepad's "UTF-8" adds a byte-order mark that would otherwise glue itself to the first name
(an invisible unknown symbol), and its "Unicode" is UTF-16. Both are recognised by their mark;
anything else must be UTF-8, or it is one clear line.
"""

import codecs
from pathlib import Path

#: Byte-order marks and the codec each announces; UTF-32's mark starts like UTF-16's, so
#: it is tried first.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class TextFileError(ValueError):
    """The file cannot be read or is not text; the message says which and why."""


def read_text(path: Path, what: str) -> str:
    """The text of ``path``: UTF-8, or UTF-8/16/32 with a byte-order mark.

    ``what`` names the file in messages (``"symbols file"``).

    Raises
    ------
    TextFileError
        The file cannot be read, or its bytes are not text in those encodings.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TextFileError(f"cannot read {what} {path}: {e.strerror}") from None
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise TextFileError(
            f"{what} {path} is not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x}); "
            "save it as UTF-8"
        ) from None
