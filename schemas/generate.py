"""Regenerate schemas/json/*.schema.json from schemas/messages.py: `python -m schemas.generate`."""

import json
from pathlib import Path

from schemas.messages import json_schemas


def main() -> None:
    folder = Path(__file__).parent / "json"
    folder.mkdir(exist_ok=True)
    for name, schema in json_schemas().items():
        (folder / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
