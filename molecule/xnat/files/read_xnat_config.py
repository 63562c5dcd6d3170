#!/usr/bin/python3
"""Parse the XNAT configuration files on the instance and print them as JSON (molecule verify).

    read_xnat_config.py XNAT_HOME

Output: {"xnat-conf.properties": {key: value}, "prefs-init.ini": {section: {key: value}},
"auth": {file name: {key: value}}, "errors": [...]}. Properties files are decoded as
java.util.Properties.load(InputStream) does (ISO-8859-1, escapes, continuation lines), the ini
file with configparser (strict: duplicate keys are errors). Test helper, not part of the role.
"""

import configparser
import json
import pathlib
import sys

ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def load_properties(path: pathlib.Path, errors: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    lines = path.read_bytes().decode("iso-8859-1").splitlines()
    logical: list[str] = []
    pending: str | None = None
    for raw in lines:
        line = raw.lstrip(" \t\f")
        if pending is None and (not line or line[0] in "#!"):
            continue
        odd = (len(line) - len(line.rstrip("\\"))) % 2 == 1
        line = line[:-1] if odd else line
        pending = line if pending is None else pending + line
        if not odd:
            logical.append(pending)
            pending = None
    for line in logical:
        chars: list[str] = []
        key, i, in_key = "", 0, True
        while i < len(line):
            c = line[i]
            if c == "\\" and i + 1 < len(line):
                n = line[i + 1]
                if n == "u":
                    chars.append(chr(int(line[i + 2 : i + 6], 16)))
                    i += 6
                else:
                    chars.append(ESCAPES.get(n, n))
                    i += 2
                continue
            if in_key and c in "=: \t\f":
                key, chars, in_key = "".join(chars), [], False
                rest = line[i:].lstrip(" \t\f")
                if rest[:1] in ("=", ":"):
                    rest = rest[1:]
                line, i = rest.lstrip(" \t\f"), 0
                continue
            chars.append(c)
            i += 1
        if in_key:
            key, value = "".join(chars), ""
        else:
            value = "".join(chars)
        if key in values:
            errors.append(f"{path.name}: duplicate key {key}")
        values[key] = value
    return values


def load_ini(path: pathlib.Path, errors: list[str]) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        errors.append(f"{path.name}: {type(exc).__name__}")
        return {}
    return {section: dict(parser[section]) for section in parser.sections()}


def main() -> None:
    home = pathlib.Path(sys.argv[1])
    config = home / "config"
    errors: list[str] = []
    out: dict[str, object] = {
        "xnat-conf.properties": load_properties(config / "xnat-conf.properties", errors),
        "prefs-init.ini": load_ini(config / "prefs-init.ini", errors),
        "auth": {p.name: load_properties(p, errors) for p in sorted((config / "auth").glob("*"))},
    }
    out["errors"] = errors
    print(json.dumps(out, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
