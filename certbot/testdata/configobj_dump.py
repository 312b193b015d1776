# Reads each file named on the command line with Python's configobj, as
# certbot reads its renewal configuration files, and prints one JSON line
# per file: {"ok": SECTION} or {"error": LINE} (0 when configobj gives no
# line; "decode" for text that is not UTF-8). A SECTION is {"values":
# [[KEY, VALUE, IS_LIST]...], "sections": [[NAME, SECTION]...]}. Used by
# TestParseConfMatchesConfigobj.
import json
import sys

import configobj


def dump(section):
    values = []
    for key in section.scalars:
        # dict.__getitem__: the value as parsed, without interpolation.
        value = dict.__getitem__(section, key)
        values.append([key, value, isinstance(value, list)])
    sections = [[name, dump(dict.__getitem__(section, name))] for name in section.sections]
    return {"values": values, "sections": sections}


for path in sys.argv[1:]:
    try:
        result = {"ok": dump(configobj.ConfigObj(path, encoding="utf-8", default_encoding="utf-8"))}
    except configobj.ConfigObjError as e:
        errors = getattr(e, "errors", None)
        result = {"error": errors[0].line_number if errors else getattr(e, "line_number", 0)}
    except UnicodeDecodeError:
        result = {"error": "decode"}
    print(json.dumps(result))
