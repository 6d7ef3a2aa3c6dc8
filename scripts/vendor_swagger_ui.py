"""Copy Swagger UI's bundle, stylesheet, favicon and licences from node_modules into shared/api/apidocs/static."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "node_modules" / "swagger-ui-dist"
STATIC = ROOT / "shared" / "api" / "apidocs" / "static"
# The page needs only the bundle, its stylesheet and an icon; the licence texts travel with them (Apache-2.0 asks
# for LICENSE and NOTICE, the .LICENSE.txt lists what the bundle itself contains).
FILES = (
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "favicon-32x32.png",
    "LICENSE",
    "NOTICE",
    "swagger-ui-bundle.js.LICENSE.txt",
)


def main() -> int:
    if not PACKAGE.is_dir():
        print("no node_modules/swagger-ui-dist: run `npm ci` first", file=sys.stderr)
        return 1
    version = json.loads((PACKAGE / "package.json").read_text())["version"]
    target = STATIC / f"swagger-ui-{version}"
    for old in STATIC.glob("swagger-ui-*"):
        if old != target:
            shutil.rmtree(old)
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(PACKAGE / name, target / name)
    print(f"copied swagger-ui-dist {version} into {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
