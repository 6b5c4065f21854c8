"""The command line: `koelectra-dist --config configs/base_v3.json [STAGE ...]` (installed by
`pip install .`), or `python launch.py ...` from a checkout; `koelectra-dist plan --config FILE
--gpus N --gpu h100` plans a run without a cluster (docs/cluster.md).

Under `ray job submit -- python launch.py ...` it runs on that cluster; otherwise it starts a local
Ray. The config is checked completely before Ray is touched.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from koelectra_dist.config import STAGES, config_warnings, load_config, placeholder_problems, resolved_json
from koelectra_dist.errors import KoelectraError, error_in


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="koelectra-dist", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="JSON config file (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted path, e.g. --set train.steps=1000 (repeatable)",
    )
    p.add_argument("--check", action="store_true", help="validate, print the resolved config as JSON, exit")
    p.add_argument(
        "--preview-cleaning",
        type=int,
        metavar="N",
        help="print the first N lines of corpus.inputs as corpus.cleaning leaves them, with the rules that fired; exit",
    )
    p.add_argument(
        "stages",
        nargs="*",
        metavar="STAGE",
        help=f"stages to run, in pipeline order ({', '.join(STAGES)}); default: run.stages",
    )
    return p.parse_args(argv)


def report_main(argv: list[str]) -> int:
    """`koelectra-dist report RUN`: draw a run's probe curves (curves.png beside probe.jsonl)."""
    p = argparse.ArgumentParser(prog="koelectra-dist report", description=report_main.__doc__)
    p.add_argument("run", metavar="RUN", help="the run's output folder (run.output_uri) or checkpoint folder")
    args = p.parse_args(argv)
    from koelectra_dist.probe.report import report

    try:
        print(json.dumps(report(args.run), indent=2, ensure_ascii=False))
        return 0
    except KoelectraError as e:
        print(f"koelectra_dist {e.kind}: {e.message}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plan"]:
        return _plan(argv[1:])
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        unknown = [s for s in args.stages if s not in STAGES]
        if unknown:
            raise KoelectraError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(STAGES)}")
        overrides = list(args.set)
        if args.stages:  # named stages replace run.stages, so validation checks what will run
            overrides.append("run.stages=" + json.dumps(sorted(args.stages, key=STAGES.index)))
        cfg = load_config(args.config, overrides)
        if args.check:
            print(resolved_json(cfg))
            for problem in placeholder_problems(cfg):
                print(f"koelectra_dist note: before running, {problem}", file=sys.stderr)
            for warning in config_warnings(cfg):
                print(f"koelectra_dist warning: {warning}", file=sys.stderr)
            return 0
        if args.preview_cleaning is not None:
            from koelectra_dist.corpus.preview import preview

            preview(cfg.corpus, args.preview_cleaning, sys.stdout)
            return 0
        from koelectra_dist.pipeline import run_stages

        run_stages(cfg)
        return 0
    except Exception as e:
        found = error_in(e)  # a worker's error arrives wrapped by Ray
        if found is None:
            raise
        print(f"koelectra_dist {found.kind}: {found.message}", file=sys.stderr)
        return 1 if found.transient else 2  # an outage that outlasted the retries is not the user's


def _plan(argv: list[str]) -> int:
    """`koelectra-dist plan ...`: the run planner (koelectra_dist/plan), no Ray, no cluster."""
    from koelectra_dist.plan.command import main as plan_main

    try:
        return plan_main(argv)
    except KoelectraError as e:
        print(f"koelectra_dist {e.kind}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
