"""Publishing an export folder to the Hugging Face Hub: `<prefix>-discriminator` and
`<prefix>-generator`, one commit each, with a model card built from the export folder alone
(export_info.json: the checkpoint's meta.json and corpus statistics) and, when present, the
fine-tuning stage's results. A distilled student's folder (the distill stage's model/, with its own
export_info.json) goes to one repository, `<prefix>` itself, with the student's card.

Every network call goes through `HubClient` (the one seam): tests substitute it and check the
exact operations offline. The token comes from HF_TOKEN or the user's saved login and is passed
only to `HfApi`; it is never logged, printed or written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from huggingface_hub import CommitOperationAdd, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from koelectra_dist import storage
from koelectra_dist.errors import ConfigError, DataError, KoelectraError
from koelectra_dist.export.hf_layout import EXPORT_INFO, MODEL_FILES, PRETRAINING, TOKENIZER_FILES, TOWERS, ExportInfo
from koelectra_dist.export.model_card import build_card, build_student_card

CARD = "README.md"
STUDENT_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
"""What a student's folder must hold for AutoTokenizer (vocab.txt too when the teacher had one)."""


@dataclass(frozen=True)
class RepoPlan:
    """One repository's commit: what goes where, and the card."""

    repo_id: str
    tower: str
    files: list[tuple[str, str]]
    """(path in the repo, local path), sorted."""
    card: str
    private: bool
    revision: str | None

    def operations(self) -> list[CommitOperationAdd]:
        ops = [CommitOperationAdd(path_in_repo=dst, path_or_fileobj=src) for dst, src in self.files]
        return ops + [CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=self.card.encode("utf-8"))]


class HubClient:
    """The only code that talks to the Hub."""

    def __init__(self, token: str):
        self._api = HfApi(token=token)

    def create_repo(self, repo_id: str, private: bool) -> None:
        self._api.create_repo(repo_id, private=private, exist_ok=True)

    def create_branch(self, repo_id: str, branch: str) -> None:
        self._api.create_branch(repo_id, branch=branch, exist_ok=True)

    def commit(self, repo_id: str, operations: list[CommitOperationAdd], message: str, revision: str | None) -> str:
        return str(self._api.create_commit(repo_id, operations, commit_message=message, revision=revision).commit_url)


def resolve_token() -> str:
    """HF_TOKEN, else the token saved by `hf auth login`; a ConfigError when there is none."""
    token = get_token()
    if not token:
        raise ConfigError(
            "no Hugging Face token: set HF_TOKEN (a write token from https://huggingface.co/settings/tokens) "
            "or run `hf auth login`; nothing was uploaded"
        )
    return token


# ---------------------------------------------------------------- planning and publishing


def read_export(export_dir: str) -> tuple[ExportInfo, dict[str, dict]]:
    """export_info.json and the towers' config.json; DataError naming what is missing."""
    if not os.path.isdir(export_dir):
        raise DataError(f"export folder {export_dir} does not exist; run `launch.py --config C export` first")
    if is_student(export_dir):
        return read_student(export_dir)
    missing = [EXPORT_INFO] if not os.path.exists(os.path.join(export_dir, EXPORT_INFO)) else []
    for tower in TOWERS:
        missing += [
            f"{tower}/{f}"
            for f in MODEL_FILES + TOKENIZER_FILES
            if not os.path.isfile(os.path.join(export_dir, tower, f))
        ]
    if missing:
        raise DataError(
            f"{export_dir} is not a complete export (missing {', '.join(missing)}); run the export stage again"
        )
    with open(os.path.join(export_dir, EXPORT_INFO), encoding="utf-8") as f:
        info = ExportInfo.from_json(json.load(f), os.path.join(export_dir, EXPORT_INFO))
    configs = {}
    for tower in TOWERS:
        with open(os.path.join(export_dir, tower, "config.json"), encoding="utf-8") as f:
            configs[tower] = json.load(f)
    return info, configs


def is_student(folder: str) -> bool:
    """A distilled student's folder (config.json beside export_info.json), not a pair's export."""
    return os.path.isfile(os.path.join(folder, EXPORT_INFO)) and os.path.isfile(os.path.join(folder, "config.json"))


