"""CLI: ``python -m shared.modelbuild --out build/models [--samples DIR]`` builds every known model."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.modelbuild import anomaly, breast_cancer, digits, text_models
from shared.modelbuild.common import BuildResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelBuilder:
    """One buildable model: how to build its package and (optionally) its demo samples."""

    name: str
    version: str
    build: Callable[[Path, bool], BuildResult]
    write_samples: Callable[[Path], list[Path]] | None = None


BUILDERS: list[ModelBuilder] = [
    ModelBuilder(breast_cancer.NAME, breast_cancer.VERSION, breast_cancer.build, breast_cancer.write_samples),
    ModelBuilder(anomaly.NAME, anomaly.VERSION, anomaly.build, anomaly.write_samples),
    ModelBuilder(digits.NAME, digits.VERSION, digits.build, digits.write_samples),
    ModelBuilder(
        text_models.EMBED_NAME,
        text_models.VERSION,
        text_models.build_embedding,
        text_models.write_embedding_samples,
    ),
    ModelBuilder(
        text_models.ZERO_SHOT_NAME,
        text_models.VERSION,
        text_models.build_zero_shot,
        text_models.write_zero_shot_samples,
    ),
]


def format_result(result: BuildResult) -> str:
    """One line per model: name, version, status, metric, size, seconds."""
    status = "skipped (up to date)" if result.skipped else "built"
    return (
        f"{result.name} v{result.version}: {status}; {result.metric_name}={result.metric_value:.4f} "
        f"size={result.artifact_bytes} bytes {result.seconds:.2f}s"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m shared.modelbuild", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/models"), help="package root directory")
    parser.add_argument("--samples", type=Path, default=None, help="also write demo sample files here")
    parser.add_argument("--force", action="store_true", help="rebuild even when the buildKey matches")
    parser.add_argument(
        "--only", action="append", default=None, metavar="NAME", help="build only this model (repeatable)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    builders = BUILDERS
    if args.only:
        known = {b.name for b in BUILDERS}
        unknown = sorted(set(args.only) - known)
        if unknown:
            logger.error("unknown model(s) %s; known: %s", unknown, sorted(known))
            return 2
        builders = [b for b in BUILDERS if b.name in args.only]

    failures = 0
    for builder in builders:
        try:
            result = builder.build(args.out, args.force)
            print(format_result(result), flush=True)
            if args.samples is not None and builder.write_samples is not None:
                for path in builder.write_samples(args.samples):
                    logger.info("%s samples: %s", builder.name, path)
        except Exception:
            logger.exception("building %s v%s failed", builder.name, builder.version)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