def read_student(folder: str) -> tuple[ExportInfo, dict[str, dict]]:
    """export_info.json and config.json of a distilled student's folder ({"student": config})."""
    missing = [f for f in MODEL_FILES + STUDENT_TOKENIZER_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(
            f"{folder} is not a complete distilled student (missing {', '.join(missing)}); run the distill stage again"
        )
    with open(os.path.join(folder, EXPORT_INFO), encoding="utf-8") as f:
        info = ExportInfo.from_json(json.load(f), os.path.join(folder, EXPORT_INFO))
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        return info, {"student": json.load(f)}


def finetune_results(results_dir: str, repo_id: str) -> tuple[str, dict] | None:
    """The finetune stage's results.md and results.json, once complete (results.json is its
    marker), the table naming the repository instead of the fine-tuned folder."""
    if not storage.exists(storage.join(results_dir, "results.json")):
        return None
    results = storage.read_json(storage.join(results_dir, "results.json"))
    name = str(results.get("model") or "").rstrip("/").rsplit("/", 1)[-1]
    text = storage.read_bytes(storage.join(results_dir, "results.md")).decode("utf-8")
    return (text.replace(f"from `{name}`", f"from `{repo_id}`") if name else text), results


def _folder_files(folder: str, prefix: str = "") -> list[tuple[str, str]]:
    files = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            if rel not in (CARD, EXPORT_INFO):
                files.append((prefix + rel, path))
    return sorted(files)


def plan(
    export_dir: str,
    repo_prefix: str,
    *,
    private: bool = False,
    revision: str | None = None,
    license: str = "apache-2.0",
    results_dir: str | None = None,
    with_pretraining: bool = False,
    base_model: str | None = None,
) -> list[RepoPlan]:
    """What publishing `export_dir` (a local folder) would do; no network."""
    if repo_prefix.count("/") != 1 or not all(repo_prefix.split("/")):
        raise ConfigError(f"--repo-prefix {repo_prefix!r}: expected ORG/NAME (repos ORG/NAME-discriminator, ...)")
    info, configs = read_export(export_dir)
    if info.kind == "student":  # one repository, named ORG/NAME itself
        results = finetune_results(results_dir, repo_prefix) if results_dir else None
        card = build_student_card(repo_prefix, info, configs["student"], license, results, base_model)
        return [RepoPlan(repo_prefix, "student", _folder_files(export_dir), card, private, revision)]
    repos = {tower: f"{repo_prefix}-{tower}" for tower in TOWERS}
    results = finetune_results(results_dir, repos["discriminator"]) if results_dir else None
    plans = []
    for tower in TOWERS:
        sibling = repos["generator" if tower == "discriminator" else "discriminator"]
        files = _folder_files(os.path.join(export_dir, tower))
        if with_pretraining and tower == "discriminator":
            files += _folder_files(os.path.join(export_dir, PRETRAINING), prefix=f"{PRETRAINING}/")
        card = build_card(tower, repos[tower], sibling, info, configs, license, results, base_model)
        plans.append(RepoPlan(repos[tower], tower, files, card, private, revision))
    return plans


def describe(plans: list[RepoPlan]) -> str:
    """The dry-run report: repos, files with sizes, and each card."""
    out = []
    for p in plans:
        where = f" (branch {p.revision})" if p.revision else ""
        out.append(f"== {p.repo_id}{where}: {'private' if p.private else 'public'}, one commit")
        for dst, src in p.files:
            out.append(f"   {os.path.getsize(src):>12,}  {dst}")
        out.append(f"   {len(p.card.encode('utf-8')):>12,}  {CARD} (model card, below)")
        out += ["", p.card, ""]
    return "\n".join(out)


def publish(plans: list[RepoPlan], client: HubClient) -> list[str]:
    """Create/update each repository with one commit; return the commit URLs."""
    urls = []
    for p in plans:
        client.create_repo(p.repo_id, private=p.private)
        if p.revision and p.revision != "main":
            client.create_branch(p.repo_id, p.revision)
        message = (
            "Upload a distilled student (koelectra_dist distill)"
            if p.tower == "student"
            else f"Upload KoELECTRA {p.tower} (koelectra_dist export)"
        )
        urls.append(client.commit(p.repo_id, p.operations(), message, p.revision))
    return urls


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Publish an export folder (discriminator/, generator/) to the Hugging Face Hub."
    )
    p.add_argument(
        "export_dir",
        metavar="EXPORT_DIR",
        help="the export stage's output, or the distill stage's student folder (<distill>/model); local or s3://",
    )
    p.add_argument(
        "--repo-prefix",
        required=True,
        metavar="ORG/NAME",
        help="creates ORG/NAME-discriminator and ORG/NAME-generator (a distilled student: ORG/NAME itself)",
    )
    p.add_argument("--private", action="store_true", help="create private repositories")
    p.add_argument("--revision", metavar="BRANCH", help="commit to this branch (created if absent); default main")
    p.add_argument("--license", default="apache-2.0", help="license in the model card metadata (default apache-2.0)")
    p.add_argument(
        "--results-dir",
        metavar="URI",
        help="the finetune stage's output (results.md) for the card; default: EXPORT_DIR/../finetune when present",
    )
    p.add_argument(
        "--with-pretraining", action="store_true", help="also upload pretraining/ into the discriminator repo"
    )
    p.add_argument(
        "--base-model",
        metavar="ORG/NAME",
        help="the Hub model this one continues from or was distilled from (the card's base_model)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan (repos, files, sizes, cards); no network")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, client_factory: Callable[[str], HubClient] = HubClient) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        results_dir = args.results_dir or storage.join(os.path.dirname(args.export_dir.rstrip("/")), "finetune")
        with tempfile.TemporaryDirectory(prefix="koelectra-publish-") as scratch:
            export_dir = args.export_dir
            if storage.is_s3(export_dir):
                export_dir = storage.download_dir(export_dir, scratch)
            plans = plan(
                export_dir,
                args.repo_prefix,
                private=args.private,
                revision=args.revision,
                license=args.license,
                results_dir=results_dir,
                with_pretraining=args.with_pretraining,
                base_model=args.base_model,
            )
            if args.dry_run:
                print(describe(plans))
                return 0
            client = client_factory(resolve_token())
            for url in publish(plans, client):
                print(f"published: {url}")
        return 0
    except KoelectraError as e:
        print(f"publish_to_hub {e.kind}: {e.message}", file=sys.stderr)
        return 2
    except HfHubHTTPError as e:  # the Hub refused (permissions, name taken...): its message, no traceback
        print(f"publish_to_hub hub error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if not _is_network_error(e):
            raise
        print(
            f"publish_to_hub network error: the Hub cannot be reached ({type(e).__name__}: {e}); check the network "
            "or HF_ENDPOINT, and try again (--dry-run works offline)",
            file=sys.stderr,
        )
        return 1


def _is_network_error(e: BaseException) -> bool:
    """A failure to reach the Hub, whichever HTTP client huggingface_hub uses underneath."""
    names = {c.__name__ for c in type(e).__mro__}
    return isinstance(e, OSError | TimeoutError) or bool(names & {"TransportError", "ConnectionError"})
